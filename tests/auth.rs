//! Authentication, permissions and limits against the real server: bearer tokens (HS256
//! signed here), API keys made by `tolk keys`, over REST and the WebSocket; limits in
//! memory and, with a real `redis-server`, shared by two instances.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::ws::Client;
use common::{scratch, testdata, tolk, Server};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes!";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token over `claims`, signed with `secret`.
fn token_with(secret: &str, header: Value, claims: Value) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

/// A valid token for `sub` with `permissions`, changed by `extra`.
fn token(sub: &str, permissions: &[&str], extra: Value) -> String {
    let mut claims = json!({
        "sub": sub, "aud": "tolk", "iat": now(), "exp": now() + 600,
        "user_tier": "premium", "permissions": permissions,
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    token_with(SECRET, json!({"alg": "HS256", "typ": "JWT"}), claims)
}

const ALL: [&str; 4] = [
    "translate:read",
    "translate:write",
    "stream:create",
    "models:list",
];

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// A keys file of its own for each test (tests run in parallel in one process).
fn keys_file(test: &str) -> String {
    let path = scratch(&format!("keys-{test}")).join("api-keys.json");
    path.to_str().unwrap().to_string()
}

/// A server with auth required, HS256 tokens and `keys` as its keys file.
fn start(keys: &str, extra: &[&str]) -> Server {
    let keys = keys.to_string();
    let mut args = vec![
        "--auth-mode",
        "required",
        "--jwt-hs256-secret",
        SECRET,
        "--keys-file",
        &keys,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `tolk keys ARGS --json` → the created key.
fn create_key(store: &[&str], extra: &[&str]) -> String {
    let output = tolk()
        .args(["keys", "create", "--name", "test", "--json"])
        .args(extra)
        .args(store)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    created["key"].as_str().unwrap().to_string()
}

/// Tokens that must be refused, each with what is wrong with it.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let forged = token_with(
        "another-secret-of-at-least-thirty-two-bytes",
        json!({"alg": "HS256"}),
        json!({"sub": "mallory", "aud": "tolk", "exp": now() + 600, "permissions": ALL}),
    );
    vec![
        ("forged", forged),
        ("expired", token("alice", &ALL, json!({"exp": now() - 120}))),
        (
            "not yet valid",
            token("alice", &ALL, json!({"nbf": now() + 600})),
        ),
        (
            "wrong audience",
            token("alice", &ALL, json!({"aud": "someone-else"})),
        ),
        ("alg none", {
            let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
            let claims = b64(
                json!({"sub": "mallory", "aud": "tolk", "exp": now() + 600, "permissions": ALL})
                    .to_string()
                    .as_bytes(),
            );
            format!("{header}.{claims}.")
        }),
        ("garbage", "not.a.token".to_string()),
    ]
}

#[test]
fn bearer_tokens_are_checked_over_rest() {
    let server = start(&keys_file("bearer"), &[]);
    let get = |headers: &[&str]| server.request("GET", "/api/v1/languages", headers, b"");

    let r = get(&[]);
    assert!(r
        .assert_error(401, "unauthorized")
        .contains("credentials required"));
    let good = token("alice", &ALL, json!({}));
    let r = get(&[&bearer(&good)]);
    assert_eq!(r.status, 200, "{}", r.text());
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(
            r.header(header).is_some_and(|v| v.parse::<u64>().is_ok()),
            "{header}: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-ratelimit-limit"), Some("1000"), "premium tier");

    let cases = bad_tokens();
    for (what, token) in cases {
        let r = get(&[&bearer(&token)]);
        let message = r.assert_error(401, "unauthorized");
        assert!(
            message.contains("bearer token refused"),
            "{what}: {message}"
        );
    }
    // Within the 30 s leeway, an expired token still passes.
    let r = get(&[&bearer(&token("alice", &ALL, json!({"exp": now() - 10})))]);
    assert_eq!(r.status, 200, "{}", r.text());

    // Valid, but without the permission the route needs.
    let reader = token("bob", &["translate:read", "models:list"], json!({}));
    let r = server.request(
        "POST",
        "/api/v1/translate/sync",
        &[&bearer(&reader), "Content-Type: audio/wav"],
        b"RIFF",
    );
    assert!(r.assert_error(403, "forbidden").contains("translate:write"));
    // Open routes stay open.
    for path in ["/healthz", "/api/v1/openapi.json", "/docs"] {
        assert_eq!(server.request("GET", path, &[], b"").status, 200, "{path}");
    }
}

#[test]
fn api_keys_work_until_revoked_and_rate_limits_answer_429() {
    let keys = keys_file("api");
    let server = start(&keys, &[]);
    let store = ["--keys-file", keys.as_str()];
    let key = create_key(&store, &["--tier", "free", "--requests-per-minute", "3"]);
    let with_key = format!("X-API-Key: {key}");

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = server.request("GET", "/api/v1/models", &[&with_key], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        remaining.push(r.header("x-ratelimit-remaining").unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = server.request("GET", "/api/v1/models", &[&with_key], b"");
    assert!(r
        .assert_error(429, "rate_limited")
        .contains("3 requests per minute"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));

    // Jobs belong to their submitter: another caller gets 404 for them.
    let owner = create_key(&store, &["--tier", "basic"]);
    let stranger = create_key(&store, &["--tier", "basic"]);
    let jfk = std::fs::read(testdata("jfk.wav")).unwrap();
    let r = server.request(
        "POST",
        "/api/v1/translate?source_lang=en",
        &[&format!("X-API-Key: {owner}"), "Content-Type: audio/wav"],
        &jfk,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let status_url = r.json()["status_url"].as_str().unwrap().to_string();
    let mine = server.request("GET", &status_url, &[&format!("X-API-Key: {owner}")], b"");
    assert_eq!(mine.status, 200, "{}", mine.text());
    let theirs = server.request(
        "GET",
        &status_url,
        &[&format!("X-API-Key: {stranger}")],
        b"",
    );
    theirs.assert_error(404, "not_found");

    // A second key has its own bucket; revoking it takes effect while the server runs.
    let other = create_key(&store, &["--tier", "basic"]);
    let with_other = format!("X-API-Key: {other}");
    assert_eq!(
        server
            .request("GET", "/api/v1/models", &[&with_other], b"")
            .status,
        200
    );
    let id = other.split('_').nth(1).unwrap();
    let list = tolk()
        .args(["keys", "list", "--json"])
        .args(store)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&other),
        "a listing never shows keys"
    );
    let revoke = tolk()
        .args(["keys", "revoke", id])
        .args(store)
        .output()
        .unwrap();
    assert!(
        revoke.status.success(),
        "{}",
        String::from_utf8_lossy(&revoke.stderr)
    );
    let start = Instant::now();
    loop {
        let r = server.request("GET", "/api/v1/models", &[&with_other], b"");
        if r.status == 401 {
            assert!(r.assert_error(401, "unauthorized").contains("revoked"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still served after revoke: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two credentials are refused, even when one of them is good.
    let both = [with_key.as_str(), "Authorization: Bearer not.a.token"];
    let r = server.request("GET", "/api/v1/models", &both, b"");
    assert!(r.assert_error(401, "unauthorized").contains("not both"));
    let r = server.request("GET", "/api/v1/models", &["X-API-Key: tolk_nonsense"], b"");
    r.assert_error(401, "unauthorized");
}

#[test]
fn a_server_on_a_public_address_requires_credentials_by_default() {
    let mut child = tolk()
        .args([
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--keys-file",
            &keys_file("public"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let server = Server::attach(child, format!("127.0.0.1:{port}"));
    let r = server.request("GET", "/api/v1/languages", &[], b"");
    r.assert_error(401, "unauthorized");
}

#[test]
fn websocket_upgrades_are_authenticated_before_upgrading() {
    let keys = keys_file("ws");
    let server = start(&keys, &[]);
    let url = format!("ws://{}/ws/translate", server.addr);
    let refused = |result: Result<Client, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => {
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}")).unwrap();
            (
                response.status().as_u16(),
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade accepted"),
    };
    assert_eq!(
        refused(Client::connect_to(&url, &[])),
        (401, "unauthorized".into())
    );
    for (what, bad) in bad_tokens() {
        let by_query = refused(Client::connect_to(&format!("{url}?token={bad}"), &[]));
        assert_eq!(by_query, (401, "unauthorized".into()), "{what}");
        let bearer = format!("Bearer {bad}");
        let by_header = refused(Client::connect_to(&url, &[("Authorization", &bearer)]));
        assert_eq!(by_header, (401, "unauthorized".into()), "{what}");
    }
    // A revoked key opens no stream.
    let store = ["--keys-file", keys.as_str()];
    let key = create_key(&store, &[]);
    assert!(Client::connect_to(&url, &[("X-API-Key", &key)]).is_ok());
    let id = key.split('_').nth(1).unwrap();
    let revoke = tolk()
        .args(["keys", "revoke", id])
        .args(store)
        .status()
        .unwrap();
    assert!(revoke.success());
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        refused(Client::connect_to(&url, &[("X-API-Key", &key)])),
        (401, "unauthorized".into())
    );
    let no_stream = token("carol", &["models:list"], json!({}));
    assert_eq!(
        refused(Client::connect_to(&format!("{url}?token={no_stream}"), &[])),
        (403, "forbidden".into())
    );

    // The free tier has one concurrent stream: a second upgrade is refused until the first
    // session ends. Token in the query, then as a subprotocol (as browsers send it).
    let free = token("dave", &ALL, json!({"user_tier": "free"}));
    let first = Client::connect_to(&format!("{url}?token={free}"), &[]).expect("first stream");
    let protocol = format!("tolk.v1, bearer.{free}");
    assert_eq!(
        refused(Client::connect_to(
            &url,
            &[("Sec-WebSocket-Protocol", &protocol)]
        )),
        (429, "quota_exceeded".into())
    );
    drop(first);
    let start = Instant::now();
    loop {
        match Client::connect_to(&url, &[("Sec-WebSocket-Protocol", &protocol)]) {
            Ok(_) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "place not freed: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let with_header = Client::connect_to(
        &url,
        &[(
            "Authorization",
            &format!("Bearer {}", token("erin", &ALL, json!({}))),
        )],
    );
    assert!(with_header.is_ok());
    drop(with_header);

    // An API key goes where a browser can put it: a `bearer.<key>` subprotocol, `?token=`,
    // or `Authorization: Bearer` (the page's REST calls).
    let free_key = create_key(&store, &["--tier", "free"]);
    let as_protocol = format!("tolk.v1, bearer.{free_key}");
    let by_key = Client::connect_to(&url, &[("Sec-WebSocket-Protocol", &as_protocol)])
        .expect("a key as a subprotocol");
    let bearer_key = format!("Authorization: Bearer {free_key}");
    let models = server.request("GET", "/api/v1/models", &[&bearer_key], b"");
    assert_eq!(models.status, 200, "{}", models.text());
    // A plain GET is told what an upgrade would be told (how a browser learns why its
    // handshake failed): the key's one stream place is taken...
    let probe = format!("/ws/translate?token={free_key}");
    server
        .request("GET", &probe, &[], b"")
        .assert_error(429, "quota_exceeded");
    drop(by_key);
    let start = Instant::now();
    while server.request("GET", &probe, &[], b"").status == 429 {
        assert!(start.elapsed() < Duration::from_secs(5), "place not freed");
        std::thread::sleep(Duration::from_millis(100));
    }
    // ...and once it is free, 400 (no upgrade), without holding the place: a real upgrade
    // right after it succeeds.
    for _ in 0..3 {
        server
            .request("GET", &probe, &[], b"")
            .assert_error(400, "invalid_message");
    }
    assert!(Client::connect_to(&format!("ws://{}{probe}", server.addr), &[]).is_ok());
}

#[test]
fn a_stream_over_its_audio_quota_gets_its_results_then_quota_exceeded() {
    let tiers = scratch("tiers").join("tiers.json");
    std::fs::write(
        &tiers,
        json!({"tiny": {"requests_per_minute": 100, "burst": 100, "concurrent_streams": 2, "audio_seconds_per_day": 6}}).to_string(),
    )
    .unwrap();
    let server = start(
        &keys_file("quota"),
        &["--tiers-file", tiers.to_str().unwrap()],
    );
    let tiny = token("frank", &ALL, json!({"user_tier": "tiny"}));

    // REST: an 11 s clip does not fit in 6 s.
    let jfk_wav = std::fs::read(testdata("jfk.wav")).unwrap();
    let r = server.request(
        "POST",
        "/api/v1/translate/sync?source_lang=en",
        &[&bearer(&tiny), "Content-Type: audio/wav"],
        &jfk_wav,
    );
    assert!(r.assert_error(429, "quota_exceeded").contains("quota"));

    let mut client = Client::connect_to(
        &format!("ws://{}/ws/translate?token={tiny}", server.addr),
        &[],
    )
    .unwrap();
    client.start_stream("en");
    let jfk = tolk_models::audio::read_wav(&testdata("jfk.wav"))
        .unwrap()
        .samples;
    let start = Instant::now();
    for (i, frame) in jfk.chunks(1600).enumerate() {
        while start.elapsed() < Duration::from_millis(100 * i as u64) {
            client.drain();
            std::thread::sleep(Duration::from_millis(2));
        }
        if client.closed
            || client
                .of_type("error")
                .iter()
                .any(|e| e["code"] == "quota_exceeded")
        {
            break;
        }
        let _ = client
            .ws
            .send(tungstenite::Message::binary(common::ws::pcm16(frame)));
    }
    let error = client.wait_for("error", Duration::from_secs(30));
    assert_eq!(error["code"], "quota_exceeded", "{error}");
    // The session was finalized before the error: its committed words came first.
    let finals: Vec<&Value> = client
        .of_type("partial_result")
        .into_iter()
        .filter(|m| m["is_final"] == true)
        .collect();
    let complete = client.of_type("session_complete");
    assert_eq!(complete.len(), 1, "{:?}", client.received);
    assert!(
        !finals.is_empty(),
        "no committed words before the quota closed the stream"
    );
    let said = finals
        .iter()
        .map(|m| m["transcript"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    assert!(said.contains("fellow americans"), "{said}");
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "closed only after {:?}",
        start.elapsed()
    );
    // Closed, and a new session is refused: today's audio is used up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.closed && Instant::now() < deadline {
        client.drain();
    }
    assert!(client.closed);
    let again = Client::connect_to(
        &format!("ws://{}/ws/translate?token={tiny}", server.addr),
        &[],
    );
    assert!(matches!(again, Err(tungstenite::Error::Http(ref r)) if r.status() == 429));
}

mod redis {
    use super::*;
    use common::Redis;

    #[test]
    fn two_instances_on_one_redis_enforce_one_limit() {
        let redis = Redis::start();
        let store = ["--redis-url", redis.url.as_str(), "--redis-prefix", "auth1"];
        let key = create_key(
            &store,
            &[
                "--tier",
                "free",
                "--requests-per-minute",
                "4",
                "--concurrent-streams",
                "1",
            ],
        );
        let keys = keys_file("redis");
        let a = start(&keys, &store);
        let b = start(&keys, &store);
        let with_key = format!("X-API-Key: {key}");
        let statuses: Vec<u16> = [&a, &b, &a, &b, &a, &b]
            .iter()
            .map(|s| {
                s.request("GET", "/api/v1/languages", &[&with_key], b"")
                    .status
            })
            .collect();
        assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);

        // One stream place, shared: open on A, refused on B.
        let token_free = token("gina", &ALL, json!({"user_tier": "free"}));
        let _on_a = Client::connect_to(
            &format!("ws://{}/ws/translate?token={token_free}", a.addr),
            &[],
        )
        .unwrap();
        let on_b = Client::connect_to(
            &format!("ws://{}/ws/translate?token={token_free}", b.addr),
            &[],
        );
        assert!(matches!(on_b, Err(tungstenite::Error::Http(ref r)) if r.status() == 429));

        // Redis gone: limits fail closed (503), never a panic, the process keeps serving.
        drop(redis);
        let r = a.request(
            "GET",
            "/api/v1/languages",
            &[&format!(
                "Authorization: Bearer {}",
                token("hal", &ALL, json!({}))
            )],
            b"",
        );
        r.assert_error(503, "overloaded");
        assert_eq!(a.request("GET", "/healthz", &[], b"").status, 200);
    }
}
