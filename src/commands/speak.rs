//! `tolk speak --lang en --output out.wav "text"`: speech synthesis to a WAV file.

use tolk_models::tts::{synthesize_wav, VoiceCatalog};

use super::CommandError;
use crate::cli::SpeakArgs;

pub fn run(args: SpeakArgs) -> Result<(), CommandError> {
    let catalog = VoiceCatalog::discover(&args.dir.models_dir);
    let mut voice = catalog
        .open(&args.lang)
        .map_err(|e| CommandError::Unsupported(e.to_string()))?;
    let wav =
        synthesize_wav(voice.as_mut(), &args.text).map_err(|e| CommandError::Other(e.into()))?;
    std::fs::write(&args.output, &wav).map_err(|e| {
        CommandError::Config(format!("cannot write {}: {e}", args.output.display()))
    })?;
    eprintln!(
        "wrote {} ({} Hz, {} bytes)",
        args.output.display(),
        voice.sample_rate(),
        wav.len()
    );
    Ok(())
}
