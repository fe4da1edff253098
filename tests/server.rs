//! `tolk serve` over a real socket: /healthz and /api/v1/models.

mod common;

use common::Server;
use serde_json::Value;

#[test]
fn health_and_models_are_served() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/healthz");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );

    let (status, body) = server.get("/api/v1/models");
    assert_eq!(status, 200, "{body}");
    let listing: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = listing["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for expected in [
        "base",
        "tiny.en",
        "silero_vad",
        "en_US-joe-medium",
        "bergamot-en-pt",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    let (status, _) = server.get("/api/v1/nothing-here");
    assert_eq!(status, 404);

    // The loaded models are resident: well over 50 MB.
    let rss = server.metric("process_resident_memory_bytes");
    assert!(rss > 50e6, "resident {rss} bytes");
    assert_eq!(server.metric("tolk_asr_decodes_total{kind=\"final\"}"), 0.0);
}
