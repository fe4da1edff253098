//! Client audio frames (raw PCM in the format declared at `start_stream`) to 16 kHz mono.

use tolk_models::resample::StreamResampler;
use tolk_protocol::ws::{AudioEncoding, AudioFormat};

/// Decodes one stream's frames; keeps the resampler's state between frames so frame edges
/// leave no trace in the audio.
pub struct FrameDecoder {
    format: AudioFormat,
    resampler: StreamResampler,
}

impl FrameDecoder {
    pub fn new(format: AudioFormat) -> Self {
        Self {
            resampler: StreamResampler::new(format.sample_rate, 16_000),
            format,
        }
    }

    /// Frame length in milliseconds of audio.
    pub fn duration_ms(&self, bytes: usize) -> f64 {
        bytes as f64 * 1000.0 / self.format.bytes_per_second() as f64
    }

    /// Decode a frame. It must hold whole sample frames (all channels of a sample).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let frame = self.format.frame_bytes();
        if bytes.len() % frame != 0 {
            return Err(format!(
                "a frame of {} bytes is not a whole number of {frame}-byte sample frames ({:?}, {} channel(s))",
                bytes.len(),
                self.format.encoding,
                self.format.channels
            ));
        }
        let channels = self.format.channels as usize;
        let samples: Vec<f32> = match self.format.encoding {
            AudioEncoding::PcmS16le => bytes
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
                .collect(),
            AudioEncoding::PcmF32le => bytes
                .chunks_exact(4)
                .map(|b| {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
                .collect(),
        };
        let mono: Vec<f32> = if channels == 1 {
            samples
        } else {
            samples
                .chunks_exact(channels)
                .map(|f| f.iter().sum::<f32>() / channels as f32)
                .collect()
        };
        Ok(self.resampler.process(&mono))
    }

    /// The resampler's held-back tail, at end of stream.
    pub fn flush(&mut self) -> Vec<f32> {
        self.resampler.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_f32_at_48k_becomes_mono_16k() {
        let format = AudioFormat {
            encoding: AudioEncoding::PcmF32le,
            sample_rate: 48_000,
            channels: 2,
        };
        let mut d = FrameDecoder::new(format);
        let frame: Vec<u8> = (0..4800)
            .flat_map(|_| [0.5f32, -0.5f32])
            .flat_map(f32::to_le_bytes)
            .collect();
        assert_eq!(d.duration_ms(frame.len()), 100.0);
        let mut out = d.decode(&frame).unwrap();
        out.extend(d.flush());
        assert_eq!(out.len(), 1600);
        assert!(out.iter().all(|s| s.abs() < 1e-3), "channels cancel out");
    }

    #[test]
    fn partial_sample_frames_are_refused() {
        let format = AudioFormat {
            encoding: AudioEncoding::PcmS16le,
            sample_rate: 16_000,
            channels: 2,
        };
        let err = FrameDecoder::new(format).decode(&[0; 6]).unwrap_err();
        assert!(
            err.contains("not a whole number of 4-byte sample frames"),
            "{err}"
        );
    }
}

/// Properties over arbitrary formats and frames (proptest).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use tolk_protocol::ws::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

    use super::*;

    fn format(rate: impl Strategy<Value = u32>) -> impl Strategy<Value = AudioFormat> {
        (any::<bool>(), 1u16..=2, rate).prop_map(|(f32le, channels, sample_rate)| AudioFormat {
            encoding: if f32le {
                AudioEncoding::PcmF32le
            } else {
                AudioEncoding::PcmS16le
            },
            sample_rate,
            channels,
        })
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 1..12)
    }

    proptest! {
        /// At 16 kHz nothing is resampled: a frame is refused exactly when it is not whole
        /// sample frames, and otherwise gives exactly one sample per sample frame, in
        /// [-1, 1], the channels' mean (for s16le, exactly).
        #[test]
        fn at_16k_a_frame_gives_one_sample_per_sample_frame(
            format in format(Just(16_000)),
            frames in frames(),
        ) {
            let mut d = FrameDecoder::new(format);
            let size = format.frame_bytes();
            for frame in &frames {
                match d.decode(frame) {
                    Ok(samples) => {
                        prop_assert_eq!(frame.len() % size, 0);
                        prop_assert_eq!(samples.len(), frame.len() / size);
                        prop_assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
                        if format.encoding == AudioEncoding::PcmS16le {
                            for (s, bytes) in samples.iter().zip(frame.chunks_exact(size)) {
                                let sum: i32 = bytes
                                    .chunks_exact(2)
                                    .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
                                    .sum();
                                let mean = sum as f32 / 32768.0 / f32::from(format.channels);
                                prop_assert_eq!(*s, mean);
                            }
                        }
                    }
                    Err(e) => {
                        prop_assert_ne!(frame.len() % size, 0, "refused: {}", e);
                        let names_the_size = e.contains(&format!("a frame of {} bytes", frame.len()));
                        prop_assert!(names_the_size, "{}", e);
                    }
                }
            }
            prop_assert!(d.flush().is_empty());
        }

        /// At any accepted rate, the frames accepted give `ceil(n × 16000 / rate)` samples
        /// with the flush, the same as the same bytes decoded as one frame; a refused frame
        /// leaves no trace.
        #[test]
        fn frame_edges_leave_no_trace(
            format in format(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE),
            frames in frames(),
        ) {
            let mut d = FrameDecoder::new(format);
            let mut out = Vec::new();
            let mut accepted = Vec::new();
            for frame in &frames {
                if let Ok(samples) = d.decode(frame) {
                    out.extend(samples);
                    accepted.extend_from_slice(frame);
                }
            }
            out.extend(d.flush());
            let n = (accepted.len() / format.frame_bytes()) as u64;
            let expected = (n * 16_000).div_ceil(u64::from(format.sample_rate));
            prop_assert_eq!(out.len() as u64, expected);
            let mut whole = FrameDecoder::new(format);
            let mut at_once = whole.decode(&accepted).unwrap();
            at_once.extend(whole.flush());
            prop_assert!(out.iter().map(|s| s.to_bits()).eq(at_once.iter().map(|s| s.to_bits())));
        }
    }
}
