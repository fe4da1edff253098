// The microphone, through an AudioWorklet (capture-worklet.js): 100 ms chunks of 16 kHz
// mono 16-bit PCM, and the level of each.

export const RATE = 16000;
export const CHUNK_MS = 100;

/** Why a microphone could not be opened, in words. */
function explain(error) {
  switch (error?.name) {
    case "NotAllowedError":
      return "The browser was not allowed to use the microphone. Allow it (the icon in the address bar) and press Start again.";
    case "NotFoundError":
      return "No microphone was found.";
    case "NotReadableError":
      return "The microphone is in use by another program, or cannot be read.";
    case "SecurityError":
      return "Microphones work only on https:// pages or on localhost.";
    default:
      return `The microphone could not be opened: ${error?.message ?? error}`;
  }
}

export class Microphone {
  /**
   * @param {AudioContext} context
   * @param {(pcm: ArrayBuffer, level: number) => void} onChunk
   */
  static async open(context, onChunk) {
    if (!navigator.mediaDevices?.getUserMedia || !context.audioWorklet) {
      throw new Error("This browser cannot capture audio here (it needs https:// or localhost, and AudioWorklet).");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      throw new Error(explain(error));
    }
    try {
      await context.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
      const source = context.createMediaStreamSource(stream);
      const node = new AudioWorkletNode(context, "tolk-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        processorOptions: { targetRate: RATE, chunkMs: CHUNK_MS },
      });
      node.port.onmessage = (event) => onChunk(event.data.pcm, event.data.level);
      source.connect(node);
      return new Microphone(stream, source, node);
    } catch (error) {
      for (const track of stream.getTracks()) track.stop();
      throw error;
    }
  }

  constructor(stream, source, node) {
    this.stream = stream;
    this.source = source;
    this.node = node;
  }

  /** The device's name, for the status line. */
  get label() {
    return this.stream.getAudioTracks()[0]?.label ?? "microphone";
  }

  close() {
    this.node.port.postMessage("stop");
    this.node.port.onmessage = null;
    this.source.disconnect();
    for (const track of this.stream.getTracks()) track.stop();
  }
}
