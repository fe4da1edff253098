//! WAV (RIFF/WAVE) decoding to interleaved f32 samples.
//!
//! Written for untrusted input: every length is checked against what is actually there, a
//! truncated file is an error (not a shorter clip), and nothing is allocated on the word of
//! a header alone.

use std::fmt;

/// Decoded audio: interleaved samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels as usize
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames() as u64 * 1000 / self.sample_rate as u64
    }

    /// Average the channels into one.
    pub fn to_mono(&self) -> Vec<f32> {
        let n = self.channels as usize;
        if n == 1 {
            return self.samples.clone();
        }
        self.samples
            .chunks_exact(n)
            .map(|frame| frame.iter().sum::<f32>() / n as f32)
            .collect()
    }
}

/// Why a file is not audio we can read. Messages are one line, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavError {
    NotWav,
    Truncated { what: &'static str },
    MissingChunk(&'static str),
    Unsupported(String),
    Invalid(String),
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::NotWav => write!(f, "not a WAV file (no RIFF/WAVE header)"),
            WavError::Truncated { what } => write!(f, "WAV file is truncated ({what})"),
            WavError::MissingChunk(c) => write!(f, "WAV file has no '{c}' chunk"),
            WavError::Unsupported(m) => write!(f, "unsupported WAV format: {m}"),
            WavError::Invalid(m) => write!(f, "invalid WAV file: {m}"),
        }
    }
}

impl std::error::Error for WavError {}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Unsigned 8-bit, signed 16/24/32-bit little-endian integers.
    Int,
    Float,
}

struct Format {
    encoding: Encoding,
    channels: u16,
    sample_rate: u32,
    bits: u16,
    block_align: u16,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_fmt(body: &[u8]) -> Result<Format, WavError> {
    if body.len() < 16 {
        return Err(WavError::Invalid(format!(
            "'fmt ' chunk is {} bytes, needs 16",
            body.len()
        )));
    }
    let mut tag = u16_at(body, 0);
    let channels = u16_at(body, 2);
    let sample_rate = u32_at(body, 4);
    let block_align = u16_at(body, 12);
    let bits = u16_at(body, 14);
    if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize (2), validBits (2), channelMask (4), then a GUID whose first two bytes
        // are the real format tag.
        if body.len() < 40 {
            return Err(WavError::Invalid(
                "WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is too short".into(),
            ));
        }
        tag = u16_at(body, 24);
    }
    let encoding = match (tag, bits) {
        (WAVE_FORMAT_PCM, 8 | 16 | 24 | 32) => Encoding::Int,
        (WAVE_FORMAT_IEEE_FLOAT, 32 | 64) => Encoding::Float,
        (WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT, b) => {
            return Err(WavError::Unsupported(format!("{b}-bit samples")))
        }
        (6, _) => return Err(WavError::Unsupported("A-law encoding".into())),
        (7, _) => return Err(WavError::Unsupported("mu-law encoding".into())),
        (t, _) => {
            return Err(WavError::Unsupported(format!(
                "format tag 0x{t:04x} (compressed audio)"
            )))
        }
    };
    if channels == 0 || channels > 8 {
        return Err(WavError::Unsupported(format!("{channels} channels")));
    }
    if !(1000..=384_000).contains(&sample_rate) {
        return Err(WavError::Unsupported(format!(
            "sample rate {sample_rate} Hz"
        )));
    }
    if block_align as u32 != channels as u32 * (bits as u32 / 8) {
        return Err(WavError::Invalid(format!(
            "block align {block_align} does not match {channels} channels of {bits} bits"
        )));
    }
    Ok(Format {
        encoding,
        channels,
        sample_rate,
        bits,
        block_align,
    })
}

fn decode_samples(fmt: &Format, data: &[u8]) -> Vec<f32> {
    let width = (fmt.bits / 8) as usize;
    let samples = data.chunks_exact(width);
    match (fmt.encoding, fmt.bits) {
        (Encoding::Int, 8) => samples.map(|s| (s[0] as f32 - 128.0) / 128.0).collect(),
        (Encoding::Int, 16) => samples
            .map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0)
            .collect(),
        (Encoding::Int, 24) => samples
            .map(|s| (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 8_388_608.0)
            .collect(),
        (Encoding::Int, 32) => samples
            .map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0)
            .collect(),
        (Encoding::Float, 32) => samples
            .map(|s| sanitize(f32::from_le_bytes([s[0], s[1], s[2], s[3]])))
            .collect(),
        (Encoding::Float, 64) => samples
            .map(|s| {
                let v = f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
                sanitize(v as f32)
            })
            .collect(),
        // parse_fmt admits no other combination.
        _ => unreachable!("unsupported sample layout passed parse_fmt"),
    }
}

/// Float WAVs may hold NaN or values far outside [-1, 1]; neither may reach the models.
fn sanitize(v: f32) -> f32 {
    if v.is_finite() {
        v.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// Decode a whole WAV file held in memory.
pub fn decode(bytes: &[u8]) -> Result<Pcm, WavError> {
    let (fmt, data) = locate(bytes)?;
    Ok(Pcm {
        sample_rate: fmt.sample_rate,
        channels: fmt.channels,
        samples: decode_samples(&fmt, &bytes[data]),
    })
}

/// A WAV file's duration in seconds, from its header alone: lets a caller refuse audio
/// that is too long before decoding (and resampling) it, which takes far more memory
/// than the file.
pub fn duration_seconds(bytes: &[u8]) -> Result<f64, WavError> {
    let (fmt, data) = locate(bytes)?;
    let frames = data.len() / fmt.block_align as usize;
    Ok(frames as f64 / fmt.sample_rate as f64)
}

/// The format and the byte range of the whole sample frames of the data chunk.
fn locate(bytes: &[u8]) -> Result<(Format, std::ops::Range<usize>), WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(bytes, at + 4) as usize;
        let body_start = at + 8;
        let available = bytes.len() - body_start;
        match id {
            b"fmt " => {
                if size > available {
                    return Err(WavError::Truncated {
                        what: "'fmt ' chunk",
                    });
                }
                format = Some(parse_fmt(&bytes[body_start..body_start + size])?);
            }
            b"data" => {
                let fmt = format.ok_or(WavError::MissingChunk("fmt "))?;
                // Streaming writers leave the size at 0 or 0xFFFFFFFF: take what is there.
                let size = if size == 0 || size == u32::MAX as usize {
                    available
                } else {
                    size
                };
                if size > available {
                    return Err(WavError::Truncated {
                        what: "the data chunk is shorter than its header says",
                    });
                }
                let whole = size - size % fmt.block_align as usize;
                return Ok((fmt, body_start..body_start + whole));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_start.saturating_add(size).saturating_add(size & 1);
    }
    if format.is_none() {
        Err(WavError::MissingChunk("fmt "))
    } else {
        Err(WavError::MissingChunk("data"))
    }
}

/// Encode 16-bit PCM WAV; used by tests and by TTS output.
pub fn encode_pcm16(samples: &[f32], sample_rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&WAVE_FORMAT_PCM.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * channels as u32 * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_comes_from_the_header_without_decoding() {
        let bytes = encode_pcm16(&vec![0.0; 3 * 24_000], 24_000, 2);
        assert_eq!(duration_seconds(&bytes).unwrap(), 1.5);
        assert!(duration_seconds(b"RIFF\0\0\0\0WAVE").is_err());
    }

    fn write_with_hound(spec: hound::WavSpec, frames: usize, f: impl Fn(usize) -> f32) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for i in 0..frames * spec.channels as usize {
            let v = f(i);
            match (spec.sample_format, spec.bits_per_sample) {
                (hound::SampleFormat::Float, _) => w.write_sample(v).unwrap(),
                (_, 8) => w.write_sample((v * 127.0) as i8).unwrap(),
                (_, 16) => w.write_sample((v * 32767.0) as i16).unwrap(),
                (_, 24) => w.write_sample((v * 8_388_607.0) as i32).unwrap(),
                (_, 32) => w.write_sample((v * 2_147_483_647.0) as i32).unwrap(),
                _ => unreachable!(),
            }
        }
        w.finalize().unwrap();
        cursor.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn every_supported_layout_decodes_to_the_same_values() {
        let ramp = |i: usize| ((i % 200) as f32 / 100.0 - 1.0) * 0.5;
        for (bits, float, tolerance) in [
            (8, false, 1.0 / 64.0),
            (16, false, 1e-4),
            (24, false, 1e-6),
            (32, false, 1e-6),
            (32, true, 0.0),
        ] {
            let bytes = write_with_hound(spec(2, 44_100, bits, float), 1000, ramp);
            let pcm = decode(&bytes).unwrap_or_else(|e| panic!("{bits}-bit float={float}: {e}"));
            assert_eq!(
                (pcm.sample_rate, pcm.channels, pcm.frames()),
                (44_100, 2, 1000)
            );
            for (i, s) in pcm.samples.iter().enumerate() {
                assert!(
                    (s - ramp(i)).abs() <= tolerance,
                    "{bits}-bit sample {i}: {s} vs {}",
                    ramp(i)
                );
            }
        }
    }

    #[test]
    fn extensible_header_is_read() {
        // hound writes WAVE_FORMAT_EXTENSIBLE for 24-bit and for more than 2 channels.
        let bytes = write_with_hound(spec(3, 8_000, 24, false), 10, |_| 0.25);
        assert_eq!(u16_at(&bytes, 20), WAVE_FORMAT_EXTENSIBLE);
        let pcm = decode(&bytes).unwrap();
        assert_eq!(pcm.channels, 3);
        assert!(pcm.samples.iter().all(|s| (s - 0.25).abs() < 1e-6));
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let bytes = write_with_hound(spec(2, 16_000, 16, false), 4, |i| {
            if i % 2 == 0 {
                0.5
            } else {
                -0.25
            }
        });
        let mono = decode(&bytes).unwrap().to_mono();
        assert_eq!(mono.len(), 4);
        assert!(mono.iter().all(|s| (s - 0.125).abs() < 1e-3), "{mono:?}");
    }

    #[test]
    fn truncated_data_is_an_error_not_a_short_clip() {
        let bytes = write_with_hound(spec(1, 16_000, 16, false), 16_000, |_| 0.1);
        let cut = &bytes[..bytes.len() - 1001];
        assert_eq!(
            decode(cut).unwrap_err(),
            WavError::Truncated {
                what: "the data chunk is shorter than its header says"
            }
        );
        assert_eq!(
            decode(&bytes[..30]).unwrap_err(),
            WavError::Truncated {
                what: "'fmt ' chunk"
            }
        );
    }

    #[test]
    fn garbage_and_unsupported_formats_say_what_is_wrong() {
        assert_eq!(
            decode(b"ID3\x03 an mp3 file, say").unwrap_err(),
            WavError::NotWav
        );
        assert_eq!(decode(b"").unwrap_err(), WavError::NotWav);
        let mut bytes = write_with_hound(spec(1, 16_000, 16, false), 10, |_| 0.0);
        bytes[20] = 0x55; // MPEG layer 3 format tag
        let err = decode(&bytes).unwrap_err().to_string();
        assert_eq!(
            err,
            "unsupported WAV format: format tag 0x0055 (compressed audio)"
        );
        let mut bytes = write_with_hound(spec(1, 16_000, 16, false), 10, |_| 0.0);
        bytes[20] = 7;
        assert_eq!(
            decode(&bytes).unwrap_err().to_string(),
            "unsupported WAV format: mu-law encoding"
        );
        // A RIFF/WAVE header with no chunks after it.
        assert_eq!(
            decode(b"RIFF\x04\x00\x00\x00WAVE").unwrap_err(),
            WavError::MissingChunk("fmt ")
        );
    }

    #[test]
    fn float_samples_are_sanitized() {
        let bytes = write_with_hound(spec(1, 16_000, 32, true), 4, |i| {
            [f32::NAN, 3.0, -7.0, 0.5][i]
        });
        assert_eq!(decode(&bytes).unwrap().samples, vec![0.0, 1.0, -1.0, 0.5]);
    }

    #[test]
    fn pcm16_encoding_round_trips() {
        let samples: Vec<f32> = (0..100).map(|i| (i as f32 / 50.0 - 1.0) * 0.9).collect();
        let pcm = decode(&encode_pcm16(&samples, 22_050, 1)).unwrap();
        assert_eq!(pcm.sample_rate, 22_050);
        for (a, b) in pcm.samples.iter().zip(&samples) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}

/// Properties over arbitrary audio, formats and damage (proptest).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn clip() -> impl Strategy<Value = (Vec<f32>, u32, u16)> {
        // At least one frame: an empty data chunk reads as a streamed WAV of unknown length
        // (size 0), which then takes whatever follows it, on purpose.
        (1u16..=8, 1_000u32..=384_000, 1usize..200).prop_flat_map(|(channels, rate, frames)| {
            (
                prop::collection::vec(-1.5f32..=1.5, frames * channels as usize),
                Just(rate),
                Just(channels),
            )
        })
    }

    proptest! {
        /// 16-bit PCM round-trips (within two 16-bit steps: written × 32767, read ÷ 32768;
        /// clamped to [-1, 1]); chunks before
        /// `fmt ` and bytes after `data` change nothing; cut short anywhere, the file is an
        /// error, never a shorter clip.
        #[test]
        fn pcm16_round_trips_and_damage_is_an_error(
            (samples, rate, channels) in clip(),
            junk in prop::collection::vec(any::<u8>(), 0..9),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_pcm16(&samples, rate, channels);
            let pcm = decode(&bytes).unwrap();
            prop_assert_eq!((pcm.sample_rate, pcm.channels), (rate, channels));
            prop_assert_eq!(pcm.samples.len(), samples.len());
            for (a, b) in pcm.samples.iter().zip(&samples) {
                prop_assert!((a - b.clamp(-1.0, 1.0)).abs() <= 2.0 / 32767.0, "{} vs {}", a, b);
            }
            // An unknown chunk (odd-sized: its pad byte too) before `fmt `, junk after `data`.
            let mut padded = bytes[..12].to_vec();
            padded.extend_from_slice(b"LIST");
            padded.extend_from_slice(&(junk.len() as u32).to_le_bytes());
            padded.extend_from_slice(&junk);
            if junk.len() % 2 == 1 {
                padded.push(0);
            }
            padded.extend_from_slice(&bytes[12..]);
            padded.extend_from_slice(&junk);
            prop_assert_eq!(decode(&padded).unwrap(), pcm.clone());
            let cut = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..cut]).is_err(), "cut at {} of {}", cut, bytes.len());
        }
    }
}
