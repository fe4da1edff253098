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
use tolk_actors::engines::{AsrRequest, SpeakRequest, TranslateRequest, VadRequest};
use tolk_actors::pool::{PoolError, Priority};
use tolk_actors::streaming::{DecodeKind, DecodeRequest, SegmentUpdate};
use tolk_models::vad::VadState;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::ws::{AudioEncoding, ClientMessage, ServerMessage};
use tolk_protocol::PROTOCOL_VERSION;

use super::stream::{Phase, Stream, StreamSpec, TranslationJob};
use super::{SessionSlot, StreamServices};
use crate::access::{Access, Caller, STREAM_LEASE};
use tolk_auth::limits::StreamLease;

/// How often the session checks its timers (heartbeat, idle, stream length).
const TICK: Duration = Duration::from_millis(500);
/// Retry delay for a final decode refused by a full queue: finals are never dropped.
const FINAL_RETRY: Duration = Duration::from_millis(100);

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
        self.renew_lease();
        self.charge(ctx, false);
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
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Normal,
                description: Some("idle timeout".into()),
            }));
            ctx.stop();
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
                if self.grant.as_ref().is_some_and(|g| g.exceeded) {
                    return self.close_over_quota(ctx);
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

    fn start_stream(&mut self, ctx: &mut ws::WebsocketContext<Self>, spec: StreamSpec) {
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

    fn on_audio(&mut self, bytes: &[u8], ctx: &mut ws::WebsocketContext<Self>) {
        // Over quota: the stream is being finalized and the session closes with
        // `quota_exceeded`; audio still in flight is dropped without an error of its own.
        if self.grant.as_ref().is_some_and(|g| g.exceeded) {
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

    fn end_stream(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        // The VAD catches up first (pump), then the recogniser is told the stream ended,
        // so the last words are judged before the final decode.
        if self.stream.as_mut().is_some_and(Stream::finish_input) {
            self.pump(ctx);
        }
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

    fn decode(&mut self, request: DecodeRequest, ctx: &mut ws::WebsocketContext<Self>) {
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
    fn deliver(&mut self, updates: Vec<SegmentUpdate>, ctx: &mut ws::WebsocketContext<Self>) {
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
    fn flush(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
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
    fn speak(
        &mut self,
        segment_id: u32,
        language: String,
        text: String,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
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
                            act.send(ctx, &header);
                            ctx.binary(bytes);
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
    fn translate(
        &mut self,
        job: TranslationJob,
        stream_id: String,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
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
    fn maybe_complete(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
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
        }
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
        actix_web::rt::spawn(async move {
            if let Err(e) = limits.renew_stream(&lease, STREAM_LEASE).await {
                tracing::warn!(caller = %lease.caller, "cannot renew a stream lease: {e}");
            }
        });
    }

    /// Count received audio against the caller's daily quota, a second at a time (all of
    /// it when `all`); past the quota the stream is finalized and the session closed.
    fn charge(&mut self, ctx: &mut ws::WebsocketContext<Self>, all: bool) {
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

    fn close_over_quota(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
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
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Policy,
            description: Some("quota exceeded".into()),
        }));
        ctx.stop();
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
        // The slot is released when the actor is dropped (SessionSlot::drop); the caller's
        // stream place here, and whatever audio was not charged yet is charged.
        if let Some(grant) = self.grant.take() {
            let received = self.stream.as_ref().map_or(0, |s| s.received_16k);
            let due = (grant.finished + received).saturating_sub(grant.charged);
            let per_day = grant.caller.limits.audio_seconds_per_day;
            actix_web::rt::spawn(async move {
                let limits = &grant.access.limits;
                if per_day > 0 && due > 0 {
                    let _ = limits
                        .add_audio(&grant.caller.id, due as f64 / 16_000.0, per_day)
                        .await;
                }
                if let Some(lease) = &grant.lease {
                    if let Err(e) = limits.close_stream(lease).await {
                        tracing::warn!(caller = %lease.caller, "cannot release a stream lease: {e}");
                    }
                }
            });
        }
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
