//! Speech synthesis: the engine-neutral [`Synthesizer`] trait, the voices installed
//! ([`VoiceCatalog`]) and the two engines behind it.
//!
//! - [`piper`]: neural Piper voices (`<models>/piper/*.onnx` + `.onnx.json`) on ONNX Runtime,
//!   fed espeak-ng phonemes cut exactly as Piper cuts them ([`phonemize`]).
//! - [`espeak`]: espeak-ng's own formant voices, for languages with no Piper voice.
//!
//! A language gets a Piper voice when one is installed, else espeak-ng ([`VoiceCatalog::voice_for`]).

pub mod espeak;
pub mod phonemize;
pub mod piper;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use espeak::EspeakVoice;
pub use piper::PiperVoice;

use crate::wav::encode_pcm16;

/// Silence between sentences in [`synthesize_wav`]: the Piper command line's default
/// `--sentence_silence`, which keeps sentences from running into each other.
const SENTENCE_GAP_SECONDS: f32 = 0.2;

/// One sentence of speech: mono samples in [-1, 1] at the synthesizer's
/// [`sample_rate`](Synthesizer::sample_rate).
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// The text this audio says, as cut from the input.
    pub sentence: String,
    pub samples: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("no voice speaks '{language}'; installed: {available} (Piper voices go in <models>/piper/, see models/fetch)")]
    NoVoice { language: String, available: String },
    #[error("espeak-ng has no voice '{voice}' (list them with `espeak-ng --voices`)")]
    UnknownVoice { voice: String },
    #[error("espeak-ng is not usable: {reason}")]
    EspeakMissing { reason: String },
    #[error("cannot phonemize for espeak-ng voice {voice}: {reason}")]
    Phonemize { voice: String, reason: String },
    #[error("cannot read Piper voice config {path}: {reason}")]
    Config { path: String, reason: String },
    #[error("cannot load Piper voice {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("Piper voice {voice} failed at {step}: {reason}")]
    Inference {
        voice: String,
        step: &'static str,
        reason: String,
    },
    #[error("espeak-ng voice {voice} failed at {step}: {reason}")]
    Espeak {
        voice: String,
        step: &'static str,
        reason: String,
    },
}

/// One synthesizer instance. Implementations hold per-worker resources (an ONNX session);
/// a pool runs one per thread.
///
/// CPU-bound and blocking: call it from a worker thread, never from an async executor.
pub trait Synthesizer: Send {
    /// Speak `text`, one [`Speech`] per sentence, in order.
    fn synthesize(&mut self, text: &str) -> Result<Vec<Speech>, TtsError> {
        let mut all = Vec::new();
        self.synthesize_each(text, &mut |speech| {
            all.push(speech);
            ControlFlow::Continue(())
        })?;
        Ok(all)
    }

    /// Like [`synthesize`](Self::synthesize), but hands each sentence to `each` as soon as
    /// it is ready, so the first audio can go out while the rest is synthesized. `each`
    /// returns `Break` to stop early (the listener went away).
    fn synthesize_each(
        &mut self,
        text: &str,
        each: &mut dyn FnMut(Speech) -> ControlFlow<()>,
    ) -> Result<(), TtsError>;

    /// Samples per second of every [`Speech`] this synthesizer returns.
    fn sample_rate(&self) -> u32;

    /// The language it speaks: an ISO 639-1 code, or the espeak-ng voice's code.
    fn language(&self) -> &str;
}

impl<S: Synthesizer + ?Sized> Synthesizer for Box<S> {
    fn synthesize(&mut self, text: &str) -> Result<Vec<Speech>, TtsError> {
        (**self).synthesize(text)
    }

    fn synthesize_each(
        &mut self,
        text: &str,
        each: &mut dyn FnMut(Speech) -> ControlFlow<()>,
    ) -> Result<(), TtsError> {
        (**self).synthesize_each(text, each)
    }

    fn sample_rate(&self) -> u32 {
        (**self).sample_rate()
    }

    fn language(&self) -> &str {
        (**self).language()
    }
}

/// An installed Piper voice, read from its `.onnx.json` without loading the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiperVoiceInfo {
    /// File stem: `en_US-joe-medium`.
    pub name: String,
    pub model: PathBuf,
    pub config: PathBuf,
    /// Primary language subtag: `language.family`, else the espeak-ng voice's (`en`).
    pub language: String,
    /// Lower-case, hyphenated locale when the config names one (`en-us`).
    pub locale: Option<String>,
    pub sample_rate: u32,
}

/// An espeak-ng voice as `espeak-ng --voices` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspeakVoiceInfo {
    /// espeak-ng's language code (`en-us`, `es`, `cmn`).
    pub code: String,
    pub name: String,
    /// Further codes it answers to (`zh` for `cmn`).
    pub also: Vec<String>,
}

/// Which engine and voice speak a language; [`open`] makes a [`Synthesizer`] of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoiceChoice {
    /// `models_dir` is where ONNX Runtime is installed (`<models>/onnxruntime/`).
    Piper {
        voice: PiperVoiceInfo,
        models_dir: PathBuf,
    },
    /// `voice` is what `espeak-ng -v` is given; `language` what was asked for.
    Espeak { language: String, voice: String },
}

/// Every voice installed: Piper voices in the models directory, espeak-ng's on the system.
#[derive(Debug, Clone, Default)]
pub struct VoiceCatalog {
    pub models_dir: PathBuf,
    pub piper: Vec<PiperVoiceInfo>,
    pub espeak: Vec<EspeakVoiceInfo>,
}

impl VoiceCatalog {
    /// Look at `<models_dir>/piper/*.onnx` (with their `.onnx.json`) and `espeak-ng
    /// --voices`. A voice that cannot be read is left out, not an error: one bad file
    /// must not take away every other voice.
    pub fn discover(models_dir: &Path) -> Self {
        let mut piper: Vec<PiperVoiceInfo> = std::fs::read_dir(models_dir.join("piper"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|path| path.extension().is_some_and(|e| e == "onnx"))
                    .filter_map(|model| piper::read_info(&model).ok())
                    .collect()
            })
            .unwrap_or_default();
        piper.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            models_dir: models_dir.to_path_buf(),
            piper,
            espeak: espeak_voices(),
        }
    }

    /// The voice for `language` (`es`, `en-US`, `pt_BR`): a Piper voice of that language
    /// (the one of the same region first), else espeak-ng.
    pub fn voice_for(&self, language: &str) -> Option<VoiceChoice> {
        let wanted = normalize(language);
        let primary = wanted.split('-').next().filter(|p| !p.is_empty())?;
        let piper = self
            .piper
            .iter()
            .filter(|v| v.language == primary)
            .min_by_key(|v| v.locale.as_deref() != Some(wanted.as_str()));
        if let Some(voice) = piper {
            return Some(VoiceChoice::Piper {
                voice: voice.clone(),
                models_dir: self.models_dir.clone(),
            });
        }
        let codes = || {
            self.espeak
                .iter()
                .flat_map(|v| std::iter::once(&v.code).chain(&v.also))
        };
        // espeak-ng resolves a code it lists itself (`zh` → cmn), else take the first voice
        // of the same language (`de-at` → de).
        let voice = if codes().any(|c| *c == wanted) {
            wanted.clone()
        } else {
            codes()
                .find(|c| c.split('-').next() == Some(primary))?
                .clone()
        };
        Some(VoiceChoice::Espeak {
            language: wanted,
            voice,
        })
    }

    /// Every language some voice speaks (primary subtags), sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut languages: Vec<String> = self
            .piper
            .iter()
            .map(|v| v.language.clone())
            .chain(
                self.espeak
                    .iter()
                    .flat_map(|v| std::iter::once(&v.code).chain(&v.also))
                    .filter_map(|c| c.split('-').next().map(str::to_string)),
            )
            .collect();
        languages.sort();
        languages.dedup();
        languages
    }

    /// A synthesizer for `language`, or an error naming what is installed.
    pub fn open(&self, language: &str) -> Result<Box<dyn Synthesizer>, TtsError> {
        let choice = self.voice_for(language).ok_or_else(|| TtsError::NoVoice {
            language: language.to_string(),
            available: match self.languages() {
                l if l.is_empty() => "none (espeak-ng is not installed)".to_string(),
                l => l.join(", "),
            },
        })?;
        open(&choice)
    }
}

/// Make the synthesizer `choice` names. A Piper voice gets one ONNX Runtime thread, since a
/// pool runs one synthesizer per worker thread; use [`PiperVoice::load`] for more.
pub fn open(choice: &VoiceChoice) -> Result<Box<dyn Synthesizer>, TtsError> {
    match choice {
        VoiceChoice::Piper { voice, models_dir } => {
            crate::vad::init_onnxruntime(models_dir).map_err(|e| TtsError::Load {
                path: voice.model.display().to_string(),
                reason: e.to_string(),
            })?;
            Ok(Box::new(PiperVoice::load(&voice.model, 1)?))
        }
        VoiceChoice::Espeak { language, voice } => Ok(Box::new(EspeakVoice::new(voice, language)?)),
    }
}

/// Speak `text` into a 16-bit mono WAV file, sentences separated by a short silence.
pub fn synthesize_wav(synthesizer: &mut dyn Synthesizer, text: &str) -> Result<Vec<u8>, TtsError> {
    let rate = synthesizer.sample_rate();
    let gap = vec![0.0; (rate as f32 * SENTENCE_GAP_SECONDS) as usize];
    let mut samples = Vec::new();
    for (i, speech) in synthesizer.synthesize(text)?.into_iter().enumerate() {
        if i > 0 {
            samples.extend_from_slice(&gap);
        }
        samples.extend(speech.samples);
    }
    Ok(encode_pcm16(&samples, rate, 1))
}

/// `en_US`, `EN-us` → `en-us`.
fn normalize(language: &str) -> String {
    language.trim().to_ascii_lowercase().replace('_', "-")
}

/// espeak-ng's voices, from `espeak-ng --voices`: `Pty Language Age/Gender VoiceName File
/// (other 5)(languages 6)`. Empty when espeak-ng is not installed.
fn espeak_voices() -> Vec<EspeakVoiceInfo> {
    let Ok(output) = Command::new("espeak-ng").arg("--voices").output() else {
        return Vec::new();
    };
    if !output.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (code, name) = (fields.get(1)?, fields.get(3)?);
            let also = fields
                .get(5..)
                .unwrap_or_default()
                .join(" ")
                .split('(')
                .filter_map(|other| other.split_whitespace().next())
                .map(normalize)
                .collect();
            Some(EspeakVoiceInfo {
                code: normalize(code),
                name: name.to_string(),
                also,
            })
        })
        .collect()
}
