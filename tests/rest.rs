//! The REST API against the real server and models: jobs through to their audio, the sync
//! call, discovery, the OpenAPI document, and every refusal with its code.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{normalize, testdata, word_errors, Server, JFK_WORDS};
use serde_json::Value;
use tolk_models::wav::encode_pcm16;

fn jfk() -> Vec<u8> {
    std::fs::read(testdata("jfk.wav")).unwrap()
}

fn silence(seconds: f64) -> Vec<u8> {
    encode_pcm16(&vec![0.0; (seconds * 16_000.0) as usize], 16_000, 1)
}

fn multipart(field: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "tolk-test-boundary-7d93";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Poll a job until it is completed or failed; the statuses seen, in order.
fn wait_for_job(server: &Server, id: &str, limit: Duration) -> (Value, Vec<Value>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let response = server.request("GET", &format!("/api/v1/translate/status/{id}"), &[], b"");
        assert_eq!(response.status, 200, "{}", response.text());
        let status = response.json();
        seen.push(status.clone());
        if status["status"] == "completed" || status["status"] == "failed" {
            return (status, seen);
        }
        assert!(
            start.elapsed() < limit,
            "job {id} not done after {limit:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_jfk(transcript: &str) {
    let errors = word_errors(&normalize(transcript), JFK_WORDS);
    assert!(errors <= 2, "{errors} word errors: {transcript}");
}

#[test]
fn refusals_carry_their_code_status_and_request_id() {
    let server = Server::start(&[]);
    let wav = "Content-Type: audio/wav";

    let r = server.post("/api/v1/translate", "text/plain", b"hello");
    assert!(r
        .assert_error(415, "unsupported_audio_format")
        .contains("audio/wav"));
    let r = server.request("POST", "/api/v1/translate/sync", &[], &jfk());
    r.assert_error(415, "unsupported_audio_format");

    let r = server.post(
        "/api/v1/translate",
        "audio/wav",
        b"RIFF garbage that is no WAV at all",
    );
    r.assert_error(422, "invalid_audio");
    let r = server.post("/api/v1/translate/sync", "audio/wav", &[0u8; 0]);
    r.assert_error(422, "invalid_audio");
    let mut truncated = jfk();
    truncated.truncate(30);
    server
        .post("/api/v1/translate/sync", "audio/wav", &truncated)
        .assert_error(422, "invalid_audio");

    let r = server.post("/api/v1/translate?target_lang=xx", "audio/wav", &jfk());
    assert!(r.assert_error(422, "unsupported_language").contains("'xx'"));
    let r = server.post(
        "/api/v1/translate/sync?source_lang=klingon",
        "audio/wav",
        &jfk(),
    );
    r.assert_error(422, "unsupported_language");

    let r = server.post("/api/v1/translate?target_language=pt", "audio/wav", &jfk());
    assert!(r
        .assert_error(400, "invalid_request")
        .contains("target_language"));
    server
        .post("/api/v1/translate/sync?tts=maybe", "audio/wav", &jfk())
        .assert_error(400, "invalid_request");
    let r = server.post(
        "/api/v1/translate?callback_url=http://example.com/hook",
        "audio/wav",
        &jfk(),
    );
    assert!(r.assert_error(400, "invalid_request").contains("callback"));
    server
        .post(
            "/api/v1/translate/sync?callback_url=http://example.com/hook",
            "audio/wav",
            &jfk(),
        )
        .assert_error(400, "invalid_request");

    // 30 s is the sync limit; 31 s of (valid) audio is refused without being processed.
    server
        .post("/api/v1/translate/sync", "audio/wav", &silence(31.0))
        .assert_error(422, "audio_too_long");
    // A declared 11 MB body is refused before it is read.
    let r = server.request(
        "POST",
        "/api/v1/translate/sync",
        &[wav, "Content-Length: 11000000"],
        b"",
    );
    r.assert_error(413, "payload_too_large");
    // So is one that is sent without a length and grows past the limit.
    let big = vec![0u8; 10 * 1024 * 1024 + 1];
    let r = server.request(
        "POST",
        "/api/v1/translate/sync",
        &[wav, "Transfer-Encoding: chunked"],
        &chunked(&big),
    );
    r.assert_error(413, "payload_too_large");

    let (content_type, form) = multipart("file", &jfk());
    let r = server.post("/api/v1/translate/sync", &content_type, &form);
    assert!(r.assert_error(400, "invalid_request").contains("'audio'"));
    let r = server.post(
        "/api/v1/translate/sync",
        "multipart/form-data; boundary=x",
        b"--x\r\nnonsense",
    );
    r.assert_error(400, "invalid_request");

    for path in [
        "/api/v1/translate/status/wf_nope",
        "/api/v1/translate/result/wf_nope",
        "/api/v1/translate/result/wf_nope/audio",
        "/api/v1/nothing-here",
    ] {
        server
            .request("GET", path, &[], b"")
            .assert_error(404, "not_found");
    }
    // Successful responses carry a request id too.
    let r = server.request("GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r
        .header("x-request-id")
        .is_some_and(|id| id.starts_with("req_")));
}

/// `data` in chunked transfer encoding, 64 KiB a chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn discovery_readiness_and_openapi() {
    let server = Server::start(&[]);
    let r = server.request("GET", "/readyz", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
    let r = server.request("GET", "/api/v1/languages", &[], b"");
    assert!(r.json()["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["source"] == "en" && p["target"] == "pt"));
    let r = server.request("GET", "/api/v1/models", &[], b"");
    assert!(r.json()["models"].as_array().unwrap().len() >= 3);

    let r = server.request("GET", "/api/v1/openapi.json", &[], b"");
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for (path, method) in [
        ("/api/v1/translate", "post"),
        ("/api/v1/translate/sync", "post"),
        ("/api/v1/translate/status/{workflow_id}", "get"),
        ("/api/v1/translate/result/{workflow_id}", "get"),
        ("/api/v1/translate/result/{workflow_id}/audio", "get"),
        ("/api/v1/languages", "get"),
        ("/api/v1/models", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the document"
        );
    }
    let submit = &doc["paths"]["/api/v1/translate"]["post"];
    assert_eq!(
        submit["security"],
        serde_json::json!([{"bearer": []}, {"apiKey": []}])
    );
    for status in ["401", "403", "429"] {
        assert!(
            submit["responses"][status].is_object(),
            "{status} undocumented"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "X-API-Key"
    );
    assert!(doc["paths"]["/healthz"]["get"].get("security").is_none());
    let body = &doc["paths"]["/api/v1/translate"]["post"]["requestBody"]["content"];
    assert!(
        body["audio/wav"].is_object() && body["multipart/form-data"].is_object(),
        "{body}"
    );
    for schema in [
        "JobAccepted",
        "JobStatusResponse",
        "SyncResponse",
        "ErrorBody",
        "TranslationResult",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }

    let r = server.request("GET", "/docs", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("/api/v1/openapi.json"));
}

#[test]
fn sync_translates_and_speaks_a_short_clip() {
    let server = Server::start(&[]);
    let r = server.post(
        "/api/v1/translate/sync?source_lang=en&target_lang=pt&tts=true",
        "audio/wav",
        &jfk(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_jfk(body["transcript"].as_str().unwrap());
    assert_eq!(body["language"], "en");
    let translation = body["translation"].as_str().unwrap().to_lowercase();
    assert!(translation.contains("país"), "{translation}");
    let segments = body["segments"].as_array().unwrap();
    assert!(!segments.is_empty());
    let mut last_end = 0.0;
    for s in segments {
        let (start, end) = (s["start"].as_f64().unwrap(), s["end"].as_f64().unwrap());
        assert!(
            start >= last_end - 0.05 && end > start && end <= 11.1,
            "{segments:?}"
        );
        assert!(s["translation"].as_str().is_some_and(|t| !t.is_empty()));
        last_end = end;
    }
    let wav = base64::engine::general_purpose::STANDARD
        .decode(body["audio_base64"].as_str().unwrap())
        .unwrap();
    let speech = tolk_models::audio::decode_wav(&wav).unwrap();
    assert!(
        speech.duration_ms() > 2000,
        "{} ms of speech",
        speech.duration_ms()
    );
    assert!(body["processing_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        body["metadata"]["duration_seconds"]
            .as_f64()
            .unwrap()
            .round(),
        11.0
    );
    assert!(body["metadata"]["translation_route"]
        .as_str()
        .unwrap()
        .contains("bergamot"));

    // The same clip as a form field, language detected, no translation.
    let (content_type, form) = multipart("audio", &jfk());
    let r = server.post("/api/v1/translate/sync", &content_type, &form);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_jfk(body["transcript"].as_str().unwrap());
    assert_eq!(body["language"], "en");
    assert!(
        body.get("translation").is_none() && body.get("audio_base64").is_none(),
        "{body}"
    );

    // Spanish speech, detected, to Portuguese through the English pivot.
    let es = std::fs::read(testdata("es/conteo.wav")).unwrap();
    let r = server.post("/api/v1/translate/sync?target_lang=pt", "audio/wav", &es);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["language"], "es", "{body}");
    assert!(
        body["metadata"]["translation_route"]
            .as_str()
            .unwrap()
            .contains("→en"),
        "{body}"
    );
    assert!(!body["translation"].as_str().unwrap().is_empty());
}

#[test]
fn a_job_runs_through_to_its_audio() {
    let server = Server::start(&[]);
    let r = server.post(
        "/api/v1/translate?source_lang=en&target_lang=pt&tts=true",
        "audio/wav",
        &jfk(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let accepted = r.json();
    let id = accepted["workflow_id"].as_str().unwrap().to_string();
    assert_eq!(accepted["status"], "queued");
    assert_eq!(
        accepted["status_url"],
        format!("/api/v1/translate/status/{id}")
    );
    assert!(accepted["estimated_seconds"].as_f64().unwrap() > 0.0);

    // A second job, queued behind the first (one job worker): its result is not ready.
    let r = server.post("/api/v1/translate?source_lang=en", "audio/wav", &jfk());
    assert_eq!(r.status, 202, "{}", r.text());
    let second = r.json()["workflow_id"].as_str().unwrap().to_string();
    server
        .request(
            "GET",
            &format!("/api/v1/translate/result/{second}"),
            &[],
            b"",
        )
        .assert_error(409, "job_not_ready");

    let (status, seen) = wait_for_job(&server, &id, Duration::from_secs(120));
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["progress"], 100);
    let progress: Vec<u64> = seen
        .iter()
        .map(|s| s["progress"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {progress:?}"
    );
    for s in &seen {
        for key in ["created_at", "updated_at", "expires_at"] {
            assert!(s[key].as_str().unwrap().ends_with('Z'), "{key}: {s}");
        }
    }

    let r = server.request("GET", &format!("/api/v1/translate/result/{id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let result = r.json();
    assert_jfk(result["transcript"].as_str().unwrap());
    assert!(result["translation"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("país"));
    assert_eq!(
        result["audio_url"],
        format!("/api/v1/translate/result/{id}/audio")
    );
    assert_eq!(result, status["result"]);

    let r = server.request(
        "GET",
        &format!("/api/v1/translate/result/{id}/audio"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("audio/wav"));
    let speech = tolk_models::audio::decode_wav(&r.body).unwrap();
    let seconds = result["metadata"]["audio_seconds"].as_f64().unwrap();
    assert!((speech.duration_ms() as f64 / 1000.0 - seconds).abs() < 0.05 && seconds > 2.0);

    let (status, _) = wait_for_job(&server, &second, Duration::from_secs(120));
    assert_eq!(status["status"], "completed");
    assert!(status["result"].get("translation").is_none());
    let r = server.request(
        "GET",
        &format!("/api/v1/translate/result/{second}/audio"),
        &[],
        b"",
    );
    assert!(r.assert_error(404, "not_found").contains("tts"));
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    // No workers: accepted jobs stay queued.
    let server = Server::start(&["--job-workers", "0", "--job-queue-capacity", "1"]);
    let r = server.post("/api/v1/translate", "audio/wav", &jfk());
    assert_eq!(r.status, 202, "{}", r.text());
    let r = server.post("/api/v1/translate", "audio/wav", &jfk());
    r.assert_error(503, "overloaded");
    assert!(r.header("retry-after").is_some());
    assert_eq!(server.metric("tolk_jobs_queued"), 1.0);
}

#[test]
fn uploads_beyond_the_limit_are_refused_while_one_is_being_read() {
    let server = Server::start(&["--max-uploads", "1"]);
    // An upload that declares 1 MB and sends 10 bytes holds the only slot...
    let mut slow = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        slow,
        "POST /api/v1/translate/sync HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\nContent-Length: 1000000\r\n\r\nRIFF012345"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...so the next is refused at once, with nothing read.
    let r = server.post("/api/v1/translate/sync", "audio/wav", &jfk());
    assert!(r
        .assert_error(503, "overloaded")
        .contains("requests with audio"));
    assert!(r.header("retry-after").is_some());
    // Once it goes away, the slot is free again.
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let r = server.post("/api/v1/translate/sync?source_lang=en", "audio/wav", &jfk());
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_job_of_silence_completes_with_no_words() {
    let server = Server::start(&[]);
    let r = server.post(
        "/api/v1/translate?source_lang=en",
        "audio/wav",
        &silence(5.0),
    );
    let id = r.json()["workflow_id"].as_str().unwrap().to_string();
    let (status, _) = wait_for_job(&server, &id, Duration::from_secs(60));
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(status["result"]["transcript"], "");
    assert_eq!(status["result"]["segments"].as_array().unwrap().len(), 0);
}

/// A one-thread HTTP receiver: answers the i-th request with `statuses[i]` (then 200) and
/// sends each (headers, body) down a channel.
/// One received request: its header lines and body.
type Delivery = (Vec<String>, Vec<u8>);

fn receiver(statuses: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                headers.push(line.trim().to_string());
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = statuses.get(i).copied().unwrap_or(200);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send((headers, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn callbacks_are_signed_and_retried() {
    let secret = "s3cret-for-tests";
    let server = Server::start(&[
        "--callback-secret",
        secret,
        "--callback-allow-private",
        "--callback-backoff-ms",
        "200",
    ]);
    let (url, requests) = receiver(vec![500]);
    let r = server.post(
        &format!("/api/v1/translate?source_lang=en&callback_url={url}"),
        "audio/wav",
        &jfk(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["workflow_id"].as_str().unwrap().to_string();

    let first = requests
        .recv_timeout(Duration::from_secs(120))
        .expect("first delivery");
    let second = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("a retry after a 500");
    let header = |headers: &[String], name: &str| {
        headers
            .iter()
            .find_map(|h| {
                h.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
    };
    assert_eq!(
        header(&first.0, "x-tolk-delivery"),
        header(&second.0, "x-tolk-delivery")
    );
    assert_eq!(header(&second.0, "x-tolk-event"), "job.completed");
    let signature = header(&second.0, "x-tolk-signature");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(tolk::jobs::callback::verify(
        secret.as_bytes(),
        &signature,
        &second.1,
        now,
        300
    ));
    assert!(!tolk::jobs::callback::verify(
        b"wrong", &signature, &second.1, now, 300
    ));
    let payload: Value = serde_json::from_slice(&second.1).unwrap();
    assert_eq!(payload["workflow_id"], id.as_str());
    assert_eq!(payload["status"], "completed");
    assert_jfk(payload["result"]["transcript"].as_str().unwrap());

    // The record tells how delivery went.
    let start = Instant::now();
    loop {
        let status = server
            .request("GET", &format!("/api/v1/translate/status/{id}"), &[], b"")
            .json();
        if status["callback"]["delivered"] == true {
            assert_eq!(status["callback"]["attempts"], 2, "{status}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A loopback target is refused on a server not configured for it.
    let strict = Server::start(&["--callback-secret", secret, "--job-workers", "0"]);
    let r = strict.post(
        &format!("/api/v1/translate?callback_url={url}"),
        "audio/wav",
        &jfk(),
    );
    r.assert_error(400, "invalid_request");
}
