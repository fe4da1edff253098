//! Logging: to stderr, filtered by `RUST_LOG` (default `info`; `-v` adds debug output,
//! including whisper.cpp's own log lines). Human-readable by default (coloured only on a
//! terminal); one JSON object per line with `--log-format json`, for log collectors.
//!
//! Every line about a WebSocket session carries its `session` field (and `stream` where
//! one is open), so one session's lines can be picked out of many.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line: timestamp, level, target, fields, message.
    Json,
}

pub fn init(verbose: bool, format: LogFormat) {
    let default = if verbose {
        "debug"
    } else {
        "info,whisper_rs=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests calling in twice) is harmless: keep the first.
    let _ = match format {
        LogFormat::Pretty => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}
