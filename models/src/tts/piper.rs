//! Piper voices (VITS exported to ONNX) run by ONNX Runtime.
//!
//! A voice is `<name>.onnx` plus `<name>.onnx.json`. Text becomes espeak-ng phonemes cut
//! into sentences as Piper cuts them ([`phonemize`]), each sentence becomes ids through the
//! config's `phoneme_id_map` (`^`, then every phoneme followed by `_`, then `$`), and the
//! model turns one sentence's ids into audio.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

use super::phonemize::{self, Sentence};
use super::{PiperVoiceInfo, Speech, Synthesizer, TtsError};

/// Begin, end and padding symbols of Piper's phoneme id maps.
pub const BOS: char = '^';
pub const EOS: char = '$';
pub const PAD: char = '_';

/// Piper's export signature; `sid` comes on top for multi-speaker voices.
const INPUTS: [&str; 3] = ["input", "input_lengths", "scales"];

/// The quietest peak still scaled up to full range: Piper's own floor, so a near-silent
/// sentence is not amplified into loud noise.
const PEAK_FLOOR: f32 = 0.01;

/// The `.onnx.json` fields we use. Missing inference settings take Piper's defaults.
#[derive(Deserialize)]
struct ConfigFile {
    audio: Option<AudioSection>,
    espeak: Option<EspeakSection>,
    language: Option<LanguageSection>,
    #[serde(default)]
    inference: InferenceSection,
    phoneme_type: Option<String>,
    num_speakers: Option<u32>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
}

#[derive(Deserialize)]
struct AudioSection {
    sample_rate: Option<u32>,
}

#[derive(Deserialize)]
struct EspeakSection {
    voice: Option<String>,
}

#[derive(Deserialize)]
struct LanguageSection {
    family: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
#[serde(default)]
struct InferenceSection {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for InferenceSection {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

/// How a voice turns text into phonemes (`phoneme_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhonemeType {
    /// espeak-ng IPA, the default and what nearly every Piper voice uses.
    Espeak,
    /// The text's own codepoints (after NFD), one sentence.
    Text,
}

/// A voice's `.onnx.json`, checked.
#[derive(Debug, Clone)]
pub struct PiperConfig {
    pub sample_rate: u32,
    pub espeak_voice: String,
    pub phoneme_type: PhonemeType,
    /// `noise_scale`, `length_scale`, `noise_w`: the model's `scales` input, in that order.
    pub scales: [f32; 3],
    pub num_speakers: u32,
    pub info: PiperVoiceInfo,
    /// Ids of each phoneme. Keys of more than one codepoint are left out: Piper's espeak-ng
    /// phonemizer emits single codepoints, so they would never match.
    ids: HashMap<char, Vec<i64>>,
}

/// `<model>.json`.
fn config_path(model: &Path) -> PathBuf {
    let mut path = OsString::from(model.as_os_str());
    path.push(".json");
    PathBuf::from(path)
}

impl PiperConfig {
    /// Read the config that belongs to `model` (`<model>.json`).
    pub fn read(model: &Path) -> Result<Self, TtsError> {
        let path = config_path(model);
        let invalid = |reason: String| TtsError::Config {
            path: path.display().to_string(),
            reason,
        };
        let bytes = fs::read(&path).map_err(|e| invalid(e.to_string()))?;
        let file: ConfigFile =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;

        let espeak_voice = file.espeak.and_then(|e| e.voice);
        let language = file.language.unwrap_or(LanguageSection {
            family: None,
            code: None,
        });
        let family = language
            .family
            .or_else(|| {
                espeak_voice
                    .as_deref()?
                    .split('-')
                    .next()
                    .map(str::to_string)
            })
            .ok_or_else(|| invalid("names no language (language.family or espeak.voice)".into()))?;
        let phoneme_type = match file.phoneme_type.as_deref().unwrap_or("espeak") {
            "espeak" => PhonemeType::Espeak,
            "text" => PhonemeType::Text,
            other => {
                return Err(invalid(format!(
                    "phoneme_type '{other}' is not supported (espeak, text)"
                )))
            }
        };
        let espeak_voice = match (phoneme_type, espeak_voice) {
            (_, Some(voice)) => voice,
            (PhonemeType::Text, None) => family.clone(),
            (PhonemeType::Espeak, None) => return Err(invalid("has no espeak.voice".into())),
        };
        let ids: HashMap<char, Vec<i64>> = file
            .phoneme_id_map
            .into_iter()
            .filter_map(|(key, ids)| {
                let mut chars = key.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some((c, ids)),
                    _ => None,
                }
            })
            .collect();
        if let Some(missing) = [BOS, EOS, PAD].into_iter().find(|c| !ids.contains_key(c)) {
            return Err(invalid(format!("phoneme_id_map has no '{missing}'")));
        }
        let sample_rate = file.audio.and_then(|a| a.sample_rate).unwrap_or(22_050);
        let name = model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            sample_rate,
            phoneme_type,
            scales: [
                file.inference.noise_scale,
                file.inference.length_scale,
                file.inference.noise_w,
            ],
            num_speakers: file.num_speakers.unwrap_or(1),
            info: PiperVoiceInfo {
                name,
                model: model.to_path_buf(),
                config: path.clone(),
                language: family.to_ascii_lowercase(),
                locale: language
                    .code
                    .or_else(|| Some(espeak_voice.clone()))
                    .map(|c| c.to_ascii_lowercase().replace('_', "-")),
                sample_rate,
            },
            espeak_voice,
            ids,
        })
    }

    /// Piper's id sequence for one sentence: `^ _ p1 _ p2 _ … pn _ $`. Phonemes the voice
    /// was not trained on are skipped, as Piper does.
    pub fn phoneme_ids(&self, phonemes: &[char]) -> Vec<i64> {
        let ids = |c: char| self.ids.get(&c).map(Vec::as_slice).unwrap_or_default();
        let mut out = Vec::with_capacity(phonemes.len() * 2 + 3);
        out.extend_from_slice(ids(BOS));
        out.extend_from_slice(ids(PAD));
        let mut missing = Vec::new();
        for &phoneme in phonemes {
            match self.ids.get(&phoneme) {
                Some(phoneme_ids) => {
                    out.extend_from_slice(phoneme_ids);
                    out.extend_from_slice(ids(PAD));
                }
                None => missing.push(phoneme),
            }
        }
        out.extend_from_slice(ids(EOS));
        if !missing.is_empty() {
            tracing::warn!(voice = %self.info.name, ?missing, "phonemes missing from the voice's id map were skipped");
        }
        out
    }
}

/// What [`super::VoiceCatalog`] lists for a model file, without loading it.
pub(super) fn read_info(model: &Path) -> Result<PiperVoiceInfo, TtsError> {
    PiperConfig::read(model).map(|config| config.info)
}

/// A loaded Piper voice. One per worker thread.
pub struct PiperVoice {
    session: Session,
    config: PiperConfig,
    /// The model's audio output (Piper names it `output`; taken from the model).
    output: String,
    /// Speaker 0 for multi-speaker voices; `None` leaves out the `sid` input.
    speaker: Option<[i64; 1]>,
}

impl PiperVoice {
    /// Load `model` and its `.onnx.json`, running inference on `threads` threads.
    /// ONNX Runtime must be initialised first ([`crate::vad::init_onnxruntime`]).
    pub fn load(model: &Path, threads: usize) -> Result<Self, TtsError> {
        let config = PiperConfig::read(model)?;
        let load_error = |reason: String| TtsError::Load {
            path: model.display().to_string(),
            reason,
        };
        let environment = crate::vad::onnxruntime_environment().ok_or_else(|| {
            load_error("ONNX Runtime is not initialised (call init_onnxruntime first)".into())
        })?;
        let session = crate::vad::session_builder(environment)
            .and_then(|b| b.with_intra_threads(threads.max(1)).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(model))
            .map_err(|e| load_error(e.to_string()))?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        let multi_speaker = config.num_speakers > 1;
        if let Some(missing) = INPUTS
            .iter()
            .chain(multi_speaker.then_some(&"sid"))
            .find(|name| !inputs.contains(name))
        {
            return Err(load_error(format!(
                "not a Piper voice: it has no '{missing}' input (inputs: {inputs:?})"
            )));
        }
        let output = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| load_error("the model has no outputs".into()))?;
        Ok(Self {
            session,
            output,
            speaker: multi_speaker.then_some([0]),
            config,
        })
    }

    pub fn config(&self) -> &PiperConfig {
        &self.config
    }

    /// `text` as this voice's sentences of phonemes.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Sentence>, TtsError> {
        match self.config.phoneme_type {
            PhonemeType::Espeak => phonemize::phonemize(&self.config.espeak_voice, text),
            PhonemeType::Text => Ok(Some(text.trim())
                .filter(|t| !t.is_empty())
                .map(|t| Sentence {
                    text: t.to_string(),
                    phonemes: t.nfd().collect(),
                })
                .into_iter()
                .collect()),
        }
    }

    /// Audio for one sentence's ids, scaled to full range as Piper does.
    pub fn synthesize_ids(&mut self, ids: &[i64]) -> Result<Vec<f32>, TtsError> {
        let voice = &self.config.info.name;
        let failed = |step: &'static str| {
            move |e: ort::Error| TtsError::Inference {
                voice: voice.clone(),
                step,
                reason: e.to_string(),
            }
        };
        let lengths = [ids.len() as i64];
        let mut inputs = ort::inputs![
            "input" => TensorRef::from_array_view(([1, ids.len()], ids)).map_err(failed("input tensor"))?,
            "input_lengths" => TensorRef::from_array_view(([1], lengths.as_slice())).map_err(failed("input_lengths tensor"))?,
            "scales" => TensorRef::from_array_view(([3], self.config.scales.as_slice())).map_err(failed("scales tensor"))?,
        ];
        if let Some(speaker) = &self.speaker {
            let sid = TensorRef::from_array_view(([1], speaker.as_slice()))
                .map_err(failed("sid tensor"))?;
            inputs.push(("sid".into(), SessionInputValue::from(sid)));
        }
        let outputs = self.session.run(inputs).map_err(failed("run"))?;
        let audio = outputs
            .get(&self.output)
            .ok_or_else(|| TtsError::Inference {
                voice: voice.clone(),
                step: "output",
                reason: format!("no '{}' in the model's outputs", self.output),
            })?;
        let (_, audio) = audio
            .try_extract_tensor::<f32>()
            .map_err(failed("output"))?;
        let peak = audio.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        let gain = 1.0 / peak.max(PEAK_FLOOR);
        Ok(audio.iter().map(|s| (s * gain).clamp(-1.0, 1.0)).collect())
    }
}

impl Synthesizer for PiperVoice {
    fn synthesize_each(
        &mut self,
        text: &str,
        each: &mut dyn FnMut(Speech) -> ControlFlow<()>,
    ) -> Result<(), TtsError> {
        for sentence in self.phonemize(text)? {
            let ids = self.config.phoneme_ids(&sentence.phonemes);
            let samples = self.synthesize_ids(&ids)?;
            let speech = Speech {
                sentence: sentence.text,
                samples,
            };
            if each(speech).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn language(&self) -> &str {
        &self.config.info.language
    }
}
