//! `tolk serve` over a real socket: /healthz, /api/v1/models, /metrics and its logs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::ws::Client;
use common::{scratch, testdata, tolk, Server};
use serde_json::{json, Value};

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
    // `auto` in a build without CUDA, with an ONNX Runtime without its CUDA provider.
    assert_eq!(listing["devices"], json!({"asr": "cpu", "onnx": "cpu"}));
}

/// A GPU asked for and not there is an error at start that says what is missing, not a
/// quiet fall-back to the CPU.
#[test]
fn a_gpu_that_cannot_be_had_stops_the_server_at_start() {
    let (code, _, stderr) =
        common::run(&["serve", "--bind", "127.0.0.1:0", "--asr-device", "cuda:0"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("whisper on cuda:0: this tolk was built without CUDA"),
        "{stderr}"
    );
    let (code, _, stderr) =
        common::run(&["serve", "--bind", "127.0.0.1:0", "--onnx-device", "cuda"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("onnxruntime on cuda:0: the ONNX Runtime library in the models directory has no CUDA provider"),
        "{stderr}"
    );
    let (code, _, stderr) = common::run(&["serve", "--asr-device", "gpu"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown device 'gpu'"), "{stderr}");
}

/// A JFK stream translated and spoken moves every metric it should, and with
/// `--log-format json` every log line is JSON and every line about the session names it.
#[test]
fn metrics_move_with_a_real_stream_and_json_logs_name_the_session() {
    let log = scratch("json-logs").join("stderr.log");
    let mut child = tolk()
        .args(["serve", "--bind", "127.0.0.1:0", "--log-format", "json"])
        .env("RUST_LOG", "debug,whisper_rs=warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("tolk listening on http://")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_string();
    let server = Server::attach(child, addr);
    let before = |name: &str| server.metric(name);
    assert_eq!(before("tolk_audio_seconds_total{api=\"ws\"}"), 0.0);
    assert_eq!(before("tolk_asr_inference_seconds_count"), 0.0);

    let samples = tolk_models::audio::read_wav(&testdata("jfk.wav"))
        .unwrap()
        .samples;
    let mut client = Client::connect(&server);
    client.send(json!({"type": "no_such_message"}));
    client.wait_for("error", Duration::from_secs(5));
    client.send(json!({
        "type": "start_stream", "source_lang": "en", "target_lang": "pt", "tts": true,
        "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
    }));
    client.wait_for("stream_ready", Duration::from_secs(5));
    client.stream_realtime(&samples);
    client.send(json!({"type": "end_stream"}));
    let complete = client.wait_for("session_complete", Duration::from_secs(60));
    let session_id = complete["session_id"].as_str().unwrap().to_string();
    let committed = client
        .of_type("partial_result")
        .iter()
        .filter(|r| r["is_final"] == true)
        .count();
    let spoken = client.of_type("tts_audio").len();

    let m = |name: &str| server.metric(name);
    let audio = m("tolk_audio_seconds_total{api=\"ws\"}");
    assert!((audio - 11.0).abs() < 0.1, "audio seconds {audio}");
    assert!(m("tolk_asr_inference_seconds_count") >= committed as f64);
    assert!(m("tolk_asr_inference_seconds_sum") > 0.0);
    assert_eq!(
        m("tolk_asr_inference_seconds_bucket{le=\"+Inf\"}"),
        m("tolk_asr_inference_seconds_count")
    );
    assert!(m("tolk_vad_inference_seconds_count") > 0.0);
    assert!(m("tolk_translation_seconds_count") >= committed as f64);
    assert!(m("tolk_tts_seconds_count") >= spoken as f64);
    assert_eq!(
        m("tolk_results_total{kind=\"committed\"}"),
        committed as f64
    );
    assert_eq!(m("tolk_results_total{kind=\"final\"}"), 1.0);
    assert_eq!(m("tolk_results_total{kind=\"speech\"}"), spoken as f64);
    assert!(m("tolk_results_total{kind=\"interim\"}") > 0.0);
    assert_eq!(
        m("tolk_errors_total{api=\"ws\",code=\"invalid_message\"}"),
        1.0
    );
    assert_eq!(m("tolk_pool_queue_depth{pool=\"asr\",lane=\"high\"}"), 0.0);
    assert_eq!(m("tolk_pool_workers{pool=\"tts\"}"), 1.0);
    let (status, _) = server.get("/api/v1/nothing-here");
    assert_eq!(status, 404);
    assert_eq!(m("tolk_errors_total{api=\"http\",code=\"not_found\"}"), 1.0);
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    drop(server);

    let text = std::fs::read_to_string(&log).unwrap();
    let mut about_session = 0;
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            entry["timestamp"].is_string() && entry["level"].is_string(),
            "{line}"
        );
        if entry["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("tolk::ws"))
        {
            assert!(
                entry["session"].is_string(),
                "a session line without its id: {line}"
            );
        }
        if entry["session"] == session_id.as_str() {
            about_session += 1;
        }
    }
    // Opened, stream started, stream complete, closed at least.
    assert!(
        about_session >= 4,
        "{about_session} lines name {session_id}:\n{text}"
    );
}
