//! Streaming over the real WebSocket endpoint, with the real models, at real-time pace.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::ws::Client;
use common::{normalize, testdata, word_errors, Server, JFK_WORDS};
use serde_json::{json, Value};
use tolk_models::audio::read_wav;
use tungstenite::Message;

fn clip(name: &str) -> Vec<f32> {
    read_wav(&testdata(name)).unwrap().samples
}

/// Stream a clip with half a second of silence after it, end the stream, and return
/// (final transcript from committed segments, final_result, session_complete, client).
fn stream_clip(server: &Server, samples: &[f32], lang: &str) -> (String, Value, Value, Client) {
    let mut client = Client::connect(server);
    client.start_stream(lang);
    let mut audio = samples.to_vec();
    audio.extend(std::iter::repeat_n(0.0, 8_000));
    client.stream_realtime(&audio);
    client.send(json!({"type": "end_stream"}));
    let final_result = client.wait_for("final_result", Duration::from_secs(30));
    let complete = client.wait_for("session_complete", Duration::from_secs(5));
    let finals: Vec<String> = client
        .of_type("partial_result")
        .into_iter()
        .filter(|m| m["is_final"] == true)
        .map(|m| m["transcript"].as_str().unwrap().to_string())
        .collect();
    (finals.join(" "), final_result, complete, client)
}

#[test]
fn jfk_streamed_in_real_time_gives_partials_then_the_right_finals() {
    let server = Server::start(&[]);
    let jfk = clip("jfk.wav");
    let mut client = Client::connect(&server);
    client.start_stream("en");
    let started = Instant::now();
    client.stream_realtime(&jfk);
    let audio_end = Instant::now();
    client.stream_realtime(&vec![0.0; 8_000]);
    client.send(json!({"type": "end_stream"}));
    let final_result = client.wait_for("final_result", Duration::from_secs(30));
    let complete = client.wait_for("session_complete", Duration::from_secs(5));

    let results: Vec<(Instant, Value)> = client
        .received
        .iter()
        .filter(|(_, m)| m["type"] == "partial_result")
        .cloned()
        .collect();
    let first_partial = results
        .iter()
        .find(|(_, m)| m["is_final"] == false)
        .expect("at least one partial");
    assert!(
        first_partial.0 < audio_end,
        "first partial came after the audio ended"
    );
    eprintln!(
        "first partial {:?} after the first frame",
        first_partial.0 - started
    );

    // Committed segments: each id once, in order, never revised.
    let finals: Vec<&Value> = results
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m["is_final"] == true)
        .collect();
    let ids: Vec<u64> = finals
        .iter()
        .map(|m| m["segment_id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "segment ids {ids:?}");
    let text = normalize(
        &finals
            .iter()
            .map(|m| m["transcript"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let errors = word_errors(&text, JFK_WORDS);
    assert!(errors * 10 <= 22, "WER {errors}/22 > 10 %: {text}");
    // A partial is never sent for a segment already committed.
    for (i, (_, m)) in results.iter().enumerate() {
        if m["is_final"] == true {
            let id = &m["segment_id"];
            assert!(
                results[i + 1..]
                    .iter()
                    .all(|(_, later)| &later["segment_id"] != id),
                "segment {id} revised"
            );
        }
    }

    assert_eq!(
        normalize(final_result["complete_transcript"].as_str().unwrap()),
        text
    );
    assert_eq!(final_result["language"], "en");
    assert_eq!(
        final_result["segments"].as_array().unwrap().len(),
        finals.len()
    );
    let audio_seconds = complete["usage"]["audio_seconds"].as_f64().unwrap();
    assert!(
        (audio_seconds - 11.5).abs() < 0.05,
        "usage counts {audio_seconds} s of audio, streamed 11.5 s"
    );
    assert!(complete["usage"]["asr_seconds"].as_f64().unwrap() > 0.0);
    // The server counts each final decode and its whisper time.
    let decodes = server.metric("tolk_asr_decodes_total{kind=\"final\"}");
    assert!(decodes >= 1.0, "{decodes} final decodes");
    assert!(server.metric("tolk_asr_decode_seconds_total{kind=\"final\"}") > 0.0);

    // A second stream on the same connection.
    client.start_stream("en");
    client.send(json!({"type": "end_stream"}));
    let empty = client.wait_for("final_result", Duration::from_secs(5));
    assert_eq!(empty["complete_transcript"], "");
    client.wait_for("session_complete", Duration::from_secs(5));
}

#[test]
fn four_concurrent_sessions_get_their_own_transcripts() {
    let server = Server::start(&[]);
    let cases = [
        ("jfk.wav", "en", JFK_WORDS),
        (
            "en/quick_brown_fox.wav",
            "en",
            "the quick brown fox jumps over the lazy dog",
        ),
        (
            "es/pangrama.wav",
            "es",
            "el veloz murciélago hindú comía feliz cardillo y kiwi",
        ),
        (
            "es/conteo.wav",
            "es",
            "uno dos tres cuatro cinco seis siete ocho nueve diez",
        ),
    ];
    let results: Vec<(String, String, &str)> = thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(file, lang, reference)| {
                let server = &server;
                scope.spawn(move || {
                    let (text, final_result, _, _) = stream_clip(server, &clip(file), lang);
                    assert_eq!(final_result["language"], lang);
                    (file.to_string(), normalize(&text), reference)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (file, text, reference) in results {
        let words = reference.split(' ').count();
        let errors = word_errors(&text, reference);
        // Spanish counting may come back as digits; the other clips must be near exact.
        if file.contains("conteo") {
            assert!(text.contains("uno") || text.contains('1'), "{file}: {text}");
        } else if file.contains("pangrama") {
            assert!(
                text.contains("feliz") && text.contains("kiwi"),
                "{file}: {text}"
            );
        } else {
            assert!(
                errors * 10 <= words,
                "{file}: {errors}/{words} word errors: {text}"
            );
        }
    }
}

/// The error a message provokes.
fn error_after(client: &mut Client, send: impl FnOnce(&mut Client)) -> Value {
    send(client);
    client.wait_for("error", Duration::from_secs(5))
}

#[test]
fn every_bad_input_gets_its_error_code() {
    let server = Server::start(&["--max-frame-bytes", "16000"]);
    let mut c = Client::connect(&server);
    let e = error_after(&mut c, |c| {
        c.ws.send(Message::text("this is not json")).unwrap()
    });
    assert_eq!(
        (e["code"].as_str(), e["retryable"].as_bool()),
        (Some("invalid_message"), Some(false))
    );
    let e = error_after(&mut c, |c| c.send(json!({"type": "launch_rockets"})));
    assert_eq!(e["code"], "invalid_message");
    let e = error_after(&mut c, |c| c.send_binary(vec![0; 3200]));
    assert_eq!(e["code"], "stream_not_started");
    let e = error_after(&mut c, |c| c.send(json!({"type": "end_stream"})));
    assert_eq!(e["code"], "stream_not_started");
    let e = error_after(&mut c, |c| {
        c.send(json!({"type": "start_stream", "source_lang": "en",
            "audio_format": {"encoding": "pcm_s16le", "sample_rate": 96000, "channels": 1}}))
    });
    assert_eq!(e["code"], "unsupported_audio_format");
    let e = error_after(&mut c, |c| {
        c.send(json!({"type": "start_stream", "source_lang": "en",
            "audio_format": {"encoding": "mp3", "sample_rate": 16000, "channels": 1}}))
    });
    assert_eq!(
        e["code"], "invalid_message",
        "unknown encodings fail to parse: {e}"
    );
    let e = error_after(&mut c, |c| {
        c.send(json!({"type": "start_stream", "source_lang": "xx",
            "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}}))
    });
    assert_eq!(e["code"], "unsupported_language");
    assert!(
        e["message"].as_str().unwrap().contains("es"),
        "lists what is available: {e}"
    );
    let e = error_after(&mut c, |c| {
        c.send(
            json!({"type": "start_stream", "source_lang": "en", "target_lang": "xx",
            "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}}),
        )
    });
    assert_eq!(e["code"], "unsupported_language");

    c.start_stream("en");
    let e = error_after(&mut c, |c| c.start_stream_raw());
    assert_eq!(e["code"], "stream_already_started");
    let e = error_after(&mut c, |c| c.send_binary(vec![0; 3201]));
    assert_eq!(e["code"], "unsupported_audio_format", "half a sample: {e}");
    let e = error_after(&mut c, |c| c.send_binary(vec![0; 16_002]));
    assert_eq!(e["code"], "frame_too_large");
    let e = error_after(&mut c, |c| {
        c.send(json!({"type": "audio_chunk", "chunk_id": 1, "audio_data": "%%%"}))
    });
    assert_eq!(e["code"], "invalid_message");
    // Ten seconds of audio at once: far ahead of real time.
    let e = error_after(&mut c, |c| {
        for _ in 0..100 {
            c.send_binary(vec![0; 3200]);
        }
    });
    assert_eq!(
        (e["code"].as_str(), e["retryable"].as_bool()),
        (Some("too_fast"), Some(true))
    );
    // The stream still completes, and audio_chunk works as binary frames do.
    c.send(
        json!({"type": "audio_chunk", "chunk_id": 2, "audio_data": "AAAAAA==", "is_final": true}),
    );
    c.wait_for("final_result", Duration::from_secs(10));
    c.wait_for("session_complete", Duration::from_secs(5));
    c.send(json!({"type": "ping", "id": 7}));
    assert_eq!(c.wait_for("pong", Duration::from_secs(5))["id"], 7);

    // A flood of text messages: past the burst, each is discarded with too_fast.
    c.drain();
    c.received.clear();
    for id in 0..300 {
        c.send(json!({"type": "ping", "id": id}));
    }
    let start = std::time::Instant::now();
    while c.of_type("pong").len() + c.of_type("error").len() < 300 {
        assert!(start.elapsed() < Duration::from_secs(10), "answers missing");
        c.drain();
    }
    let pongs = c.of_type("pong").len();
    let refused = c.of_type("error");
    // The burst (100, less what the messages above used) and the refill meanwhile.
    assert!((80..150).contains(&pongs), "{pongs} pings answered");
    assert!(
        refused.iter().all(|e| e["code"] == "too_fast"),
        "{refused:?}"
    );
    // The bucket refills: a second later pings are answered again.
    std::thread::sleep(Duration::from_secs(1));
    c.send(json!({"type": "ping", "id": 1000}));
    let start = std::time::Instant::now();
    while !c.of_type("pong").iter().any(|p| p["id"] == 1000) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no pong after the pause"
        );
        c.drain();
    }
}

impl Client {
    fn start_stream_raw(&mut self) {
        self.send(json!({"type": "start_stream", "source_lang": "en",
            "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}}));
    }
}

fn wait_for_sessions(server: &Server, n: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("tolk_sessions_active") != n {
        assert!(
            Instant::now() < deadline,
            "sessions active: {} (expected {n})",
            server.metric("tolk_sessions_active")
        );
        thread::sleep(Duration::from_millis(50));
    }
}

impl Client {
    /// The next error with `code`, skipping other errors.
    fn wait_for_error(&mut self, code: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let e = self.wait_for("error", deadline.saturating_duration_since(Instant::now()));
            if e["code"] == code {
                return e;
            }
        }
    }
}

#[test]
fn session_limit_stream_length_and_idle_timeout() {
    let server = Server::start(&[
        "--max-sessions",
        "2",
        "--ws-idle-timeout-ms",
        "1500",
        "--max-stream-seconds",
        "1",
        // Clients dropped without a close frame: their sessions wait 1 s for a resume.
        "--resume-grace-seconds",
        "1",
    ]);
    // Too many sessions: the upgrade is refused with a JSON 503.
    let a = Client::connect(&server);
    let b = Client::connect(&server);
    match tungstenite::connect(format!("ws://{}/ws/translate", server.addr)) {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "overloaded");
        }
        other => panic!("third session was not refused: {:?}", other.map(|_| ())),
    }
    assert_eq!(server.metric("tolk_sessions_active"), 2.0);
    drop((a, b));
    wait_for_sessions(&server, 0.0);

    // A stream past its maximum length is ended and still completes.
    let mut c = Client::connect(&server);
    c.start_stream("en");
    c.stream_realtime(&vec![0.0; 16_000 * 3 / 2]);
    c.wait_for_error("stream_too_long", Duration::from_secs(5));
    c.wait_for("final_result", Duration::from_secs(10));
    c.wait_for("session_complete", Duration::from_secs(5));

    // An idle session is told why and closed.
    c.wait_for_error("session_timeout", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !c.closed && Instant::now() < deadline {
        c.drain();
    }
    assert!(c.closed, "the idle session was not closed");
    drop(c);
    wait_for_sessions(&server, 0.0);
}

#[test]
fn a_client_that_stops_answering_pings_is_closed() {
    // A session whose client vanished waits for a resume: 1 s here.
    let server = Server::start(&[
        "--ws-heartbeat-ms",
        "200",
        "--ws-client-timeout-ms",
        "1000",
        "--resume-grace-seconds",
        "1",
    ]);
    let mut silent = Client::connect(&server);
    let mut alive = Client::connect(&server);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2000) {
        alive.drain(); // reading answers the server's pings
        thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive.closed, "a responsive client was closed");
    silent.drain();
    assert!(
        silent.closed,
        "a client that never answered pings is still connected after 2 s"
    );
    wait_for_sessions(&server, 1.0);
    drop(alive);
    // Nothing leaks: every session is gone once its client is.
    wait_for_sessions(&server, 0.0);
}
