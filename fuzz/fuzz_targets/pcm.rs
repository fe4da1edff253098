//! Client audio frames (binary WebSocket frames, or decoded `audio_chunk`s) through the
//! server's own `FrameDecoder`, the file `src/ws/pcm.rs` compiled in here (it needs only
//! tolk-protocol and tolk-models' resampler, not the server crate).
//!
//! The input is a declared format and a stream split into frames. A frame is refused
//! exactly when it is not a whole number of sample frames; the accepted ones decode, with
//! the flush, to the 16 kHz length their sample frames make, in [-1, 1] when nothing is
//! resampled and finite always, and to the same samples as the accepted bytes decoded as
//! one frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk_protocol::ws::{AudioEncoding, AudioFormat, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

#[allow(dead_code)]
#[path = "../../src/ws/pcm.rs"]
mod pcm;

use pcm::FrameDecoder;

#[global_allocator]
static ALLOC: tolk_fuzz::Counting = tolk_fuzz::Counting;

fuzz_target!(|data: &[u8]| {
    let [flags, rate_hi, rate_lo, rest @ ..] = data else {
        return;
    };
    // Formats the session lets through: start_stream validates them first.
    let span = MAX_SAMPLE_RATE - MIN_SAMPLE_RATE + 1;
    let format = AudioFormat {
        encoding: if flags & 1 == 0 {
            AudioEncoding::PcmS16le
        } else {
            AudioEncoding::PcmF32le
        },
        channels: 1 + u16::from(flags >> 1 & 1),
        sample_rate: MIN_SAMPLE_RATE
            + u32::from(u16::from_be_bytes([*rate_hi, *rate_lo])) * 7 % span,
    };
    assert!(format.validate().is_ok());
    // Frames: a length byte, then that many bytes (or what is left).
    let mut frames = Vec::new();
    let mut at = rest;
    while let [len, tail @ ..] = at {
        let n = usize::from(*len).min(tail.len());
        frames.push(&tail[..n]);
        at = &tail[n..];
    }

    let mut decoder = FrameDecoder::new(format);
    let mut out = Vec::new();
    let mut accepted = Vec::new();
    let (_, peak) = tolk_fuzz::measure(|| {
        for frame in &frames {
            let whole = frame.len() % format.frame_bytes() == 0;
            match decoder.decode(frame) {
                Ok(samples) => {
                    assert!(
                        whole,
                        "a {}-byte frame of {format:?} was accepted",
                        frame.len()
                    );
                    out.extend(samples);
                    accepted.extend_from_slice(frame);
                }
                Err(e) => {
                    assert!(
                        !whole,
                        "a {}-byte frame of {format:?} was refused: {e}",
                        frame.len()
                    );
                    assert!(!e.contains('\n'), "{e:?}");
                }
            }
        }
        out.extend(decoder.flush());
    });
    assert!(
        peak <= 64 * data.len() + (1 << 20),
        "{} input bytes took {peak} bytes",
        data.len()
    );

    let sample_frames = (accepted.len() / format.frame_bytes()) as u64;
    let expected = (sample_frames * 16_000).div_ceil(u64::from(format.sample_rate));
    assert_eq!(
        out.len() as u64,
        expected,
        "{sample_frames} sample frames of {format:?}"
    );
    if format.sample_rate == 16_000 {
        assert!(out.iter().all(|s| (-1.0..=1.0).contains(s)));
    } else {
        assert!(out.iter().all(|s| s.is_finite()));
    }
    // Frame edges leave no trace.
    let mut whole = FrameDecoder::new(format);
    let mut at_once = whole.decode(&accepted).expect("whole sample frames");
    at_once.extend(whole.flush());
    assert!(
        out.iter()
            .map(|s| s.to_bits())
            .eq(at_once.iter().map(|s| s.to_bits())),
        "{format:?}: decoding in {} frames differs from decoding at once",
        frames.len()
    );
});
