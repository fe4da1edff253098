//! The `tolk` binary: see `tolk --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tolk::cli::Cli::parse();
    tolk::telemetry::init(cli.verbose, cli.log_format);
    tolk::cli::run(cli)
}
