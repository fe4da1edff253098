//! Apertium rule-based pairs, run through the `apertium` command: one subprocess per call,
//! text on stdin, translation on stdout.
//!
//! A subprocess costs the pipeline's start-up on every call (about 0.2 s for eng-spa on this 2-core machine),
//! but keeps Apertium's dozen programs and their state out of the server, and a call that
//! hangs can be killed without harming anything else.

use std::env;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::{TranslateError, Translator};

/// How long one call may take. Apertium translates a sentence in well under a second; a
/// call past this is stuck, and a worker must not wait on it forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Apertium's marks: `*` unknown word, `@` no entry in the bilingual dictionary, `#` a form
/// the generator cannot produce, `~` a leftover post-generation marker. `-u` turns them off,
/// but they are debugging aids for dictionary writers and must never reach a listener, so
/// they are removed again from whatever comes back. Source text from speech recognition has
/// no use for these characters either.
const MARKS: [char; 4] = ['*', '@', '#', '~'];

/// One worker's translator for one Apertium mode.
#[derive(Debug, Clone)]
pub struct ApertiumTranslator {
    program: PathBuf,
    /// The directory holding `modes/` (`-d`), so the mode the catalog found is the one run.
    data_dir: PathBuf,
    mode: String,
    source: String,
    target: String,
    timeout: Duration,
}

impl ApertiumTranslator {
    /// Use the mode file `mode_file` (`<data dir>/modes/<mode>.mode`), translating
    /// `source` → `target`. Fails now, not at the first call, when the `apertium` command or
    /// the mode is missing.
    pub fn open(mode_file: &Path, source: &str, target: &str) -> Result<Self, TranslateError> {
        let mode = mode_file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let missing = |reason: String| TranslateError::ApertiumModeMissing {
            mode: mode.clone(),
            reason,
        };
        if !mode_file.is_file() {
            return Err(missing(format!("no file {}", mode_file.display())));
        }
        // `apertium -d DIR` reads `DIR/modes/<mode>.mode` and nothing else.
        let data_dir = mode_file
            .parent()
            .filter(|modes| modes.file_name().is_some_and(|name| name == "modes"))
            .and_then(Path::parent)
            .ok_or_else(|| {
                missing(format!(
                    "{} is not in a directory named modes, where apertium looks",
                    mode_file.display()
                ))
            })?;
        let program = find_on_path("apertium").ok_or(TranslateError::ApertiumMissing)?;
        Ok(Self {
            program,
            data_dir: data_dir.to_path_buf(),
            mode,
            source: source.to_string(),
            target: target.to_string(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Replace [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn error(&self, step: &'static str, reason: impl ToString) -> TranslateError {
        TranslateError::Apertium {
            mode: self.mode.clone(),
            step,
            reason: reason.to_string(),
        }
    }

    /// Run the pipeline on `text` and return its raw stdout.
    fn run(&self, text: &str) -> Result<String, TranslateError> {
        let mut child = Command::new(&self.program)
            .arg("-u")
            .arg("-d")
            .arg(&self.data_dir)
            .arg(&self.mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // `apertium` is a shell script running a pipeline of a dozen programs; a group
            // of their own lets a timeout stop all of them, not just the script.
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => TranslateError::ApertiumMissing,
                _ => self.error("start", e),
            })?;
        // unwrap: all three were set to `Stdio::piped()` above, and are taken only here.
        let (mut stdin, mut stdout, mut stderr) = (
            child.stdin.take().unwrap(),
            child.stdout.take().unwrap(),
            child.stderr.take().unwrap(),
        );
        // Writing, reading and waiting each happen on their own thread: any of them can
        // block when the pipeline stalls, and only the timeout below may decide to give up.
        let input = text.to_string();
        thread::spawn(move || {
            // An early exit closes the pipe; its status and stderr say why.
            let _ = stdin.write_all(input.as_bytes());
        });
        let errors = thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            buf
        });
        let (done, output) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = done.send(stdout.read_to_end(&mut buf).map(|_| buf));
        });
        let stdout = match output.recv_timeout(self.timeout) {
            Ok(read) => read.map_err(|e| self.error("read its output", e))?,
            Err(_) => {
                kill_group(&mut child);
                return Err(TranslateError::ApertiumTimeout {
                    mode: self.mode.clone(),
                    timeout: self.timeout,
                });
            }
        };
        // stdout closed: the pipeline is done, and the script exits right after it.
        let status = child.wait().map_err(|e| self.error("finish", e))?;
        if !status.success() {
            let stderr = errors.join().unwrap_or_default();
            let reason = stderr
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("no message")
                .trim()
                .to_string();
            return Err(self.error("translate", format!("{status}: {reason}")));
        }
        String::from_utf8(stdout).map_err(|e| self.error("produce UTF-8", e))
    }
}

impl Translator for ApertiumTranslator {
    fn translate(&mut self, text: &str) -> Result<String, TranslateError> {
        if text.trim().is_empty() {
            return Ok(String::new());
        }
        self.run(text).map(|out| strip_marks(&out))
    }

    fn pair(&self) -> (&str, &str) {
        (&self.source, &self.target)
    }
}

/// `text` without Apertium's marks, and without the stray spaces its pipeline leaves
/// (a leading blank, doubled blanks where a word was dropped).
pub fn strip_marks(text: &str) -> String {
    let unmarked: String = text.chars().filter(|c| !MARKS.contains(c)).collect();
    unmarked
        .split(' ')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string()
}

/// Stop every process of `child`'s group, then reap `child`.
fn kill_group(child: &mut Child) {
    // Through `kill(1)` rather than `libc::kill`: this crate has no unsafe code, and a
    // timeout is rare enough that one more process does not matter.
    let group = format!("-{}", child.id());
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &group])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !killed {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    #[test]
    fn marks_never_survive() {
        assert_eq!(
            strip_marks(" *Zorblax Ve la #vaso.  @ticket #stir# up ~de ~el\n"),
            "Zorblax Ve la vaso. ticket stir up de el"
        );
        assert_eq!(
            strip_marks("El perro come la manzana."),
            "El perro come la manzana."
        );
    }

    /// A translator whose `apertium` is the shell script `body`.
    fn fake(name: &str, body: &str) -> (PathBuf, ApertiumTranslator) {
        let dir = env::temp_dir().join(format!("tolk-apertium-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("modes")).unwrap();
        let program = dir.join("apertium");
        fs::write(&program, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let translator = ApertiumTranslator {
            program,
            data_dir: dir.clone(),
            mode: "eng-spa".into(),
            source: "en".into(),
            target: "es".into(),
            timeout: Duration::from_millis(300),
        };
        (dir, translator)
    }

    #[test]
    fn marks_from_the_command_are_stripped() {
        let (dir, mut t) = fake("marks", "cat >/dev/null; echo '*Zorblax Ve la #vaso.'");
        assert_eq!(
            t.translate("Zorblax sees the vessel.").unwrap(),
            "Zorblax Ve la vaso."
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stuck_pipeline_is_stopped_at_the_timeout() {
        // The sleep is a grandchild, as Apertium's programs are: it must die too, or it
        // would hold stdout open.
        let (dir, mut t) = fake("stuck", "sleep 30 | cat");
        let start = Instant::now();
        let err = t.translate("The dog.").unwrap_err();
        assert!(
            matches!(err, TranslateError::ApertiumTimeout { .. }),
            "{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(5));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failures_carry_apertium_s_message() {
        let (dir, mut t) = fake(
            "fails",
            "echo 'Error: Mode eng-spa does not exist.' >&2; exit 1",
        );
        let err = t.translate("The dog.").unwrap_err().to_string();
        assert!(
            err.contains("Apertium eng-spa failed to translate")
                && err.contains("Mode eng-spa does not exist"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_mode_fails_at_open() {
        let err =
            ApertiumTranslator::open(Path::new("/nonexistent/modes/eng-xxx.mode"), "en", "xx")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("Apertium mode eng-xxx is not installed"),
            "{err}"
        );
    }
}
