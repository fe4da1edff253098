//! `tolk_models::audio::decode_wav`: any bytes, as an upload or a `--file` may hold them.
//!
//! Beyond "no panic": memory follows the input's size, never a size a header claims; the
//! result agrees with the RIFF decoder underneath it (same format, the 16 kHz length its
//! frames make, finite samples), and an error is one line of text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk_models::{audio, wav};

#[global_allocator]
static ALLOC: tolk_fuzz::Counting = tolk_fuzz::Counting;

fuzz_target!(|data: &[u8]| {
    let (decoded, peak) = tolk_fuzz::measure(|| audio::decode_wav(data));
    // Worst case: 8-bit samples (1 byte each) become f32s, upsampled 16x from 1 kHz, in a
    // Vec that grows by doubling; plus the resampler's kernel table.
    assert!(
        peak <= 256 * data.len() + (1 << 20),
        "decoding {} bytes took {peak} bytes of memory",
        data.len()
    );
    let raw = wav::decode(data);
    match (decoded, raw) {
        (Ok(speech), Ok(pcm)) => {
            assert_eq!(speech.source_rate, pcm.sample_rate);
            assert_eq!(speech.source_channels, pcm.channels);
            assert!((1..=8).contains(&pcm.channels));
            assert!((1_000..=384_000).contains(&pcm.sample_rate));
            assert_eq!(
                pcm.samples.len() % pcm.channels as usize,
                0,
                "a partial frame"
            );
            assert!(pcm.samples.iter().all(|s| (-1.0..=1.0).contains(s)));
            let frames = pcm.frames() as u64;
            let expected = (frames * 16_000).div_ceil(u64::from(pcm.sample_rate));
            assert_eq!(
                speech.samples.len() as u64,
                expected,
                "{frames} frames at {} Hz",
                pcm.sample_rate
            );
            assert!(speech.samples.iter().all(|s| s.is_finite()));
        }
        (Err(e), Err(raw)) => {
            assert_eq!(e, raw);
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains(['\n', '\r']), "{text:?}");
        }
        (decoded, raw) => panic!("decode_wav {decoded:?} but wav::decode {raw:?}"),
    }
});
