// The page: language pickers, Start/Stop, and the transcript and translation as they come.
// Protocol and reconnection live in session.js, capture in microphone.js, speech in
// player.js; this module only connects them to the document.

import { Microphone } from "./microphone.js";
import { Player } from "./player.js";
import { Session } from "./session.js";
import { describe } from "./words.js";

const $ = (id) => document.getElementById(id);
const ui = {
  source: $("source-lang"),
  target: $("target-lang"),
  tts: $("tts"),
  start: $("start"),
  clear: $("clear"),
  status: $("status"),
  latency: $("latency"),
  level: $("level"),
  spoken: $("spoken"),
  transcript: $("transcript"),
  translation: $("translation"),
  notice: $("notice"),
  credentials: $("credentials"),
  token: $("token"),
  forget: $("forget"),
};

const TOKEN_KEY = "tolk.token";
const CHOICE_KEY = "tolk.languages";
const names = new Intl.DisplayNames([...navigator.languages, "en"], { type: "language" });
const nameOf = (code) => {
  try {
    return names.of(code) ?? code;
  } catch {
    return code;
  }
};

let catalog = null;
let context = null;
let microphone = null;
let player = null;
let session = null;
let view = null;
let smoothedLatency = null;

// ---------------------------------------------------------------------------------------
// Status line and notices
// ---------------------------------------------------------------------------------------

function setStatus(state, words) {
  ui.status.dataset.state = state;
  ui.status.textContent = words;
  const busy = state === "streaming" || state === "reconnecting" || state === "connecting" || state === "finishing";
  if (!microphone && !busy) setButton("start");
}

let noticeTimer = 0;
function notify(words, { sticky = false, kind = "error" } = {}) {
  clearTimeout(noticeTimer);
  ui.notice.textContent = words;
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
  if (!sticky) noticeTimer = setTimeout(() => (ui.notice.hidden = true), 10000);
}

function setButton(mode) {
  ui.start.dataset.mode = mode;
  ui.start.textContent = { start: "Start", stop: "Stop", finishing: "Finishing…" }[mode];
  ui.start.disabled = mode === "finishing" || !catalog;
  ui.source.disabled = ui.target.disabled = ui.tts.disabled = mode !== "start";
}

// ---------------------------------------------------------------------------------------
// Languages
// ---------------------------------------------------------------------------------------

function authHeaders() {
  const token = localStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function loadLanguages() {
  let response;
  try {
    response = await fetch("/api/v1/languages", { headers: authHeaders(), cache: "no-store" });
  } catch {
    setStatus("error", "Server unreachable");
    notify("The server cannot be reached. Is tolk running?", { sticky: true });
    return;
  }
  if (!response.ok) {
    const error = (await response.json().catch(() => null))?.error ?? {};
    if (response.status === 401 || response.status === 403) askForCredentials(error.code, error.message);
    else notify(describe(error.code, error.message), { sticky: true });
    setStatus("error", "Not connected");
    return;
  }
  catalog = await response.json();
  ui.credentials.hidden = true;
  ui.forget.hidden = !localStorage.getItem(TOKEN_KEY);
  fillSources();
  setStatus("offline", "Not connected — press Start");
  setButton("start");
}

function option(value, label) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = label;
  return o;
}

const byName = (a, b) => nameOf(a).localeCompare(nameOf(b));

function fillSources() {
  const saved = JSON.parse(localStorage.getItem(CHOICE_KEY) ?? "{}");
  const sources = [...catalog.source_languages].sort(byName);
  ui.source.replaceChildren(option("auto", "Detect automatically"), ...sources.map((c) => option(c, nameOf(c))));
  const browser = navigator.language?.slice(0, 2);
  ui.source.value = [saved.source, browser, "en", "auto"].find((c) => c && [...ui.source.options].some((o) => o.value === c));
  fillTargets(saved.target);
  ui.tts.checked = Boolean(saved.tts);
}

/** Targets reachable from the chosen source: a text pair, or Whisper's own into English. */
function fillTargets(preferred = ui.target.value) {
  const source = ui.source.value;
  const targets = new Set();
  for (const pair of catalog.pairs) {
    if (pair.target === source) continue;
    if (source === "auto" || pair.source === source || pair.source === "*") targets.add(pair.target);
  }
  const sorted = [...targets].sort(byName);
  ui.target.replaceChildren(option("", "No translation"), ...sorted.map((c) => option(c, nameOf(c))));
  ui.target.value = targets.has(preferred) ? preferred : "";
}

function saveChoice() {
  localStorage.setItem(CHOICE_KEY, JSON.stringify({ source: ui.source.value, target: ui.target.value, tts: ui.tts.checked }));
}

/** The start_stream fields for the pickers' choice. */
function streamFields() {
  const source = ui.source.value;
  const target = ui.target.value;
  const fields = { source_lang: source, interim_results: true, tts: ui.tts.checked };
  if (!target) return fields;
  const textPair = catalog.pairs.some((p) => p.target === target && (p.source === source || (source === "auto" && p.source !== "*")));
  if (textPair) fields.target_lang = target;
  else fields.task = "translate"; // only Whisper goes there: speech straight to English
  return fields;
}

function askForCredentials(code, message) {
  ui.credentials.hidden = false;
  if (localStorage.getItem(TOKEN_KEY)) {
    // The one we have was refused: say so, and why, rather than ask as if for the first time.
    localStorage.removeItem(TOKEN_KEY);
    const why = code === "forbidden" ? describe(code) : message ?? "";
    notify(`That key or token was not accepted. ${why} Enter another.`, { sticky: true });
  } else {
    notify(describe(code ?? "unauthorized"), { sticky: true });
  }
  ui.token.focus();
}

// ---------------------------------------------------------------------------------------
// Transcript and translation, one paragraph per stream
// ---------------------------------------------------------------------------------------

class StreamView {
  constructor() {
    this.spoken = document.createElement("p");
    this.translated = document.createElement("p");
    this.spoken.className = this.translated.className = "stream";
    ui.transcript.append(this.spoken);
    ui.translation.append(this.translated);
    /** segment_id → {text: span, translation: span} */
    this.segments = new Map();
  }

  segment(id) {
    let segment = this.segments.get(id);
    if (!segment) {
      segment = { text: document.createElement("span"), translation: document.createElement("span") };
      this.segments.set(id, segment);
      // Segments arrive in order; a later id never comes before an earlier one.
      this.spoken.append(segment.text);
      this.translated.append(segment.translation);
    }
    return segment;
  }

  update(result) {
    const segment = this.segment(result.segment_id);
    segment.text.textContent = `${result.transcript} `;
    segment.text.className = result.is_final ? "committed" : "partial";
    if (result.is_final && result.translation) segment.translation.textContent = `${result.translation} `;
    scrollToEnd();
  }

  /** The stream is over: drop the unstable tail; mark a stream cut short. */
  finish(interrupted) {
    for (const [id, segment] of this.segments) {
      if (segment.text.className === "partial") {
        segment.text.remove();
        segment.translation.remove();
        this.segments.delete(id);
      }
    }
    if (interrupted) {
      const mark = document.createElement("span");
      mark.className = "gap";
      mark.textContent = "(connection lost here)";
      this.spoken.append(mark);
    }
    if (this.segments.size === 0 && !interrupted) {
      this.spoken.remove();
      this.translated.remove();
    }
  }
}

function scrollToEnd() {
  for (const pane of [ui.transcript, ui.translation]) pane.scrollTop = pane.scrollHeight;
}

// ---------------------------------------------------------------------------------------
// Start and stop
// ---------------------------------------------------------------------------------------

function socketUrl() {
  const url = new URL("/ws/translate", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function newSession() {
  return new Session({
    url: socketUrl(),
    token: localStorage.getItem(TOKEN_KEY) ?? undefined,
    on: {
      status: setStatus,
      ready: () => {
        view?.finish(false);
        view = new StreamView();
      },
      result: (result) => view?.update(result),
      final: () => view?.finish(false),
      complete: () => {
        closeMicrophone();
        setButton("start");
      },
      interrupted: () => view?.finish(true),
      resumed: () => notify("Reconnected: the stream went on where it was.", { kind: "warning" }),
      error: (code, message, fatal) => {
        notify(describe(code, message));
        if (fatal) {
          closeMicrophone();
          setButton("start");
        }
      },
      refused: (code, message) => {
        closeMicrophone();
        setButton("start");
        if (code === "unauthorized" || code === "forbidden") askForCredentials(code, message);
        else notify(describe(code, message), { sticky: true });
      },
      lost: (ms) => notify(`${(ms / 1000).toFixed(1)} s of audio could not be sent while the connection was down.`, { kind: "warning" }),
      latency: showLatency,
      rtt: (ms) => (ui.latency.title = `Round trip to the server: ${Math.round(ms)} ms`),
      tts: (header, pcm) => {
        const seconds = player?.enqueue(pcm, header.sample_rate) ?? 0;
        if (seconds > 0) {
          ui.spoken.dataset.count = String(player.played);
          ui.spoken.textContent = `Spoken: ${player.played} ${player.played === 1 ? "sentence" : "sentences"}`;
        }
      },
    },
  });
}

function showLatency(ms) {
  smoothedLatency = smoothedLatency === null ? ms : 0.7 * smoothedLatency + 0.3 * ms;
  const rounded = Math.round(smoothedLatency);
  ui.latency.dataset.ms = String(rounded);
  ui.latency.textContent = `Latency ${rounded} ms`;
}

async function start() {
  ui.notice.hidden = true;
  saveChoice();
  setButton("stop");
  try {
    // Created on the click: browsers let audio start only from a gesture.
    context ??= new AudioContext({ latencyHint: "interactive" });
    await context.resume();
    player ??= new Player(context);
    session ??= newSession();
    microphone = await Microphone.open(context, (pcm, level) => {
      ui.level.value = Math.max(0, Math.min(1, (20 * Math.log10(level + 1e-9) + 60) / 60));
      session.audio(pcm);
    });
  } catch (error) {
    closeMicrophone();
    setButton("start");
    notify(error.message, { sticky: true });
    return;
  }
  smoothedLatency = null;
  session.start(streamFields());
}

function stop() {
  closeMicrophone();
  setButton("finishing");
  session.stop();
  if (session.phase === "idle" && !session.wanted) setButton("start");
}

function closeMicrophone() {
  microphone?.close();
  microphone = null;
  ui.level.value = 0;
}

ui.start.addEventListener("click", () => (ui.start.dataset.mode === "stop" ? stop() : start()));
ui.source.addEventListener("change", () => {
  fillTargets();
  saveChoice();
});
ui.target.addEventListener("change", saveChoice);
ui.tts.addEventListener("change", saveChoice);
ui.clear.addEventListener("click", () => {
  ui.transcript.replaceChildren();
  ui.translation.replaceChildren();
  view = null;
});
ui.credentials.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  ui.token.value = "";
  session?.close();
  session = null;
  loadLanguages();
});
ui.forget.addEventListener("click", () => {
  localStorage.removeItem(TOKEN_KEY);
  session?.close();
  session = null;
  location.reload();
});
window.addEventListener("pagehide", () => session?.close());

setButton("start");
loadLanguages();
