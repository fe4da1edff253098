// The microphone resampler (web/resample.js), in Node: frequency response, aliasing, and
// block-size independence. Run by `node --test` in tests/browser (make test-browser).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Resampler, toInt16 } from "../../web/resample.js";

function sine(rate, freq, seconds, amplitude = 0.5) {
  const out = new Float32Array(Math.round(rate * seconds));
  for (let i = 0; i < out.length; i++) out[i] = amplitude * Math.sin((2 * Math.PI * freq * i) / rate);
  return out;
}

/** Resample `input` feeding it in blocks of `block` samples (128: one AudioWorklet quantum). */
function run(inRate, outRate, input, block = 128) {
  const r = new Resampler(inRate, outRate);
  const out = new Float32Array(r.maxOutput(input.length) + 16);
  const scratch = new Float32Array(r.maxOutput(block));
  let n = 0;
  for (let i = 0; i < input.length; i += block) {
    const got = r.process(input.subarray(i, i + block), scratch);
    out.set(scratch.subarray(0, got), n);
    n += got;
  }
  return out.subarray(0, n);
}

/** Amplitude of the component at `freq` (correlation with sin and cos over whole cycles). */
function amplitudeAt(samples, rate, freq) {
  let s = 0;
  let c = 0;
  for (let i = 0; i < samples.length; i++) {
    s += samples[i] * Math.sin((2 * Math.PI * freq * i) / rate);
    c += samples[i] * Math.cos((2 * Math.PI * freq * i) / rate);
  }
  return (2 * Math.hypot(s, c)) / samples.length;
}

function rms(samples) {
  let sum = 0;
  for (const x of samples) sum += x * x;
  return Math.sqrt(sum / samples.length);
}

// Skip the kernel's lead-in and tail when measuring steady-state behaviour.
const steady = (x, rate) => x.subarray(Math.round(rate * 0.05), x.length - Math.round(rate * 0.05));

for (const inRate of [48000, 44100, 32000, 22050]) {
  test(`${inRate} Hz → 16 kHz: output length follows the ratio`, () => {
    const out = run(inRate, 16000, sine(inRate, 440, 2));
    const expected = 2 * 16000;
    assert.ok(Math.abs(out.length - expected) <= 16000 * 0.005, `${out.length} samples for ${expected}`);
  });

  for (const freq of [300, 1000, 3000, 6500]) {
    test(`${inRate} Hz → 16 kHz: a ${freq} Hz tone passes at its amplitude and frequency`, () => {
      const out = steady(run(inRate, 16000, sine(inRate, freq, 1)), 16000);
      const a = amplitudeAt(out, 16000, freq);
      // 0.1 dB up to 3 kHz, 0.2 dB at 6.5 kHz (the filter's transition starts above it).
      const tolerance = freq <= 3000 ? 0.0058 : 0.0115;
      assert.ok(Math.abs(a - 0.5) < tolerance, `amplitude ${a.toFixed(4)} for 0.5`);
      // Nothing else: the residual after the tone is tiny.
      assert.ok(Math.abs(rms(out) - a / Math.SQRT2) < 0.002, `rms ${rms(out)} for amplitude ${a}`);
    });
  }
}

for (const freq of [9000, 12000, 15000, 20000]) {
  test(`48 kHz → 16 kHz: a ${freq} Hz tone (above 8 kHz) is removed, not aliased`, () => {
    const out = steady(run(48000, 16000, sine(48000, freq, 1)), 16000);
    const db = 20 * Math.log10(rms(out) / (0.5 / Math.SQRT2));
    assert.ok(db < -60, `${freq} Hz leaks at ${db.toFixed(1)} dB`);
  });
}

test("block size does not change the output", () => {
  const input = sine(44100, 1234, 0.5);
  const a = run(44100, 16000, input, 128);
  const b = run(44100, 16000, input, 1);
  const c = run(44100, 16000, input, input.length);
  assert.equal(a.length, b.length);
  assert.equal(a.length, c.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) < 1e-6 && Math.abs(a[i] - c[i]) < 1e-6, `sample ${i}`);
  }
});

test("16 kHz → 16 kHz is the identity", () => {
  const input = sine(16000, 1000, 0.2);
  const out = run(16000, 16000, input);
  // Output k is input k once the lead-in is past.
  for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i] - input[i]) < 1e-3, `sample ${i}`);
});

test("toInt16 clamps and scales", () => {
  const out = toInt16(Float32Array.from([0, 1, -1, 2, -2, 0.5]), 6, new Int16Array(6));
  assert.deepEqual(Array.from(out), [0, 32767, -32768, 32767, -32768, 16384]);
});
