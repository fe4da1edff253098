//! One simulated client: connects, streams a looped clip at a steady pace in fixed frames
//! (as a browser does), ends the stream, and records what it measured.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tolk_protocol::ws::{ClientMessage, ServerMessage};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::audio::Clip;

/// What every stream of a run is asked to do.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub url: String,
    pub duration: Duration,
    /// 1.0 = real time.
    pub speed: f64,
    pub frame_ms: u64,
    pub source_lang: String,
    pub target_lang: Option<String>,
    pub tts: bool,
    /// How long to wait for the final results after `end_stream`.
    pub drain_timeout: Duration,
}

/// What one stream measured. Latencies in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    pub connect_ms: Option<f64>,
    /// First audio frame sent → first `partial_result`.
    pub first_partial_ms: Option<f64>,
    /// For every committed segment: when its last audio was sent → when it arrived.
    pub final_latency_ms: Vec<f64>,
    /// First `partial_result` carrying a translation, after the first audio frame.
    pub first_translation_ms: Option<f64>,
    /// First audio frame sent → first `tts_audio`: how long until the listener hears something.
    pub first_tts_ms: Option<f64>,
    pub errors: BTreeMap<String, u64>,
    /// The connection failed or closed before `session_complete`.
    pub dropped: bool,
    pub messages: u64,
    pub finals: u64,
    pub completed: bool,
    pub transcript: String,
}

/// Live counters shared by all streams, for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub active: AtomicU64,
    pub partials: AtomicU64,
    pub finals: AtomicU64,
    pub errors: AtomicU64,
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

struct Conn {
    ws: Socket,
    report: StreamReport,
    audio_start: Option<Instant>,
    speed: f64,
    live: Arc<Live>,
}

impl Conn {
    /// Handle every message that has arrived; returns the types seen.
    fn drain(&mut self) -> Vec<&'static str> {
        let mut seen = Vec::new();
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    self.report.messages += 1;
                    let Ok(message) = serde_json::from_str::<ServerMessage>(&text) else {
                        *self
                            .report
                            .errors
                            .entry("unparseable_message".into())
                            .or_default() += 1;
                        continue;
                    };
                    seen.push(message.kind());
                    self.on_message(message);
                }
                Ok(Message::Close(_)) => {
                    self.report.dropped |= !self.report.completed;
                    seen.push("close");
                    return seen;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return seen
                }
                Err(_) => {
                    self.report.dropped |= !self.report.completed;
                    seen.push("close");
                    return seen;
                }
            }
        }
    }

    fn on_message(&mut self, message: ServerMessage) {
        let now = Instant::now();
        match message {
            ServerMessage::PartialResult(p) => {
                let Some(start) = self.audio_start else {
                    return;
                };
                let since_start = (now - start).as_secs_f64() * 1000.0;
                self.report.first_partial_ms.get_or_insert(since_start);
                if p.translation.is_some() {
                    self.report.first_translation_ms.get_or_insert(since_start);
                }
                if p.is_final {
                    // The segment's last audio left at start + end_ms / speed.
                    let sent_at = p.end_ms as f64 / self.speed;
                    self.report
                        .final_latency_ms
                        .push((since_start - sent_at).max(0.0));
                    if std::env::var_os("TOLK_LOADTEST_TRACE").is_some() {
                        eprintln!(
                            "final {:>6} ms (audio {}–{} ms): {}",
                            (since_start - sent_at) as i64,
                            p.start_ms,
                            p.end_ms,
                            p.transcript
                        );
                    }
                    self.report.finals += 1;
                    if !self.report.transcript.is_empty() {
                        self.report.transcript.push(' ');
                    }
                    self.report.transcript.push_str(&p.transcript);
                    self.live.finals.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.live.partials.fetch_add(1, Ordering::Relaxed);
                }
            }
            ServerMessage::Error { code, .. } => {
                *self
                    .report
                    .errors
                    .entry(code.as_str().to_string())
                    .or_default() += 1;
                self.live.errors.fetch_add(1, Ordering::Relaxed);
            }
            ServerMessage::TtsAudio { .. } => {
                if let Some(start) = self.audio_start {
                    let since_start = (now - start).as_secs_f64() * 1000.0;
                    self.report.first_tts_ms.get_or_insert(since_start);
                }
            }
            ServerMessage::SessionComplete { .. } => self.report.completed = true,
            _ => {}
        }
    }

    /// Wait until a message of `kind` arrives (true) or the deadline passes / the
    /// connection closes (false).
    fn wait_for(&mut self, kind: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let seen = self.drain();
            if seen.contains(&kind) {
                return true;
            }
            if seen.contains(&"close") {
                return false;
            }
        }
        false
    }

    fn send(&mut self, message: Message) -> bool {
        if self.ws.send(message).is_err() {
            self.report.dropped = true;
            return false;
        }
        true
    }
}

/// Run one stream to completion.
pub fn run_stream(plan: &StreamPlan, clip: &Clip, live: Arc<Live>) -> StreamReport {
    let started = Instant::now();
    let mut report = StreamReport::default();
    let ws = match tungstenite::connect(&plan.url) {
        Ok((ws, _)) => ws,
        Err(e) => {
            let code = match e {
                tungstenite::Error::Http(r) => format!("http_{}", r.status().as_u16()),
                _ => "connect_failed".to_string(),
            };
            report.errors.insert(code, 1);
            report.dropped = true;
            live.errors.fetch_add(1, Ordering::Relaxed);
            return report;
        }
    };
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        // Short reads let one thread both pace the audio and take in results.
        let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
        let _ = s.set_nodelay(true);
    }
    let mut conn = Conn {
        ws,
        report,
        audio_start: None,
        speed: plan.speed,
        live: live.clone(),
    };
    if !conn.wait_for("connected", Duration::from_secs(10)) {
        conn.report.dropped = true;
        return conn.report;
    }
    conn.report.connect_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    let start = ClientMessage::StartStream {
        source_lang: plan.source_lang.clone(),
        target_lang: plan.target_lang.clone(),
        audio_format: clip.format,
        interim_results: true,
        tts: plan.tts,
        task: Default::default(),
    };
    let text = serde_json::to_string(&start).unwrap_or_else(|_| json!({}).to_string());
    if !conn.send(Message::text(text)) || !conn.wait_for("stream_ready", Duration::from_secs(10)) {
        conn.report.dropped = true;
        return conn.report;
    }
    live.active.fetch_add(1, Ordering::Relaxed);
    let frame_bytes = clip.frame_bytes(plan.frame_ms);
    let frame_interval = Duration::from_secs_f64(plan.frame_ms as f64 / 1000.0 / plan.speed);
    let t0 = Instant::now();
    conn.audio_start = Some(t0);
    let frames =
        (plan.duration.as_secs_f64() * 1000.0 / plan.frame_ms as f64 * plan.speed).ceil() as u64;
    for i in 0..frames {
        let due = t0 + frame_interval.mul_f64(i as f64);
        while Instant::now() < due {
            if conn.drain().contains(&"close") {
                live.active.fetch_sub(1, Ordering::Relaxed);
                return conn.report;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !conn.send(Message::binary(clip.frame(i, frame_bytes))) {
            live.active.fetch_sub(1, Ordering::Relaxed);
            return conn.report;
        }
    }
    let end = serde_json::to_string(&ClientMessage::EndStream {}).unwrap_or_default();
    if conn.send(Message::text(end)) && !conn.wait_for("session_complete", plan.drain_timeout) {
        conn.report.dropped |= !conn.report.completed;
    }
    let _ = conn.ws.close(None);
    live.active.fetch_sub(1, Ordering::Relaxed);
    conn.report
}
