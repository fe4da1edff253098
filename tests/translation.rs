//! Translation end to end: `tolk translate`, `GET /api/v1/languages`, and a stream
//! translated while it is spoken.

mod common;

use std::time::Duration;

use common::{run, testdata, Server};
use serde_json::{json, Value};
use tungstenite::Message;

fn translate(from: &str, to: &str, text: &str) -> String {
    let (code, out, err) = run(&["translate", "--from", from, "--to", to, text]);
    assert_eq!(code, 0, "{from}→{to}: {err}");
    out.to_lowercase()
}

#[test]
fn known_sentences_translate_with_their_key_words() {
    let pt = translate("en", "pt", "The house is big and the cat is black.");
    assert!(pt.contains("casa") && pt.contains("gato"), "en→pt: {pt}");
    let en = translate("pt", "en", "Eu gosto de comer pão.");
    assert!(en.contains("bread"), "pt→en: {en}");
    let es = translate("en", "es", "The dog eats the apple.");
    assert!(
        es.contains("perro") && es.contains("manzana"),
        "en→es: {es}"
    );
    let en = translate("es", "en", "El perro come la manzana.");
    assert!(en.contains("dog") && en.contains("apple"), "es→en: {en}");
    // No es→pt model: es→en (Apertium) then en→pt (Bergamot).
    let pt = translate("es", "pt", "El perro come la manzana.");
    assert!(pt.contains("cão") || pt.contains("cachorro"), "es→pt: {pt}");
    // Unknown words never carry Apertium's marks.
    let es = translate("en", "es", "Zorblax sees the vessel.");
    assert!(!es.contains(['*', '#', '@']), "{es}");

    let (code, _, err) = run(&["translate", "--from", "de", "--to", "pt", "Hallo"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no translation from 'de' to 'pt'") && err.contains("en→pt (bergamot)"),
        "{err}"
    );
}

#[test]
fn languages_lists_pairs_with_their_engines_and_pivots() {
    let server = Server::start(&[]);
    let (status, body) = server.get("/api/v1/languages");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let has = |key: &str, lang: &str| v[key].as_array().unwrap().iter().any(|l| l == lang);
    assert!(
        has("source_languages", "es")
            && has("source_languages", "pt")
            && has("target_languages", "pt")
    );
    let pair = |s: &str, t: &str| {
        v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["source"] == s && p["target"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {s}→{t} in {body}"))
    };
    assert_eq!(pair("en", "pt")["backends"], json!(["bergamot"]));
    assert_eq!(pair("es", "en")["backends"], json!(["apertium"]));
    assert_eq!(pair("*", "en")["backends"], json!(["whisper"]));
    let pivot = pair("es", "pt");
    assert_eq!(
        (pivot["backends"].clone(), pivot["via"].clone()),
        (json!(["apertium", "bergamot"]), json!("en"))
    );
}

/// The whole JFK clip at 1.4x real time (within the pacing limit, and quicker), then
/// `end_stream`.
fn send_jfk_and_end<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) {
    let wav = std::fs::read(testdata("jfk.wav")).unwrap();
    for frame in wav[44..].chunks(3200) {
        ws.send(Message::binary(frame.to_vec())).unwrap();
        std::thread::sleep(Duration::from_millis(70));
    }
    ws.send(Message::text(json!({"type": "end_stream"}).to_string()))
        .unwrap();
}

#[test]
fn a_stream_is_translated_segment_by_segment() {
    let server = Server::start(&[]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/translate", server.addr)).unwrap();
    let next = |ws: &mut tungstenite::WebSocket<_>| -> Value {
        loop {
            if let Message::Text(t) = ws.read().expect("read") {
                return serde_json::from_str(&t).unwrap();
            }
        }
    };
    assert_eq!(next(&mut ws)["type"], "connected");
    ws.send(Message::text(
        json!({"type": "start_stream", "source_lang": "en", "target_lang": "pt", "interim_results": false,
               "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}})
        .to_string(),
    ))
    .unwrap();
    assert_eq!(next(&mut ws)["type"], "stream_ready");
    send_jfk_and_end(&mut ws);
    let mut finals = Vec::new();
    let final_result = loop {
        let m = next(&mut ws);
        match m["type"].as_str() {
            Some("partial_result") => finals.push(m),
            Some("final_result") => break m,
            Some("error") => panic!("error: {m}"),
            _ => {}
        }
    };
    assert!(!finals.is_empty());
    for f in &finals {
        assert_eq!(f["is_final"], true, "interim results were turned off: {f}");
        let t = f["translation"]
            .as_str()
            .unwrap_or_else(|| panic!("final without translation: {f}"));
        assert!(
            !t.is_empty() && t != f["transcript"].as_str().unwrap(),
            "{f}"
        );
    }
    let all = final_result["final_translation"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        all.contains("país") && all.contains("americanos"),
        "final translation: {all}"
    );
    let segments = final_result["segments"].as_array().unwrap();
    assert!(
        segments.iter().all(|s| s["translation"].is_string()),
        "{final_result}"
    );
}

#[test]
fn a_translated_stream_is_spoken_segment_by_segment() {
    let server = Server::start(&[]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/translate", server.addr)).unwrap();
    ws.send(Message::text(
        json!({"type": "start_stream", "source_lang": "en", "target_lang": "pt", "tts": true,
               "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}})
        .to_string(),
    ))
    .unwrap();
    send_jfk_and_end(&mut ws);
    // Every tts_audio header is followed by a binary frame of exactly its length.
    let mut expecting: Option<Value> = None;
    let mut spoken = Vec::new();
    let mut committed = 0;
    loop {
        match ws.read().expect("read") {
            Message::Binary(bytes) => {
                let header = expecting.take().expect("audio without a tts_audio header");
                assert_eq!(
                    bytes.len() as u64,
                    header["bytes"].as_u64().unwrap(),
                    "{header}"
                );
                let seconds = bytes.len() as f64 / 2.0 / header["sample_rate"].as_f64().unwrap();
                assert!(seconds > 0.3, "{seconds} s of speech for {header}");
                // Playable: not silence.
                let peak = bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs())
                    .max();
                assert!(peak.unwrap_or(0) > 3000, "silent audio for {header}");
                spoken.push(header);
            }
            Message::Text(t) => {
                let m: Value = serde_json::from_str(&t).unwrap();
                assert!(
                    expecting.is_none(),
                    "{m} came between a tts_audio header and its audio"
                );
                match m["type"].as_str() {
                    Some("tts_audio") => expecting = Some(m),
                    Some("partial_result") if m["is_final"] == true => committed += 1,
                    Some("error") => panic!("error: {m}"),
                    Some("session_complete") => break,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // Every committed segment is spoken (sentence by sentence: at least once each).
    let mut ids: Vec<u64> = spoken
        .iter()
        .map(|h| h["segment_id"].as_u64().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(
        ids.len(),
        committed,
        "spoken segments {ids:?} of {committed} committed"
    );
    let text: String = spoken
        .iter()
        .map(|h| h["text"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(
        text.contains("país"),
        "speech is the Portuguese translation: {text}"
    );
}

#[test]
fn a_pivoted_stream_says_so_in_its_final_result() {
    let server = Server::start(&[]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/translate", server.addr)).unwrap();
    ws.send(Message::text(
        json!({"type": "start_stream", "source_lang": "es", "target_lang": "pt", "interim_results": false,
               "audio_format": {"encoding": "pcm_f32le", "sample_rate": 16000, "channels": 1}})
        .to_string(),
    ))
    .unwrap();
    // "El veloz murciélago hindú comía feliz cardillo y kiwi." (16 kHz float WAV).
    let wav = std::fs::read(testdata("es/pangrama.wav")).unwrap();
    let data = wav.windows(4).position(|w| w == b"data").unwrap() + 8;
    for frame in wav[data..].chunks(6400) {
        ws.send(Message::binary(frame.to_vec())).unwrap();
        std::thread::sleep(Duration::from_millis(70));
    }
    ws.send(Message::text(json!({"type": "end_stream"}).to_string()))
        .unwrap();
    let final_result = loop {
        if let Message::Text(t) = ws.read().unwrap() {
            let m: Value = serde_json::from_str(&t).unwrap();
            assert_ne!(m["type"], "error", "{m}");
            if m["type"] == "final_result" {
                break m;
            }
        }
    };
    let route = final_result["translation_route"]
        .as_str()
        .unwrap_or_else(|| panic!("no route: {final_result}"));
    assert_eq!(route, "es→en (apertium) →pt (bergamot)");
    let pt = final_result["final_translation"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        pt.contains("kiwi") && pt.contains("feliz"),
        "Portuguese: {pt}"
    );
}
