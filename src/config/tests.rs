use super::check::redact_url;
use super::*;

const DOC: &str = include_str!("../../docs/configuration.md");

fn serve() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

/// The doc's table of options: key → its cells (key, flag, variable, default, meaning).
fn doc_rows() -> Vec<Vec<String>> {
    DOC.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn every_serve_option_is_in_the_doc_as_the_program_has_it() {
    let cmd = serve();
    let rows = doc_rows();
    let mut missing = Vec::new();
    for (key, arg) in file_keys(&cmd) {
        let flag = format!("`--{}`", arg.get_long().unwrap_or_default());
        let env = format!("`{}`", arg.get_env().unwrap_or_default().to_string_lossy());
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = match arg.get_action() {
            ArgAction::SetTrue => Some("`false`".to_string()),
            _ if !defaults.is_empty() => Some(format!("`{}`", defaults.join(","))),
            _ => None,
        };
        let row = rows.iter().find(|r| r[0] == format!("`{key}`"));
        let ok = row.is_some_and(|r| {
            r.len() == 5
                && r[1] == flag
                && r[2] == env
                && default.as_ref().is_none_or(|d| &r[3] == d)
                && !r[3].is_empty()
                && !r[4].is_empty()
        });
        if !ok {
            // What the row should start with, for whoever adds an option.
            let default = default.unwrap_or_else(|| "none".into());
            missing.push(format!("| `{key}` | {flag} | {env} | {default} | … |"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks or misstates these options:\n{}",
        missing.join("\n")
    );
    let keys: Vec<String> = file_keys(&cmd).into_iter().map(|(k, _)| k).collect();
    for row in &rows {
        let key = row[0].trim_matches('`');
        assert!(
            keys.iter().any(|k| k == key),
            "the doc lists `{key}`, which tolk serve lacks"
        );
    }
}

#[test]
fn the_example_file_in_the_doc_is_valid() {
    let start = DOC.find("```toml\n").expect("the doc has a toml example") + "```toml\n".len();
    let end = start + DOC[start..].find("```").expect("the example ends");
    let file = ConfigFile::parse(Path::new("tolk.toml"), &DOC[start..end], &serve())
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(file.values.iter().any(|v| v.key == "asr_workers"));
}

#[test]
fn file_values_become_argument_values() {
    let text = "asr_workers = 2\nbind = \"0.0.0.0:9000\"\nlimits_fail_open = true\n\
                callback_allow_private = false\nasr_model = \"tiny.en\"\n";
    let file = ConfigFile::parse(Path::new("t.toml"), text, &serve()).expect("valid");
    let get = |key: &str| {
        file.values
            .iter()
            .find(|v| v.key == key)
            .map(|v| v.values.clone())
    };
    assert_eq!(get("asr_workers"), Some(vec!["2".to_string()]));
    assert_eq!(get("bind"), Some(vec!["0.0.0.0:9000".to_string()]));
    assert_eq!(get("limits_fail_open"), Some(vec!["true".to_string()]));
    assert_eq!(
        get("callback_allow_private"),
        Some(vec!["false".to_string()])
    );
    assert_eq!(
        file.values
            .iter()
            .find(|v| v.key == "asr_model")
            .map(|v| v.id.as_str()),
        Some("asr_model")
    );
}

#[test]
fn every_bad_key_is_reported_with_its_reason() {
    let text = "asr_workerz = 2\nasr-threads = 1\nmax_sessions = \"many\"\nbind = 8080\n\
                auth_mode = \"on\"\nlimits_fail_open = \"yes\"\nconfig = \"other.toml\"\n\
                instance_id = true\nhttp_workers = [1, 2]\n[server]\nport = 1\n";
    let errors = ConfigFile::parse(Path::new("t.toml"), text, &serve()).expect_err("invalid");
    let expect = [
        "config file t.toml: unknown key `asr_workerz` (did you mean `asr_workers`?)",
        "config file t.toml: unknown key `asr-threads` (did you mean `asr_threads`?)",
        "config file t.toml: key `max_sessions`: invalid value \"many\": invalid digit found in string",
        "config file t.toml: key `bind`: invalid value \"8080\": invalid socket address syntax",
        "config file t.toml: key `auth_mode`: invalid value \"on\": expected one of required, disabled",
        "config file t.toml: key `limits_fail_open`: expected true or false, not a string",
        "config file t.toml: key `config`: a config file cannot name another config file",
        "config file t.toml: key `instance_id`: expected a string or a number, not a boolean",
        "config file t.toml: key `http_workers`: expected one value, not an array",
        "config file t.toml: unknown key `server`",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|got| got == e),
            "missing {e:?} in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn a_secret_value_is_not_repeated_in_an_error() {
    // A value clap refuses for a secret: the only way is a type clap cannot take.
    let text = "jwt_hs256_secret = { value = \"hunter2\" }\n";
    let errors = ConfigFile::parse(Path::new("t.toml"), text, &serve()).expect_err("invalid");
    assert_eq!(
        errors,
        ["config file t.toml: key `jwt_hs256_secret`: expected a string or a number, not a table"]
    );
}

#[test]
fn toml_syntax_errors_give_line_and_column() {
    let errors = ConfigFile::parse(Path::new("t.toml"), "asr_workers = 2\nbind = \n", &serve())
        .expect_err("invalid");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("config file t.toml: line 2, column 8: "),
        "{errors:?}"
    );
    let errors = ConfigFile::parse(Path::new("t.toml"), "a = 1\na = 2\n", &serve())
        .expect_err("duplicate key");
    assert!(
        errors[0].starts_with("config file t.toml: line 2, "),
        "{errors:?}"
    );
}

#[test]
fn an_unreadable_file_is_named() {
    let errors =
        ConfigFile::load(Path::new("/nonexistent/tolk.toml"), &serve()).expect_err("no such file");
    assert!(
        errors[0].starts_with("config file /nonexistent/tolk.toml: "),
        "{errors:?}"
    );
}

#[test]
fn suggestions_are_close_keys_only() {
    let known = ["asr_workers", "asr_threads", "bind", "max_sessions"];
    assert_eq!(suggest("asr_workerz", known), Some("asr_workers"));
    assert_eq!(suggest("asr-workers", known), Some("asr_workers"));
    assert_eq!(suggest("ASR_THREADS", known), Some("asr_threads"));
    assert_eq!(suggest("bnd", known), Some("bind"));
    assert_eq!(suggest("port", known), None);
    assert_eq!(suggest("sessions", known), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
}

#[test]
fn url_passwords_are_redacted() {
    assert_eq!(
        redact_url("redis://u:pw@h:6379/0"),
        "redis://u:<redacted>@h:6379/0"
    );
    assert_eq!(redact_url("redis://:pw@h/0"), "redis://:<redacted>@h/0");
    assert_eq!(redact_url("rediss://u:p@ss@h"), "rediss://u:<redacted>@h");
    assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
    assert_eq!(redact_url("redis://user@h"), "redis://user@h");
    assert_eq!(redact_url("redis://h/0?x=a@b:c"), "redis://h/0?x=a@b:c");
    assert_eq!(redact_url("base-q4_0"), "base-q4_0");
}

/// Skips a test that reads `var` when the environment already sets it (`make test` exports
/// TOLK_MODELS_DIR, for one); the integration tests cover precedence with a clean one.
fn unset(vars: &[&str]) -> bool {
    vars.iter().all(|v| std::env::var_os(v).is_none())
}

#[test]
fn the_file_ranks_under_flags_and_sets_typed_values() {
    if !unset(&[
        "TOLK_CONFIG",
        "TOLK_ASR_STEP_MS",
        "TOLK_MAX_SESSIONS",
        "TOLK_LIMITS_FAIL_OPEN",
    ]) {
        return;
    }
    let path = std::env::temp_dir().join(format!("tolk-config-unit-{}.toml", std::process::id()));
    let text = "asr_step_ms = 250\nmax_sessions = 5\nlimits_fail_open = true\n";
    std::fs::write(&path, text).expect("temp file");
    let path_arg = path.to_string_lossy().into_owned();
    let served = parse_cli_from([
        "tolk",
        "serve",
        "--config",
        &path_arg,
        "--max-sessions",
        "9",
    ]);
    let check = parse_cli_from(["tolk", "config", "check", "--config", &path_arg]);
    std::fs::remove_file(&path).ok();

    let Ok(Cli {
        command: Command::Serve(args),
        ..
    }) = served
    else {
        panic!("serve did not parse: {served:?}");
    };
    assert_eq!(args.asr_step_ms, 250);
    assert_eq!(args.max_sessions, 9);
    assert!(args.limits_fail_open);

    let Ok(Cli {
        command: Command::Config(config),
        ..
    }) = check
    else {
        panic!("config check did not parse: {check:?}");
    };
    let ConfigAction::Check(check) = config.action;
    let setting = |key: &str| check.settings.iter().find(|s| s.key == key).cloned();
    let step = setting("asr_step_ms").expect("listed");
    assert_eq!(
        (step.value.as_deref(), step.source.as_str()),
        (Some("250"), "file")
    );
    let sessions = setting("max_sessions").expect("listed");
    assert_eq!(
        (sessions.value.as_deref(), sessions.source.as_str()),
        (Some("5"), "file")
    );
    let fail_open = setting("limits_fail_open").expect("listed");
    assert_eq!(fail_open.value.as_deref(), Some("true"));
    assert_eq!(
        setting("config").map(|s| s.source),
        Some("flag --config".to_string())
    );
    assert_eq!(check.settings.len(), file_keys(&serve()).len());
}
