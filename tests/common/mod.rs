//! Helpers shared by the integration tests: the real `tolk` binary, the real models
//! installed by `models/fetch`, and the reference transcripts.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

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

/// A `tolk serve` on a free port, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = tolk()
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tolk serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("tolk listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line from tolk serve: {line:?}"))
            .to_string();
        Server { child, addr }
    }

    /// GET `path`: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    /// A gauge or counter from /metrics.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
