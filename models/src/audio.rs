//! Audio as the recognisers want it: mono, 16 kHz, f32 in [-1, 1].

use std::path::Path;

use crate::asr::SAMPLE_RATE;
use crate::resample::resample;
use crate::wav::{self, WavError};

/// Mono 16 kHz audio with the format it came from, for messages and metrics.
#[derive(Debug, Clone)]
pub struct SpeechAudio {
    pub samples: Vec<f32>,
    pub source_rate: u32,
    pub source_channels: u16,
}

impl SpeechAudio {
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / SAMPLE_RATE as u64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format { path: String, source: WavError },
}

/// Decode WAV bytes and convert them to mono 16 kHz.
pub fn decode_wav(bytes: &[u8]) -> Result<SpeechAudio, WavError> {
    let pcm = wav::decode(bytes)?;
    let mono = pcm.to_mono();
    Ok(SpeechAudio {
        samples: resample(&mono, pcm.sample_rate, SAMPLE_RATE),
        source_rate: pcm.sample_rate,
        source_channels: pcm.channels,
    })
}

/// Read a WAV file and convert it to mono 16 kHz.
pub fn read_wav(path: &Path) -> Result<SpeechAudio, AudioError> {
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_wav(&bytes).map_err(|source| AudioError::Format {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wav::encode_pcm16;

    #[test]
    fn stereo_44k_becomes_mono_16k() {
        let frames = 44_100;
        let mut interleaved = Vec::with_capacity(frames * 2);
        for i in 0..frames {
            let v = (2.0 * std::f32::consts::PI * 300.0 * i as f32 / 44_100.0).sin() * 0.5;
            interleaved.extend([v, v]);
        }
        let audio = decode_wav(&encode_pcm16(&interleaved, 44_100, 2)).unwrap();
        assert_eq!((audio.source_rate, audio.source_channels), (44_100, 2));
        assert_eq!(audio.samples.len(), 16_000);
        assert_eq!(audio.duration_ms(), 1000);
        let peak = audio.samples[1000..15_000]
            .iter()
            .fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
    }

    #[test]
    fn eight_khz_is_upsampled() {
        let audio = decode_wav(&encode_pcm16(&vec![0.1; 8_000], 8_000, 1)).unwrap();
        assert_eq!(audio.samples.len(), 16_000);
    }

    #[test]
    fn file_errors_name_the_file() {
        let err = read_wav(Path::new("/nonexistent/clip.wav"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/clip.wav: "), "{err}");
    }
}
