//! `tolk config check` and `tolk serve --config`, through the real binary: precedence, the
//! errors a bad file or variable gives, and secrets kept out of the output. No model or
//! server is needed: configuration is checked before either.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A config file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tolk-config-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}

/// Run `tolk` with `args` and only the given TOLK_* variables (the test's own are dropped,
/// so that `make test`'s TOLK_MODELS_DIR cannot change the outcome).
fn tolk(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tolk"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TOLK_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run tolk")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `config check`'s line for `key`: (value, source).
fn setting(out: &Output, key: &str) -> (String, String) {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.split(" = ").next().map(str::trim) == Some(key))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{stdout}"));
    let (_, rest) = line.split_once(" = ").expect("key = value");
    let (value, source) = rest.split_once("  # ").expect("value  # source");
    (value.trim().to_string(), source.trim().to_string())
}

fn assert_exit_2_saying(out: &Output, wanted: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "{w:?} not in stderr:\n{stderr}");
    }
}

#[test]
fn a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() {
    let file = TempFile::new("asr_workers = 2\nmax_sessions = 7\n");
    let path = file.arg();
    let defaults = tolk(&["config", "check"], &[]);
    assert!(defaults.status.success(), "{}", text(&defaults.stderr));
    assert_eq!(
        setting(&defaults, "max_sessions"),
        ("64".into(), "default".into())
    );
    assert_eq!(
        setting(&defaults, "asr_workers"),
        ("(unset)".into(), "default".into())
    );

    let from_file = tolk(&["config", "check", "--config", &path], &[]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert_eq!(
        setting(&from_file, "asr_workers"),
        ("2".into(), "file".into())
    );
    assert_eq!(
        setting(&from_file, "max_sessions"),
        ("7".into(), "file".into())
    );
    assert_eq!(
        setting(&from_file, "config"),
        (path.clone(), "flag --config".into())
    );

    let env = [("TOLK_ASR_WORKERS", "3"), ("TOLK_CONFIG", path.as_str())];
    let from_env = tolk(&["config", "check"], &env);
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));
    assert_eq!(
        setting(&from_env, "asr_workers"),
        ("3".into(), "env TOLK_ASR_WORKERS".into())
    );
    assert_eq!(
        setting(&from_env, "max_sessions"),
        ("7".into(), "file".into())
    );
    assert_eq!(
        setting(&from_env, "config"),
        (path.clone(), "env TOLK_CONFIG".into())
    );

    let from_flag = tolk(&["config", "check", "--asr-workers", "4"], &env);
    assert!(from_flag.status.success(), "{}", text(&from_flag.stderr));
    assert_eq!(
        setting(&from_flag, "asr_workers"),
        ("4".into(), "flag --asr-workers".into())
    );
}

#[test]
fn switches_can_be_set_in_the_file() {
    let file = TempFile::new("limits_fail_open = true\ncallback_allow_private = false\n");
    let out = tolk(&["config", "check", "--config", &file.arg()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        setting(&out, "limits_fail_open"),
        ("true".into(), "file".into())
    );
    assert_eq!(
        setting(&out, "callback_allow_private"),
        ("false".into(), "file".into())
    );
    let env = [("TOLK_LIMITS_FAIL_OPEN", "false")];
    let out = tolk(&["config", "check", "--config", &file.arg()], &env);
    assert_eq!(
        setting(&out, "limits_fail_open"),
        ("false".into(), "env TOLK_LIMITS_FAIL_OPEN".into())
    );
}

#[test]
fn an_unknown_key_is_named_with_a_suggestion() {
    let file = TempFile::new("asr_workerz = 2\n");
    let out = tolk(&["config", "check", "--config", &file.arg()], &[]);
    let path = file.arg();
    assert_exit_2_saying(
        &out,
        &[&format!(
            "config file {path}: unknown key `asr_workerz` (did you mean `asr_workers`?)"
        )],
    );
}

#[test]
fn a_bad_value_is_named_by_its_key() {
    let file = TempFile::new("asr_workers = \"lots\"\nauth_mode = \"sometimes\"\n");
    let out = tolk(&["config", "check", "--config", &file.arg()], &[]);
    assert_exit_2_saying(
        &out,
        &[
            "key `asr_workers`: invalid value \"lots\": invalid digit found in string",
            "key `auth_mode`: invalid value \"sometimes\": expected one of required, disabled",
        ],
    );
}

#[test]
fn bad_toml_gives_the_line() {
    let file = TempFile::new("asr_workers = 2\nbind = 127.0.0.1:8080\n");
    let out = tolk(&["config", "check", "--config", &file.arg()], &[]);
    assert_exit_2_saying(
        &out,
        &[&format!("config file {}: line 2, column", file.arg())],
    );
}

#[test]
fn serve_checks_the_file_before_loading_anything() {
    // A models directory that does not exist: had serve got that far, it would fail on
    // the model instead.
    let file = TempFile::new("max_sessions = -1\nmodels_dir = \"/nonexistent\"\n");
    let out = tolk(&["serve", "--config", &file.arg()], &[]);
    assert_exit_2_saying(&out, &["key `max_sessions`: invalid value \"-1\""]);
    let out = tolk(&["serve"], &[("TOLK_CONFIG", "/nonexistent/tolk.toml")]);
    assert_exit_2_saying(&out, &["config file /nonexistent/tolk.toml: "]);
}

#[test]
fn a_bad_variable_is_named() {
    let out = tolk(&["config", "check"], &[("TOLK_MAX_SESSIONS", "many")]);
    assert_exit_2_saying(
        &out,
        &["environment variable TOLK_MAX_SESSIONS: invalid value \"many\": invalid digit"],
    );
    // Given as a flag, the same mistake is the flag's (clap's message).
    let out = tolk(&["config", "check", "--max-sessions", "many"], &[]);
    assert_exit_2_saying(&out, &["'--max-sessions <MAX_SESSIONS>'"]);
}

#[test]
fn secrets_are_never_printed() {
    let file = TempFile::new(
        "jwt_hs256_secret = \"file-secret-0123456789abcdef0123456789\"\n\
         redis_url = \"redis://tolk:redis-pass-42@localhost:6379/0\"\n",
    );
    let env = [("TOLK_CALLBACK_SECRET", "env-secret-hunter2")];
    let out = tolk(&["config", "check", "--config", &file.arg()], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout) + &text(&out.stderr);
    for secret in ["file-secret", "redis-pass-42", "hunter2"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(
        setting(&out, "jwt_hs256_secret"),
        ("<redacted>".into(), "file".into())
    );
    assert_eq!(
        setting(&out, "callback_secret"),
        ("<redacted>".into(), "env TOLK_CALLBACK_SECRET".into())
    );
    assert_eq!(
        setting(&out, "redis_url").0,
        "redis://tolk:<redacted>@localhost:6379/0"
    );
}
