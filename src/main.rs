//! The `tolk` binary: see `tolk --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Flags, TOLK_* variables and the config file, all checked before anything starts.
    let cli = match tolk::config::parse_cli() {
        Ok(cli) => cli,
        Err(e) => return e.report(),
    };
    tolk::telemetry::init(cli.verbose, cli.log_format);
    tolk::cli::run(cli)
}
