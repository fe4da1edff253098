//! `tolk transcribe FILE`: print what was said.

use tolk_models::asr::{RecognizeOptions, Recognizer};
use tolk_models::audio::read_wav;
use tolk_models::device::choose;
use tolk_models::registry::resolve_whisper_model;
use tolk_models::whisper::{check_language, device_offer, WhisperConfig, WhisperModel};

use super::CommandError;
use crate::cli::{TranscribeArgs, WhisperArgs};

pub fn run(args: TranscribeArgs) -> Result<(), CommandError> {
    let options = RecognizeOptions {
        language: language_option(&args.whisper.language)?,
        task: args.task.into(),
        ..Default::default()
    };
    // Read the audio first: a bad file fails fast, before a model is loaded.
    let audio = read_wav(&args.file)?;
    let model = load_model(&args.dir.models_dir, &args.whisper)?;
    let transcript = model.worker()?.recognize(&audio.samples, &options)?;
    if args.json {
        let json = serde_json::to_string_pretty(&transcript).map_err(anyhow::Error::from)?;
        println!("{json}");
    } else {
        println!("{}", transcript.text);
    }
    Ok(())
}

/// `auto` → detect; anything else must be a language whisper knows.
pub fn language_option(language: &str) -> Result<Option<String>, CommandError> {
    if language == "auto" {
        return Ok(None);
    }
    check_language(language)?;
    Ok(Some(language.to_string()))
}

pub fn load_model(dir: &std::path::Path, args: &WhisperArgs) -> Result<WhisperModel, CommandError> {
    let path = resolve_whisper_model(dir, &args.model).map_err(CommandError::Config)?;
    let device = choose("whisper", args.device, &device_offer())
        .map_err(|e| CommandError::Config(e.to_string()))?;
    let mut config = WhisperConfig {
        audio_ctx: args.audio_ctx,
        device,
        ..WhisperConfig::default()
    };
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    Ok(WhisperModel::load(&path, config)?)
}
