//! Jobs in Redis, shared by server instances: the real `redis-server` (installed by
//! models/fetch), two real `tolk serve` processes.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{normalize, testdata, word_errors, Redis, Server, JFK_WORDS};

#[test]
fn a_job_accepted_by_one_instance_is_completed_by_another() {
    let redis = Redis::start();
    let shared = ["--redis-url", redis.url.as_str(), "--redis-prefix", "t1"];
    // `front` accepts jobs and answers polls; only `back` runs them.
    let front = Server::start(
        &[
            &shared[..],
            &["--job-workers", "0", "--instance-id", "front"],
        ]
        .concat(),
    );
    let back = Server::start(
        &[
            &shared[..],
            &["--job-workers", "1", "--instance-id", "back"],
        ]
        .concat(),
    );

    let jfk = std::fs::read(testdata("jfk.wav")).unwrap();
    let r = front.post(
        "/api/v1/translate?source_lang=en&target_lang=pt&tts=true",
        "audio/wav",
        &jfk,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["workflow_id"].as_str().unwrap().to_string();
    // The accepting instance goes away; the job does not.
    drop(front);

    let start = Instant::now();
    let status = loop {
        let status = back
            .request("GET", &format!("/api/v1/translate/status/{id}"), &[], b"")
            .json();
        if status["status"] == "completed" || status["status"] == "failed" {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["status"], "completed", "{status}");
    let result = &status["result"];
    assert_eq!(result["metadata"]["processed_by"], "back");
    let transcript = normalize(result["transcript"].as_str().unwrap());
    assert!(word_errors(&transcript, JFK_WORDS) <= 2, "{transcript}");
    assert!(result["translation"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("país"));

    // A third instance, started now, serves the result and its audio from Redis.
    let late = Server::start(&[&shared[..], &["--job-workers", "0"]].concat());
    let r = late.request(
        "GET",
        &format!("/api/v1/translate/result/{id}/audio"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        tolk_models::audio::decode_wav(&r.body)
            .unwrap()
            .duration_ms()
            > 2000
    );
    assert_eq!(late.metric("tolk_jobs_queued"), 0.0);

    // Redis gone: not ready, and polls say the store is unavailable (not "no such job").
    drop(redis);
    let r = late.request("GET", "/readyz", &[], b"");
    r.assert_error(503, "overloaded");
    let r = late.request("GET", &format!("/api/v1/translate/status/{id}"), &[], b"");
    assert!(r.assert_error(503, "overloaded").contains("unavailable"));
}

#[test]
fn a_server_with_an_unreachable_redis_refuses_to_start() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, stderr) = common::run(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--redis-url",
        &format!("redis://127.0.0.1:{port}/0"),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--redis-url"), "{stderr}");
}
