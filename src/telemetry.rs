//! Logging: human-readable to stderr, filtered by `RUST_LOG` (default `info`; `-v` adds
//! debug output, including whisper.cpp's own log lines).

use tracing_subscriber::EnvFilter;

pub fn init(verbose: bool) {
    let default = if verbose {
        "debug"
    } else {
        "info,whisper_rs=warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (tests calling in twice) is harmless: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
