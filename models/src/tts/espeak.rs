//! espeak-ng's own (formant) voices, for languages no Piper voice speaks.
//!
//! Audio comes from the `espeak-ng` command, one process per sentence. In a child process
//! synthesis has its own copy of espeak-ng's global state, so it never waits for, or holds,
//! the lock the in-process phonemizer needs ([`super::phonemize`]). Sentences are cut by
//! espeak-ng's own rules, through that phonemizer, so they match what it would say.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::{Command, Stdio};

use super::phonemize;
use super::{Speech, Synthesizer, TtsError};
use crate::wav;

/// What `espeak-ng --stdout` writes as the data size, since a pipe cannot be rewound to
/// fill it in; `wav::decode` reads 0xFFFFFFFF as "to the end", so it is swapped for that.
const STREAMED_SIZE: u32 = 0x7FFF_F000;

/// A short text every voice can say, spoken once at start to check the voice and learn the
/// sample rate (espeak-ng voices are 22050 Hz, MBROLA ones 16000).
const PROBE: &str = "a";

/// An espeak-ng voice.
#[derive(Debug, Clone)]
pub struct EspeakVoice {
    /// What `-v` is given (`es`, `en-us`, `zh`).
    voice: String,
    language: String,
    sample_rate: u32,
}

impl EspeakVoice {
    /// `voice` as `espeak-ng --voices` lists it; `language` is what [`Synthesizer::language`]
    /// reports. Fails with [`TtsError::UnknownVoice`] when espeak-ng has no such voice.
    pub fn new(voice: &str, language: &str) -> Result<Self, TtsError> {
        // It goes on a command line: a name starting with '-' would be read as an option.
        let valid = !voice.is_empty()
            && !voice.starts_with('-')
            && voice
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !valid {
            return Err(TtsError::UnknownVoice {
                voice: voice.to_string(),
            });
        }
        let mut espeak = Self {
            voice: voice.to_string(),
            language: language.to_string(),
            sample_rate: 0,
        };
        let (rate, _) = espeak.speak(PROBE)?;
        if rate == 0 {
            return Err(TtsError::Espeak {
                voice: voice.to_string(),
                step: "start",
                reason: format!("it wrote no audio for {PROBE:?}"),
            });
        }
        espeak.sample_rate = rate;
        Ok(espeak)
    }

    /// Run `espeak-ng` on `text`: (sample rate, mono samples).
    fn speak(&self, text: &str) -> Result<(u32, Vec<f32>), TtsError> {
        let failed = |step: &'static str, reason: String| TtsError::Espeak {
            voice: self.voice.clone(),
            step,
            reason,
        };
        // Text goes through stdin, never argv: any text is safe there and has no length limit.
        let mut child = Command::new("espeak-ng")
            .args(["-v", &self.voice, "-b", "1", "--stdin", "--stdout"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| TtsError::EspeakMissing {
                reason: format!("cannot run espeak-ng ({e}); install the Debian package espeak-ng"),
            })?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed("start", "no stdin".into()))?;
        // Written from another thread: espeak-ng may fill the stdout pipe before it has
        // read all its input, and waiting for either alone would deadlock.
        let output = std::thread::scope(|scope| {
            let writer = scope.spawn(move || stdin.write_all(text.as_bytes()));
            let output = child.wait_with_output();
            // A failed write (espeak-ng exited early) shows in its status and stderr.
            let _ = writer.join();
            output
        })
        .map_err(|e| failed("run", e.to_string()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("voice does not exist") {
                return Err(TtsError::UnknownVoice {
                    voice: self.voice.clone(),
                });
            }
            return Err(failed(
                "run",
                format!("{}: {}", output.status, stderr.trim()),
            ));
        }
        if output.stdout.is_empty() {
            // Nothing to say (punctuation only): espeak-ng writes no header at all.
            return Ok((self.sample_rate, Vec::new()));
        }
        let mut bytes = output.stdout;
        mark_streamed_size(&mut bytes);
        let pcm = wav::decode(&bytes).map_err(|e| failed("reading its WAV", e.to_string()))?;
        Ok((pcm.sample_rate, pcm.to_mono()))
    }
}

/// Replace espeak-ng's placeholder data size with the "unknown" marker.
fn mark_streamed_size(bytes: &mut [u8]) {
    // espeak-ng writes the canonical 44-byte header: "data" and its size at 36..44.
    if bytes.get(36..40) == Some(b"data") && bytes.get(40..44) == Some(&STREAMED_SIZE.to_le_bytes())
    {
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
    }
}

impl Synthesizer for EspeakVoice {
    fn synthesize_each(
        &mut self,
        text: &str,
        each: &mut dyn FnMut(Speech) -> ControlFlow<()>,
    ) -> Result<(), TtsError> {
        for sentence in phonemize::sentences(&self.voice, text)? {
            let (rate, samples) = self.speak(&sentence)?;
            if rate != self.sample_rate {
                return Err(TtsError::Espeak {
                    voice: self.voice.clone(),
                    step: "reading its WAV",
                    reason: format!("sample rate changed from {} to {rate} Hz", self.sample_rate),
                });
            }
            if each(Speech { sentence, samples }).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    fn language(&self) -> &str {
        &self.language
    }
}
