//! The load tester against a real server: what it counts must be what happened.

mod common;

use std::time::Duration;

use common::{testdata, Server};
use tolk_loadtest::audio::Clip;
use tolk_loadtest::idle::{run_idle, IdlePlan};
use tolk_loadtest::stream::StreamPlan;

fn plan(server: &Server, seconds: f64, speed: f64) -> StreamPlan {
    StreamPlan {
        url: format!("ws://{}/ws/translate", server.addr),
        duration: Duration::from_secs_f64(seconds),
        speed,
        frame_ms: 100,
        source_lang: "en".into(),
        target_lang: None,
        tts: false,
        drain_timeout: Duration::from_secs(30),
    }
}

#[test]
fn measures_real_streams() {
    let server = Server::start(&[]);
    let clip = Clip::read(&testdata("jfk.wav")).unwrap().with_silence(1000);
    let (summary, reports) =
        tolk_loadtest::run(&plan(&server, 6.0, 1.0), &clip, 2, Duration::ZERO, false);
    assert_eq!(
        (summary.streams, summary.completed, summary.dropped),
        (2, 2, 0),
        "{}",
        summary.table()
    );
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!(summary.first_partial_ms.count, 2);
    assert_eq!(summary.connect_ms.count, 2);
    for r in &reports {
        // Six seconds of JFK: "And so my fellow Americans, ask not what your country …"
        assert!(
            r.finals >= 1 && r.transcript.to_lowercase().contains("americans"),
            "{}",
            r.transcript
        );
        assert!(
            r.final_latency_ms.iter().all(|&ms| ms < 10_000.0),
            "{:?}",
            r.final_latency_ms
        );
    }
    assert!(summary.final_latency_ms.count >= 2 && summary.messages_per_s > 0.0);
}

#[test]
fn counts_refusals_and_errors_by_code() {
    let server = Server::start(&["--max-sessions", "1"]);
    let clip = Clip::read(&testdata("jfk.wav")).unwrap();
    // One session fits; the two others are refused at the upgrade with HTTP 503.
    // The one admitted sends at 4x real time and gets `too_fast` (once per burst).
    let (summary, _) =
        tolk_loadtest::run(&plan(&server, 12.0, 4.0), &clip, 3, Duration::ZERO, false);
    assert_eq!(
        summary.errors.get("http_503"),
        Some(&2),
        "{:?}",
        summary.errors
    );
    assert!(
        summary.errors.get("too_fast").is_some_and(|&n| n >= 1),
        "{:?}",
        summary.errors
    );
    assert_eq!((summary.completed, summary.dropped), (1, 2));
}

/// `--idle --streams 20 --duration 3 --json`, as the JSON line the binary prints (the
/// binary's `main` only builds this plan and prints this object; a dev-dependency's
/// binary is not built for these tests).
fn idle_json(server: &Server, connections: usize) -> serde_json::Value {
    let plan = IdlePlan::new(
        format!("ws://{}/ws/translate", server.addr),
        connections,
        Duration::from_secs(3),
    );
    let summary = run_idle(&plan, false).expect("idle run");
    let line = serde_json::to_string(&summary).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn idle_connections_are_held_and_measured() {
    let server = Server::start(&[]);
    let s = idle_json(&server, 20);
    assert_eq!(s["mode"], "idle", "{s}");
    assert_eq!(
        (s["streams"].as_u64(), s["open"].as_u64()),
        (Some(20), Some(20)),
        "{s}"
    );
    assert_eq!(s["failed"], serde_json::json!({}), "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
    assert_eq!(s["server_errors"], serde_json::json!({}), "{s}");
    // Read from the server's own gauges.
    assert_eq!(s["rss_source"], "metrics", "{s}");
    assert!(s["rss_before_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    assert!(s["rss_open_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    assert!(s["bytes_per_connection"].is_number(), "{s}");
    assert!(s["connect_s"].as_f64().is_some_and(|t| t < 10.0), "{s}");
    assert_eq!(s["sessions_active_before"], 0, "{s}");
    assert_eq!(s["sessions_active"], 20, "{s}");
    // Still all there after the 3 s hold.
    assert_eq!(s["sessions_active_before_close"], 20, "{s}");
    // Closed on the way out: the slots are free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.metric("tolk_sessions_active") > 0.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.metric("tolk_sessions_active"), 0.0);

    // At capacity the rest are refused at the upgrade, and counted by status.
    let server = Server::start(&["--max-sessions", "5"]);
    let s = idle_json(&server, 20);
    assert_eq!(s["open"], 5, "{s}");
    assert_eq!(s["failed"], serde_json::json!({ "http_503": 15 }), "{s}");
    assert_eq!(s["sessions_active"], 5, "{s}");
    assert_eq!(s["dropped"], 0, "{s}");
}
