//! Whisper through whisper.cpp (whisper-rs): one loaded model shared by many workers.
//!
//! [`WhisperModel`] owns the weights (a `WhisperContext`, immutable and thread-safe);
//! each [`WhisperWorker`] owns a `WhisperState` (KV caches, mel buffer) and runs one
//! recognition at a time on the calling thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use tolk_protocol::transcript::{Segment, Task, Transcript, Word};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::asr::{AsrError, RecognizeOptions, Recognizer, SAMPLE_RATE};

/// Encoder frames are 20 ms of audio; whisper's full context is 1500 frames (30 s).
const FRAME_MS: u64 = 20;
/// Frames of encoder context beyond the audio, rounded up to a multiple of [`CTX_STEP`].
///
/// whisper.cpp encodes a full 30 s window whatever the clip length, so short clips pay for
/// 30 s; the encoder context can be cut to the audio. Cut exactly to the audio, the decoder
/// can loop (DESIGN.md); with at least 64 frames (1.28 s) to spare, truncated JFK windows of
/// 2–11 s gave the same words as the full context (BENCHMARKS.md), so 128 are kept.
const CTX_MARGIN: u64 = 128;
const CTX_STEP: u64 = 64;
/// Below 384 frames (7.68 s) tiny.en looped on 0.7–1.5 s clips ("answer answer …" for
/// 4 s of CPU) where 384 and up gave the right words: the context never goes lower.
const CTX_MIN: u64 = 384;
/// Clips longer than this use the full context: whisper.cpp then walks 30 s windows.
const FITTED_CTX_MAX_MS: u64 = 27_000;

/// The encoder context for a clip of `duration_ms`: fitted with a margin, or 0 (the
/// model's full context) for long clips.
pub fn fitted_audio_ctx(duration_ms: u64) -> i32 {
    if duration_ms > FITTED_CTX_MAX_MS {
        return 0;
    }
    let frames = duration_ms.div_ceil(FRAME_MS) + CTX_MARGIN;
    (frames.div_ceil(CTX_STEP) * CTX_STEP).clamp(CTX_MIN, 1500) as i32
}

/// How a model is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperConfig {
    /// Threads per recognition (whisper.cpp's `n_threads`).
    pub threads: usize,
    /// Encoder context: `None` fits it to each clip ([`fitted_audio_ctx`]); `Some(n)`
    /// forces `n` (0 = the model's full 30 s).
    pub audio_ctx: Option<i32>,
    /// Run on this device; `Device::Cuda` needs the `cuda` build ([`CUDA_BUILD`]).
    pub device: crate::device::Device,
}

/// Whether whisper.cpp was compiled with CUDA (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// What this build and machine offer whisper.cpp.
pub fn device_offer() -> crate::device::Offer {
    crate::device::Offer {
        cuda: if CUDA_BUILD {
            Ok(())
        } else {
            Err(
                "this tolk was built without CUDA: build it with `--features cuda` where the \
                 CUDA toolkit is installed"
                    .into(),
            )
        },
        gpus: crate::device::nvidia_gpus(),
    }
}

impl Default for WhisperConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            audio_ctx: None,
            device: crate::device::Device::Cpu,
        }
    }
}

/// A loaded Whisper model.
pub struct WhisperModel {
    context: Arc<WhisperContext>,
    name: String,
    path: PathBuf,
    multilingual: bool,
    config: WhisperConfig,
}

static LOGGING: Once = Once::new();

impl WhisperModel {
    pub fn load(path: &Path, config: WhisperConfig) -> Result<Self, AsrError> {
        // whisper.cpp logs to stderr unless hooked; route it through `tracing` instead.
        LOGGING.call_once(whisper_rs::install_logging_hooks);
        let load_error = |reason: String| AsrError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error("no such file".into()));
        }
        let path_str = path
            .to_str()
            .ok_or_else(|| load_error("path is not UTF-8".into()))?;
        let mut params = WhisperContextParameters::default();
        if let crate::device::Device::Cuda(n) = config.device {
            params.use_gpu(true);
            params.gpu_device(n as _);
        } else {
            params.use_gpu(false);
        }
        let context = WhisperContext::new_with_params(path_str, params).map_err(|e| {
            load_error(format!(
                "whisper.cpp rejected it ({e}); is it a ggml Whisper model?"
            ))
        })?;
        let multilingual = context.is_multilingual();
        Ok(Self {
            context: Arc::new(context),
            name: model_name(path),
            path: path.to_path_buf(),
            multilingual,
            config,
        })
    }

    /// `base`, `tiny.en`, … : the file name without `ggml-` and `.bin`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where this model runs.
    pub fn device(&self) -> crate::device::Device {
        self.config.device
    }

    pub fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    /// A worker with its own decoder state; create one per thread.
    pub fn worker(&self) -> Result<WhisperWorker, AsrError> {
        let state = self
            .context
            .create_state()
            .map_err(|e| AsrError::Inference(format!("cannot allocate a decoder state: {e}")))?;
        Ok(WhisperWorker {
            state,
            context: self.context.clone(),
            name: self.name.clone(),
            multilingual: self.multilingual,
            config: self.config.clone(),
        })
    }
}

/// `ggml-base-q5_0.bin` → `base-q5_0`; other names keep their stem.
pub fn model_name(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("whisper");
    let stem = stem.strip_suffix(".bin").unwrap_or(stem);
    stem.strip_prefix("ggml-").unwrap_or(stem).to_string()
}

/// Validate a language code against whisper's table.
pub fn check_language(code: &str) -> Result<(), AsrError> {
    match whisper_rs::get_lang_id(code) {
        Some(_) => Ok(()),
        None => Err(AsrError::UnknownLanguage(code.to_string())),
    }
}

/// Every language code a multilingual Whisper model knows.
pub fn all_languages() -> Vec<String> {
    (0..=whisper_rs::get_lang_max_id())
        .filter_map(|id| whisper_rs::get_lang_str(id).map(str::to_string))
        .collect()
}

pub struct WhisperWorker {
    state: WhisperState,
    /// Keeps the weights alive and gives the special-token ids.
    context: Arc<WhisperContext>,
    name: String,
    multilingual: bool,
    config: WhisperConfig,
}

impl WhisperWorker {
    fn audio_ctx_for(&self, duration_ms: u64) -> i32 {
        self.config
            .audio_ctx
            .unwrap_or_else(|| fitted_audio_ctx(duration_ms))
    }

    /// Detect the spoken language from the first 30 s: (code, probability).
    fn detect_language(&mut self, audio: &[f32]) -> Result<(String, f32), AsrError> {
        let threads = self.config.threads.max(1);
        self.state
            .pcm_to_mel(audio, threads)
            .map_err(|e| AsrError::Inference(format!("mel spectrogram: {e}")))?;
        let (id, probs) = self
            .state
            .lang_detect(0, threads)
            .map_err(|e| AsrError::Inference(format!("language detection: {e}")))?;
        let code = whisper_rs::get_lang_str(id)
            .ok_or_else(|| AsrError::Inference(format!("language detection returned id {id}")))?;
        Ok((
            code.to_string(),
            probs.get(id as usize).copied().unwrap_or(0.0),
        ))
    }
}

impl Recognizer for WhisperWorker {
    fn recognize(
        &mut self,
        audio: &[f32],
        options: &RecognizeOptions,
    ) -> Result<Transcript, AsrError> {
        let duration_ms = audio.len() as u64 * 1000 / SAMPLE_RATE as u64;
        let requested = options.language.as_deref().filter(|l| *l != "auto");
        if let Some(code) = requested {
            check_language(code)?;
        }
        let (language, language_probability) = if !self.multilingual {
            match requested {
                Some("en") | None => {}
                Some(_) => {
                    return Err(AsrError::EnglishOnly {
                        model: self.name.clone(),
                        what: "transcribe other languages",
                    })
                }
            }
            if options.task == Task::Translate {
                return Err(AsrError::EnglishOnly {
                    model: self.name.clone(),
                    what: "translate speech",
                });
            }
            ("en".to_string(), None)
        } else if let Some(code) = requested {
            (code.to_string(), None)
        } else if audio.is_empty() {
            return Err(AsrError::Inference(
                "cannot detect the language of empty audio".into(),
            ));
        } else {
            let (code, p) = self.detect_language(audio)?;
            (code, Some(p))
        };

        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads.max(1) as i32);
        params.set_language(Some(&language));
        params.set_translate(options.task == Task::Translate);
        params.set_audio_ctx(self.audio_ctx_for(duration_ms));
        params.set_token_timestamps(true);
        if let Some(max) = options.max_tokens {
            params.set_max_tokens(max as i32);
        }
        if !options.temperature_fallback {
            params.set_temperature_inc(0.0);
        }
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        if let Some(prompt) = &options.initial_prompt {
            params.set_initial_prompt(prompt);
        }
        if audio.is_empty() {
            return Ok(Transcript {
                language,
                language_probability,
                task: options.task,
                text: String::new(),
                segments: vec![],
                duration_ms: 0,
            });
        }
        self.state
            .full(params, audio)
            .map_err(|e| AsrError::Inference(format!("whisper_full: {e}")))?;

        let eot = self.context.token_eot();
        let mut segments = Vec::new();
        for segment in self.state.as_iter() {
            let text = segment
                .to_str_lossy()
                .map_err(|e| AsrError::Inference(e.to_string()))?;
            let mut words: Vec<Word> = Vec::new();
            // Bytes of the word being built: a multi-byte character may span tokens.
            let mut pending: Option<(Vec<u8>, i64, i64, Vec<f32>)> = None;
            let flush = |pending: &mut Option<(Vec<u8>, i64, i64, Vec<f32>)>,
                         words: &mut Vec<Word>| {
                if let Some((bytes, t0, t1, probs)) = pending.take() {
                    let word = String::from_utf8_lossy(&bytes).trim().to_string();
                    if !word.is_empty() {
                        words.push(Word {
                            word,
                            start_ms: centis_to_ms(t0),
                            end_ms: centis_to_ms(t1),
                            probability: probs.iter().sum::<f32>() / probs.len() as f32,
                        });
                    }
                }
            };
            for i in 0..segment.n_tokens() {
                let Some(token) = segment.get_token(i) else {
                    continue;
                };
                if token.token_id() >= eot {
                    continue; // timestamps, start-of-transcript, language and task tokens
                }
                let Ok(bytes) = token.to_bytes() else {
                    continue;
                };
                let data = token.token_data();
                let starts_word = bytes.first() == Some(&b' ');
                let is_punctuation = bytes.iter().all(|b| b.is_ascii_punctuation());
                match &mut pending {
                    Some((buf, _, t1, probs))
                        if !starts_word || (is_punctuation && !buf.is_empty()) =>
                    {
                        buf.extend_from_slice(bytes);
                        *t1 = data.t1;
                        probs.push(data.p);
                    }
                    _ => {
                        flush(&mut pending, &mut words);
                        pending = Some((bytes.to_vec(), data.t0, data.t1, vec![data.p]));
                    }
                }
            }
            flush(&mut pending, &mut words);
            segments.push(Segment {
                id: segments.len() as u32,
                start_ms: centis_to_ms(segment.start_timestamp()),
                end_ms: centis_to_ms(segment.end_timestamp()),
                text: text.trim().to_string(),
                no_speech_probability: segment.no_speech_probability(),
                words,
            });
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            language,
            language_probability,
            task: options.task,
            text,
            segments,
            duration_ms,
        })
    }
}

fn centis_to_ms(t: i64) -> u64 {
    t.max(0) as u64 * 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_is_fitted_with_a_margin_for_short_clips_only() {
        assert_eq!(fitted_audio_ctx(0), 384);
        assert_eq!(fitted_audio_ctx(3_000), 384); // 150 frames + 128 → 278 → 320 → the minimum
        assert_eq!(fitted_audio_ctx(6_000), 448); // 300 + 128 → 428 → 448
        assert_eq!(fitted_audio_ctx(11_000), 704); // 550 + 128 → 678 → 704
        assert_eq!(fitted_audio_ctx(27_000), 1500);
        assert_eq!(fitted_audio_ctx(27_001), 0);
        for ms in (0..27_000).step_by(250) {
            let ctx = fitted_audio_ctx(ms) as u64;
            assert!(
                ctx * FRAME_MS >= ms + CTX_MARGIN * FRAME_MS || ctx == 1500,
                "{ms} ms → {ctx}"
            );
        }
    }
}
