// Streaming sample-rate conversion for the microphone: a Kaiser-windowed sinc low-pass
// evaluated at each output instant. Runs in the AudioWorklet's thread, so it allocates
// nothing per block once constructed (the caller hands in the output buffer).
//
// Why not AudioContext({sampleRate: 16000})? Not every browser lets a microphone stream
// into a context at another rate, and the browser's own converter is not specified; this
// one has a known response, measured by tests/browser/resample.test.mjs: within 0.1 dB up to
// 3 kHz and 0.2 dB at 6.5 kHz, more than 60 dB down where aliases would land (9 kHz and up
// from 48 kHz). Equal rates pass samples through untouched.

/** Zeroth-order modified Bessel function of the first kind (series; converges fast). */
function bessel0(x) {
  let sum = 1;
  let term = 1;
  const q = (x * x) / 4;
  for (let k = 1; k < 50; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export class Resampler {
  /**
   * @param {number} inRate  input sample rate, Hz
   * @param {number} outRate output sample rate, Hz
   * @param {{zeros?: number, beta?: number, phases?: number, passband?: number}} [opts]
   *   zeros: zero crossings of the sinc on each side (longer = sharper, more work);
   *   beta: Kaiser window shape (8.6 ≈ 80 dB side lobes); phases: table resolution per
   *   input sample; passband: cut-off as a fraction of the lower Nyquist frequency.
   */
  constructor(inRate, outRate, { zeros = 16, beta = 8.6, phases = 512, passband = 0.92 } = {}) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError(`bad rates ${inRate} → ${outRate}`);
    this.inRate = inRate;
    this.outRate = outRate;
    /** Input samples advanced per output sample. */
    this.step = inRate / outRate;
    // Cut-off in cycles per input sample: below both Nyquist frequencies.
    const cutoff = 0.5 * Math.min(1, outRate / inRate) * passband;
    /** Half the kernel's width, in input samples. */
    this.half = Math.ceil(zeros / (2 * cutoff));
    this.phases = phases;
    // h(x) for x = i / phases, x in [0, half]; two spare zeros for the interpolation.
    const size = this.half * phases + 2;
    this.table = new Float32Array(size);
    const norm = bessel0(beta);
    for (let i = 0; i < size; i++) {
      const x = i / phases;
      if (x >= this.half) break;
      const arg = 2 * cutoff * x;
      const sinc = arg === 0 ? 1 : Math.sin(Math.PI * arg) / (Math.PI * arg);
      const r = x / this.half;
      const window = bessel0(beta * Math.sqrt(1 - r * r)) / norm;
      this.table[i] = 2 * cutoff * sinc * window;
    }
    // Input history: `half` zeros of lead-in, then the samples not yet fully used.
    this.history = new Float32Array(4 * this.half + 8192);
    this.length = this.half;
    /** Position of the next output instant, in input samples from history[0]. */
    this.position = this.half;
  }

  /** Most output samples that `process` can produce from `inputLength` input samples. */
  maxOutput(inputLength) {
    if (this.inRate === this.outRate) return inputLength;
    return Math.ceil((inputLength + this.half + 1) / this.step) + 1;
  }

  /**
   * Feed input samples; write the output samples now computable into `out` (at least
   * `maxOutput(input.length)` long). Returns how many were written. Output sample k of the
   * whole stream is the signal at input instant k × step, delayed by nothing: the lead-in
   * zeros stand for the silence before the first sample.
   */
  process(input, out) {
    if (this.inRate === this.outRate) {
      out.set(input);
      return input.length;
    }
    let offset = 0;
    let written = 0;
    while (offset < input.length) {
      const room = this.history.length - this.length;
      const take = Math.min(room, input.length - offset);
      this.history.set(input.subarray(offset, offset + take), this.length);
      this.length += take;
      offset += take;
      written += this.drain(out, written);
    }
    return written;
  }

  /** Compute every output whose kernel lies within the history, then drop used input. */
  drain(out, at) {
    const { history, table, half, phases } = this;
    let written = 0;
    let t = this.position;
    while (Math.floor(t) + half < this.length) {
      const center = Math.floor(t);
      let sum = 0;
      // Samples center-half+1 … center+half; distance from t is |t - j|.
      for (let j = center - half + 1; j <= center + half; j++) {
        const x = Math.abs(t - j) * phases;
        const k = x | 0;
        if (k + 1 >= table.length) continue;
        const f = x - k;
        sum += history[j] * (table[k] + (table[k + 1] - table[k]) * f);
      }
      out[at + written++] = sum;
      t += this.step;
    }
    // Keep `half` samples before the next instant; everything older is done with.
    const drop = Math.floor(t) - half + 1;
    if (drop > 0) {
      history.copyWithin(0, drop, this.length);
      this.length -= drop;
      t -= drop;
    }
    this.position = t;
    return written;
  }
}

/** Float samples in [-1, 1] to 16-bit PCM, clamped. */
export function toInt16(samples, count, out) {
  for (let i = 0; i < count; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
  }
  return out;
}
