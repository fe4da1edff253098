//! Silero VAD on the real model and the real ONNX Runtime installed by `models/fetch`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tolk_models::audio::read_wav;
use tolk_models::vad::{
    init_onnxruntime, SileroVad, VadState, VoiceDetector, VAD_WINDOW, VAD_WINDOW_MS,
};

/// The models directory: `$TOLK_MODELS_DIR`, else `models/cache` in this crate.
fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TOLK_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("cache"));
    assert!(
        dir.join("vad/silero_vad.onnx").is_file(),
        "the VAD model is not installed in {}: run models/fetch",
        dir.display()
    );
    dir
}

fn detector() -> SileroVad {
    let dir = models_dir();
    init_onnxruntime(&dir).expect("load ONNX Runtime");
    SileroVad::load(&dir.join("vad/silero_vad.onnx")).expect("load Silero VAD")
}

/// JFK's "ask not" clip: ~320 ms of low room noise, then 11 s of speech with pauses.
fn jfk() -> Vec<f32> {
    read_wav(&models_dir().join("testdata/jfk.wav"))
        .expect("read jfk.wav")
        .samples
}

/// Feed `audio` to a fresh stream in pieces of `piece` samples.
fn in_pieces(vad: &mut SileroVad, audio: &[f32], piece: usize) -> Vec<f32> {
    let mut state = VadState::default();
    audio
        .chunks(piece)
        .flat_map(|chunk| vad.speech_probabilities(&mut state, chunk).unwrap())
        .collect()
}

fn windows_in(ms: u32) -> usize {
    (ms / VAD_WINDOW_MS) as usize
}

fn max(probabilities: &[f32]) -> f32 {
    probabilities.iter().copied().fold(0.0, f32::max)
}

fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: window count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-4, "{what}: window {i}: {x} vs {y}");
    }
}

#[test]
fn speech_is_detected_and_the_lead_in_is_not() {
    let mut vad = detector();
    let audio = jfk();
    let probabilities = in_pieces(&mut vad, &audio, audio.len());
    assert_eq!(probabilities.len(), audio.len() / VAD_WINDOW);
    let speech = probabilities.iter().filter(|&&p| p > 0.5).count();
    let fraction = speech as f32 / probabilities.len() as f32;
    assert!(fraction > 0.5, "{fraction:.2} of windows are speech");

    // jfk.wav's own lead-in is ~40 ms of digital silence then room noise, and the model
    // starting cold on that noise onset scores one window at 0.30: too close to any
    // threshold for a max. So the max is checked on a clean second of silence before
    // the clip, and jfk.wav's own lead-in on average.
    let lead_in = &probabilities[..windows_in(300)];
    let mean = lead_in.iter().sum::<f32>() / lead_in.len() as f32;
    assert!(mean < 0.2, "jfk.wav's lead-in: {lead_in:?}");

    let mut padded = vec![0.0; 16_000];
    padded.extend_from_slice(&audio);
    let probabilities = in_pieces(&mut vad, &padded, 1600);
    let silence = &probabilities[..windows_in(1000)];
    assert!(max(silence) < 0.3, "leading silence: {silence:?}");
    // "And so my fellow Americans" starts 320 ms into the clip.
    let words = &probabilities[windows_in(1400)..windows_in(2000)];
    assert!(words.iter().all(|&p| p > 0.5), "first words: {words:?}");
}

/// Silero's reference Python wrapper (`OnnxWrapper`: 64 samples of context prepended,
/// state carried) on the same model, file and ONNX Runtime version (the onnxruntime
/// 1.31.1 wheel). Windows 119 to 329 are those that move most when the context is dropped.
#[test]
fn scores_match_the_reference_wrapper() {
    const REFERENCE: [(usize, f32); 7] = [
        (2, 0.3020),
        (10, 0.3433),
        (11, 0.9460),
        (119, 0.3929),
        (238, 0.4279),
        (328, 0.5569),
        (329, 0.2731),
    ];
    let mut vad = detector();
    let audio = jfk();
    let probabilities = in_pieces(&mut vad, &audio, audio.len());
    for (window, expected) in REFERENCE {
        let got = probabilities[window];
        assert!(
            (got - expected).abs() < 1e-3,
            "window {window}: {got}, reference {expected}"
        );
    }
}

#[test]
fn silence_and_faint_noise_are_not_speech() {
    let mut vad = detector();
    let silence = in_pieces(&mut vad, &[0.0; 32_000], 1600);
    assert!(max(&silence) < 0.2, "silence: {silence:?}");

    // xorshift32: deterministic white noise in [-0.001, 0.001].
    let mut x = 0x2545_f491_u32;
    let noise: Vec<f32> = (0..32_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * 0.001
        })
        .collect();
    let noise = in_pieces(&mut vad, &noise, 1600);
    assert!(max(&noise) < 0.2, "noise: {noise:?}");
}

#[test]
fn results_do_not_depend_on_how_the_stream_is_cut() {
    let mut vad = detector();
    let audio = jfk();
    let whole = in_pieces(&mut vad, &audio, audio.len());
    assert_same(
        &in_pieces(&mut vad, &audio, 1600),
        &whole,
        "1600-sample pieces",
    );
    assert_same(
        &in_pieces(&mut vad, &audio, 777),
        &whole,
        "777-sample pieces",
    );
    let start = &audio[..100 * VAD_WINDOW + 300];
    assert_same(
        &in_pieces(&mut vad, start, 1),
        &whole[..100],
        "1-sample pieces",
    );
}

#[test]
fn streams_sharing_a_detector_do_not_leak_into_each_other() {
    let mut vad = detector();
    let a = jfk();
    // Shifted by half a window and louder, so that every window differs from a's.
    let b: Vec<f32> = std::iter::repeat_n(0.0, 8_256)
        .chain(a.iter().map(|s| s * 1.5))
        .collect();
    let (alone_a, alone_b) = (in_pieces(&mut vad, &a, 1600), in_pieces(&mut vad, &b, 1600));

    let (mut state_a, mut state_b) = (VadState::default(), VadState::default());
    let (mut mixed_a, mut mixed_b) = (Vec::new(), Vec::new());
    let (mut pieces_a, mut pieces_b) = (a.chunks(1600), b.chunks(1000));
    loop {
        let (next_a, next_b) = (pieces_a.next(), pieces_b.next());
        if next_a.is_none() && next_b.is_none() {
            break;
        }
        if let Some(piece) = next_a {
            mixed_a.extend(vad.speech_probabilities(&mut state_a, piece).unwrap());
        }
        if let Some(piece) = next_b {
            mixed_b.extend(vad.speech_probabilities(&mut state_b, piece).unwrap());
        }
    }
    assert_same(&mixed_a, &alone_a, "stream a");
    assert_same(&mixed_b, &alone_b, "stream b");
}

#[test]
fn errors_name_the_file() {
    let dir = models_dir();
    init_onnxruntime(&dir).expect("load ONNX Runtime");
    // A second call must be harmless, whatever directory it names.
    init_onnxruntime(Path::new("/nonexistent")).expect("second init");

    let missing = dir.join("vad/no-such-model.onnx");
    let err = SileroVad::load(&missing)
        .err()
        .expect("missing model")
        .to_string();
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    // Piper's voice is a valid ONNX model with the wrong signature.
    let voice = dir.join("piper/en_US-joe-medium.onnx");
    assert!(
        voice.is_file(),
        "no Piper voice in {}: run models/fetch",
        dir.display()
    );
    let err = SileroVad::load(&voice)
        .err()
        .expect("a TTS model")
        .to_string();
    assert!(
        err.contains("en_US-joe-medium.onnx") && err.contains("not a Silero VAD v5 model"),
        "{err}"
    );
}

/// Not an assertion: the cost of one window, for BENCHMARKS.md.
#[test]
fn time_per_window() {
    let mut vad = detector();
    let audio = jfk();
    let mut state = VadState::default();
    vad.speech_probabilities(&mut state, &audio[..10 * VAD_WINDOW])
        .unwrap();
    let start = Instant::now();
    let rounds = 3;
    let mut windows = 0;
    for _ in 0..rounds {
        let mut state = VadState::default();
        windows += vad.speech_probabilities(&mut state, &audio).unwrap().len();
    }
    let per_window = start.elapsed() / windows as u32;
    eprintln!(
        "Silero VAD: {per_window:?} per {VAD_WINDOW_MS} ms window ({windows} windows, real-time factor {:.4})",
        per_window.as_secs_f64() * 1000.0 / VAD_WINDOW_MS as f64
    );
}
