//! One WebSocket connection: heartbeat, the session state machine, and one stream at a time.
//!
//! States (the reference's WebSocket session management): `Connected` (no stream) →
//! `start_stream` → `Streaming` → `end_stream` → `Finalizing` (committed segments are
//! flushed, then `final_result` and `session_complete`) → `Connected` again, where a new
//! stream may start. Every transition is in [`Session::on_client`] and
//! [`Session::maybe_complete`]; messages that do not fit the state get an `error`.
//!
//! Audio goes through the shared VAD and ASR pools; at most one VAD job and one ASR job of
//! a session are in flight, so a session can never flood a pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use base64::Engine as _;
use tolk_actors::engines::{AsrRequest, VadRequest};
use tolk_actors::pool::{PoolError, Priority};
use tolk_actors::streaming::{DecodeKind, DecodeRequest, SegmentUpdate, StreamingAsr};
use tolk_models::asr::RecognizeOptions;
use tolk_models::vad::VadState;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::transcript::Task;
use tolk_protocol::ws::{
    AudioFormat, ClientMessage, FinalSegment, PartialResult, QualityMetrics, ServerMessage, Usage,
};
use tolk_protocol::PROTOCOL_VERSION;

use super::pcm::FrameDecoder;
use super::{SessionSlot, StreamServices};

/// How often the session checks its timers (heartbeat, idle, stream length).
const TICK: Duration = Duration::from_millis(500);
/// Retry delay for a final decode refused by a full queue: finals are never dropped.
const FINAL_RETRY: Duration = Duration::from_millis(100);

pub struct Session {
    id: String,
    /// Holds the session's place in the server's session count until the actor is gone.
    slot: SessionSlot,
    /// Last pong (or any frame) from the client.
    heard_at: Instant,
    last_ping: Instant,
    /// Last client message, for the idle timeout.
    active_at: Instant,
    stream: Option<Stream>,
    streams_started: u32,
}

/// The state of one stream, from `start_stream` to `session_complete`.
struct Stream {
    id: String,
    decoder: FrameDecoder,
    asr: StreamingAsr,
    /// `None` while the VAD job that owns it is in flight.
    vad_state: Option<VadState>,
    /// Samples (16 kHz) handed to the VAD so far.
    vad_fed: u64,
    received_16k: u64,
    /// Language given, or detected on the first decode of an `auto` stream.
    language: Option<String>,
    task: Task,
    interim_results: bool,
    started: Instant,
    first_audio: Option<Instant>,
    /// Client audio received, in ms.
    audio_ms: f64,
    finalizing: bool,
    segments: Vec<FinalSegment>,
    partials_sent: u32,
    partials_dropped: u32,
    asr_busy: Duration,
    /// When the final decode of the current utterance was asked for, for latency.
    final_asked: Option<Instant>,
    final_latencies_ms: Vec<u64>,
    /// `too_fast` was reported; not repeated for every frame.
    warned_too_fast: bool,
}

impl Session {
    pub fn new(slot: SessionSlot) -> Self {
        let now = Instant::now();
        Self {
            id: format!("sess_{}", uuid::Uuid::new_v4().simple()),
            slot,
            heard_at: now,
            last_ping: now,
            active_at: now,
            stream: None,
            streams_started: 0,
        }
    }

    fn services(&self) -> Arc<StreamServices> {
        self.slot.services().clone()
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, message: &ServerMessage) {
        match serde_json::to_string(message) {
            Ok(text) => ctx.text(text),
            Err(e) => {
                tracing::error!(session = %self.id, "cannot serialise {}: {e}", message.kind())
            }
        }
    }

    fn error(
        &self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        let message = message.into();
        tracing::debug!(session = %self.id, %code, %message, "error sent");
        self.send(ctx, &ServerMessage::error(code, message));
    }

    /// Heartbeat, idle and stream-length timers.
    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let config = &self.slot.services().config;
        if self.heard_at.elapsed() > config.client_timeout {
            tracing::info!(session = %self.id, "no pong for {:?}: closing", config.client_timeout);
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Away,
                description: Some("heartbeat timeout".into()),
            }));
            ctx.stop();
            return;
        }
        if self.last_ping.elapsed() >= config.heartbeat_interval {
            self.last_ping = Instant::now();
            ctx.ping(b"tolk");
        }
        let streaming = self.stream.as_ref().is_some_and(|s| !s.finalizing);
        if self.active_at.elapsed() > config.idle_timeout {
            let what = if streaming {
                "no audio or message"
            } else {
                "no stream"
            };
            self.error(
                ctx,
                ErrorCode::SessionTimeout,
                format!(
                    "{what} for {} s: closing the session",
                    config.idle_timeout.as_secs()
                ),
            );
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Normal,
                description: Some("idle timeout".into()),
            }));
            ctx.stop();
            return;
        }
        if let Some(stream) = &self.stream {
            if !stream.finalizing && stream.started.elapsed() > config.max_stream {
                self.error(
                    ctx,
                    ErrorCode::StreamTooLong,
                    format!(
                        "streams are limited to {} s: ending this one",
                        config.max_stream.as_secs()
                    ),
                );
                self.end_stream(ctx);
            }
        }
    }

    fn on_client(&mut self, message: ClientMessage, ctx: &mut ws::WebsocketContext<Self>) {
        match message {
            ClientMessage::Ping { id } => self.send(ctx, &ServerMessage::Pong { id }),
            ClientMessage::StartStream {
                source_lang,
                target_lang,
                audio_format,
                interim_results,
                tts,
                task,
            } => {
                if self.stream.is_some() {
                    return self.error(
                        ctx,
                        ErrorCode::StreamAlreadyStarted,
                        "a stream is already open on this connection: send end_stream first",
                    );
                }
                if let Err(e) = audio_format.validate() {
                    return self.error(ctx, ErrorCode::UnsupportedAudioFormat, e);
                }
                let language =
                    match self.check_languages(&source_lang, target_lang.as_deref(), task, tts) {
                        Ok(language) => language,
                        Err(message) => {
                            return self.error(ctx, ErrorCode::UnsupportedLanguage, message)
                        }
                    };
                self.start_stream(ctx, audio_format, language, task, interim_results);
            }
            ClientMessage::AudioChunk {
                audio_data,
                is_final,
                ..
            } => {
                if self.stream.is_none() {
                    return self.error(
                        ctx,
                        ErrorCode::StreamNotStarted,
                        "audio_chunk before start_stream",
                    );
                }
                let max = self.slot.services().config.max_frame_bytes;
                // Base64 grows data by 4/3: refuse oversized chunks before decoding them.
                if audio_data.len() / 4 * 3 > max {
                    return self.error(
                        ctx,
                        ErrorCode::FrameTooLarge,
                        format!("audio_chunk over {max} bytes of audio"),
                    );
                }
                match base64::engine::general_purpose::STANDARD.decode(audio_data.as_bytes()) {
                    Ok(bytes) => self.on_audio(&bytes, ctx),
                    Err(e) => {
                        return self.error(
                            ctx,
                            ErrorCode::InvalidMessage,
                            format!("audio_data is not base64: {e}"),
                        )
                    }
                }
                if is_final {
                    self.end_stream(ctx);
                }
            }
            ClientMessage::EndStream {} => {
                if self.stream.as_ref().is_none_or(|s| s.finalizing) {
                    return self.error(
                        ctx,
                        ErrorCode::StreamNotStarted,
                        "end_stream without an open stream",
                    );
                }
                self.end_stream(ctx);
            }
        }
    }

    /// The language to recognise (`None` = detect), or why the request cannot be served.
    fn check_languages(
        &self,
        source: &str,
        target: Option<&str>,
        task: Task,
        tts: bool,
    ) -> Result<Option<String>, String> {
        let services = self.slot.services();
        let known = |l: &str| services.languages.iter().any(|k| k == l);
        let source = match source {
            "auto" if services.multilingual => None,
            "auto" => Some("en".to_string()),
            l if known(l) => Some(l.to_string()),
            l => {
                return Err(format!(
                    "source_lang '{l}' is not recognised by model {}; use auto or one of: {}",
                    services.model,
                    services.languages.join(", ")
                ))
            }
        };
        // The spoken text is English for `translate`; otherwise the source language.
        let text_lang = if task == Task::Translate {
            Some("en")
        } else {
            source.as_deref()
        };
        if let Some(target) = target {
            let same = text_lang == Some(target);
            if !same {
                return Err(format!(
                    "no translation to '{target}' is available yet; leave target_lang out, set it to the source \
                     language, or use task \"translate\" with target_lang \"en\""
                ));
            }
        }
        if tts {
            return Err("speech synthesis (tts) is not available yet".into());
        }
        if task == Task::Translate && !services.multilingual {
            return Err(format!(
                "model {} is English-only and cannot translate speech",
                services.model
            ));
        }
        Ok(source)
    }

    fn start_stream(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        format: AudioFormat,
        language: Option<String>,
        task: Task,
        interim_results: bool,
    ) {
        let services = self.services();
        self.streams_started += 1;
        let id = format!("strm_{}", uuid::Uuid::new_v4().simple());
        self.stream = Some(Stream {
            id: id.clone(),
            decoder: FrameDecoder::new(format),
            asr: StreamingAsr::new(services.config.streaming.clone()),
            vad_state: Some(VadState::default()),
            vad_fed: 0,
            received_16k: 0,
            language,
            task,
            interim_results,
            started: Instant::now(),
            first_audio: None,
            audio_ms: 0.0,
            finalizing: false,
            segments: Vec::new(),
            partials_sent: 0,
            partials_dropped: 0,
            asr_busy: Duration::ZERO,
            final_asked: None,
            final_latencies_ms: Vec::new(),
            warned_too_fast: false,
        });
        tracing::info!(session = %self.id, stream = %id, ?format, "stream started");
        self.send(
            ctx,
            &ServerMessage::StreamReady {
                stream_id: id,
                buffer_ms: services.config.burst_ms as u32,
                chunk_ms: 100,
            },
        );
    }

    fn on_audio(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        let config = self.slot.services().config.clone();
        let Some(stream) = self.stream.as_mut() else {
            return self.error(
                ctx,
                ErrorCode::StreamNotStarted,
                "audio before start_stream",
            );
        };
        if stream.finalizing {
            return self.error(
                ctx,
                ErrorCode::StreamNotStarted,
                "audio after end_stream: start a new stream",
            );
        }
        if bytes.len() > config.max_frame_bytes {
            let max = config.max_frame_bytes;
            return self.error(
                ctx,
                ErrorCode::FrameTooLarge,
                format!("frame of {} bytes; the limit is {max}", bytes.len()),
            );
        }
        let frame_ms = stream.decoder.duration_ms(bytes.len());
        // Pace: audio may run ahead of the wall clock by `burst_ms`, and no faster than
        // `max_realtime_factor` sustained.
        let first = *stream.first_audio.get_or_insert_with(Instant::now);
        let allowed = first.elapsed().as_secs_f64() * 1000.0 * config.max_realtime_factor as f64
            + config.burst_ms as f64;
        if stream.audio_ms + frame_ms > allowed {
            let warned = std::mem::replace(&mut stream.warned_too_fast, true);
            if !warned {
                let message = format!(
                    "audio arrives faster than {}x real time: frames are being dropped; send at real-time pace",
                    config.max_realtime_factor
                );
                self.error(ctx, ErrorCode::TooFast, message);
            }
            return;
        }
        let buffered_ms = stream.asr.window_len() as u64 / 16;
        if buffered_ms > config.max_buffer_ms {
            stream.partials_dropped += 1;
            let message = format!("{buffered_ms} ms of audio are waiting for recognition: the server is behind, frame dropped");
            return self.error(ctx, ErrorCode::Overloaded, message);
        }
        let samples = match stream.decoder.decode(bytes) {
            Ok(samples) => samples,
            Err(e) => return self.error(ctx, ErrorCode::UnsupportedAudioFormat, e),
        };
        stream.warned_too_fast = false;
        stream.audio_ms += frame_ms;
        stream.received_16k += samples.len() as u64;
        stream.asr.push_audio(&samples);
        self.pump(ctx);
    }

    fn end_stream(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if stream.finalizing {
            return;
        }
        stream.finalizing = true;
        let tail = stream.decoder.flush();
        stream.received_16k += tail.len() as u64;
        stream.asr.push_audio(&tail);
        // The VAD catches up first (pump), then the stream is ended, so the last words
        // are judged before the final decode.
        self.pump(ctx);
    }

    /// Start whatever work is due: VAD over new audio, then the next decode.
    fn pump(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let services = self.services();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        if let Some(state) = stream.vad_state.take() {
            let unjudged = stream.received_16k - stream.vad_fed;
            if unjudged > 0 {
                let audio = stream.asr.unjudged_audio();
                let audio = audio[audio.len().saturating_sub(unjudged as usize)..].to_vec();
                stream.vad_fed += audio.len() as u64;
                match services
                    .vad
                    .submit(VadRequest { state, audio }, Priority::High)
                {
                    Ok(rx) => {
                        let stream_id = stream.id.clone();
                        ctx.spawn(fut::wrap_future::<_, Self>(rx).map(move |done, act, ctx| {
                            let Some(stream) = act.stream.as_mut().filter(|s| s.id == stream_id)
                            else {
                                return;
                            };
                            match done {
                                Ok(done) => match done.result {
                                    Ok(response) => {
                                        stream.vad_state = Some(response.state);
                                        stream.asr.push_vad(&response.probabilities);
                                    }
                                    Err(e) => {
                                        tracing::error!(session = %act.id, "VAD failed: {e}");
                                        stream.vad_state = Some(VadState::default());
                                    }
                                },
                                Err(_) => stream.vad_state = Some(VadState::default()),
                            }
                            act.pump(ctx);
                        }));
                    }
                    Err(e) => {
                        // The VAD queue is sized for every session; this is shutdown.
                        tracing::warn!(session = %self.id, "VAD refused work: {e}");
                        stream.vad_state = Some(VadState::default());
                    }
                }
            } else {
                stream.vad_state = Some(state);
            }
        }
        let vad_idle = stream.vad_state.is_some() && stream.vad_fed == stream.received_16k;
        if stream.finalizing && vad_idle && !stream.asr.is_finished() {
            stream.asr.end_stream();
        }
        // Under load, partials come less often: with every worker busy and partials
        // waiting, one more partial only delays everyone's finals.
        let (_, waiting) = services.asr.queued();
        let load = 1.0 + waiting as f64 / services.asr.workers() as f64;
        let base_step = services.config.streaming.step_ms as f64;
        stream.asr.set_step_ms((base_step * load.min(4.0)) as u64);
        let ready = stream.asr.take_ready();
        let request = stream.asr.poll_request();
        if !ready.is_empty() {
            self.deliver(ready, ctx);
        }
        if let Some(request) = request {
            self.decode(request, ctx);
        }
        self.maybe_complete(ctx);
    }

    fn decode(&mut self, request: DecodeRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let services = self.services();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let ticket = request.ticket;
        let audio_ms = request.audio.len() as u64 / 16;
        let kind = ticket.kind;
        let options = RecognizeOptions {
            language: stream.language.clone(),
            task: stream.task,
            initial_prompt: request.prompt.clone(),
            // Speech is 2–4 tokens a second; four times that stops a loop early.
            max_tokens: Some(16 + (audio_ms / 1000) as u32 * 16),
            // A partial is replaced within a step: not worth five more decodes.
            temperature_fallback: kind == DecodeKind::Final,
        };
        // Finals, and partials likely to become finals, go before ordinary partials.
        let priority = if ticket.urgent {
            Priority::High
        } else {
            Priority::Normal
        };
        if kind == DecodeKind::Final && stream.final_asked.is_none() {
            stream.final_asked = Some(Instant::now());
        }
        match services.asr.submit(
            AsrRequest {
                audio: request.audio,
                options,
            },
            priority,
        ) {
            Ok(rx) => {
                let stream_id = stream.id.clone();
                ctx.spawn(fut::wrap_future::<_, Self>(rx).map(move |done, act, ctx| {
                    let Some(stream) = act.stream.as_mut().filter(|s| s.id == stream_id) else {
                        return;
                    };
                    let updates = match done {
                        Ok(done) => {
                            stream.asr_busy += done.busy;
                            tracing::debug!(
                                session = %act.id,
                                ?kind,
                                audio_ms,
                                queued_ms = done.queued.as_millis() as u64,
                                busy_ms = done.busy.as_millis() as u64,
                                "decoded"
                            );
                            match done.result {
                                Ok(transcript) => {
                                    if stream.language.is_none() {
                                        // Detect once: later decodes skip detection.
                                        stream.language = Some(transcript.language.clone());
                                    }
                                    let words = transcript
                                        .segments
                                        .into_iter()
                                        .flat_map(|s| s.words)
                                        .collect();
                                    stream.asr.on_decoded(&ticket, words)
                                }
                                Err(e) => {
                                    tracing::error!(session = %act.id, "recognition failed: {e}");
                                    stream.asr.on_failed(&ticket)
                                }
                            }
                        }
                        Err(_) => stream.asr.on_failed(&ticket),
                    };
                    act.deliver(updates, ctx);
                    act.pump(ctx);
                }));
            }
            Err(PoolError::Full(_)) if kind == DecodeKind::Partial => {
                // Under load partials are skipped; the next step tries again.
                stream.partials_dropped += 1;
                stream.asr.on_failed(&ticket);
            }
            Err(PoolError::Full(_)) => {
                // Finals are never dropped: put the request back and try again shortly.
                stream.asr.retry_later(&ticket);
                ctx.run_later(FINAL_RETRY, |act, ctx| act.pump(ctx));
            }
            Err(e @ PoolError::Closed(_)) => {
                let updates = stream.asr.on_failed(&ticket);
                self.deliver(updates, ctx);
                self.error(
                    ctx,
                    ErrorCode::Internal,
                    format!("recognition is unavailable: {e}"),
                );
            }
        }
    }

    /// Send segment updates to the client and record the committed ones.
    fn deliver(&mut self, updates: Vec<SegmentUpdate>, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut messages = Vec::new();
        for update in updates {
            let result = PartialResult {
                segment_id: update.segment_id,
                transcript: update.text(),
                translation: None,
                confidence: update.confidence(),
                is_final: update.is_final,
                start_ms: update.start_ms(),
                end_ms: update.end_ms(),
                words: Some(update.words.clone()),
            };
            if update.is_final {
                if let Some(asked) = stream.final_asked.take() {
                    stream
                        .final_latencies_ms
                        .push(asked.elapsed().as_millis() as u64);
                }
                stream.segments.push(FinalSegment {
                    segment_id: result.segment_id,
                    start_ms: result.start_ms,
                    end_ms: result.end_ms,
                    transcript: result.transcript.clone(),
                    translation: None,
                    confidence: result.confidence,
                });
            } else if !stream.interim_results {
                continue;
            } else {
                stream.partials_sent += 1;
            }
            messages.push(ServerMessage::PartialResult(result));
        }
        for m in &messages {
            self.send(ctx, m);
        }
    }

    /// After `end_stream`, once everything is committed: `final_result`, `session_complete`.
    fn maybe_complete(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let done = self
            .stream
            .as_ref()
            .is_some_and(|s| s.finalizing && s.asr.is_finished());
        if !done {
            return;
        }
        let Some(stream) = self.stream.take() else {
            return;
        };
        let complete_transcript = stream
            .segments
            .iter()
            .map(|s| s.transcript.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let average_confidence = if stream.segments.is_empty() {
            0.0
        } else {
            stream.segments.iter().map(|s| s.confidence).sum::<f32>() / stream.segments.len() as f32
        };
        let mean_final_latency_ms = (!stream.final_latencies_ms.is_empty()).then(|| {
            stream.final_latencies_ms.iter().sum::<u64>() / stream.final_latencies_ms.len() as u64
        });
        let audio_seconds = stream.audio_ms / 1000.0;
        self.send(
            ctx,
            &ServerMessage::FinalResult {
                complete_transcript,
                final_translation: None,
                language: stream.language.clone().unwrap_or_else(|| "und".into()),
                quality_metrics: QualityMetrics {
                    average_confidence,
                    audio_ms: stream.audio_ms as u64,
                    speech_ms: stream.asr.speech_ms(),
                    segments: stream.segments.len() as u32,
                    partials_sent: stream.partials_sent,
                    partials_dropped: stream.partials_dropped,
                    mean_final_latency_ms,
                },
                segments: stream.segments,
            },
        );
        self.send(
            ctx,
            &ServerMessage::SessionComplete {
                session_id: self.id.clone(),
                stream_id: stream.id.clone(),
                total_duration_ms: stream.started.elapsed().as_millis() as u64,
                usage: Usage {
                    audio_seconds,
                    asr_seconds: stream.asr_busy.as_secs_f64(),
                },
            },
        );
        tracing::info!(session = %self.id, stream = %stream.id, audio_seconds, "stream complete");
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let services = self.services();
        tracing::info!(session = %self.id, "session opened");
        ctx.run_interval(TICK.min(services.config.heartbeat_interval), |act, ctx| {
            act.tick(ctx)
        });
        self.send(
            ctx,
            &ServerMessage::Connected {
                session_id: self.id.clone(),
                protocol_version: PROTOCOL_VERSION,
                supported_languages: services.languages.clone(),
                limits: services.config.limits(),
            },
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The slot is released when the actor is dropped (SessionSlot::drop).
        tracing::info!(session = %self.id, streams = self.streams_started, "session closed");
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.heard_at = Instant::now();
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(session = %self.id, "protocol error: {e}");
                ctx.stop();
                return;
            }
        };
        match message {
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) => {}
            ws::Message::Text(text) => {
                self.active_at = Instant::now();
                match ClientMessage::parse(&text) {
                    Ok(m) => self.on_client(m, ctx),
                    Err(e) => self.error(ctx, ErrorCode::InvalidMessage, e),
                }
            }
            ws::Message::Binary(bytes) => {
                self.active_at = Instant::now();
                self.on_audio(&bytes, ctx);
            }
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) => {
                self.error(
                    ctx,
                    ErrorCode::InvalidMessage,
                    "fragmented frames are not supported",
                );
            }
            ws::Message::Nop => {}
        }
    }
}
