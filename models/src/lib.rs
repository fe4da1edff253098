//! tolk's inference engines and audio utilities.
//!
//! Layout:
//! - [`asr`]: the `Recognizer` trait and its options; [`whisper`]: whisper.cpp behind it.
//! - [`wav`], [`resample`], [`audio`]: reading any WAV into 16 kHz mono.
//! - [`registry`]: what is installed in the models directory and what it offers.
//! - [`vad`]: the `VoiceDetector` trait and Silero VAD on ONNX Runtime.
//! - [`translate`]: the `Translator` trait, Bergamot and Apertium behind it, routing by pair.
//! - [`tts`]: the `Synthesizer` trait, Piper voices (ONNX Runtime) and espeak-ng behind it.
//! - [`device`]: CPU or CUDA GPU, per engine family (`auto`, `cpu`, `cuda:N`).
//!
//! Everything but [`asr`], [`audio`], [`device`], [`resample`] and [`wav`] needs the default `engines`
//! feature.
//!
//! Engines are synchronous and CPU-bound: callers run them on dedicated threads.

pub mod asr;
pub mod audio;
pub mod device;
#[cfg(feature = "engines")]
pub mod registry;
pub mod resample;
#[cfg(feature = "engines")]
pub mod translate;
#[cfg(feature = "engines")]
pub mod tts;
#[cfg(feature = "engines")]
pub mod vad;
pub mod wav;
#[cfg(feature = "engines")]
pub mod whisper;
