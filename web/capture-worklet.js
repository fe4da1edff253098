// AudioWorklet processor: the microphone, mixed down to mono, resampled to the server's
// rate and cut into 16-bit PCM chunks of `chunkMs` (100 ms: the frame size tolk prefers).
// Each chunk goes to the page with its level (RMS, 0–1), transferred, not copied.
import { Resampler, toInt16 } from "./resample.js";

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, chunkMs = 100 } = options.processorOptions ?? {};
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's rate.
    this.resampler = new Resampler(sampleRate, targetRate);
    this.mono = new Float32Array(128);
    this.resampled = new Float32Array(this.resampler.maxOutput(128));
    this.chunkSamples = Math.round((targetRate * chunkMs) / 1000);
    this.pending = new Float32Array(this.chunkSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.stopped = false;
    this.port.onmessage = (event) => {
      if (event.data === "stop") this.stopped = true;
    };
  }

  process(inputs) {
    if (this.stopped) return false;
    const channels = inputs[0];
    // No input connected yet (or the track ended): keep the node alive.
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    if (this.mono.length < frames) {
      this.mono = new Float32Array(frames);
      this.resampled = new Float32Array(this.resampler.maxOutput(frames));
    }
    const mono = this.mono.subarray(0, frames);
    mono.set(channels[0]);
    for (let c = 1; c < channels.length; c++) {
      const channel = channels[c];
      for (let i = 0; i < frames; i++) mono[i] += channel[i];
    }
    if (channels.length > 1) {
      for (let i = 0; i < frames; i++) mono[i] /= channels.length;
    }
    const n = this.resampler.process(mono, this.resampled);
    for (let i = 0; i < n; i++) {
      const s = this.resampled[i];
      this.pending[this.filled++] = s;
      this.sumSquares += s * s;
      if (this.filled === this.chunkSamples) this.emit();
    }
    return true;
  }

  emit() {
    const pcm = toInt16(this.pending, this.filled, new Int16Array(this.filled));
    const level = Math.sqrt(this.sumSquares / this.filled);
    this.port.postMessage({ pcm: pcm.buffer, level }, [pcm.buffer]);
    this.filled = 0;
    this.sumSquares = 0;
  }
}

registerProcessor("tolk-capture", CaptureProcessor);
