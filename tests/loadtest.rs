//! The load tester against a real server: what it counts must be what happened.

mod common;

use std::time::Duration;

use common::{testdata, Server};
use tolk_loadtest::audio::Clip;
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
