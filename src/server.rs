//! `tolk serve`: the HTTP server.
//!
//! Routes: `GET /healthz` (the process is up), `GET /readyz` (models loaded, job store
//! reachable), `GET /metrics` (Prometheus text), `GET /api/v1/models` and
//! `/api/v1/languages` (what is installed), the REST API under `/api/v1/translate`
//! (docs/rest.md, [`crate::rest`]), its OpenAPI document at `/api/v1/openapi.json` and
//! `/docs`, and `GET /ws/translate` (streaming, docs/protocol.md). Models are loaded
//! before the server listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Args;
use serde_json::json;
use tolk_actors::engines::{
    AsrEngine, AsrPool, SpeechEngine, SpeechPool, TranslationEngine, TranslationPool, VadEngine,
    VadPool,
};
use tolk_actors::pool::Pool;
use tolk_actors::streaming::StreamingConfig;
use tolk_models::asr::Recognizer;
use tolk_models::registry::{resolve_whisper_model, Registry, APERTIUM_MODES};
use tolk_models::translate::TranslationCatalog;
use tolk_models::tts::VoiceCatalog;
use tolk_models::vad::{init_onnxruntime, SileroVad, VoiceDetector};
use tolk_models::whisper::{all_languages, WhisperConfig, WhisperModel};
use tolk_protocol::catalog::{LanguagesResponse, ModelsResponse, TranslationPair};
use tolk_protocol::error::{ErrorBody, ErrorCode, ErrorDetail};

use crate::access::{self, Access, AuthMode};
use crate::commands::CommandError;
use crate::jobs::callback::CallbackConfig;
use crate::jobs::memory::MemoryQueue;
use crate::jobs::redis::RedisQueue;
use crate::jobs::JobQueue;
use crate::rest::{self, JobService, RestConfig};
use crate::ws::{self, StreamServices, WsConfig};
use tolk_auth::jwt::{JwtConfig, JwtVerifier};
use tolk_auth::limits::{LimitStore, MemoryLimits, RedisLimits};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file of settings: keys are these options' names with `_` (`asr_workers = 2`);
    /// flags and TOLK_* variables override it (docs/configuration.md).
    #[arg(long, env = "TOLK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "TOLK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory models are installed in (by models/fetch).
    #[arg(long, env = "TOLK_MODELS_DIR", default_value = "models/cache")]
    pub models_dir: PathBuf,
    /// HTTP worker threads (async I/O only; inference has its own threads).
    #[arg(long, env = "TOLK_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
    /// Whisper model for streaming: an installed name or a ggml file. base-q4_0 is
    /// multilingual, gave base's words on every test clip, and decodes ~1.7x faster than
    /// base (BENCHMARKS.md).
    #[arg(long, env = "TOLK_ASR_MODEL", default_value = "base-q4_0")]
    pub asr_model: String,
    /// ASR worker threads, each decoding one window at a time (default: one per core; on a
    /// GPU at least 4).
    #[arg(long, env = "TOLK_ASR_WORKERS")]
    pub asr_workers: Option<usize>,
    /// Where whisper runs: auto (the GPU when this build has CUDA and the machine a GPU),
    /// cpu, or cuda:N. A GPU asked for and missing stops the server at start.
    #[arg(long, env = "TOLK_ASR_DEVICE", default_value = "auto")]
    pub asr_device: tolk_models::device::DeviceRequest,
    /// Where the ONNX models (Silero VAD, Piper voices) run: auto, cpu or cuda:N; a GPU
    /// needs ONNX Runtime's GPU build (PyPI onnxruntime-gpu) in the models directory.
    #[arg(long, env = "TOLK_ONNX_DEVICE", default_value = "auto")]
    pub onnx_device: tolk_models::device::DeviceRequest,
    /// CPU threads per ASR worker. Workers × threads should not exceed the cores.
    #[arg(long, env = "TOLK_ASR_THREADS", default_value_t = 1)]
    pub asr_threads: usize,
    /// Silero VAD worker threads (default: one per 4 cores, at least one). Every stream's
    /// audio passes through them; a stream keeps its own VAD state, so any worker serves it.
    #[arg(long, env = "TOLK_VAD_WORKERS")]
    pub vad_workers: Option<usize>,
    /// Most concurrent WebSocket sessions.
    #[arg(long, env = "TOLK_MAX_SESSIONS", default_value_t = 64)]
    pub max_sessions: usize,
    /// How long a session outlives a dropped connection, waiting for the client to resume
    /// it with its token (its stream goes on, results are kept); 0 turns resuming off.
    #[arg(long, env = "TOLK_RESUME_GRACE_SECONDS", default_value_t = 30)]
    pub resume_grace_seconds: u64,
    /// Server WebSocket ping interval, in ms.
    #[arg(long, env = "TOLK_WS_HEARTBEAT_MS", default_value_t = 10_000)]
    pub ws_heartbeat_ms: u64,
    /// Close a WebSocket whose client has not answered for this long, in ms.
    #[arg(long, env = "TOLK_WS_CLIENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub ws_client_timeout_ms: u64,
    /// Close a session with no client message for this long, in ms.
    #[arg(long, env = "TOLK_WS_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub ws_idle_timeout_ms: u64,
    /// Longest stream, in seconds.
    #[arg(long, env = "TOLK_MAX_STREAM_SECONDS", default_value_t = 3600)]
    pub max_stream_seconds: u64,
    /// New audio between two partial decodes of a stream, in ms.
    #[arg(long, env = "TOLK_ASR_STEP_MS", default_value_t = 500)]
    pub asr_step_ms: u64,
    /// Silence after speech that ends an utterance (and triggers its final), in ms.
    #[arg(long, env = "TOLK_VAD_MIN_SILENCE_MS", default_value_t = 500)]
    pub vad_min_silence_ms: u64,
    /// Largest audio frame, in bytes.
    #[arg(long, env = "TOLK_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Keep jobs in Redis (a Stream with a consumer group) instead of in this process, so
    /// every instance on the same Redis shares them: `redis://host:6379/0`.
    #[arg(long, env = "TOLK_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of this deployment's Redis keys.
    #[arg(long, env = "TOLK_REDIS_PREFIX", default_value = "tolk")]
    pub redis_prefix: String,
    /// Jobs this instance runs at once (0: accept jobs, let other instances run them).
    #[arg(long, env = "TOLK_JOB_WORKERS", default_value_t = 1)]
    pub job_workers: usize,
    /// On SIGTERM/SIGINT: how long open streams and running jobs get to finish before the
    /// process exits (a job not done 2 s before is given back to the queue), in seconds.
    #[arg(long, env = "TOLK_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 30)]
    pub shutdown_timeout_seconds: u64,
    /// Most jobs queued or running; more are refused with 503.
    #[arg(long, env = "TOLK_JOB_QUEUE_CAPACITY", default_value_t = 64)]
    pub job_queue_capacity: usize,
    /// How long job results are kept, in seconds.
    #[arg(long, env = "TOLK_JOB_TTL_SECONDS", default_value_t = 24 * 3600)]
    pub job_ttl_seconds: u64,
    /// A job whose worker has not reported for this long is run again by another (Redis).
    #[arg(long, env = "TOLK_JOB_CLAIM_TIMEOUT_SECONDS", default_value_t = 60)]
    pub job_claim_timeout_seconds: u64,
    /// Longest clip a job takes, in seconds.
    #[arg(long, env = "TOLK_MAX_JOB_SECONDS", default_value_t = 600)]
    pub max_job_seconds: u64,
    /// REST requests carrying audio handled at once (uploads, sync calls); more get 503.
    #[arg(long, env = "TOLK_MAX_UPLOADS", default_value_t = 8)]
    pub max_uploads: usize,
    /// Key that signs callbacks (HMAC-SHA256); without one, `callback_url` is refused.
    #[arg(long, env = "TOLK_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Allow callbacks to loopback and private addresses (tests, private networks).
    #[arg(long, env = "TOLK_CALLBACK_ALLOW_PRIVATE")]
    pub callback_allow_private: bool,
    /// Delivery attempts per callback.
    #[arg(long, env = "TOLK_CALLBACK_ATTEMPTS", default_value_t = 5)]
    pub callback_attempts: u32,
    /// Delay before the first callback retry, in ms; doubled for each next one.
    #[arg(long, env = "TOLK_CALLBACK_BACKOFF_MS", default_value_t = 1000)]
    pub callback_backoff_ms: u64,
    /// Names this instance in job results and as a queue consumer (default: host-pid).
    #[arg(long, env = "TOLK_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Check credentials (`required`) or not (`disabled`). Default: disabled on a loopback
    /// address, required on any other.
    #[arg(long, env = "TOLK_AUTH_MODE", value_enum)]
    pub auth_mode: Option<AuthMode>,
    /// Shared secret of HS256 bearer tokens (at least 32 bytes).
    #[arg(long, env = "TOLK_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// JWKS file with the public keys of RS256/ES256 bearer tokens (reread when a token
    /// names an unknown `kid`).
    #[arg(long, env = "TOLK_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// The `aud` bearer tokens must carry.
    #[arg(long, env = "TOLK_JWT_AUDIENCE", default_value = "tolk")]
    pub jwt_audience: String,
    /// The `iss` bearer tokens must carry, when set.
    #[arg(long, env = "TOLK_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// File of API keys (hashes only; `tolk keys create` writes it), when no Redis is
    /// configured.
    #[arg(long, env = "TOLK_KEYS_FILE", default_value = "data/api-keys.json")]
    pub keys_file: PathBuf,
    /// JSON object of tiers overriding the built-in free/basic/premium/enterprise.
    #[arg(long, env = "TOLK_TIERS_FILE")]
    pub tiers_file: Option<PathBuf>,
    /// Serve requests unlimited while the limit store is unreachable, instead of 503.
    #[arg(long, env = "TOLK_LIMITS_FAIL_OPEN")]
    pub limits_fail_open: bool,
}

/// State shared by every request handler.
pub struct AppState {
    pub registry: Registry,
    pub streaming: Option<Arc<StreamServices>>,
    pub jobs: Option<Arc<JobService>>,
    /// Credentials and limits; `None` when auth is disabled.
    pub access: Option<Arc<Access>>,
}

/// A JSON error: `{"error": {"code", "message", "request_id"}}` with the code's status.
pub fn error_response(code: ErrorCode, message: &str) -> HttpResponse {
    crate::metrics::error(crate::metrics::Api::Http, code);
    let status = actix_web::http::StatusCode::from_u16(code.http_status())
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = format!("req_{}", uuid::Uuid::new_v4().simple());
    let mut response = HttpResponse::build(status);
    response.insert_header(("X-Request-Id", request_id.clone()));
    if code.retryable() {
        response.insert_header(("Retry-After", "1"));
    }
    response.json(ErrorBody {
        error: ErrorDetail {
            code: code.as_str().to_string(),
            message: message.to_string(),
            request_id: Some(request_id),
        },
    })
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\", \"version\"}`", body = Object)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Models are loaded and the job store answers: send traffic here.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\", \"jobs_queued\"}`", body = Object),
        (status = 503, description = "Not ready (no models, or the job store is unreachable).", body = ErrorBody),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let Some(jobs) = &state.jobs else {
        return error_response(ErrorCode::Overloaded, "not ready: no models are loaded");
    };
    if jobs.services.shutdown.is_started() {
        return error_response(ErrorCode::Overloaded, "not ready: shutting down");
    }
    // A probe wants an answer, not a client's patience with a reconnecting store.
    match tokio::time::timeout(Duration::from_secs(2), jobs.queue.depth()).await {
        Ok(Ok(depth)) => HttpResponse::Ok().json(json!({
            "status": "ready",
            "asr_model": jobs.services.model,
            "jobs_queued": depth,
        })),
        Ok(Err(e)) => error_response(ErrorCode::Overloaded, &format!("not ready: {e}")),
        Err(_) => error_response(
            ErrorCode::Overloaded,
            "not ready: the job store did not answer within 2 s",
        ),
    }
}

/// Installed models.
#[utoipa::path(get, path = "/api/v1/models", tag = "discovery",
    responses((status = 200, description = "Every installed model and runtime.", body = ModelsResponse)))]
pub async fn models(state: web::Data<AppState>) -> HttpResponse {
    let devices = state.streaming.as_ref().map_or_else(Default::default, |s| {
        [("asr", s.devices.0), ("onnx", s.devices.1)]
            .into_iter()
            .map(|(k, d)| (k.to_string(), d.to_string()))
            .collect()
    });
    HttpResponse::Ok().json(ModelsResponse {
        models_dir: state.registry.dir.display().to_string(),
        models: state.registry.models.clone(),
        devices,
    })
}

/// `GET /api/v1/languages`: what can be recognised, and every pair that can be translated
/// (direct, or through an English pivot), with the engines used.
#[utoipa::path(get, path = "/api/v1/languages", tag = "discovery",
    responses(
        (status = 200, description = "Recognised languages and translation pairs.", body = LanguagesResponse),
        (status = 503, description = "No models are loaded.", body = ErrorBody),
    ))]
pub async fn languages(state: web::Data<AppState>) -> HttpResponse {
    let Some(services) = &state.streaming else {
        return error_response(ErrorCode::Overloaded, "no models are loaded");
    };
    let catalog = &services.catalog;
    let mut pairs = Vec::new();
    if services.multilingual {
        pairs.push(TranslationPair {
            source: "*".into(),
            target: "en".into(),
            backends: vec!["whisper".into()],
            via: None,
        });
    }
    let text_languages = catalog.languages();
    for source in &text_languages {
        for target in &text_languages {
            if let Some(route) = catalog.route(source, target) {
                pairs.push(TranslationPair {
                    source: source.clone(),
                    target: target.clone(),
                    backends: route
                        .hops
                        .iter()
                        .map(|h| h.backend.name().to_string())
                        .collect(),
                    via: route.via().map(str::to_string),
                });
            }
        }
    }
    let mut target_languages: Vec<String> = pairs.iter().map(|p| p.target.clone()).collect();
    target_languages.sort();
    target_languages.dedup();
    HttpResponse::Ok().json(LanguagesResponse {
        source_languages: services.languages.clone(),
        target_languages,
        pairs,
    })
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    use crate::metrics::{Exposition, PoolView};
    let mut e = Exposition::default();
    if let Some(s) = &state.streaming {
        e.single(
            "tolk_sessions_active",
            "gauge",
            "WebSocket sessions open now.",
            s.active.load(Ordering::Acquire),
        );
        let (high, normal) = s.asr.queued();
        e.labelled(
            "tolk_asr_queue_depth",
            "gauge",
            "ASR jobs waiting, by lane (as tolk_pool_queue_depth{pool=\"asr\"}).",
            [
                ("lane=\"final\"".to_string(), high),
                ("lane=\"partial\"".to_string(), normal),
            ],
        );
        e.single(
            "tolk_asr_workers_busy",
            "gauge",
            "ASR workers decoding now.",
            s.asr.busy(),
        );
        let pools = [
            PoolView::of(&s.asr),
            PoolView::of(&s.vad),
            PoolView::of(&s.translation),
            PoolView::of(&s.speech),
        ];
        crate::metrics::pools(&mut e, &pools);
        let d = &s.decodes;
        let seconds = |m: &std::sync::atomic::AtomicU64| m.load(Ordering::Relaxed) as f64 / 1e6;
        e.labelled(
            "tolk_asr_decodes_total",
            "counter",
            "Stream decodes, by kind.",
            [
                (
                    "kind=\"final\"".to_string(),
                    d.finals.load(Ordering::Relaxed) as f64,
                ),
                (
                    "kind=\"partial\"".to_string(),
                    d.partials.load(Ordering::Relaxed) as f64,
                ),
            ],
        );
        e.labelled(
            "tolk_asr_decode_seconds_total",
            "counter",
            "Whisper time of stream decodes, by kind.",
            [
                ("kind=\"final\"".to_string(), seconds(&d.final_micros)),
                ("kind=\"partial\"".to_string(), seconds(&d.partial_micros)),
            ],
        );
    }
    crate::metrics::counters(&mut e);
    if let Some(rss) = resident_bytes() {
        e.single(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the server process.",
            rss,
        );
    }
    if let Some(jobs) = &state.jobs {
        if let Ok(depth) = jobs.queue.depth().await {
            e.single(
                "tolk_jobs_queued",
                "gauge",
                "Jobs queued or running (all instances on a shared store).",
                depth,
            );
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(e.finish())
}

/// The process's resident memory (Linux: `VmRSS` of /proc/self/status).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// A malformed query or path gets the uniform JSON error, not actix's plain text.
fn bad_request(err: impl std::fmt::Display) -> actix_web::Error {
    let message = err.to_string();
    actix_web::error::InternalError::from_response(
        message.clone(),
        error_response(ErrorCode::InvalidRequest, &message),
    )
    .into()
}

async fn no_route(req: actix_web::HttpRequest) -> HttpResponse {
    error_response(
        ErrorCode::NotFound,
        &format!(
            "no route {} {}; the API is described at /api/v1/openapi.json",
            req.method(),
            req.path()
        ),
    )
}

/// A known path asked with a method it does not serve: 405 with the methods it does.
fn only(
    path: &str,
    method: actix_web::http::Method,
    route: actix_web::Route,
) -> actix_web::Resource {
    let allow = method.to_string();
    web::resource(path)
        .route(route)
        .default_service(web::to(move |req: actix_web::HttpRequest| {
            let allow = allow.clone();
            async move {
                let mut response = error_response(
                    ErrorCode::MethodNotAllowed,
                    &format!("{} {} is not served; use {allow}", req.method(), req.path()),
                );
                if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&allow) {
                    response
                        .headers_mut()
                        .insert(actix_web::http::header::ALLOW, value);
                }
                response
            }
        }))
}

/// Register every route; used by the server and by in-process tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    let get = |path: &str, route: actix_web::Route| only(path, Method::GET, route);
    let post = |path: &str, route: actix_web::Route| only(path, Method::POST, route);
    cfg.app_data(
        web::QueryConfig::default().error_handler(|e, _| bad_request(format!("query: {e}"))),
    )
    .app_data(web::PathConfig::default().error_handler(|e, _| bad_request(format!("path: {e}"))))
    .service(get("/", web::get().to(crate::web::index)))
    .service(get("/web/{file}", web::get().to(crate::web::file)))
    .service(get("/healthz", web::get().to(healthz)))
    .service(get("/readyz", web::get().to(readyz)))
    .service(get("/metrics", web::get().to(metrics)))
    .service(get("/docs", web::get().to(rest::docs)))
    .service(get("/ws/translate", web::get().to(ws::translate)))
    .service(
        web::scope("/api/v1")
            .service(get("/models", web::get().to(models)))
            .service(get("/languages", web::get().to(languages)))
            .service(get("/openapi.json", web::get().to(rest::openapi::document)))
            .service(post("/translate", web::post().to(rest::submit)))
            .service(post("/translate/sync", web::post().to(rest::sync)))
            .service(get(
                "/translate/status/{workflow_id}",
                web::get().to(rest::status),
            ))
            .service(get(
                "/translate/result/{workflow_id}",
                web::get().to(rest::result),
            ))
            .service(get(
                "/translate/result/{workflow_id}/audio",
                web::get().to(rest::result_audio),
            ))
            .default_service(web::to(no_route)),
    )
    .default_service(web::to(no_route));
}

/// Every response carries an `X-Request-Id`: errors their body's, others a fresh one.
pub async fn request_id(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    if !headers.contains_key("x-request-id") {
        let id = format!("req_{}", uuid::Uuid::new_v4().simple());
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&id) {
            headers.insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                value,
            );
        }
    }
    Ok(response)
}

/// Load the streaming models and start the pools.
fn start_streaming(args: &ServeArgs) -> Result<StreamServices, CommandError> {
    let path =
        resolve_whisper_model(&args.models_dir, &args.asr_model).map_err(CommandError::Config)?;
    // Devices first: a GPU asked for and missing is a start-up error, before any loading.
    let asr_device = tolk_models::device::choose(
        "whisper",
        args.asr_device,
        &tolk_models::whisper::device_offer(),
    )
    .map_err(|e| CommandError::Config(e.to_string()))?;
    init_onnxruntime(&args.models_dir).map_err(|e| CommandError::Config(e.to_string()))?;
    let onnx_device = tolk_models::vad::use_onnx_device(args.onnx_device)
        .map_err(|e| CommandError::Config(e.to_string()))?;
    tracing::info!(
        asr = %asr_device,
        asr_requested = %args.asr_device,
        onnx = %onnx_device,
        onnx_requested = %args.onnx_device,
        gpus = tolk_models::device::nvidia_gpus(),
        "devices chosen"
    );
    // On the CPU a worker per core. On a GPU each worker is one more decoder state on the
    // one loaded model (its own KV cache and ggml CUDA backend), so a small host still
    // keeps several windows in flight; 4 is a guess until measured on a GPU.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let default_workers = match asr_device {
        tolk_models::device::Device::Cpu => cores,
        tolk_models::device::Device::Cuda(_) => cores.max(4),
    };
    let workers = args.asr_workers.unwrap_or(default_workers).max(1);
    let config = WhisperConfig {
        threads: args.asr_threads.max(1),
        device: asr_device,
        ..WhisperConfig::default()
    };
    let model = Arc::new(WhisperModel::load(&path, config)?);
    let ws_config = WsConfig {
        heartbeat_interval: Duration::from_millis(args.ws_heartbeat_ms),
        client_timeout: Duration::from_millis(args.ws_client_timeout_ms),
        idle_timeout: Duration::from_millis(args.ws_idle_timeout_ms),
        max_stream: Duration::from_secs(args.max_stream_seconds),
        max_frame_bytes: args.max_frame_bytes,
        max_sessions: args.max_sessions.max(1),
        resume_grace: Duration::from_secs(args.resume_grace_seconds),
        streaming: StreamingConfig {
            step_ms: args.asr_step_ms.max(100),
            min_silence_ms: args.vad_min_silence_ms.max(64),
            ..StreamingConfig::default()
        },
        ..WsConfig::default()
    };
    // A session has at most two ASR jobs in flight (a partial it gave up on, and the final
    // that replaced it) and one VAD job, so queues of twice the session limit never refuse
    // a session's work.
    let capacity = 2 * ws_config.max_sessions;
    let asr: AsrPool = {
        let model = model.clone();
        Pool::start("asr", workers, capacity, move |_| {
            model
                .worker()
                .map(|w| AsrEngine(Box::new(w) as Box<dyn Recognizer>))
        })?
    };
    let vad_path = args.models_dir.join("vad/silero_vad.onnx");
    let vad_workers = args.vad_workers.unwrap_or(cores / 4).max(1);
    let vad: VadPool = Pool::start("vad", vad_workers, capacity, move |_| {
        SileroVad::load(&vad_path).map(|v| VadEngine(Box::new(v) as Box<dyn VoiceDetector>))
    })
    .map_err(|e| CommandError::Config(e.to_string()))?;
    let catalog = Arc::new(TranslationCatalog::discover(
        &args.models_dir,
        Path::new(APERTIUM_MODES),
    ));
    // One translation worker: a sentence takes milliseconds (Bergamot) to ~0.2 s (Apertium).
    let translation: TranslationPool = {
        let catalog = catalog.clone();
        Pool::start("translate", 1, capacity, move |_| {
            Ok::<_, CommandError>(TranslationEngine::new(catalog.clone()))
        })?
    };
    let voices = Arc::new(VoiceCatalog::discover(&args.models_dir));
    // One speech worker: Piper speaks ~10x faster than real time on one thread.
    let speech: SpeechPool = {
        let voices = voices.clone();
        Pool::start("tts", 1, capacity, move |_| {
            Ok::<_, CommandError>(SpeechEngine::new(voices.clone()))
        })?
    };
    let languages = if model.is_multilingual() {
        all_languages()
    } else {
        vec!["en".to_string()]
    };
    tracing::info!(
        model = model.name(),
        workers,
        threads = args.asr_threads,
        device = %model.device(),
        vad_workers,
        "ASR pool started"
    );
    Ok(StreamServices {
        asr,
        vad,
        translation,
        catalog,
        speech,
        voices,
        config: ws_config,
        model: model.name().to_string(),
        multilingual: model.is_multilingual(),
        languages,
        active: AtomicUsize::new(0),
        decodes: Default::default(),
        shutdown: Arc::new(crate::shutdown::Shutdown::new(Duration::from_secs(
            args.shutdown_timeout_seconds,
        ))),
        resumable: Default::default(),
        devices: (asr_device, onnx_device),
    })
}

/// This instance's name: the flag, else host-pid.
fn instance_id(args: &ServeArgs) -> String {
    args.instance_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "tolk".into());
        format!("{host}-{}", std::process::id())
    })
}

/// Credentials and limits as the flags ask: keys and limits in Redis when a URL is given,
/// else in a file and in memory. `None` when auth is disabled.
async fn access(args: &ServeArgs) -> Result<Option<Arc<Access>>, CommandError> {
    let mode = args.auth_mode.unwrap_or(if args.bind.ip().is_loopback() {
        AuthMode::Disabled
    } else {
        AuthMode::Required
    });
    if mode == AuthMode::Disabled {
        tracing::warn!(bind = %args.bind, "authentication is DISABLED: every request is served, unlimited (--auth-mode required to check credentials)");
        return Ok(None);
    }
    let config = |e: String| CommandError::Config(e);
    let jwt = JwtVerifier::new(JwtConfig {
        hs256_secret: args.jwt_hs256_secret.clone().filter(|s| !s.is_empty()),
        jwks_file: args.jwks_file.clone(),
        audience: args.jwt_audience.clone(),
        issuer: args.jwt_issuer.clone(),
        ..JwtConfig::default()
    })
    .map_err(|e| config(e.to_string()))?;
    let store_args = crate::cli::KeysStoreArgs {
        keys_file: args.keys_file.clone(),
        redis_url: args.redis_url.clone(),
        redis_prefix: args.redis_prefix.clone(),
    };
    let keys = crate::commands::keys::open_store(&store_args).await?;
    let limits: Arc<dyn LimitStore> = match &args.redis_url {
        Some(url) => Arc::new(
            RedisLimits::connect(url, &args.redis_prefix)
                .await
                .map_err(|e| config(format!("--redis-url: {e}")))?,
        ),
        None => Arc::new(MemoryLimits::new()),
    };
    let tiers = access::load_tiers(args.tiers_file.as_deref()).map_err(config)?;
    tracing::info!(
        jwt = jwt.is_configured(),
        keys = %args.redis_url.as_ref().map_or_else(|| args.keys_file.display().to_string(), |_| "redis".into()),
        tiers = tiers.len(),
        fail_open = args.limits_fail_open,
        "authentication required"
    );
    Ok(Some(Arc::new(Access {
        mode,
        jwt,
        keys,
        limits,
        tiers,
        fail_open: args.limits_fail_open,
    })))
}

/// The job queue the flags ask for: Redis when a URL is given, else in this process.
async fn job_queue(args: &ServeArgs, ttl: Duration) -> Result<Arc<dyn JobQueue>, CommandError> {
    let capacity = args.job_queue_capacity.max(1);
    Ok(match &args.redis_url {
        Some(url) => {
            let queue = RedisQueue::connect(
                url,
                &args.redis_prefix,
                capacity,
                ttl,
                Duration::from_secs(args.job_claim_timeout_seconds.max(1)),
            )
            .await
            // The URL may hold a password: the queue's errors name host:port only.
            .map_err(|e| CommandError::Config(format!("--redis-url: {e}")))?;
            tracing::info!(prefix = %args.redis_prefix, "jobs kept in Redis");
            Arc::new(queue)
        }
        // Finished records are bounded too: a day of 1000 jobs/hour, and 1 GiB of speech.
        None => Arc::new(MemoryQueue::new(capacity, 24_000, 1 << 30)),
    })
}

pub fn run(args: ServeArgs) -> Result<(), CommandError> {
    let registry = Registry::scan(&args.models_dir);
    tracing::info!(models = registry.models.len(), dir = %registry.dir.display(), "model registry scanned");
    let streaming = Arc::new(start_streaming(&args)?);
    let rest_config = RestConfig {
        max_job_seconds: args.max_job_seconds as f64,
        result_ttl: Duration::from_secs(args.job_ttl_seconds.max(1)),
        max_uploads: args.max_uploads.max(1),
        ..RestConfig::default()
    };
    let callbacks = CallbackConfig {
        secret: args.callback_secret.clone().filter(|s| !s.is_empty()),
        allow_private: args.callback_allow_private,
        attempts: args.callback_attempts.max(1),
        backoff: Duration::from_millis(args.callback_backoff_ms),
        timeout: Duration::from_secs(10),
    };
    let instance = instance_id(&args);
    actix_web::rt::System::new().block_on(async move {
        let access = access(&args).await?;
        if let Some(access) = access.clone().filter(|_| args.jwks_file.is_some()) {
            // A key removed from the JWKS file stops verifying within 30 s (a new key is
            // picked up at once, by its unknown `kid`).
            actix_web::rt::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    let access = access.clone();
                    match tokio::task::spawn_blocking(move || access.jwt.reload_jwks()).await {
                        Ok(Ok(true)) => tracing::info!("JWKS reloaded"),
                        Ok(Err(e)) => tracing::warn!("JWKS not reloaded: {e}"),
                        _ => {}
                    }
                }
            });
        }
        let queue = job_queue(&args, rest_config.result_ttl).await?;
        let jobs = Arc::new(JobService::new(
            queue,
            streaming.clone(),
            rest_config,
            callbacks,
            instance.clone(),
        ));
        let shutdown = streaming.shutdown.clone();
        let workers: Vec<_> = (0..args.job_workers)
            .map(|n| actix_web::rt::spawn(jobs.clone().work(format!("{instance}/{n}"))))
            .collect();
        let state = web::Data::new(AppState {
            registry,
            streaming: Some(streaming),
            jobs: Some(jobs),
            access,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(actix_web::middleware::from_fn(access::guard))
                .wrap(actix_web::middleware::from_fn(request_id))
                .configure(configure)
        })
        .workers(args.http_workers.max(1))
        // Signals are ours (crate::shutdown): sessions finalize before connections drop.
        .disable_signals()
        .shutdown_timeout(args.shutdown_timeout_seconds)
        .bind(args.bind)
        .map_err(|e| CommandError::Config(format!("cannot listen on {}: {e}", args.bind)))?;
        for addr in server.addrs() {
            // Tests and scripts read this line to find the port.
            println!("tolk listening on http://{addr}");
        }
        let server = server.run();
        let handle = server.handle();
        let on_signal = shutdown.clone();
        actix_web::rt::spawn(async move {
            let signal = crate::shutdown::signal().await;
            tracing::info!(
                signal,
                grace_seconds = on_signal.grace.as_secs(),
                "shutting down: finishing open streams and running jobs"
            );
            on_signal.begin();
            // A second signal: the operator will not wait.
            actix_web::rt::spawn(async {
                let signal = crate::shutdown::signal().await;
                tracing::warn!(signal, "second signal: exiting now");
                std::process::exit(130);
            });
            // Stop accepting; open connections (sessions finishing) get the grace period.
            handle.stop(true).await;
        });
        server.await.map_err(|e| CommandError::Other(e.into()))?;
        // Job workers stop taking jobs once shutdown begins and finish (or give back) the
        // one they run before the deadline.
        let left = shutdown.remaining();
        if tokio::time::timeout(left, futures_util::future::join_all(workers))
            .await
            .is_err()
        {
            tracing::warn!("job workers still busy at the deadline: exiting");
        }
        tracing::info!("shut down");
        Ok(())
    })
}
