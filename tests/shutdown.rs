//! Graceful shutdown of the real `tolk serve` on SIGTERM: a stream in flight still gets its
//! final result and a 1001 close; a running job is finished within the deadline, or given
//! back to the (Redis) queue for another instance when the deadline is too short.

mod common;

use std::time::{Duration, Instant};

use common::ws::Client;
use common::{normalize, testdata, Redis, Server};
use serde_json::Value;

fn jfk() -> Vec<f32> {
    tolk_models::audio::read_wav(&testdata("jfk.wav"))
        .unwrap()
        .samples
}

#[test]
fn sigterm_mid_stream_delivers_the_final_result_and_closes_with_1001() {
    let mut server = Server::start(&["--shutdown-timeout-seconds", "20"]);
    let mut client = Client::connect(&server);
    client.start_stream("en");
    // "And so my fellow Americans, ask not what your country can do for you," …
    let samples = jfk();
    client.stream_realtime(&samples[..16_000 * 8]);

    server.terminate();
    let signalled = Instant::now();
    let last = client.wait_for("final_result", Duration::from_secs(20));
    let transcript = normalize(last["complete_transcript"].as_str().unwrap());
    for words in [
        "fellow americans",
        "ask not what your country can do for you",
    ] {
        assert!(
            transcript.contains(words),
            "{words:?} not in {transcript:?}"
        );
    }
    client.wait_for("session_complete", Duration::from_secs(5));
    while !client.closed {
        assert!(signalled.elapsed() < Duration::from_secs(20), "no close");
        client.drain();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(client.close_code, Some(1001), "going away");
    // Nothing after the final but the close: no error for the server's own finalize.
    assert!(
        client.of_type("error").is_empty(),
        "{:?}",
        client.of_type("error")
    );

    // No new connections meanwhile; the process exits well within its deadline.
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("exited within the shutdown timeout");
    assert!(status.success(), "{status}");
    assert!(
        Client::connect_to(&format!("ws://{}/ws/translate", server.addr), &[]).is_err(),
        "still accepting after shutdown"
    );
}

/// A 33 s clip (JFK three times): long enough to be caught running.
fn long_clip() -> Vec<u8> {
    let samples = jfk();
    let mut cursor = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
    for _ in 0..3 {
        for s in &samples {
            w.write_sample((s * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    cursor.into_inner()
}

fn status(server: &Server, id: &str) -> Value {
    server
        .request("GET", &format!("/api/v1/translate/status/{id}"), &[], b"")
        .json()
}

/// Submit the long clip to `server`; returns once a worker is running it.
fn submit_and_wait_until_running(server: &Server) -> String {
    let r = server.post(
        "/api/v1/translate?source_lang=en",
        "audio/wav",
        &long_clip(),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["workflow_id"].as_str().unwrap().to_string();
    let start = Instant::now();
    while status(server, &id)["status"] != "processing" {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            status(server, &id)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    id
}

#[test]
fn sigterm_finishes_a_running_job_or_gives_it_back_to_the_queue() {
    let redis = Redis::start();
    let shared = ["--redis-url", redis.url.as_str(), "--redis-prefix", "sd"];
    let with = |extra: &[&str]| Server::start(&[&shared[..], extra].concat());
    // Only answers polls.
    let front = with(&["--job-workers", "0"]);

    // Plenty of time: the job is finished before the process exits.
    let mut patient = with(&[
        "--instance-id",
        "patient",
        "--shutdown-timeout-seconds",
        "60",
    ]);
    let id = submit_and_wait_until_running(&patient);
    patient.terminate();
    let status_code = patient.wait_exit(Duration::from_secs(60)).expect("exited");
    assert!(status_code.success(), "{status_code}");
    let done = status(&front, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["metadata"]["processed_by"], "patient");

    // One second of grace (less than the 2 s release margin): the job goes back at once.
    let mut hasty = with(&["--instance-id", "hasty", "--shutdown-timeout-seconds", "1"]);
    let id = submit_and_wait_until_running(&hasty);
    hasty.terminate();
    let exited = Instant::now();
    hasty.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(
        exited.elapsed() < Duration::from_secs(5),
        "{:?}",
        exited.elapsed()
    );
    let back = status(&front, &id);
    assert_eq!(back["status"], "queued", "{back}");
    assert_eq!(back["progress"], 0, "{back}");

    // Another instance takes it at once (not after the claim timeout) and completes it.
    let heir = with(&["--instance-id", "heir"]);
    let start = Instant::now();
    let done = loop {
        let s = status(&front, &id);
        if s["status"] == "completed" || s["status"] == "failed" {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["metadata"]["processed_by"], "heir");
    let transcript = normalize(done["result"]["transcript"].as_str().unwrap());
    assert_eq!(
        transcript.matches("fellow americans").count(),
        3,
        "{transcript}"
    );
    drop(heir);
}
