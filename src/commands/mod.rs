//! One module per subcommand, and the error type they share.

pub mod bench;
pub mod keys;
pub mod models;
pub mod speak;
pub mod transcribe;
pub mod translate;

use tolk_models::asr::AsrError;
use tolk_models::audio::AudioError;

/// A command's failure, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The input file is unreadable, corrupt or in a format we do not take (exit code 2).
    #[error("{0}")]
    Input(#[from] AudioError),
    #[error("{0}")]
    Asr(#[from] AsrError),
    #[error("{0}")]
    Config(String),
    /// A request the installed models cannot serve (exit code 2).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

impl CommandError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Input(_) | CommandError::Unsupported(_) => 2,
            CommandError::Asr(AsrError::UnknownLanguage(_) | AsrError::EnglishOnly { .. }) => 2,
            _ => 1,
        }
    }
}
