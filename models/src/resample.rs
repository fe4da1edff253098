//! Band-limited sample-rate conversion (windowed-sinc interpolation).
//!
//! Each output sample is a weighted sum of the input around its position, weighted by a
//! Kaiser-windowed sinc whose cut-off is the lower of the two Nyquist frequencies, so
//! downsampling removes what the new rate cannot represent instead of aliasing it into
//! the speech band. The kernel is tabulated once per conversion and linearly interpolated.

use std::f64::consts::PI;

/// Zero crossings of the sinc on each side of the centre, at the cut-off frequency.
const HALF_ZEROS: usize = 16;
/// Table points per zero crossing.
const OVERSAMPLE: usize = 256;
/// Kaiser window shape: ~80 dB stop-band attenuation.
const KAISER_BETA: f64 = 8.0;
/// Cut-off as a fraction of the lower Nyquist frequency: leaves room for the transition band.
const ROLLOFF: f64 = 0.94;

/// Convert mono `input` from `from` Hz to `to` Hz.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() {
        return input.to_vec();
    }
    let mut r = StreamResampler::new(from, to);
    let mut out = r.process(input);
    out.extend(r.flush());
    // The stream form may round the final sample count up by one.
    out.truncate(((input.len() as u64 * to as u64).div_ceil(from as u64)) as usize);
    out
}

/// Resampling of a stream that arrives in pieces: the output is the same as resampling the
/// whole stream at once, whatever the piece sizes (it holds back the output samples whose
/// kernel reaches past the input received so far, and the input they still need).
#[derive(Debug, Clone)]
pub struct StreamResampler {
    from: u32,
    to: u32,
    /// Input samples per output sample.
    step: f64,
    /// Cut-off relative to the input Nyquist frequency.
    cutoff: f64,
    /// Kernel half-width in input samples.
    half_width: f64,
    table: std::sync::Arc<Vec<f64>>,
    /// Input kept, starting at absolute input sample `offset`.
    buffer: Vec<f32>,
    offset: u64,
    /// Input samples received in all.
    received: u64,
    /// Next output sample to produce.
    next: u64,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Self {
        let cutoff = ROLLOFF * (to as f64 / from as f64).min(1.0);
        Self {
            from,
            to,
            step: from as f64 / to as f64,
            cutoff,
            half_width: HALF_ZEROS as f64 / cutoff,
            table: std::sync::Arc::new(kernel_table()),
            buffer: Vec::new(),
            offset: 0,
            received: 0,
            next: 0,
        }
    }

    /// Feed input; returns the output samples that are now complete.
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        if self.from == self.to {
            return input.to_vec();
        }
        self.buffer.extend_from_slice(input);
        self.received += input.len() as u64;
        self.produce(false)
    }

    /// End of stream: the remaining output, with silence past the end.
    pub fn flush(&mut self) -> Vec<f32> {
        if self.from == self.to {
            return Vec::new();
        }
        self.produce(true)
    }

    fn produce(&mut self, at_end: bool) -> Vec<f32> {
        let mut out = Vec::new();
        let total_out = (self.received * self.to as u64).div_ceil(self.from as u64);
        loop {
            let x = self.next as f64 * self.step;
            if at_end {
                if self.next >= total_out {
                    break;
                }
            } else if x + self.half_width >= self.received as f64 {
                break; // the kernel still needs input that has not arrived
            }
            let first = (x - self.half_width).ceil().max(self.offset as f64) as u64;
            let last = ((x + self.half_width).floor() as u64).min(self.received.saturating_sub(1));
            let mut acc = 0.0f64;
            let mut k = first;
            while k <= last {
                let u = ((x - k as f64) * self.cutoff).abs();
                acc += self.buffer[(k - self.offset) as usize] as f64 * lookup(&self.table, u);
                k += 1;
            }
            out.push((acc * self.cutoff) as f32);
            self.next += 1;
        }
        // Keep only the input the next output sample's kernel reaches back to.
        let keep_from = ((self.next as f64 * self.step - self.half_width)
            .floor()
            .max(0.0) as u64)
            .max(self.offset);
        let drop = (keep_from - self.offset) as usize;
        self.buffer.drain(..drop.min(self.buffer.len()));
        self.offset += drop as u64;
        out
    }
}

/// sinc(u) * kaiser(u / HALF_ZEROS) for u in [0, HALF_ZEROS], OVERSAMPLE points per unit.
fn kernel_table() -> Vec<f64> {
    let n = HALF_ZEROS * OVERSAMPLE;
    let norm = bessel_i0(KAISER_BETA);
    (0..=n + 1)
        .map(|i| {
            let u = i as f64 / OVERSAMPLE as f64;
            if u >= HALF_ZEROS as f64 {
                return 0.0;
            }
            let sinc = if u == 0.0 {
                1.0
            } else {
                (PI * u).sin() / (PI * u)
            };
            let r = u / HALF_ZEROS as f64;
            sinc * bessel_i0(KAISER_BETA * (1.0 - r * r).sqrt()) / norm
        })
        .collect()
}

fn lookup(table: &[f64], u: f64) -> f64 {
    let pos = u * OVERSAMPLE as f64;
    let i = pos as usize;
    if i + 1 >= table.len() {
        return 0.0;
    }
    let frac = pos - i as f64;
    table[i] + (table[i + 1] - table[i]) * frac
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= (half / k as f64) * (half / k as f64);
        sum += term;
        if term < sum * 1e-16 {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (rate as f64 * seconds) as usize;
        (0..n)
            .map(|i| (2.0 * PI * freq * i as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    /// Amplitude of `freq` in `x` (single-bin DFT), ignoring the edges.
    fn amplitude(x: &[f32], freq: f64, rate: u32) -> f64 {
        let body = &x[x.len() / 10..x.len() * 9 / 10];
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &v) in body.iter().enumerate() {
            let phase = 2.0 * PI * freq * i as f64 / rate as f64;
            re += v as f64 * phase.cos();
            im += v as f64 * phase.sin();
        }
        2.0 * (re * re + im * im).sqrt() / body.len() as f64
    }

    #[test]
    fn streaming_in_pieces_equals_resampling_at_once() {
        let input = tone(440.0, 44_100, 0.5);
        let whole = resample(&input, 44_100, 16_000);
        for piece in [1, 441, 1000, 4410] {
            let mut r = StreamResampler::new(44_100, 16_000);
            let mut out = Vec::new();
            for chunk in input.chunks(piece) {
                out.extend(r.process(chunk));
            }
            out.extend(r.flush());
            out.truncate(whole.len());
            assert_eq!(out.len(), whole.len(), "piece {piece}");
            let worst = out
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "piece {piece}: max difference {worst}");
        }
        // Its buffer stays bounded by the kernel, not by the stream length.
        let mut r = StreamResampler::new(48_000, 16_000);
        for _ in 0..100 {
            r.process(&[0.1; 4800]);
        }
        assert!(r.buffer.len() < 400, "buffer {}", r.buffer.len());
    }

    #[test]
    fn length_follows_the_ratio() {
        assert_eq!(resample(&vec![0.0; 44_100], 44_100, 16_000).len(), 16_000);
        assert_eq!(resample(&vec![0.0; 8_000], 8_000, 16_000).len(), 16_000);
        assert_eq!(resample(&[0.0; 3], 48_000, 16_000).len(), 1);
        assert_eq!(resample(&[], 48_000, 16_000).len(), 0);
    }

    #[test]
    fn speech_band_tone_keeps_its_frequency_and_level() {
        for from in [8_000, 22_050, 44_100, 48_000] {
            let out = resample(&tone(1000.0, from, 1.0), from, 16_000);
            let a = amplitude(&out, 1000.0, 16_000);
            assert!((a - 0.5).abs() < 0.005, "{from} Hz: amplitude {a}");
        }
    }

    #[test]
    fn upsampled_tone_matches_the_ideal_signal() {
        let out = resample(&tone(440.0, 8_000, 0.5), 8_000, 16_000);
        let ideal = tone(440.0, 16_000, 0.5);
        let worst = out[400..7600]
            .iter()
            .zip(&ideal[400..7600])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-3, "max deviation {worst}");
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed_not_aliased() {
        // 10 kHz cannot exist at 16 kHz; without filtering it folds to 6 kHz.
        let out = resample(&tone(10_000.0, 44_100, 1.0), 44_100, 16_000);
        let aliased = amplitude(&out, 6_000.0, 16_000);
        assert!(
            aliased < 0.5 * 1e-3,
            "alias at 6 kHz has amplitude {aliased} (> -60 dB)"
        );
    }
}

/// Properties over arbitrary signals, rates and chunkings (proptest).
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn rate() -> impl Strategy<Value = u32> {
        prop_oneof![
            prop::sample::select(vec![8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000]),
            1_000u32..=96_000,
        ]
    }

    fn signal() -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-1.0f32..=1.0, 0..2_500)
    }

    /// Cut `input` into pieces of the given lengths (cycled); the rest is one more piece.
    fn pieces<'a>(input: &'a [f32], lengths: &[usize]) -> Vec<&'a [f32]> {
        let mut out = Vec::new();
        let mut rest = input;
        for &n in lengths.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(n.min(rest.len()));
            out.push(piece);
            rest = tail;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Fed in any pieces (empty ones too), the stream gives bit for bit what the whole
        /// signal at once gives, `ceil(n × to / from)` samples in all, and `resample` is
        /// exactly that; its buffer never holds more than the kernel's reach.
        #[test]
        fn pieces_make_no_difference(
            input in signal(),
            from in rate(),
            to in prop_oneof![Just(16_000u32), rate()],
            lengths in prop::collection::vec(0usize..700, 1..8),
        ) {
            let mut whole = StreamResampler::new(from, to);
            let mut expected = whole.process(&input);
            expected.extend(whole.flush());

            let mut r = StreamResampler::new(from, to);
            let reach = (2.0 * r.half_width).ceil() as usize + 1;
            let mut out = Vec::new();
            for piece in pieces(&input, &lengths) {
                out.extend(r.process(piece));
                if from != to {
                    prop_assert!(r.buffer.len() <= reach, "buffer {} > {reach}", r.buffer.len());
                }
                prop_assert_eq!(r.offset + r.buffer.len() as u64, r.received);
            }
            out.extend(r.flush());
            prop_assert_eq!(out.len(), expected.len());
            prop_assert!(
                out.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                "pieces {:?} changed the output", lengths
            );
            let n = (input.len() as u64 * to as u64).div_ceil(from as u64) as usize;
            prop_assert_eq!(out.len(), n);
            prop_assert_eq!(resample(&input, from, to), out);
        }

        /// A constant (DC) signal keeps its level away from the edges, whatever the rates:
        /// the kernel's weights sum to one, so no rate pair gains or loses level.
        #[test]
        fn dc_keeps_its_level(level in -1.0f32..=1.0, from in rate(), to in rate()) {
            let n = from as usize / 10; // 100 ms
            let out = resample(&vec![level; n], from, to);
            let edge = out.len() / 4;
            for (i, v) in out[edge..out.len() - edge].iter().enumerate() {
                prop_assert!((v - level).abs() <= 2e-3, "sample {}: {} vs {}", i + edge, v, level);
            }
        }
    }
}
