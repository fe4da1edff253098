//! Helpers shared by the integration tests: the real `tolk` binary, the real models
//! installed by `models/fetch`, and the reference transcripts.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// JFK's "ask not" clip, as spoken (normalised: lower case, no punctuation).
pub const JFK_WORDS: &str =
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

/// The models directory: `$TOLK_MODELS_DIR`, else `models/cache` in the workspace.
pub fn models_dir() -> PathBuf {
    let dir = std::env::var_os("TOLK_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/cache"));
    assert!(
        dir.join("whisper/ggml-base.bin").is_file(),
        "models are not installed in {}: run models/fetch (make test does)",
        dir.display()
    );
    dir
}

pub fn testdata(name: &str) -> PathBuf {
    models_dir().join("testdata").join(name)
}

pub fn tolk() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tolk"));
    cmd.env("TOLK_MODELS_DIR", models_dir())
        .env("RUST_LOG", "warn");
    cmd
}

/// Run `tolk ARGS`, returning (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = tolk().args(args).output().expect("run tolk");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// Lower case, punctuation removed, single spaces: how transcripts are compared word for word.
pub fn normalize(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tolk-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Word-level edit distance between two normalised transcripts.
pub fn word_errors(hypothesis: &str, reference: &str) -> usize {
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    let r: Vec<&str> = reference.split_whitespace().collect();
    let mut prev: Vec<usize> = (0..=r.len()).collect();
    for (i, hw) in h.iter().enumerate() {
        let mut row = vec![i + 1];
        for (j, rw) in r.iter().enumerate() {
            row.push(
                (prev[j] + usize::from(hw != rw))
                    .min(prev[j + 1] + 1)
                    .min(row[j] + 1),
            );
        }
        prev = row;
    }
    prev[r.len()]
}
