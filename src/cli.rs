//! The command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tolk_protocol::transcript::Task;

use crate::commands;
use crate::config;
use crate::server;

#[derive(Debug, Parser)]
#[command(name = "tolk", version, about = "Real-time speech translation server")]
pub struct Cli {
    /// Debug logging (also shows whisper.cpp's own log).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Log lines as text (`pretty`) or as one JSON object each (`json`).
    #[arg(
        long,
        global = true,
        env = "TOLK_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<server::ServeArgs>),
    /// Transcribe (or translate to English) a WAV file.
    Transcribe(TranscribeArgs),
    /// List installed models and the languages each offers.
    Models(ModelsArgs),
    /// Measure the real-time factor of file transcription.
    Bench(BenchArgs),
    /// Translate text between two languages with the installed models.
    Translate(TranslateArgs),
    /// Speak text into a WAV file (a Piper voice when one is installed, else espeak-ng).
    Speak(SpeakArgs),
    /// Create, list and revoke API keys.
    Keys(KeysArgs),
    /// Check `tolk serve`'s settings (flags, TOLK_* variables, config file).
    Config(ConfigArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Check the settings `tolk serve` would run with (it takes the same options) and print
    /// each with where it came from; exit code 2 if one is invalid. Loads nothing.
    Check(Box<config::CheckArgs>),
}

/// Where API keys are kept: the same flags as `tolk serve`.
#[derive(Debug, Clone, Args)]
pub struct KeysStoreArgs {
    /// File of API keys (hashes only), when no Redis is configured.
    #[arg(
        long,
        env = "TOLK_KEYS_FILE",
        default_value = "data/api-keys.json",
        global = true
    )]
    pub keys_file: PathBuf,
    /// Keep keys in Redis (shared by every instance).
    #[arg(long, env = "TOLK_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Prefix of this deployment's Redis keys.
    #[arg(long, env = "TOLK_REDIS_PREFIX", default_value = "tolk", global = true)]
    pub redis_prefix: String,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    #[command(flatten)]
    pub store: KeysStoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it (once: only its hash is stored).
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// Limits tier: free, basic, premium, enterprise, or one from --tiers-file.
        #[arg(long, default_value = "free")]
        tier: String,
        /// Permissions (comma-separated); default all: translate:read, translate:write,
        /// stream:create, models:list.
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// Override the tier's requests per minute for this key.
        #[arg(long)]
        requests_per_minute: Option<u32>,
        /// Override the tier's concurrent streams for this key.
        #[arg(long)]
        concurrent_streams: Option<u32>,
        /// Override the tier's daily audio minutes for this key.
        #[arg(long)]
        audio_minutes_per_day: Option<u32>,
        /// Print {"key", "id", …} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (ids, never the keys).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id; requests with it are refused from then on.
    Revoke { id: String },
}

/// Options shared by every command that loads models.
#[derive(Debug, Clone, Args)]
pub struct ModelsDirArg {
    /// Directory models are installed in (by models/fetch).
    #[arg(
        long,
        env = "TOLK_MODELS_DIR",
        default_value = "models/cache",
        global = true
    )]
    pub models_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TaskArg {
    Transcribe,
    Translate,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::Transcribe => Task::Transcribe,
            TaskArg::Translate => Task::Translate,
        }
    }
}

/// Options for loading and running a Whisper model.
#[derive(Debug, Clone, Args)]
pub struct WhisperArgs {
    /// Whisper model: an installed name (base, tiny.en, base-q5_0, …) or a path to a ggml file.
    #[arg(long, short, default_value = "base")]
    pub model: String,
    /// Spoken language (ISO 639-1), or `auto` to detect it.
    #[arg(long, short, default_value = "auto")]
    pub language: String,
    /// CPU threads for inference (default: all cores).
    #[arg(long, env = "TOLK_ASR_THREADS")]
    pub threads: Option<usize>,
    /// Encoder context in 20 ms frames: 0 = the model's 30 s; default: fitted to the clip
    /// with 2.56 s to spare (clips up to 27 s), which cuts the time for short clips.
    #[arg(long)]
    pub audio_ctx: Option<i32>,
    /// Where whisper runs: auto (the GPU when this build has CUDA and the machine a GPU),
    /// cpu, or cuda:N. A GPU asked for and missing is an error, not a fall-back.
    #[arg(long, env = "TOLK_ASR_DEVICE", default_value = "auto")]
    pub device: tolk_models::device::DeviceRequest,
}

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// WAV file: PCM 8/16/24/32-bit or float, any sample rate, mono or stereo.
    pub file: PathBuf,
    #[command(flatten)]
    pub whisper: WhisperArgs,
    /// `translate` gives English text whatever the spoken language.
    #[arg(long, value_enum, default_value = "transcribe")]
    pub task: TaskArg,
    /// Print JSON: language, segments with start/end ms, words with timestamps and probabilities.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: ModelsDirArg,
}

#[derive(Debug, Args)]
pub struct TranslateArgs {
    /// Source language (ISO 639-1).
    #[arg(long)]
    pub from: String,
    /// Target language (ISO 639-1).
    #[arg(long)]
    pub to: String,
    /// The text to translate.
    pub text: String,
    #[command(flatten)]
    pub dir: ModelsDirArg,
}

#[derive(Debug, Args)]
pub struct SpeakArgs {
    /// Language (ISO 639-1, or a locale such as en-us).
    #[arg(long)]
    pub lang: String,
    /// WAV file to write (16-bit mono at the voice's rate).
    #[arg(long, short)]
    pub output: PathBuf,
    /// The text to speak.
    pub text: String,
    #[command(flatten)]
    pub dir: ModelsDirArg,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print JSON (the body of GET /api/v1/models).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: ModelsDirArg,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Models to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "base,tiny.en")]
    pub models: Vec<String>,
    /// Audio to transcribe (default: the JFK clip installed by models/fetch).
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// Spoken language given to the model (`auto` adds language detection to the time).
    #[arg(long, default_value = "en")]
    pub language: String,
    /// CPU threads for inference.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed runs per model, after one warm-up run.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Encoder context (see `tolk transcribe --help`).
    #[arg(long)]
    pub audio_ctx: Option<i32>,
    /// Where whisper runs: auto, cpu or cuda:N (as for `tolk transcribe`).
    #[arg(long, env = "TOLK_ASR_DEVICE", default_value = "auto")]
    pub device: tolk_models::device::DeviceRequest,
    /// Print one JSON object per model instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: ModelsDirArg,
}

/// Run a parsed command line; errors are printed on one line.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => server::run(*args),
        Command::Transcribe(args) => commands::transcribe::run(args),
        Command::Models(args) => commands::models::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Translate(args) => commands::translate::run(args),
        Command::Speak(args) => commands::speak::run(args),
        Command::Keys(args) => commands::keys::run(args),
        Command::Config(ConfigArgs {
            action: ConfigAction::Check(args),
        }) => config::run_check(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tolk: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
