//! `tolk serve`'s settings: flags, `TOLK_*` environment variables and an optional TOML file
//! (`--config`, `TOLK_CONFIG`), in that order of precedence (docs/configuration.md).
//!
//! clap already ranks a flag over its variable and both over a default, so the file's values
//! are made the defaults of `serve` (and `config check`) before the final parse: the file
//! then ranks under both without a second copy of the precedence rules. Its keys are read
//! from clap's own description of `ServeArgs`, never from a list kept here, so an option
//! added there is a file key at once.
//!
//! Everything is checked while the command line is parsed, before a model is loaded: a
//! config problem is a one-line message naming the key (or variable) and exit code 2.

mod check;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command, ConfigAction};

pub use check::{run as run_check, CheckArgs, Setting};

/// The subcommands that take `ServeArgs`, and so read the config file.
const SERVE_LIKE: [&[&str]; 2] = [&["serve"], &["config", "check"]];

/// Why the command line was not accepted.
#[derive(Debug)]
pub enum StartError {
    /// clap's own: an unknown flag, `--help`, `--version`. clap prints it and picks the
    /// exit code.
    Clap(clap::Error),
    /// Problems in the config file or in a `TOLK_*` variable, one message each.
    Config(Vec<String>),
}

impl StartError {
    /// Print the error and give the exit code (2 for a config problem).
    pub fn report(self) -> ExitCode {
        match self {
            StartError::Clap(e) => e.exit(),
            StartError::Config(messages) => {
                for message in messages {
                    eprintln!("tolk: {message}");
                }
                ExitCode::from(2)
            }
        }
    }
}

/// One file key, checked, and the values it gives its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileValue {
    pub key: String,
    /// clap's id of the argument (the `ServeArgs` field name).
    pub id: String,
    pub values: Vec<String>,
}

/// A config file, read and checked.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: Vec<FileValue>,
}

/// [`Cli`] from the process's arguments, with the config file applied.
pub fn parse_cli() -> Result<Cli, StartError> {
    parse_cli_from(std::env::args_os())
}

/// [`Cli`] from `args` (the first is the program name), with the config file applied.
pub fn parse_cli_from<I, T>(args: I) -> Result<Cli, StartError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let cmd = Cli::command();
    // The first parse only finds the subcommand and the file (`--config` or TOLK_CONFIG);
    // it also reports bad flags and variables before the file is read.
    let first = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(|e| env_error(&cmd, &args, e))?;
    let Some((path, sub)) = serve_like(&first) else {
        return finish(&cmd, &first, None);
    };
    let Some(file) = sub.get_one::<PathBuf>("config") else {
        return finish(&cmd, &first, None);
    };
    let file = ConfigFile::load(file, subcommand(&cmd, path)).map_err(StartError::Config)?;
    let cmd = with_defaults(cmd, path, &file.values);
    let matches = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(|e| env_error(&cmd, &args, e))?;
    finish(&cmd, &matches, Some(&file))
}

fn finish(
    cmd: &clap::Command,
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> Result<Cli, StartError> {
    let mut cli = Cli::from_arg_matches(matches).map_err(StartError::Clap)?;
    // Where each value came from is known only here, from clap's matches.
    if let Command::Config(config) = &mut cli.command {
        let ConfigAction::Check(check) = &mut config.action;
        if let Some((path, sub)) = serve_like(matches) {
            check.settings = check::settings(subcommand(cmd, path), sub, file);
        }
    }
    Ok(cli)
}

/// The matched subcommand that takes `ServeArgs`, if any, and its path of names.
fn serve_like(matches: &ArgMatches) -> Option<(&'static [&'static str], &ArgMatches)> {
    SERVE_LIKE.into_iter().find_map(|path| {
        let sub = path
            .iter()
            .try_fold(matches, |m, name| match m.subcommand() {
                Some((n, sub)) if n == *name => Some(sub),
                _ => None,
            })?;
        Some((path, sub))
    })
}

fn subcommand<'a>(cmd: &'a clap::Command, path: &[&str]) -> &'a clap::Command {
    path.iter().fold(cmd, |c, name| {
        c.find_subcommand(name)
            .unwrap_or_else(|| panic!("`{name}` is a subcommand of Cli"))
    })
}

fn with_defaults(cmd: clap::Command, path: &[&str], values: &[FileValue]) -> clap::Command {
    match path.split_first() {
        Some((name, rest)) => cmd.mut_subcommand(name, |sub| with_defaults(sub, rest, values)),
        // mut_args, not mut_arg, which moves the argument last (in --help and `config check`).
        None => cmd.mut_args(
            |arg| match values.iter().find(|v| v.id == arg.get_id().as_str()) {
                Some(v) => arg.default_values(v.values.clone()),
                None => arg,
            },
        ),
    }
}

/// The arguments a file may name, by key: every long option, `config` included so that a
/// file setting it is refused by name (in [`file_value`]) rather than as unknown. Keys are
/// the long flag names with `_` for `-`, as is usual in TOML.
pub fn file_keys(cmd: &clap::Command) -> Vec<(String, &Arg)> {
    cmd.get_arguments()
        .filter(|arg| {
            matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
                || arg.get_action().takes_values()
        })
        .filter_map(|arg| Some((arg.get_long()?.replace('-', "_"), arg)))
        .collect()
}

/// Values of these are never printed: in `config check`, or in an error.
pub fn is_secret(key: &str, arg: &Arg) -> bool {
    key.contains("secret") || key.contains("password") || arg.is_hide_env_values_set()
}

impl ConfigFile {
    /// Read and check the file against `cmd`'s arguments; every problem is reported.
    pub fn load(path: &Path, cmd: &clap::Command) -> Result<ConfigFile, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
        ConfigFile::parse(path, &text, cmd)
    }

    pub fn parse(path: &Path, text: &str, cmd: &clap::Command) -> Result<ConfigFile, Vec<String>> {
        let at = format!("config file {}", path.display());
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![format!("{at}: {}", syntax_error(text, &e))])?;
        let keys = file_keys(cmd);
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for (key, value) in &table {
            let Some((_, arg)) = keys.iter().find(|(k, _)| k == key) else {
                let names = keys.iter().map(|(k, _)| k.as_str());
                errors.push(match suggest(key, names) {
                    Some(s) => format!("{at}: unknown key `{key}` (did you mean `{s}`?)"),
                    None => format!("{at}: unknown key `{key}`"),
                });
                continue;
            };
            match file_value(cmd, key, arg, value) {
                Ok(v) => values.push(FileValue {
                    key: key.clone(),
                    id: arg.get_id().to_string(),
                    values: v,
                }),
                Err(reason) => errors.push(format!("{at}: key `{key}`: {reason}")),
            }
        }
        if errors.is_empty() {
            Ok(ConfigFile {
                path: path.to_path_buf(),
                values,
            })
        } else {
            Err(errors)
        }
    }
}

/// `line L, column C: reason` for a file that is not TOML.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let reason = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return reason;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {reason}")
}

/// The argument values a file value stands for, checked by clap's own parser for that
/// argument alone, so that the error can name the key.
fn file_value(
    cmd: &clap::Command,
    key: &str,
    arg: &Arg,
    value: &toml::Value,
) -> Result<Vec<String>, String> {
    if key == "config" {
        return Err("a config file cannot name another config file".into());
    }
    let action = arg.get_action();
    if !action.takes_values() {
        // SetTrue or SetFalse (file_keys): the field's value itself, given as its default.
        return match value {
            toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
            other => Err(format!("expected true or false, not {}", kind(other))),
        };
    }
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if matches!(action, ArgAction::Append) => items.iter().collect(),
        toml::Value::Array(_) => return Err("expected one value, not an array".into()),
        single => vec![single],
    };
    let takes_bool = arg.get_value_parser().type_id() == std::any::TypeId::of::<bool>();
    let strings = items
        .into_iter()
        .map(|item| match item {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) if takes_bool => Ok(b.to_string()),
            other => Err(format!(
                "expected a string or a number, not {}",
                kind(other)
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let long = arg.get_long().unwrap_or(key);
    // Variables are dropped so that only this value is judged.
    let probe = cmd
        .clone()
        .no_binary_name(true)
        .mut_args(|a| a.env(None::<&str>));
    probe
        .try_get_matches_from(strings.iter().map(|s| format!("--{long}={s}")))
        .map_err(|e| clap_reason(&e, is_secret(key, arg)))?;
    Ok(strings)
}

fn kind(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(_) => "an integer".into(),
        toml::Value::Array(_) => "an array".into(),
        other => format!("a {}", other.type_str()),
    }
}

/// Why clap refused a value, without clap's framing (`error:`, the flag, `--help`).
fn clap_reason(e: &clap::Error, secret: bool) -> String {
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !secret => format!("invalid value \"{v}\""),
        _ => "invalid value".to_string(),
    };
    if let Some(source) = std::error::Error::source(e) {
        return format!("{value}: {source}");
    }
    if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        return format!("{value}: expected one of {}", valid.join(", "));
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// clap names only the flag when a variable's value is bad (`invalid value 'x' for
/// '--asr-workers'`); this names the variable when it is the one clap read.
fn env_error(cmd: &clap::Command, args: &[OsString], e: clap::Error) -> StartError {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return StartError::Clap(e);
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return StartError::Clap(e);
    };
    let Some(long) = flag
        .strip_prefix("--")
        .and_then(|f| f.split([' ', '=']).next())
    else {
        return StartError::Clap(e);
    };
    let on_command_line = args.iter().any(|a| {
        a.to_str().is_some_and(|a| {
            a.strip_prefix("--")
                .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
        })
    });
    if on_command_line {
        return StartError::Clap(e);
    }
    let from_env = all_args(cmd).into_iter().find(|arg| {
        arg.get_long() == Some(long)
            && arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.to_str() == Some(value.as_str()))
    });
    match from_env.and_then(|arg| Some((arg, arg.get_env()?))) {
        Some((arg, env)) => StartError::Config(vec![format!(
            "environment variable {}: {}",
            env.to_string_lossy(),
            clap_reason(&e, is_secret(long, arg))
        )]),
        None => StartError::Clap(e),
    }
}

fn all_args(cmd: &clap::Command) -> Vec<&Arg> {
    let mut args: Vec<&Arg> = cmd.get_arguments().collect();
    for sub in cmd.get_subcommands() {
        args.extend(all_args(sub));
    }
    args
}

/// The known key closest to a mistyped one, if it is close enough to be what was meant.
pub fn suggest<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted = key.replace('-', "_").to_lowercase();
    known
        .into_iter()
        .map(|k| (edit_distance(&wanted, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
