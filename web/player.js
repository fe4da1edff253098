// Plays the server's synthesized speech (`tts_audio` + binary frame) in order: each clip
// starts when the one before it ends, never over it.

export class Player {
  /** @param {AudioContext} context */
  constructor(context) {
    this.context = context;
    this.next = 0;
    this.played = 0;
    this.sources = new Set();
  }

  /** Queue 16-bit mono PCM at `sampleRate`; returns its length in seconds. */
  enqueue(pcm, sampleRate) {
    const samples = new Int16Array(pcm);
    if (samples.length === 0) return 0;
    const buffer = this.context.createBuffer(1, samples.length, sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.context.currentTime + 0.05, this.next);
    source.start(at);
    this.next = at + buffer.duration;
    this.played += 1;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
    return buffer.duration;
  }

  /** Silence everything queued. */
  stop() {
    for (const source of this.sources) source.stop();
    this.sources.clear();
    this.next = 0;
  }
}
