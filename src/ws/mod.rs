//! The streaming endpoint, `GET /ws/translate` (protocol: docs/protocol.md).
//!
//! Each connection is a [`session::Session`] actor; it feeds audio through the VAD and ASR
//! worker pools of [`StreamServices`], shared by all sessions.

pub mod pcm;
pub mod replay;
pub mod session;
pub mod stream;
pub mod transport;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use actix_web_actors::ws;
use tolk_actors::engines::{AsrPool, SpeechPool, TranslationPool, VadPool};
use tolk_actors::streaming::{DecodeKind, StreamingConfig};
use tolk_models::translate::TranslationCatalog;
use tolk_models::tts::VoiceCatalog;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::transcript::Task;
use tolk_protocol::ws::Limits;

use crate::access::Caller;
use crate::server::{error_response, AppState};

/// Limits and timings of WebSocket sessions.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Server pings this often.
    pub heartbeat_interval: Duration,
    /// A connection with no pong (or any frame) for this long is closed.
    pub client_timeout: Duration,
    /// A session with no client message for this long is closed with `session_timeout`.
    pub idle_timeout: Duration,
    /// A stream longer than this is ended with `stream_too_long`.
    pub max_stream: Duration,
    /// Largest binary (or decoded `audio_chunk`) frame.
    pub max_frame_bytes: usize,
    /// How much faster than real time audio may arrive, sustained.
    pub max_realtime_factor: f32,
    /// Audio a client may send ahead of real time before `too_fast` (network bursts).
    pub burst_ms: u64,
    /// Most uncommitted audio a stream may hold; more is refused with `overloaded`.
    pub max_buffer_ms: u64,
    /// Most concurrent WebSocket sessions; more are refused with 503.
    pub max_sessions: usize,
    /// How long a session whose connection dropped waits for a resume (zero: it ends).
    pub resume_grace: Duration,
    pub streaming: StreamingConfig,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(10),
            client_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_stream: Duration::from_secs(3600),
            max_frame_bytes: 64 * 1024,
            max_realtime_factor: 1.5,
            burst_ms: 3000,
            max_buffer_ms: 30_000,
            max_sessions: 64,
            resume_grace: Duration::from_secs(30),
            streaming: StreamingConfig::default(),
        }
    }
}

impl WsConfig {
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes as u32,
            max_stream_seconds: self.max_stream.as_secs() as u32,
            idle_timeout_seconds: self.idle_timeout.as_secs() as u32,
            heartbeat_interval_seconds: self.heartbeat_interval.as_secs().max(1) as u32,
            max_realtime_factor: self.max_realtime_factor,
            sample_rates: [8_000, 48_000],
            resume_grace_seconds: self.resume_grace.as_secs() as u32,
        }
    }
}

/// What every session shares.
pub struct StreamServices {
    pub asr: AsrPool,
    pub vad: VadPool,
    pub translation: TranslationPool,
    pub speech: SpeechPool,
    /// Installed voices.
    pub voices: Arc<VoiceCatalog>,
    /// Installed translation pairs.
    pub catalog: Arc<TranslationCatalog>,
    pub config: WsConfig,
    /// Name of the loaded whisper model.
    pub model: String,
    pub multilingual: bool,
    /// Languages the model recognises.
    pub languages: Vec<String>,
    /// Sessions open now.
    pub active: AtomicUsize,
    /// Whisper time spent on streams, for `/metrics`.
    pub decodes: DecodeStats,
    /// Told when the server begins to shut down (sessions finalize and close).
    pub shutdown: Arc<crate::shutdown::Shutdown>,
    /// Sessions that can be resumed, by token: each with its caller (when auth is on),
    /// whom a resume must name again. At most one entry per open session.
    pub resumable: std::sync::Mutex<std::collections::HashMap<String, Resumable>>,
    /// Where whisper and the ONNX models run (reported by `/api/v1/models`).
    pub devices: (tolk_models::device::Device, tolk_models::device::Device),
}

#[derive(Clone)]
pub struct Resumable {
    pub session: actix::Addr<session::Session>,
    pub caller: Option<String>,
    /// Attachments so far (the next resume's number is one more).
    pub attachments: Arc<AtomicU64>,
}

/// Count and total engine time of stream decodes, by kind: how much of a final's latency
/// is whisper, the rest being VAD, queueing and the protocol.
#[derive(Debug, Default)]
pub struct DecodeStats {
    pub finals: AtomicU64,
    pub final_micros: AtomicU64,
    pub partials: AtomicU64,
    pub partial_micros: AtomicU64,
}

impl DecodeStats {
    pub fn record(&self, kind: DecodeKind, busy: Duration) {
        let (count, micros) = match kind {
            DecodeKind::Final => (&self.finals, &self.final_micros),
            DecodeKind::Partial => (&self.partials, &self.partial_micros),
        };
        count.fetch_add(1, Ordering::Relaxed);
        micros.fetch_add(busy.as_micros() as u64, Ordering::Relaxed);
    }
}

impl StreamServices {
    fn resumable(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Resumable>> {
        // A panic while holding the lock leaves a plain map behind: keep using it.
        self.resumable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session's token is void (it ended).
    pub fn forget_resumable(&self, token: &str) {
        self.resumable().remove(token);
    }

    /// The language to recognise (`None` = detect), or why the request cannot be served.
    pub fn check_languages(
        &self,
        source: &str,
        target: Option<&str>,
        task: Task,
        tts: bool,
    ) -> Result<Option<String>, String> {
        let services = self;
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
            let catalog = &services.catalog;
            let reachable = match text_lang {
                Some(from) => from == target || catalog.route(from, target).is_some(),
                // Detected later: some installed route must lead to the target.
                None => catalog
                    .languages()
                    .iter()
                    .any(|from| from == target || catalog.route(from, target).is_some()),
            };
            if !reachable {
                let pairs: Vec<String> = catalog
                    .pairs()
                    .into_iter()
                    .map(|(s, t, b)| format!("{s}→{t} ({b})"))
                    .collect();
                return Err(format!(
                    "no translation from '{}' to '{target}' is installed; available: {} (others pivot through en)",
                    text_lang.unwrap_or("auto"),
                    if pairs.is_empty() { "none".into() } else { pairs.join(", ") }
                ));
            }
        }
        if tts {
            // Spoken: the translation, else the text; unknown until detection for `auto`.
            if let Some(language) = target.or(text_lang) {
                if services.voices.voice_for(language).is_none() {
                    return Err(format!(
                        "no voice speaks '{language}'; installed: {}",
                        services.voices.languages().join(", ")
                    ));
                }
            }
        }
        if task == Task::Translate && !services.multilingual {
            return Err(format!(
                "model {} is English-only and cannot translate speech",
                services.model
            ));
        }
        Ok(source)
    }
}

/// Counts a session for as long as it lives: decremented on every exit path.
pub struct SessionSlot(Arc<StreamServices>);

impl SessionSlot {
    /// Take a slot, unless `max_sessions` are open.
    pub fn acquire(services: &Arc<StreamServices>) -> Option<Self> {
        let max = services.config.max_sessions;
        services
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(services.clone()))
    }

    pub fn services(&self) -> &Arc<StreamServices> {
        &self.0
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Frames up to this size are read and answered with `frame_too_large` when over the
/// configured limit; larger ones close the connection (1009) in the codec.
const CODEC_MAX_FRAME: usize = 4 * 1024 * 1024;

pub async fn translate(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(services) = state.streaming.as_ref() else {
        return error_response(
            ErrorCode::Overloaded,
            "streaming is not available: no speech model is loaded",
        );
    };
    // A request that is no upgrade still gets the answer an upgrade would (503, 429): a
    // browser, told nothing about a refused handshake, asks again with a plain GET to learn
    // why. Checked here, so that nothing taken below is held for it.
    let not_upgrade = ws::handshake(&req).err();
    let query = web::Query::<ResumeQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    if let Some(token) = query.resume {
        return resume(&req, body, services, &token, query.last_seq, not_upgrade);
    }
    let Some(slot) = SessionSlot::acquire(services) else {
        return error_response(
            ErrorCode::Overloaded,
            &format!(
                "the server has {} sessions open, its limit; retry later",
                services.config.max_sessions
            ),
        );
    };
    // With auth on, the guard has put the caller here; take one of its stream places.
    let caller = req.extensions().get::<Caller>().cloned();
    let grant = match (&state.access, caller) {
        (Some(access), Some(caller)) => {
            let mut opened = access.open_stream(&caller).await;
            if opened
                .as_ref()
                .is_err_and(|e| e.code == ErrorCode::QuotaExceeded)
                && supersede_detached(services, &caller.id).await
            {
                opened = access.open_stream(&caller).await;
            }
            match opened {
                Ok(lease) => Some(session::StreamGrant::new(access.clone(), caller, lease)),
                Err(e) => return e.error_response(),
            }
        }
        _ => None,
    };
    if let Some(e) = not_upgrade {
        if let Some(lease) = grant.as_ref().and_then(|g| g.lease.as_ref()) {
            let limits = &state
                .access
                .as_ref()
                .expect("a grant comes with access")
                .limits;
            if let Err(e) = limits.close_stream(lease).await {
                tracing::warn!(caller = %lease.caller, "cannot release a stream lease: {e}");
            }
        }
        return error_response(
            ErrorCode::InvalidMessage,
            &format!("not a WebSocket upgrade request: {e}"),
        );
    }
    let session = session::Session::new(slot, grant);
    let caller = session.caller_id();
    let (session, token) = if services.config.resume_grace.is_zero() {
        (session, None)
    } else {
        let (session, token) = session.resumable();
        (session, Some(token))
    };
    let addr = actix::Actor::start(session);
    if let Some(token) = token {
        services.resumable().insert(
            token,
            Resumable {
                session: addr.clone(),
                caller,
                attachments: Arc::new(AtomicU64::new(1)),
            },
        );
    }
    match upgrade(&req, body, transport::Transport::new(addr.clone(), 1, None)) {
        Ok(response) => response,
        Err(response) => {
            addr.do_send(session::End);
            response
        }
    }
}

/// A caller out of stream places may have one held by a session of its own that waits
/// for a resume that is not coming (the client reconnected without resuming): end one.
async fn supersede_detached(services: &StreamServices, caller: &str) -> bool {
    let waiting: Vec<_> = services
        .resumable()
        .values()
        .filter(|r| r.caller.as_deref() == Some(caller))
        .map(|r| r.session.clone())
        .collect();
    for session in waiting {
        if let Ok(true) = session.send(session::Supersede).await {
            return true;
        }
    }
    false
}

/// `?resume=<token>&last_seq=<n>`
#[derive(Debug, Default, serde::Deserialize)]
struct ResumeQuery {
    resume: Option<String>,
    last_seq: Option<u64>,
}

/// Start the WebSocket. A browser sends its token as a `bearer.<token>` subprotocol next
/// to `tolk.v1`; the handshake must then name one it offered. Both outcomes are responses
/// (the error one goes to the client as it is): no point boxing it.
#[allow(clippy::result_large_err)]
fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    transport: transport::Transport,
) -> Result<HttpResponse, HttpResponse> {
    ws::WsResponseBuilder::new(transport, req, body)
        .frame_size(CODEC_MAX_FRAME)
        .protocols(&["tolk.v1"])
        .start()
        .map_err(|e| {
            error_response(
                ErrorCode::InvalidMessage,
                &format!("not a WebSocket upgrade request: {e}"),
            )
        })
}

/// `?resume=`: attach a new connection to a session waiting for it. The session keeps its
/// slot and its caller's stream place; the caller must be the same.
fn resume(
    req: &HttpRequest,
    body: web::Payload,
    services: &StreamServices,
    token: &str,
    last_seq: Option<u64>,
    not_upgrade: Option<ws::HandshakeError>,
) -> HttpResponse {
    let Some(entry) = services.resumable().get(token).cloned() else {
        return error_response(
            ErrorCode::SessionExpired,
            "no session to resume with this token (unknown, or its grace period has passed): open a new session",
        );
    };
    let caller = req.extensions().get::<Caller>().map(|c| c.id.clone());
    if entry.caller.is_some() && entry.caller != caller {
        return error_response(
            ErrorCode::Forbidden,
            "this session belongs to another caller",
        );
    }
    if let Some(e) = not_upgrade {
        return error_response(
            ErrorCode::InvalidMessage,
            &format!("not a WebSocket upgrade request: {e}"),
        );
    }
    let attachment = entry.attachments.fetch_add(1, Ordering::Relaxed) + 1;
    let transport = transport::Transport::new(entry.session, attachment, Some(last_seq));
    upgrade(req, body, transport).unwrap_or_else(|response| response)
}
