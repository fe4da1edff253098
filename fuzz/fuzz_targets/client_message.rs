//! A WebSocket text frame as the session reads it: `ClientMessage::parse`, then for an
//! `audio_chunk` the base64 of `audio_data` (`decode_audio_data`), for a `start_stream`
//! the declared audio format's checks and sizes.
//!
//! Beyond "no panic": a parse error is one line (it goes back in an `invalid_message`
//! reply and into the log), a message parsed survives a serialize/parse round trip, and
//! decoded audio is never longer than the bound the session checks before decoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk_protocol::ws::{decode_audio_data, ClientMessage};

#[global_allocator]
static ALLOC: tolk_fuzz::Counting = tolk_fuzz::Counting;

fn one_line(what: &str, e: &str, input: &str) {
    assert!(
        !e.contains(['\n', '\r']),
        "{what} error is not one line: {e:?} (input {input:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8: the WebSocket layer refuses others before the session sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (parsed, peak) = tolk_fuzz::measure(|| ClientMessage::parse(text));
    // serde buffers an internally tagged enum's fields as a tree of values before it knows
    // the `type`: each `[` of `[[[[…` is a Vec of at least 4 values (~128 bytes). Linear,
    // and serde_json's depth limit (128) stops it; what matters is that it stays linear.
    assert!(
        peak <= 256 * text.len() + (64 << 10),
        "parsing {} bytes took {peak} bytes of memory",
        text.len()
    );
    let message = match parsed {
        Ok(message) => message,
        Err(e) => return one_line("parse", &e, text),
    };
    let again = serde_json::to_string(&message).expect("a client message serializes");
    assert_eq!(
        ClientMessage::parse(&again).as_ref(),
        Ok(&message),
        "round trip of {text:?} through {again:?}"
    );
    match &message {
        ClientMessage::AudioChunk { audio_data, .. } => match decode_audio_data(audio_data) {
            Ok(bytes) => assert!(
                bytes.len() <= audio_data.len() / 4 * 3,
                "{} bytes of audio_data decoded to {}",
                audio_data.len(),
                bytes.len()
            ),
            Err(e) => one_line("audio_data", &e, audio_data),
        },
        ClientMessage::StartStream { audio_format, .. } => {
            // Sizes of an unvalidated format must not overflow (they are used for errors).
            let (frame, per_second) = (audio_format.frame_bytes(), audio_format.bytes_per_second());
            match audio_format.validate() {
                Ok(()) => assert!(frame > 0 && per_second >= 8_000 * 2),
                Err(e) => one_line("audio_format", &e, text),
            }
        }
        ClientMessage::EndStream {} | ClientMessage::Ping { .. } | ClientMessage::Ack { .. } => {}
    }
});
