//! What a server offers: installed models and the languages each role covers.

use serde::{Deserialize, Serialize};

/// The role a model plays in the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Speech recognition (and Whisper's speech → English translation).
    Asr,
    /// Voice activity detection.
    Vad,
    /// Text translation.
    Translation,
    /// Speech synthesis.
    Tts,
    /// A runtime library other models need (ONNX Runtime).
    Runtime,
}

/// One installed model (or runtime), as `GET /api/v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelInfo {
    /// Stable name, usable wherever a model is chosen (`base`, `tiny.en`, `en_US-joe-medium`).
    pub name: String,
    pub role: Role,
    /// Engine that runs it (`whisper.cpp`, `onnxruntime`, `bergamot`, `apertium`, `espeak-ng`).
    pub engine: String,
    /// Where it lives on disk; absent for system-provided engines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Languages it accepts (ASR, TTS: spoken or synthesised languages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub languages: Vec<String>,
    /// Language pairs it offers, `source → target` (translation, and ASR's speech translation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<LanguagePair>,
    /// Engine-specific facts worth showing (quantization, sample rate, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LanguagePair {
    pub source: String,
    pub target: String,
}

/// Body of `GET /api/v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelsResponse {
    /// The directory models were read from.
    pub models_dir: String,
    pub models: Vec<ModelInfo>,
    /// Where each engine family runs: `asr` (whisper.cpp) and `onnx` (Silero VAD, Piper
    /// voices), `cpu` or `cuda:N`; empty when no models are loaded.
    #[serde(default)]
    pub devices: std::collections::BTreeMap<String, String>,
}

/// One language pair a server can translate, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TranslationPair {
    pub source: String,
    pub target: String,
    /// Engines along the way, in order (`bergamot`, `apertium`, or `whisper` for speech
    /// translation to English).
    pub backends: Vec<String>,
    /// The pivot language when there is no direct model (`es→pt` via `en`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// Body of `GET /api/v1/languages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LanguagesResponse {
    /// Languages speech can be recognised in (`source_lang`; `auto` detects among them).
    pub source_languages: Vec<String>,
    /// Languages text can be translated into (`target_lang`).
    pub target_languages: Vec<String>,
    pub pairs: Vec<TranslationPair>,
}
