//! Speech recognition: the engine-neutral trait and its request type.

use tolk_protocol::transcript::{Task, Transcript};

/// Sample rate every recogniser takes.
pub const SAMPLE_RATE: u32 = 16_000;

/// What to recognise and how; everything a worker needs, so any worker can serve any caller.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizeOptions {
    /// ISO 639-1 code, or `None` to detect the language.
    pub language: Option<String>,
    pub task: Task,
    /// Text that precedes this audio (biases spelling and style; also used by streaming
    /// to carry committed text into the next window).
    pub initial_prompt: Option<String>,
    /// Most tokens per segment: a guard against decoder loops, which otherwise run to
    /// whisper's 224-token limit (seconds of CPU). `None`: no limit.
    pub max_tokens: Option<u32>,
    /// Retry at higher temperatures when a decode looks like a loop or is very unsure
    /// (whisper's default); costs up to five more decodes.
    pub temperature_fallback: bool,
}

impl Default for RecognizeOptions {
    fn default() -> Self {
        Self {
            language: None,
            task: Task::Transcribe,
            initial_prompt: None,
            max_tokens: None,
            temperature_fallback: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("cannot load speech model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("unknown language '{0}' (use an ISO 639-1 code such as en, es, pt, or auto)")]
    UnknownLanguage(String),
    #[error(
        "model {model} is English-only: it cannot {what}; use a multilingual model such as base"
    )]
    EnglishOnly { model: String, what: &'static str },
    #[error("speech recognition failed: {0}")]
    Inference(String),
}

/// One recogniser instance. Implementations hold per-worker state (whisper's decoder
/// state, buffers) and share the weights; a pool runs one per thread.
///
/// `recognize` is CPU-bound and blocking: call it from a worker thread, never from an
/// async executor.
pub trait Recognizer: Send {
    /// `audio` is mono, [`SAMPLE_RATE`] Hz, in [-1, 1].
    fn recognize(
        &mut self,
        audio: &[f32],
        options: &RecognizeOptions,
    ) -> Result<Transcript, AsrError>;
}

impl<R: Recognizer + ?Sized> Recognizer for Box<R> {
    fn recognize(
        &mut self,
        audio: &[f32],
        options: &RecognizeOptions,
    ) -> Result<Transcript, AsrError> {
        (**self).recognize(audio, options)
    }
}
