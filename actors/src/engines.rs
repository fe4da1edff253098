//! The `tolk-models` engines as pool engines: request in, response out, state carried by
//! the request so any worker serves any stream.

use std::collections::HashMap;
use std::sync::Arc;

use tolk_models::asr::{AsrError, RecognizeOptions, Recognizer};
use tolk_models::translate::{self, Route, TranslateError, TranslationCatalog, Translator};
use tolk_models::tts::{Synthesizer, TtsError, VoiceCatalog};
use tolk_models::vad::{VadError, VadState, VoiceDetector};
use tolk_protocol::transcript::Transcript;

use crate::pool::{Engine, Pool};

/// Recognise `audio` (16 kHz mono) with `options`.
pub struct AsrRequest {
    pub audio: Vec<f32>,
    pub options: RecognizeOptions,
}

/// Runs a recogniser (one whisper state per worker, weights shared).
pub struct AsrEngine<R: Recognizer + 'static>(pub R);

impl<R: Recognizer + 'static> Engine for AsrEngine<R> {
    type Request = AsrRequest;
    type Response = Transcript;
    type Error = AsrError;
    fn process(&mut self, request: AsrRequest) -> Result<Transcript, AsrError> {
        self.0.recognize(&request.audio, &request.options)
    }
}

/// Judge `audio` with the stream's VAD state; the updated state comes back.
pub struct VadRequest {
    pub state: VadState,
    pub audio: Vec<f32>,
}

pub struct VadResponse {
    pub state: VadState,
    pub probabilities: Vec<f32>,
}

pub struct VadEngine<V: VoiceDetector + 'static>(pub V);

impl<V: VoiceDetector + 'static> Engine for VadEngine<V> {
    type Request = VadRequest;
    type Response = VadResponse;
    type Error = VadError;
    fn process(&mut self, mut request: VadRequest) -> Result<VadResponse, VadError> {
        let probabilities = self
            .0
            .speech_probabilities(&mut request.state, &request.audio)?;
        Ok(VadResponse {
            state: request.state,
            probabilities,
        })
    }
}

/// The ASR pool type the server uses: recognisers behind a trait object, so tests of the
/// session plumbing can run a fake recogniser.
pub type AsrPool = Pool<AsrEngine<Box<dyn Recognizer>>>;
pub type VadPool = Pool<VadEngine<Box<dyn VoiceDetector>>>;

/// Translate `text` from `source` to `target` (ISO 639-1).
pub struct TranslateRequest {
    pub source: String,
    pub target: String,
    pub text: String,
}

pub struct TranslateResponse {
    pub text: String,
    /// The route taken, e.g. "es→en (apertium) →pt (bergamot)".
    pub route: String,
}

/// Runs whatever translator a request's language pair needs, opening each route once per
/// worker and keeping it: any worker serves any pair.
pub struct TranslationEngine {
    catalog: Arc<TranslationCatalog>,
    open: HashMap<(String, String), (Route, Box<dyn Translator>)>,
}

impl TranslationEngine {
    pub fn new(catalog: Arc<TranslationCatalog>) -> Self {
        Self {
            catalog,
            open: HashMap::new(),
        }
    }
}

impl Engine for TranslationEngine {
    type Request = TranslateRequest;
    type Response = TranslateResponse;
    type Error = TranslateError;
    fn process(&mut self, request: TranslateRequest) -> Result<TranslateResponse, TranslateError> {
        let key = (request.source.clone(), request.target.clone());
        if !self.open.contains_key(&key) {
            let route = self
                .catalog
                .route(&request.source, &request.target)
                .ok_or_else(|| TranslateError::Route {
                    route: format!("{}→{}", request.source, request.target),
                    reason: "no installed translation covers this pair",
                })?;
            let translator = translate::open(&route)?;
            self.open.insert(key.clone(), (route, translator));
        }
        let (route, translator) = self
            .open
            .get_mut(&key)
            .expect("inserted just above when missing");
        Ok(TranslateResponse {
            text: translator.translate(&request.text)?,
            route: route.to_string(),
        })
    }
}

pub type TranslationPool = Pool<TranslationEngine>;

/// Speak `text` in `language`.
pub struct SpeakRequest {
    pub language: String,
    pub text: String,
}

pub struct SpeakResponse {
    /// Mono samples in [-1, 1], sentences one after the other.
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

/// Runs whatever voice a request's language needs, opening each once per worker.
pub struct SpeechEngine {
    voices: Arc<VoiceCatalog>,
    open: HashMap<String, Box<dyn Synthesizer>>,
}

impl SpeechEngine {
    pub fn new(voices: Arc<VoiceCatalog>) -> Self {
        Self {
            voices,
            open: HashMap::new(),
        }
    }
}

impl Engine for SpeechEngine {
    type Request = SpeakRequest;
    type Response = SpeakResponse;
    type Error = TtsError;
    fn process(&mut self, request: SpeakRequest) -> Result<SpeakResponse, TtsError> {
        if !self.open.contains_key(&request.language) {
            let voice = self.voices.open(&request.language)?;
            self.open.insert(request.language.clone(), voice);
        }
        let voice = self
            .open
            .get_mut(&request.language)
            .expect("inserted just above when missing");
        let samples = voice
            .synthesize(&request.text)?
            .into_iter()
            .flat_map(|s| s.samples)
            .collect();
        Ok(SpeakResponse {
            samples,
            sample_rate: voice.sample_rate(),
        })
    }
}

pub type SpeechPool = Pool<SpeechEngine>;
