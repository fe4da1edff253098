// One conversation with tolk's WebSocket endpoint (docs/protocol.md) that outlives a
// dropped connection: it reconnects with backoff and resumes the session (`?resume=`),
// getting the results it missed, or, when the server no longer has it, opens a new
// stream; either way it then sends the audio captured while it was away (up to
// MAX_BACKLOG_MS) no faster than the server accepts.
//
// Events go to the `on` callbacks given to the constructor; none of them touch the page.

import { CHUNK_MS, RATE } from "./microphone.js";

/** Waits before reconnect attempts 1, 2, 3, …; the last repeats. Each gets ±20 % jitter. */
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
/** A `ping` this often: keeps an idle connection open and measures the round trip. */
const PING_MS = 15000;
/** Audio kept while the connection is down; older audio is dropped (and reported). */
const MAX_BACKLOG_MS = 10000;
/** Stay this far inside the server's pace allowance (timer and network jitter). */
const HEADROOM_MS = 500;
/** Hold audio back while this much is still waiting in the socket's own buffer. */
const MAX_SOCKET_BUFFER = 256 * 1024;
/** How often received messages are acknowledged (the server may then forget them). */
const ACK_MS = 1000;
/** Bytes of 16-bit mono PCM at RATE per millisecond. */
const BYTES_PER_MS = (RATE * 2) / 1000;

export class Session {
  /**
   * @param {{url: string, token?: string, on: Record<string, Function>}} options
   *   on.status(state, words), on.ready(streamReady), on.result(partialResult),
   *   on.final(finalResult), on.complete(sessionComplete), on.interrupted(),
   *   on.error(code, message, fatal), on.refused(code, message), on.tts(header, pcm),
   *   on.latency(ms), on.rtt(ms), on.lost(ms)
   */
  constructor({ url, token, on }) {
    this.url = url;
    this.token = token;
    this.on = on;
    this.socket = null;
    this.opened = false;
    this.limits = null;
    /** The stream the person wants: its start_stream fields, or null. */
    this.wanted = null;
    this.ending = false;
    /** idle → starting → streaming → ending → idle (see docs/protocol.md, states). */
    this.phase = "idle";
    this.backlog = [];
    this.backlogMs = 0;
    this.sentMs = 0;
    this.sentLog = [];
    this.readyAt = 0;
    this.bufferMs = 0;
    this.attempts = 0;
    this.retryTimer = 0;
    this.pingTimer = 0;
    this.pumpTimer = 0;
    this.pings = new Map();
    this.pingId = 0;
    this.pendingTts = null;
    this.closing = false;
    this.gaveUp = false;
    /** The session's resume token, while it has one. */
    this.resumeToken = null;
    /** The connection dropped and the session may still be resumed. */
    this.detached = false;
    /** Highest `seq` received, and the highest acknowledged. */
    this.lastSeq = 0;
    this.ackedSeq = 0;
    this.ackTimer = 0;
  }

  /** Open a stream with these `start_stream` fields (audio_format is added). */
  start(fields) {
    this.wanted = {
      type: "start_stream",
      ...fields,
      audio_format: { encoding: "pcm_s16le", sample_rate: RATE, channels: 1 },
    };
    this.ending = false;
    this.gaveUp = false;
    this.backlog = [];
    this.backlogMs = 0;
    if (this.opened && this.phase === "idle") this.sendStart();
    else if (!this.socket) this.connect();
  }

  /** A chunk of microphone audio (16 kHz mono s16le). */
  audio(pcm) {
    if (!this.wanted || this.ending) return;
    this.backlog.push({ pcm, at: performance.now() });
    this.backlogMs += pcm.byteLength / BYTES_PER_MS;
    let lost = 0;
    while (this.backlogMs > MAX_BACKLOG_MS) {
      const dropped = this.backlog.shift();
      const ms = dropped.pcm.byteLength / BYTES_PER_MS;
      this.backlogMs -= ms;
      lost += ms;
    }
    if (lost > 0) this.on.lost?.(lost);
    this.pump();
  }

  /** No more audio: the rest is sent, then end_stream; results keep coming until complete. */
  stop() {
    if (!this.wanted) return;
    this.ending = true;
    if (this.phase === "streaming") {
      this.pump();
    } else if (this.phase === "idle") {
      // Not connected (or never got a stream): nothing to finish.
      this.wanted = null;
      this.backlog = [];
      this.backlogMs = 0;
      clearTimeout(this.retryTimer);
      this.retryTimer = 0;
      this.on.status?.(this.opened ? "ready" : "offline", this.opened ? "Connected" : "Not connected");
    }
    // starting: end_stream follows stream_ready (pump sees `ending`).
  }

  /** Close for good (the page is going away). */
  close() {
    this.closing = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000, "bye");
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    const protocols = ["tolk.v1"];
    if (this.token) protocols.push(`bearer.${this.token}`);
    let socket;
    try {
      socket = new WebSocket(this.detached ? this.resumeUrl() : this.url, protocols);
    } catch (error) {
      this.on.error?.("invalid_url", `Cannot open ${this.url}: ${error.message}`, true);
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.opened = false;
    this.on.status?.(this.attempts ? "reconnecting" : "connecting", this.attempts ? "Reconnecting…" : "Connecting…");
    socket.onmessage = (event) => this.receive(socket, event.data);
    socket.onclose = (event) => this.closed(socket, event);
  }

  resumeUrl() {
    const url = new URL(this.url);
    url.searchParams.set("resume", this.resumeToken);
    url.searchParams.set("last_seq", String(this.lastSeq));
    return url.href;
  }

  /** Send on the open connection; nothing while it is (re)connecting. */
  send(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  sendStart() {
    this.phase = "starting";
    this.send(this.wanted);
  }

  receive(socket, data) {
    if (socket !== this.socket) return;
    if (typeof data !== "string") {
      const header = this.pendingTts;
      this.pendingTts = null;
      if (header && data.byteLength === header.bytes) this.on.tts?.(header, data);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof message.seq === "number") {
      // A resume replays from the last acknowledged message: skip what already arrived.
      if (message.seq <= this.lastSeq) return;
      this.lastSeq = message.seq;
    }
    switch (message.type) {
      case "connected":
        this.opened = true;
        this.attempts = 0;
        this.limits = message.limits;
        this.startPings();
        if (message.resumed) {
          this.detached = false;
          this.on.resumed?.();
          if (this.phase === "streaming") {
            this.on.status?.("streaming", "Listening");
            this.pump();
          } else {
            this.on.status?.("ready", "Connected");
          }
          break;
        }
        this.resumeToken = message.resume_token ?? null;
        this.lastSeq = 0;
        this.ackedSeq = 0;
        this.on.status?.("ready", "Connected");
        if (this.wanted && this.phase === "idle") this.sendStart();
        break;
      case "stream_ready":
        this.phase = "streaming";
        this.readyAt = performance.now();
        this.sentMs = 0;
        this.sentLog = [];
        this.bufferMs = message.buffer_ms ?? 0;
        this.on.ready?.(message);
        this.on.status?.("streaming", "Listening");
        this.pump();
        break;
      case "partial_result":
        this.measure(message.end_ms);
        this.on.result?.(message);
        break;
      case "final_result":
        this.on.final?.(message);
        break;
      case "session_complete":
        // Ours (end_stream), or the server's (stream_too_long, quota): either way, done.
        this.phase = "idle";
        this.wanted = null;
        this.ending = false;
        this.backlog = [];
        this.backlogMs = 0;
        this.on.complete?.(message);
        this.on.status?.("ready", "Connected");
        break;
      case "tts_audio":
        this.pendingTts = message;
        break;
      case "pong": {
        const sent = this.pings.get(message.id);
        this.pings.delete(message.id);
        if (sent !== undefined) this.on.rtt?.(performance.now() - sent);
        break;
      }
      case "error":
        this.failed(message);
        break;
      default:
        break; // newer server messages: ignored, as the protocol asks
    }
  }

  failed({ code, message }) {
    if (this.phase === "starting") {
      // start_stream refused: no stream; the person must change something.
      this.phase = "idle";
      this.wanted = null;
      this.ending = false;
      this.on.error?.(code, message, true);
      this.on.status?.("ready", "Connected");
      return;
    }
    if (code === "quota_exceeded") this.gaveUp = true;
    this.on.error?.(code, message, code === "quota_exceeded" || code === "session_timeout");
  }

  /** Send what the pace allows; end the stream once everything is out and stop was asked. */
  pump() {
    clearTimeout(this.pumpTimer);
    this.pumpTimer = 0;
    // While detached the stream is open on the server but a new socket is still
    // connecting: audio waits in the backlog until the session is resumed.
    if (this.phase !== "streaming" || !this.opened || this.socket?.readyState !== WebSocket.OPEN) return;
    const factor = this.limits?.max_realtime_factor ?? 1;
    const allowance = factor * (performance.now() - this.readyAt) + this.bufferMs - HEADROOM_MS;
    while (this.backlog.length > 0 && this.socket.bufferedAmount < MAX_SOCKET_BUFFER) {
      const frame = this.backlog[0];
      const ms = frame.pcm.byteLength / BYTES_PER_MS;
      if (this.sentMs + ms > Math.max(allowance, CHUNK_MS)) break;
      this.socket.send(frame.pcm);
      this.backlog.shift();
      this.backlogMs -= ms;
      this.sentMs += ms;
      this.sentLog.push({ endMs: this.sentMs, at: frame.at });
      if (this.sentLog.length > 1200) this.sentLog.splice(0, 600);
    }
    if (this.backlog.length > 0) {
      this.pumpTimer = setTimeout(() => this.pump(), 50);
    } else if (this.ending) {
      this.send({ type: "end_stream" });
      this.phase = "ending";
      this.on.status?.("finishing", "Finishing…");
    }
  }

  /** Latency: now, less when the result's last sample was captured. */
  measure(endMs) {
    if (typeof endMs !== "number") return;
    const entry = this.sentLog.find((e) => e.endMs >= endMs);
    if (!entry) return;
    const capturedAt = entry.at - (entry.endMs - endMs);
    this.on.latency?.(performance.now() - capturedAt);
  }

  startPings() {
    clearInterval(this.ackTimer);
    this.ackTimer = setInterval(() => {
      if (this.opened && this.lastSeq > this.ackedSeq) {
        this.ackedSeq = this.lastSeq;
        this.send({ type: "ack", seq: this.lastSeq });
      }
    }, ACK_MS);
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (!this.opened) return;
      const id = ++this.pingId;
      this.pings.set(id, performance.now());
      if (this.pings.size > 8) this.pings.delete(this.pings.keys().next().value);
      this.send({ type: "ping", id });
    }, PING_MS);
  }

  closed(socket, event) {
    if (socket !== this.socket) return;
    clearInterval(this.pingTimer);
    clearInterval(this.ackTimer);
    clearTimeout(this.pumpTimer);
    const wasOpened = this.opened;
    this.socket = null;
    this.opened = false;
    this.pendingTts = null;
    if (this.closing) {
      this.lose();
      this.on.status?.("offline", "Not connected");
      return;
    }
    // 1001: the server is going away (its streams were finalized first); 1008: policy
    // (quota). Neither session can be resumed.
    if (this.gaveUp || event.code === 1008 || event.code === 1001) {
      this.resumeToken = null;
      this.detached = false;
    }
    if (this.gaveUp || event.code === 1008) {
      this.lose();
      this.wanted = null;
      this.on.status?.("error", "Disconnected");
      return;
    }
    if (this.resumeToken && (wasOpened || this.detached)) {
      // The session (and its stream) waits on the server: resume it.
      this.detached = true;
      if (!wasOpened) return this.diagnose();
      return this.retry("Connection lost.");
    }
    const hadStream = this.phase !== "idle";
    this.lose();
    if (this.ending && hadStream) {
      // Stop was pressed; the stream's end went down with the connection.
      this.wanted = null;
      this.ending = false;
      this.on.error?.("connection_lost", "The connection dropped before the last words came back.", false);
    }
    if (!this.wanted) {
      // Nothing to carry on: connect again when the person presses Start.
      this.on.status?.("offline", wasOpened ? "Disconnected (idle)" : "Not connected");
      return;
    }
    if (!wasOpened) {
      this.diagnose();
      return;
    }
    this.retry("Connection lost.");
  }

  /** The session is gone for good: an open stream is cut short. */
  lose() {
    const hadStream = this.phase !== "idle";
    this.phase = "idle";
    this.detached = false;
    this.resumeToken = null;
    if (hadStream) this.on.interrupted?.();
  }

  /** A refused handshake tells the page nothing: ask the endpoint with a plain GET why. */
  async diagnose() {
    let refusal = null;
    try {
      const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
      const probe = new URL(this.detached ? this.resumeUrl() : this.url);
      probe.protocol = probe.protocol === "wss:" ? "https:" : "http:";
      const response = await fetch(probe, { headers, cache: "no-store" });
      if (response.status !== 400) refusal = (await response.json())?.error ?? null;
    } catch {
      refusal = { code: "unreachable" };
    }
    if (this.socket) return;
    if (refusal?.code === "session_expired") {
      // The server no longer has the session (restarted, or the grace period passed).
      this.lose();
      if (!this.wanted || this.ending) {
        if (this.ending) this.on.error?.("connection_lost", "The connection dropped before the last words came back.", false);
        this.wanted = null;
        this.ending = false;
        this.on.status?.("offline", "Not connected");
        return;
      }
      return this.retry("The session was lost.");
    }
    if (!this.wanted && !this.detached) return;
    if (refusal && ["unauthorized", "forbidden"].includes(refusal.code)) {
      this.lose();
      this.wanted = null;
      this.on.refused?.(refusal.code, refusal.message);
      this.on.status?.("error", "Not connected");
      return;
    }
    if (refusal?.code === "unreachable") this.retry("The server cannot be reached.");
    else if (refusal) {
      this.on.error?.(refusal.code, refusal.message, false);
      this.retry("The server refused the connection.");
    } else this.retry("Could not connect.");
  }

  retry(why) {
    const base = BACKOFF_MS[Math.min(this.attempts, BACKOFF_MS.length - 1)];
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    this.attempts += 1;
    const seconds = (delay / 1000).toFixed(delay < 1000 ? 1 : 0);
    this.on.status?.("reconnecting", `${why} Reconnecting in ${seconds} s (attempt ${this.attempts})…`);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
