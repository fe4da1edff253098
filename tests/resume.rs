//! Resuming a session after a dropped connection (docs/protocol.md, "Resuming a session"),
//! against the real server: what was produced while the client was away is replayed, the
//! stream goes on, and a token outlives neither its grace period nor a clean close.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::ws::Client;
use common::{normalize, testdata, word_errors, Server, JFK_WORDS};
use serde_json::{json, Value};

fn jfk() -> Vec<f32> {
    tolk_models::audio::read_wav(&testdata("jfk.wav"))
        .unwrap()
        .samples
}

fn seqs(client: &Client) -> Vec<u64> {
    client
        .received
        .iter()
        .filter_map(|(_, m)| m["seq"].as_u64())
        .collect()
}

/// Status of a plain GET (a refused upgrade answers with its error before upgrading).
fn refused(server: &Server, path_and_query: &str) -> (u16, Value) {
    match Client::connect_to(&format!("ws://{}{path_and_query}", server.addr), &[]) {
        Ok(_) => panic!("{path_and_query} was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status().as_u16(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Err(e) => panic!("{path_and_query}: {e}"),
    }
}

/// Messages of `client` by seq.
fn by_seq(client: &Client) -> std::collections::BTreeMap<u64, Value> {
    client
        .received
        .iter()
        .filter_map(|(_, m)| Some((m["seq"].as_u64()?, m.clone())))
        .collect()
}

#[test]
fn a_resumed_session_gets_what_it_did_not_acknowledge_and_its_stream_goes_on() {
    let server = Server::start(&[]);
    let samples = jfk();
    let split = 16_000 * 4;

    let mut first = Client::connect(&server);
    let token = first.connected["resume_token"]
        .as_str()
        .expect("a resume token")
        .to_string();
    let session_id = first.connected["session_id"].clone();
    assert_eq!(first.connected["limits"]["resume_grace_seconds"], 30);
    first.start_stream("en");
    first.stream_realtime(&samples[..split]);
    first.drain();
    let seen = by_seq(&first);
    assert!(seen.len() >= 4, "{seen:?}");
    // Acknowledge only the first half: the rest must come again.
    let acked = *seen.keys().nth(seen.len() / 2).unwrap();
    first.send(json!({"type": "ack", "seq": acked}));
    std::thread::sleep(Duration::from_millis(100));
    // The network goes: no close frame, the socket just dies.
    drop(first);
    std::thread::sleep(Duration::from_millis(1000));

    let url = format!("ws://{}/ws/translate?resume={token}", server.addr);
    let mut second = Client::connect_to(&url, &[]).expect("resumed");
    assert_eq!(second.connected["resumed"], true);
    assert_eq!(second.connected["session_id"], session_id);
    second.drain();
    let replayed = by_seq(&second);
    assert_eq!(
        replayed.keys().next(),
        Some(&(acked + 1)),
        "replay starts after the ack"
    );
    for (seq, message) in seen.range(acked + 1..) {
        assert_eq!(
            replayed.get(seq),
            Some(message),
            "seq {seq} not replayed as sent"
        );
    }

    // The same stream takes the rest of the audio.
    second.stream_realtime(&samples[split..]);
    second.send(json!({"type": "end_stream"}));
    let last = second.wait_for("final_result", Duration::from_secs(30));
    let transcript = normalize(last["complete_transcript"].as_str().unwrap());
    assert!(
        word_errors(&transcript, JFK_WORDS) <= 2,
        "the whole speech in one stream: {transcript}"
    );
    second.wait_for("session_complete", Duration::from_secs(5));
    // Nothing lost, nothing twice: seq runs 1, 2, 3 … over both connections.
    let resumed = seqs(&second);
    let all: BTreeSet<u64> = (1..=acked).chain(resumed.iter().copied()).collect();
    let max = *all.iter().max().unwrap();
    assert_eq!(all.len() as u64, max, "a gap in seq");
    assert_eq!(
        resumed.len(),
        (max - acked) as usize,
        "a message sent twice"
    );
}

#[test]
fn results_produced_while_the_client_is_away_arrive_when_it_resumes() {
    let server = Server::start(&[]);
    let samples = jfk();
    let mut client = Client::connect(&server);
    let token = client.connected["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    client.start_stream("en");
    client.stream_realtime(&samples[..16_000 * 4]);
    client.drain();
    let last_seen = seqs(&client).into_iter().max().unwrap();
    // The last words go out with end_stream, and the connection dies at once: the final
    // decode, the committed segments and final_result all happen with no one connected.
    client.send(json!({"type": "end_stream"}));
    // Long enough for the server to read it (a close with unread data is a reset, which
    // can discard what the server had not read), far shorter than the final decode.
    std::thread::sleep(Duration::from_millis(30));
    drop(client);
    std::thread::sleep(Duration::from_secs(3));

    let url = format!(
        "ws://{}/ws/translate?resume={token}&last_seq={last_seen}",
        server.addr
    );
    let mut back = Client::connect_to(&url, &[]).expect("resumed");
    let last = back.wait_for("final_result", Duration::from_secs(5));
    let transcript = normalize(last["complete_transcript"].as_str().unwrap());
    assert!(transcript.contains("fellow americans"), "{transcript}");
    assert!(last["seq"].as_u64().unwrap() > last_seen);
    back.wait_for("session_complete", Duration::from_secs(5));
    assert!(seqs(&back).iter().all(|&s| s > last_seen));
}

#[test]
fn tokens_end_with_the_grace_period_or_a_clean_close() {
    let server = Server::start(&["--resume-grace-seconds", "1"]);
    let (status, body) = refused(&server, "/ws/translate?resume=res_nonsense");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("session_expired"))
    );

    // Dropped, and not back within the grace period.
    let client = Client::connect(&server);
    let token = client.connected["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    drop(client);
    let start = Instant::now();
    let path = format!("/ws/translate?resume={token}");
    loop {
        if let Err(tungstenite::Error::Http(r)) =
            Client::connect_to(&format!("ws://{}{path}", server.addr), &[])
        {
            assert_eq!(r.status().as_u16(), 410);
            break;
        }
        // Resumed (and dropped again) within the grace: try once more.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "token still valid"
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "ended before its grace period"
    );

    // Closed by the client: nothing to resume, at once.
    let mut client = Client::connect(&server);
    let token = client.connected["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    client.ws.close(None).unwrap();
    while !client.closed {
        client.drain();
    }
    std::thread::sleep(Duration::from_millis(100));
    let (status, _) = refused(&server, &format!("/ws/translate?resume={token}"));
    assert_eq!(status, 410);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.metric("tolk_sessions_active"), 0.0);
}

#[test]
fn resuming_can_be_turned_off() {
    let server = Server::start(&["--resume-grace-seconds", "0"]);
    let client = Client::connect(&server);
    assert!(client.connected.get("resume_token").is_none());
    assert_eq!(client.connected["limits"]["resume_grace_seconds"], 0);
    drop(client);
    let start = Instant::now();
    while server.metric("tolk_sessions_active") > 0.0 {
        assert!(start.elapsed() < Duration::from_secs(3), "session kept");
        std::thread::sleep(Duration::from_millis(50));
    }
}
