//! The audio a simulated client sends: a WAV file as 16-bit PCM frames, looped.

use std::path::Path;

use anyhow::{bail, Context};
use tolk_protocol::ws::{AudioEncoding, AudioFormat};

/// A clip as raw s16le bytes in its own sample rate and channel count.
#[derive(Debug, Clone)]
pub struct Clip {
    pub format: AudioFormat,
    pub pcm: Vec<u8>,
}

impl Clip {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let mut reader =
            hound::WavReader::open(path).with_context(|| format!("reading {}", path.display()))?;
        let spec = reader.spec();
        let samples: Vec<i16> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Int, 16) => reader.samples::<i16>().collect::<Result<_, _>>()?,
            (hound::SampleFormat::Int, bits) if bits <= 32 => {
                let shift = bits - 16;
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|v| (v >> shift) as i16))
                    .collect::<Result<_, _>>()?
            }
            (hound::SampleFormat::Float, 32) => reader
                .samples::<f32>()
                .map(|s| s.map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16))
                .collect::<Result<_, _>>()?,
            (format, bits) => bail!(
                "{}: unsupported WAV sample format {format:?} {bits}-bit",
                path.display()
            ),
        };
        let format = AudioFormat {
            encoding: AudioEncoding::PcmS16le,
            sample_rate: spec.sample_rate,
            channels: spec.channels,
        };
        format.validate().map_err(anyhow::Error::msg)?;
        Ok(Self {
            format,
            pcm: samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        })
    }

    /// The clip followed by `silence_ms` of silence, so a looped clip has pauses between
    /// utterances as speech does.
    pub fn with_silence(mut self, silence_ms: u64) -> Self {
        let bytes = self.format.bytes_per_second() * silence_ms / 1000;
        let bytes = bytes - bytes % self.format.frame_bytes() as u64;
        self.pcm.extend(std::iter::repeat_n(0u8, bytes as usize));
        self
    }

    pub fn duration_ms(&self) -> u64 {
        self.pcm.len() as u64 * 1000 / self.format.bytes_per_second()
    }

    /// Bytes in a frame of `ms` milliseconds (whole sample frames).
    pub fn frame_bytes(&self, ms: u64) -> usize {
        let bytes = (self.format.bytes_per_second() * ms / 1000) as usize;
        bytes - bytes % self.format.frame_bytes()
    }

    /// Frame `i` of `frame_bytes` when the clip is looped forever.
    pub fn frame(&self, i: u64, frame_bytes: usize) -> Vec<u8> {
        let len = self.pcm.len();
        let start = (i as usize * frame_bytes) % len;
        (0..frame_bytes)
            .map(|k| self.pcm[(start + k) % len])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(n: usize) -> Clip {
        let format = AudioFormat {
            encoding: AudioEncoding::PcmS16le,
            sample_rate: 16_000,
            channels: 1,
        };
        Clip {
            format,
            pcm: (0..n).map(|i| i as u8).collect(),
        }
    }

    #[test]
    fn frames_loop_over_the_clip() {
        let c = clip(10);
        assert_eq!(c.frame(0, 4), vec![0, 1, 2, 3]);
        assert_eq!(c.frame(2, 4), vec![8, 9, 0, 1]);
    }

    #[test]
    fn frames_are_whole_sample_frames() {
        let c = clip(32_000);
        assert_eq!(c.frame_bytes(100), 3200);
        assert_eq!(c.duration_ms(), 1000);
        assert_eq!(c.with_silence(500).duration_ms(), 1500);
    }
}
