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
//!
//! The session is not the connection: a [`Transport`](super::transport::Transport) actor
//! carries its frames, and when the connection drops without a close the session waits
//! for a resume (`?resume=<token>`) for the grace period, its stream going on, every
//! numbered message kept until the client acknowledges it ([`Replay`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use tolk_actors::engines::{AsrRequest, SpeakRequest, TranslateRequest, VadRequest};
use tolk_actors::pool::{PoolError, Priority};
use tolk_actors::streaming::{DecodeKind, DecodeRequest, SegmentUpdate};
use tolk_models::vad::VadState;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::ws::{AudioEncoding, ClientMessage, Sequenced, ServerMessage};
use tolk_protocol::PROTOCOL_VERSION;

use super::replay::{Frame, Replay};
use super::stream::{Phase, Stream, StreamSpec, TranslationJob};
use super::transport::{Attach, Detach, Incoming, Outgoing};
use super::{SessionSlot, StreamServices};
use crate::access::{Access, Caller, STREAM_LEASE};
use tolk_auth::limits::StreamLease;

/// How often the session checks its timers (heartbeat, idle, stream length).
const TICK: Duration = Duration::from_millis(500);
/// Retry delay for a final decode refused by a full queue: finals are never dropped.
const FINAL_RETRY: Duration = Duration::from_millis(100);
/// Unacknowledged messages kept for a resume: at most this many…
const REPLAY_MESSAGES: usize = 1024;
/// …and this many bytes (speech frames are large).
const REPLAY_BYTES: usize = 8 << 20;
/// Client frames waiting for the session; more are refused (`overloaded`).
const MAILBOX: usize = 256;
/// Text messages a client may send per second, sustained, and in a burst; more are
/// discarded with `too_fast` (audio has its own pace limit).
const TEXT_RATE: f64 = 50.0;
const TEXT_BURST: f64 = 100.0;

/// An authenticated session's caller, its place among the caller's concurrent streams,
/// and its audio not yet counted against the daily quota.
pub struct StreamGrant {
    pub access: Arc<Access>,
    pub caller: Caller,
    pub lease: Option<StreamLease>,
    renewed_at: Instant,
    /// 16 kHz samples already charged, over all of the session's streams.
    charged: u64,
    /// Samples of finished streams (their `received_16k` is gone with them).
    finished: u64,
    charging: bool,
    exceeded: bool,
}

impl StreamGrant {
    pub fn new(access: Arc<Access>, caller: Caller, lease: Option<StreamLease>) -> Self {
        Self {
            access,
            caller,
            lease,
            renewed_at: Instant::now(),
            charged: 0,
            finished: 0,
            charging: false,
            exceeded: false,
        }
    }
}

/// Audio is charged against the quota in steps of this much (and at the end of a stream).
const CHARGE_STEP: u64 = 16_000;

pub struct Session {
    id: String,
    grant: Option<StreamGrant>,
    /// Holds the session's place in the server's session count until the actor is gone.
    slot: SessionSlot,
    /// Last pong (or any frame) from the client.
    heard_at: Instant,
    last_ping: Instant,
    /// Last client message, for the idle timeout.
    active_at: Instant,
    stream: Option<Stream>,
    streams_started: u32,
    /// The server is shutting down: the open stream is being finalized, no new one starts,
    /// and the connection closes with 1001 once it is complete.
    leaving: bool,
    /// The connection writing to the client (attachment number, transport); `None` before
    /// the first attaches and while the session waits for a resume.
    link: Option<(u64, Recipient<Outgoing>)>,
    /// Since when the session has waited for a resume.
    detached_at: Option<Instant>,
    /// The secret a client resumes with; `None` when resuming is off.
    resume_token: Option<String>,
    /// `seq` of the last numbered message sent, and of the last the client acknowledged.
    seq: u64,
    acked: u64,
    replay: Replay,
    /// Token bucket of text messages (`TEXT_RATE`, `TEXT_BURST`).
    text_allowance: f64,
    text_refilled: Instant,
}

impl Session {
    pub fn new(slot: SessionSlot, grant: Option<StreamGrant>) -> Self {
        let now = Instant::now();
        Self {
            id: format!("sess_{}", uuid::Uuid::new_v4().simple()),
            grant,
            slot,
            heard_at: now,
            last_ping: now,
            active_at: now,
            stream: None,
            streams_started: 0,
            leaving: false,
            link: None,
            detached_at: None,
            resume_token: None,
            seq: 0,
            acked: 0,
            replay: Replay::new(REPLAY_MESSAGES, REPLAY_BYTES),
            text_allowance: TEXT_BURST,
            text_refilled: now,
        }
    }

    /// Let the client resume this session with the returned token.
    pub fn resumable(mut self) -> (Self, String) {
        let token = format!("res_{}", uuid::Uuid::new_v4().simple());
        self.resume_token = Some(token.clone());
        (self, token)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The caller's id, which a resume must present again.
    pub fn caller_id(&self) -> Option<String> {
        self.grant.as_ref().map(|g| g.caller.id.clone())
    }

    fn services(&self) -> Arc<StreamServices> {
        self.slot.services().clone()
    }

    /// Send a message: numbered and kept for a resume, but for `connected` and `pong`.
    fn send(&mut self, ctx: &mut Context<Self>, message: &ServerMessage) {
        self.send_with(ctx, message, None);
    }

    /// A message and the binary frame that belongs to it (`tts_audio`), under one `seq`.
    fn send_with(
        &mut self,
        _: &mut Context<Self>,
        message: &ServerMessage,
        binary: Option<Vec<u8>>,
    ) {
        use crate::metrics::{self, Api, Result};
        match message {
            ServerMessage::PartialResult(r) if r.is_final => metrics::result(Result::Committed),
            ServerMessage::PartialResult(_) => metrics::result(Result::Interim),
            ServerMessage::FinalResult { .. } => metrics::result(Result::Final),
            ServerMessage::TtsAudio { .. } => metrics::result(Result::Speech),
            ServerMessage::Error { code, .. } => metrics::error(Api::Ws, *code),
            _ => {}
        }
        let numbered = !matches!(
            message,
            ServerMessage::Connected { .. } | ServerMessage::Pong { .. }
        );
        let text = if numbered {
            let seq = self.seq + 1;
            serde_json::to_string(&Sequenced { message, seq })
        } else {
            serde_json::to_string(message)
        };
        let text = match text {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(session = %self.id, "cannot serialise {}: {e}", message.kind());
                return;
            }
        };
        let mut frames = vec![Frame::Text(text)];
        frames.extend(binary.map(|b| Frame::Binary(b.into())));
        for frame in &frames {
            self.write(Outgoing::Frame(frame.clone()));
        }
        if numbered {
            self.seq += 1;
            self.replay.push(self.seq, frames);
        }
    }

    /// To the client, if one is connected (a detached session's messages wait in the
    /// replay buffer).
    fn write(&self, out: Outgoing) {
        if let Some((_, link)) = &self.link {
            link.do_send(out);
        }
    }

    /// Close the connection and end the session.
    fn close(&mut self, ctx: &mut Context<Self>, code: ws::CloseCode, why: &str) {
        if let Some((_, link)) = self.link.take() {
            link.do_send(Outgoing::Close(Some(ws::CloseReason {
                code,
                description: Some(why.into()),
            })));
        }
        ctx.stop();
    }

    /// The connection is gone (or dead): wait for a resume if the session can be
    /// resumed, else end.
    fn detach(&mut self, ctx: &mut Context<Self>, why: &str) {
        self.link = None;
        if self.resume_token.is_some() && !self.leaving {
            tracing::info!(session = %self.id, why, "connection lost: the session waits for a resume");
            self.detached_at = Some(Instant::now());
        } else {
            tracing::info!(session = %self.id, why, "connection lost");
            ctx.stop();
        }
    }

    fn error(&mut self, ctx: &mut Context<Self>, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(session = %self.id, %code, %message, "error sent");
        self.send(ctx, &ServerMessage::error(code, message));
    }

    /// Heartbeat, idle and stream-length timers.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.renew_lease();
        self.charge(ctx, false);
        let services = self.services();
        let config = &services.config;
        if let Some(since) = self.detached_at {
            // No client to time out; only the grace period runs.
            if since.elapsed() > config.resume_grace {
                tracing::info!(session = %self.id, "not resumed within {:?}: ending", config.resume_grace);
                ctx.stop();
            }
            return;
        }
        if self.link.is_none() {
            return; // not attached yet
        }
        if self.heard_at.elapsed() > config.client_timeout {
            tracing::info!(session = %self.id, "no pong for {:?}: closing", config.client_timeout);
            if let Some((_, link)) = &self.link {
                link.do_send(Outgoing::Close(Some(ws::CloseReason {
                    code: ws::CloseCode::Away,
                    description: Some("heartbeat timeout".into()),
                })));
            }
            // A dead connection is what resuming is for.
            self.detach(ctx, "heartbeat timeout");
            return;
        }
        if self.last_ping.elapsed() >= config.heartbeat_interval {
            self.last_ping = Instant::now();
            self.write(Outgoing::Ping);
        }
        let streaming = self
            .stream
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Streaming);
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
            self.close(ctx, ws::CloseCode::Normal, "idle timeout");
            return;
        }
        if let Some(stream) = &self.stream {
            if stream.phase == Phase::Streaming && stream.started.elapsed() > config.max_stream {
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

    fn on_client(&mut self, message: ClientMessage, ctx: &mut Context<Self>) {
        match message {
            ClientMessage::Ping { id } => self.send(ctx, &ServerMessage::Pong { id }),
            ClientMessage::Ack { seq } => {
                self.acked = self.acked.max(seq.min(self.seq));
                self.replay.ack(self.acked);
            }
            ClientMessage::StartStream {
                source_lang,
                target_lang,
                audio_format,
                interim_results,
                tts,
                task,
            } => {
                if self.grant.as_ref().is_some_and(|g| g.exceeded) {
                    return self.close_over_quota(ctx);
                }
                if self.leaving {
                    return self.error(
                        ctx,
                        ErrorCode::Overloaded,
                        "the server is shutting down: reconnect (to another instance) and start again",
                    );
                }
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
                let language = match self.services().check_languages(
                    &source_lang,
                    target_lang.as_deref(),
                    task,
                    tts,
                ) {
                    Ok(language) => language,
                    Err(message) => {
                        return self.error(ctx, ErrorCode::UnsupportedLanguage, message)
                    }
                };
                let spec = StreamSpec {
                    format: audio_format,
                    language,
                    task,
                    interim_results,
                    target: target_lang,
                    tts,
                };
                self.start_stream(ctx, spec);
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
                match tolk_protocol::ws::decode_audio_data(&audio_data) {
                    Ok(bytes) => self.on_audio(&bytes, ctx),
                    Err(e) => return self.error(ctx, ErrorCode::InvalidMessage, e),
                }
                if is_final {
                    self.end_stream(ctx);
                }
            }
            ClientMessage::EndStream {} => {
                if self
                    .stream
                    .as_ref()
                    .is_none_or(|s| s.phase == Phase::Finalizing)
                {
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

    fn start_stream(&mut self, ctx: &mut Context<Self>, spec: StreamSpec) {
        let services = self.services();
        self.streams_started += 1;
        let format = spec.format;
        let stream = Stream::new(spec, &services.config);
        let stream_id = stream.id.clone();
        tracing::info!(session = %self.id, stream = %stream_id, ?format, "stream started");
        self.stream = Some(stream);
        self.send(
            ctx,
            &ServerMessage::StreamReady {
                stream_id,
                buffer_ms: services.config.burst_ms as u32,
                chunk_ms: 100,
            },
        );
    }

    fn on_audio(&mut self, bytes: &[u8], ctx: &mut Context<Self>) {
        // Over quota: the stream is being finalized and the session closes with
        // `quota_exceeded`; audio still in flight is dropped without an error of its own.
        // Shutting down: likewise, the stream is being finalized for the client.
        if self.grant.as_ref().is_some_and(|g| g.exceeded) || self.leaving {
            return;
        }
        let services = self.services();
        let Some(stream) = self.stream.as_mut() else {
            return self.error(
                ctx,
                ErrorCode::StreamNotStarted,
                "audio before start_stream",
            );
        };
        match stream.accept_audio(bytes, &services.config) {
            Ok(true) => self.pump(ctx),
            Ok(false) => {}
            Err((code, message)) => self.error(ctx, code, message),
        }
    }

    fn end_stream(&mut self, ctx: &mut Context<Self>) {
        // The VAD catches up first (pump), then the recogniser is told the stream ended,
        // so the last words are judged before the final decode.
        if self.stream.as_mut().is_some_and(Stream::finish_input) {
            self.pump(ctx);
        }
    }

    /// Start whatever work is due: VAD over new audio, then the next decode.
    fn pump(&mut self, ctx: &mut Context<Self>) {
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
        if stream.phase == Phase::Finalizing && vad_idle && !stream.asr.is_finished() {
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

    fn decode(&mut self, request: DecodeRequest, ctx: &mut Context<Self>) {
        let services = self.services();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let ticket = request.ticket;
        let audio_ms = request.audio.len() as u64 / 16;
        let kind = ticket.kind;
        let options = stream.recognize_options(&request);
        // Finals, and partials likely to become finals, go before ordinary partials.
        let priority = if ticket.urgent {
            Priority::High
        } else {
            Priority::Normal
        };
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
                            act.slot.services().decodes.record(kind, done.busy);
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
    fn deliver(&mut self, updates: Vec<SegmentUpdate>, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let jobs = stream.take_updates(updates);
        let stream_id = stream.id.clone();
        for job in jobs {
            self.translate(job, stream_id.clone(), ctx);
        }
        self.flush(ctx);
    }

    /// Send the results that are ready, in order.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let messages = stream.ready();
        let speak_in = stream
            .target
            .clone()
            .or_else(|| stream.text_language().map(str::to_string));
        let tts = stream.tts;
        for message in messages {
            self.send(ctx, &message);
            if let (true, Some(language), ServerMessage::PartialResult(r)) =
                (tts, &speak_in, &message)
            {
                if r.is_final && !r.transcript.is_empty() {
                    let text = r.translation.as_deref().unwrap_or(&r.transcript);
                    // Sentence by sentence: the first one is heard while the rest are
                    // synthesized. The speech pool has one worker, so they stay in order.
                    for sentence in sentences(text) {
                        self.speak(r.segment_id, language.clone(), sentence, ctx);
                    }
                }
            }
        }
    }

    /// Synthesize a committed segment; its `tts_audio` header and frame go out when ready.
    fn speak(&mut self, segment_id: u32, language: String, text: String, ctx: &mut Context<Self>) {
        let services = self.services();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let stream_id = stream.id.clone();
        let request = SpeakRequest {
            language,
            text: text.clone(),
        };
        match services.speech.submit(request, Priority::Normal) {
            Ok(rx) => {
                stream.pending_speech += 1;
                ctx.spawn(fut::wrap_future::<_, Self>(rx).map(move |done, act, ctx| {
                    let Some(stream) = act.stream.as_mut().filter(|s| s.id == stream_id) else {
                        return;
                    };
                    stream.pending_speech -= 1;
                    match done.map(|d| d.result) {
                        Ok(Ok(speech)) => {
                            let bytes: Vec<u8> = speech
                                .samples
                                .iter()
                                .flat_map(|s| {
                                    ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes()
                                })
                                .collect();
                            let header = ServerMessage::TtsAudio {
                                segment_id,
                                encoding: AudioEncoding::PcmS16le,
                                sample_rate: speech.sample_rate,
                                bytes: bytes.len() as u32,
                                text,
                            };
                            act.send_with(ctx, &header, Some(bytes));
                        }
                        Ok(Err(e)) => act.error(
                            ctx,
                            ErrorCode::Internal,
                            format!("segment {segment_id} was not spoken: {e}"),
                        ),
                        Err(_) => act.error(ctx, ErrorCode::Internal, "speech synthesis shut down"),
                    }
                    act.maybe_complete(ctx);
                }));
            }
            Err(e) => self.error(
                ctx,
                ErrorCode::Overloaded,
                format!("segment {segment_id} was not spoken: {e}"),
            ),
        }
    }

    /// Translate a committed segment on the translation pool; its result is held back
    /// until then (a failure sends it untranslated, with an error).
    fn translate(&mut self, job: TranslationJob, stream_id: String, ctx: &mut Context<Self>) {
        let services = self.services();
        let segment_id = job.segment_id;
        let request = TranslateRequest {
            source: job.source,
            target: job.target,
            text: job.text,
        };
        match services.translation.submit(request, Priority::High) {
            Ok(rx) => {
                ctx.spawn(fut::wrap_future::<_, Self>(rx).map(move |done, act, ctx| {
                    let Some(stream) = act.stream.as_mut().filter(|s| s.id == stream_id) else {
                        return;
                    };
                    let failure = match done.map(|d| d.result) {
                        Ok(Ok(response)) => {
                            stream.translation_route = Some(response.route);
                            stream.on_translated(segment_id, Some(response.text));
                            None
                        }
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(_) => Some("the translation pool shut down".to_string()),
                    };
                    if let Some(reason) = failure {
                        stream.on_translated(segment_id, None);
                        // The pair was checked at start_stream: a failure now is the
                        // engine's, not the client's.
                        act.error(
                            ctx,
                            ErrorCode::Internal,
                            format!("segment {segment_id} was not translated: {reason}"),
                        );
                    }
                    act.flush(ctx);
                    act.maybe_complete(ctx);
                }));
            }
            Err(e) => {
                if let Some(stream) = self.stream.as_mut() {
                    stream.on_translated(segment_id, None);
                }
                self.error(
                    ctx,
                    ErrorCode::Overloaded,
                    format!("segment {segment_id} was not translated: {e}"),
                );
            }
        }
    }

    /// Finalizing → Connected: once everything is committed, `final_result` and
    /// `session_complete`; a new stream may start.
    fn maybe_complete(&mut self, ctx: &mut Context<Self>) {
        if !self.stream.as_ref().is_some_and(Stream::is_complete) {
            return;
        }
        let Some(stream) = self.stream.take() else {
            return;
        };
        let stream_id = stream.id.clone();
        let received = stream.received_16k;
        for message in stream.completion(&self.id) {
            self.send(ctx, &message);
        }
        tracing::info!(session = %self.id, stream = %stream_id, "stream complete");
        if let Some(grant) = self.grant.as_mut() {
            grant.finished += received;
        }
        self.charge(ctx, true);
        if self.grant.as_ref().is_some_and(|g| g.exceeded) {
            self.close_over_quota(ctx);
        } else if self.leaving {
            self.close_going_away(ctx);
        }
    }

    /// The server is shutting down: finish the open stream as if the client had sent
    /// `end_stream` (its results, `final_result`, `session_complete`), then close with 1001.
    fn leave(&mut self, ctx: &mut Context<Self>) {
        self.leaving = true;
        if self.link.is_none() {
            // No client to finalize for (waiting for a resume that cannot come now).
            return ctx.stop();
        }
        match &self.stream {
            None => self.close_going_away(ctx),
            Some(stream) => {
                tracing::info!(session = %self.id, stream = %stream.id, "shutting down: finalizing the stream");
                if stream.phase != Phase::Finalizing {
                    self.end_stream(ctx);
                }
                self.maybe_complete(ctx);
            }
        }
    }

    fn close_going_away(&mut self, ctx: &mut Context<Self>) {
        self.close(ctx, ws::CloseCode::Away, "server shutting down");
    }

    /// Keep this session's place among its caller's concurrent streams.
    fn renew_lease(&mut self) {
        let Some(grant) = self.grant.as_mut() else {
            return;
        };
        let Some(lease) = grant.lease.clone() else {
            return;
        };
        if grant.renewed_at.elapsed() < STREAM_LEASE / 3 {
            return;
        }
        grant.renewed_at = Instant::now();
        let limits = grant.access.limits.clone();
        let session = self.id.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = limits.renew_stream(&lease, STREAM_LEASE).await {
                tracing::warn!(%session, caller = %lease.caller, "cannot renew a stream lease: {e}");
            }
        });
    }

    /// Count received audio against the caller's daily quota, a second at a time (all of
    /// it when `all`); past the quota the stream is finalized and the session closed.
    fn charge(&mut self, ctx: &mut Context<Self>, all: bool) {
        let received = self.stream.as_ref().map_or(0, |s| s.received_16k);
        let Some(grant) = self.grant.as_mut() else {
            return;
        };
        let per_day = grant.caller.limits.audio_seconds_per_day;
        let total = grant.finished + received;
        let due = total.saturating_sub(grant.charged);
        if per_day == 0 || grant.charging || due == 0 || (due < CHARGE_STEP && !all) {
            return;
        }
        grant.charging = true;
        grant.charged = total;
        let (access, caller) = (grant.access.clone(), grant.caller.clone());
        let seconds = due as f64 / 16_000.0;
        let charge = async move { access.limits.add_audio(&caller.id, seconds, per_day).await };
        ctx.spawn(fut::wrap_future::<_, Self>(charge).map(|outcome, act, ctx| {
            let Some(grant) = act.grant.as_mut() else {
                return;
            };
            grant.charging = false;
            let exceeded = match outcome {
                Ok(quota) => quota.exceeded,
                Err(e) => {
                    tracing::error!(session = %act.id, "limit store (quota): {e}");
                    !grant.access.fail_open
                }
            };
            if exceeded && !grant.exceeded {
                grant.exceeded = true;
                tracing::info!(session = %act.id, caller = %grant.caller.id, "daily audio quota used up");
                // Committed results go out first; the close follows in maybe_complete.
                match act.stream.as_ref().map(|s| s.phase) {
                    Some(Phase::Finalizing) => {}
                    Some(_) => act.end_stream(ctx),
                    None => act.close_over_quota(ctx),
                }
            }
        }));
    }

    fn close_over_quota(&mut self, ctx: &mut Context<Self>) {
        let Some(grant) = self.grant.as_ref() else {
            return;
        };
        let tier = &grant.caller;
        self.error(
            ctx,
            ErrorCode::QuotaExceeded,
            format!(
                "the daily audio quota of the {} tier ({} min) is used up: closing",
                tier.tier_name,
                tier.limits.audio_seconds_per_day / 60
            ),
        );
        self.close(ctx, ws::CloseCode::Policy, "quota exceeded");
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let services = self.services();
        tracing::info!(session = %self.id, "session opened");
        ctx.run_interval(TICK.min(services.config.heartbeat_interval), |act, ctx| {
            act.tick(ctx)
        });
        let shutdown = services.shutdown.started();
        ctx.spawn(fut::wrap_future::<_, Self>(shutdown).map(|(), act, ctx| act.leave(ctx)));
        ctx.set_mailbox_capacity(MAILBOX);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(token) = &self.resume_token {
            self.services().forget_resumable(token);
        }
        // The slot is released when the actor is dropped (SessionSlot::drop); the caller's
        // stream place here, and whatever audio was not charged yet is charged.
        if let Some(settle) = self.settle() {
            actix_web::rt::spawn(settle);
        }
        tracing::info!(session = %self.id, streams = self.streams_started, "session closed");
    }
}

impl Session {
    /// Give back the caller's stream place and charge the audio not charged yet; `None`
    /// when there is no caller (auth off) or it was done already.
    fn settle(&mut self) -> Option<impl std::future::Future<Output = ()> + 'static> {
        let grant = self.grant.take()?;
        let received = self.stream.as_ref().map_or(0, |s| s.received_16k);
        let due = (grant.finished + received).saturating_sub(grant.charged);
        let per_day = grant.caller.limits.audio_seconds_per_day;
        let session = self.id.clone();
        Some(async move {
            let limits = &grant.access.limits;
            if per_day > 0 && due > 0 {
                let _ = limits
                    .add_audio(&grant.caller.id, due as f64 / 16_000.0, per_day)
                    .await;
            }
            if let Some(lease) = &grant.lease {
                if let Err(e) = limits.close_stream(lease).await {
                    tracing::warn!(%session, caller = %lease.caller, "cannot release a stream lease: {e}");
                }
            }
        })
    }
}

/// A new session of the same caller needs the stream place this one holds. A session
/// waiting for a resume gives it up and ends (its client came back without resuming);
/// answers whether it did.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Supersede;

impl Handler<Supersede> for Session {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, _: Supersede, _: &mut Self::Context) -> Self::Result {
        if self.detached_at.is_none() {
            return Box::pin(fut::ready(false));
        }
        tracing::info!(session = %self.id, "superseded by a new session of its caller while waiting for a resume");
        let settle = self.settle();
        Box::pin(
            fut::wrap_future::<_, Self>(async move {
                if let Some(settle) = settle {
                    settle.await;
                }
            })
            .map(|(), _, ctx| {
                ctx.stop();
                true
            }),
        )
    }
}

impl Handler<Attach> for Session {
    type Result = ();

    /// A connection is up: the first, or a resume's. A resume replaces a connection that
    /// still looks open (a half-open TCP connection the server has not noticed yet).
    fn handle(&mut self, attach: Attach, ctx: &mut Self::Context) {
        if let Some((_, old)) = self.link.take() {
            old.do_send(Outgoing::Close(Some(ws::CloseReason {
                code: ws::CloseCode::Other(4000),
                description: Some("resumed elsewhere".into()),
            })));
        }
        let now = Instant::now();
        self.link = Some((attach.attachment, attach.transport));
        self.detached_at = None;
        (self.heard_at, self.active_at, self.last_ping) = (now, now, now);
        let services = self.services();
        self.send(
            ctx,
            &ServerMessage::Connected {
                session_id: self.id.clone(),
                protocol_version: PROTOCOL_VERSION,
                supported_languages: services.languages.clone(),
                limits: services.config.limits(),
                resume_token: self.resume_token.clone(),
                resumed: attach.resume.is_some(),
            },
        );
        if let Some(last_seq) = attach.resume {
            let from = last_seq.unwrap_or(self.acked);
            let (frames, lost) = self.replay.since(from);
            tracing::info!(
                session = %self.id,
                from,
                replayed = frames.len(),
                lost,
                "session resumed"
            );
            for frame in frames {
                self.write(Outgoing::Frame(frame));
            }
        }
    }
}

impl Handler<Detach> for Session {
    type Result = ();

    fn handle(&mut self, detach: Detach, ctx: &mut Self::Context) {
        // A transport already replaced by a resume says nothing about the session.
        if self
            .link
            .as_ref()
            .is_some_and(|(n, _)| *n == detach.attachment)
        {
            self.detach(ctx, "connection closed without a close frame");
        }
    }
}

/// End the session (it was never attached, or its token is being dropped).
#[derive(Message)]
#[rtype(result = "()")]
pub struct End;

impl Handler<End> for Session {
    type Result = ();

    fn handle(&mut self, _: End, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Incoming> for Session {
    type Result = ();

    fn handle(&mut self, incoming: Incoming, ctx: &mut Self::Context) {
        if self
            .link
            .as_ref()
            .is_none_or(|(n, _)| *n != incoming.attachment)
        {
            return; // from a connection a resume has replaced
        }
        self.heard_at = Instant::now();
        let message = match incoming.message {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(session = %self.id, "protocol error: {e}");
                if let Some((_, link)) = &self.link {
                    link.do_send(Outgoing::Close(Some(ws::CloseCode::Protocol.into())));
                }
                return self.detach(ctx, "protocol error");
            }
        };
        match message {
            ws::Message::Ping(payload) => self.write(Outgoing::Pong(payload)),
            ws::Message::Pong(_) => {}
            ws::Message::Text(text) => {
                let now = Instant::now();
                self.active_at = now;
                let refill = now.duration_since(self.text_refilled).as_secs_f64() * TEXT_RATE;
                self.text_allowance = (self.text_allowance + refill).min(TEXT_BURST);
                self.text_refilled = now;
                if self.text_allowance < 1.0 {
                    return self.error(
                        ctx,
                        ErrorCode::TooFast,
                        format!("more than {TEXT_RATE} messages a second: this one was discarded"),
                    );
                }
                self.text_allowance -= 1.0;
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
                // The client ended the session itself: nothing to resume.
                if let Some((_, link)) = self.link.take() {
                    link.do_send(Outgoing::Close(reason));
                }
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

/// Split text after sentence-ending punctuation followed by a space.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        let ends = matches!(c, '.' | '!' | '?' | '。' | '！' | '？');
        if ends && chars.peek().is_none_or(|n| n.is_whitespace()) {
            let sentence = current.trim();
            if !sentence.is_empty() {
                out.push(sentence.to_string());
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sentences;

    #[test]
    fn splits_after_sentence_ends_only() {
        assert_eq!(
            sentences("Ask not. Ask what you can do!"),
            ["Ask not.", "Ask what you can do!"]
        );
        assert_eq!(sentences("Version 1.5 is out"), ["Version 1.5 is out"]);
        assert_eq!(sentences("  Hola. ¿Qué tal?  "), ["Hola.", "¿Qué tal?"]);
        assert!(sentences("   ").is_empty());
    }
}
