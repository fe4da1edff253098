//! `tolk config check`: the settings `tolk serve` would run with, each with where it came
//! from, secrets hidden. Parsing has already checked them (exit code 2 if not); nothing is
//! loaded or started.

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args};

use super::{file_keys, is_secret, ConfigFile};
use crate::commands::CommandError;
use crate::server::ServeArgs;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Filled in by [`super::parse_cli`], the one place that sees clap's matches.
    #[arg(skip)]
    pub settings: Vec<Setting>,
}

/// One option's effective value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// As given (secrets replaced); `None` when unset.
    pub value: Option<String>,
    /// `flag --bind`, `env TOLK_BIND`, `file` or `default`.
    pub source: String,
}

/// Every option of `cmd`, in the order `tolk serve --help` lists them.
pub fn settings(cmd: &clap::Command, m: &ArgMatches, file: Option<&ConfigFile>) -> Vec<Setting> {
    let from_file = |key: &str| file.is_some_and(|f| f.values.iter().any(|v| v.key == key));
    file_keys(cmd)
        .into_iter()
        .map(|(key, arg)| {
            let id = arg.get_id().as_str();
            let value = match arg.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => Some(m.get_flag(id).to_string()),
                _ => m.get_raw(id).map(|values| {
                    let values: Vec<_> = values.map(|v| v.to_string_lossy()).collect();
                    values.join(",")
                }),
            };
            let value = value.map(|v| {
                if is_secret(&key, arg) {
                    "<redacted>".to_string()
                } else {
                    redact_url(&v)
                }
            });
            let source = match m.value_source(id) {
                Some(ValueSource::CommandLine) => {
                    format!("flag --{}", arg.get_long().unwrap_or(id))
                }
                Some(ValueSource::EnvVariable) => match arg.get_env() {
                    Some(env) => format!("env {}", env.to_string_lossy()),
                    None => "env".to_string(),
                },
                // File values are clap defaults (see the module comment).
                _ if from_file(&key) => "file".to_string(),
                _ => "default".to_string(),
            };
            Setting { key, value, source }
        })
        .collect()
}

/// The password of a URL (`redis://user:password@host`) replaced; other values unchanged.
pub fn redact_url(value: &str) -> String {
    let Some(scheme_end) = value.find("://").map(|i| i + 3) else {
        return value.to_string();
    };
    let rest = &value[scheme_end..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return value.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return value.to_string();
    };
    format!(
        "{}{}:<redacted>{}",
        &value[..scheme_end],
        &authority[..colon],
        &value[scheme_end + at..]
    )
}

/// Print one line per option: `key = value  # source`.
pub fn run(args: CheckArgs) -> Result<(), CommandError> {
    let shown: Vec<(String, &Setting)> = args
        .settings
        .iter()
        .map(|s| (s.value.clone().unwrap_or_else(|| "(unset)".into()), s))
        .collect();
    let key_width = shown.iter().map(|(_, s)| s.key.len()).max().unwrap_or(0);
    let value_width = shown.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    for (value, s) in shown {
        println!(
            "{:key_width$} = {value:value_width$}  # {}",
            s.key, s.source
        );
    }
    Ok(())
}
