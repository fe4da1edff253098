//! The REST API under `/api/v1/translate` (docs/rest.md): asynchronous jobs with polling
//! and callbacks, and a synchronous call for short clips, on the same worker pools as the
//! WebSocket streams.

pub mod openapi;
pub mod pipeline;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tolk_actors::pool::Priority;
use tolk_models::asr::SAMPLE_RATE;
use tolk_models::audio::decode_wav;
use tolk_models::wav::{encode_pcm16, WavError};
use tolk_protocol::error::{ErrorCode, ErrorDetail};
use tolk_protocol::rest::{
    CallbackPayload, JobAccepted, JobStatus, JobStatusResponse, SyncResponse,
};

use crate::access::Caller;
use crate::jobs::callback::{self, CallbackConfig};
use crate::jobs::{Claimed, JobParams, JobQueue, JobRecord, QueueError};
use crate::server::{error_response, AppState};

/// A refusal: the uniform JSON error body with its code's status.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.code.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(self.code, &self.message)
    }
}

/// What a handler answers.
type Answer = Result<HttpResponse, ApiError>;
use crate::ws::StreamServices;
use pipeline::{ClipRequest, PipelineError};

/// Limits of the REST endpoints.
#[derive(Debug, Clone)]
pub struct RestConfig {
    /// Longest clip `/translate/sync` takes.
    pub max_sync_seconds: f64,
    /// Largest body `/translate/sync` takes.
    pub max_sync_bytes: usize,
    /// Longest clip a job takes.
    pub max_job_seconds: f64,
    /// Largest body a job takes.
    pub max_job_bytes: usize,
    /// How long job records and results are kept.
    pub result_ttl: Duration,
    /// Requests carrying audio handled at once (uploads being read, sync calls running);
    /// more are refused with 503, so request bodies never pile up in memory.
    pub max_uploads: usize,
}

impl Default for RestConfig {
    fn default() -> Self {
        Self {
            max_sync_seconds: 30.0,
            max_sync_bytes: 10 * 1024 * 1024,
            max_job_seconds: 600.0,
            max_job_bytes: 100 * 1024 * 1024,
            result_ttl: Duration::from_secs(24 * 3600),
            max_uploads: 8,
        }
    }
}

/// Jobs: their queue, the pools that run them, and what to tell clients.
pub struct JobService {
    pub queue: Arc<dyn JobQueue>,
    pub services: Arc<StreamServices>,
    pub config: RestConfig,
    pub callbacks: CallbackConfig,
    /// Names this server instance in results (`processed_by`) and as a queue consumer.
    pub instance: String,
    /// Seconds of processing per second of audio, averaged over recent jobs.
    seconds_per_second: Mutex<f64>,
    uploads: Arc<Semaphore>,
}

impl JobService {
    pub fn new(
        queue: Arc<dyn JobQueue>,
        services: Arc<StreamServices>,
        config: RestConfig,
        callbacks: CallbackConfig,
        instance: String,
    ) -> Self {
        let uploads = Arc::new(Semaphore::new(config.max_uploads.max(1)));
        Self {
            queue,
            services,
            config,
            callbacks,
            instance,
            // base-q4_0 on 2 cores runs ~0.06 s per second of speech (BENCHMARKS.md);
            // start cautious, learn from each job.
            seconds_per_second: Mutex::new(0.15),
            uploads,
        }
    }

    /// A place for one request carrying audio, or 503.
    fn upload_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.uploads.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "{} requests with audio are being handled, the limit; retry later",
                    self.config.max_uploads
                ),
            )
        })
    }

    fn estimate(&self, duration_seconds: f64) -> f64 {
        let rate = *self
            .seconds_per_second
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        duration_seconds * rate + 0.5
    }

    fn learn(&self, duration_seconds: f64, processing: Duration) {
        if duration_seconds >= 1.0 {
            let sample = processing.as_secs_f64() / duration_seconds;
            let mut rate = self
                .seconds_per_second
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *rate = 0.7 * *rate + 0.3 * sample;
        }
    }

    /// One job worker: take, run, finish, for as long as the server runs. A job it holds
    /// when the server stops is not finished: in Redis its claim lapses and another
    /// instance runs it.
    pub async fn work(self: Arc<Self>, worker: String) {
        tracing::info!(%worker, "job worker started");
        let shutdown = self.services.shutdown.clone();
        // `take` is not cancelled (a Redis read dropped mid-way could strand the job it
        // got until the claim timeout): it waits at most a second, then the flag is seen.
        while !shutdown.is_started() {
            match self.queue.take(&worker, Duration::from_secs(1)).await {
                Ok(Some(claimed)) if shutdown.is_started() => {
                    self.release(&worker, claimed.record, claimed.audio).await
                }
                Ok(Some(claimed)) => self.run(&worker, claimed).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%worker, "cannot take a job: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tracing::info!(%worker, "job worker stopped");
    }

    /// Give a job back to the queue (shutting down): another worker, here after a restart
    /// or on another instance, runs it from the start.
    async fn release(&self, worker: &str, mut record: JobRecord, audio: Vec<u8>) {
        record.status = JobStatus::Queued;
        record.progress = 0;
        record.eta_seconds = None;
        record.touch(self.config.result_ttl);
        match self.queue.release(worker, &record, audio).await {
            Ok(()) => tracing::info!(job = %record.id, %worker, "job given back to the queue"),
            Err(e) => tracing::warn!(job = %record.id, %worker, "cannot give a job back: {e}"),
        }
    }

    async fn run(&self, worker: &str, claimed: Claimed) {
        let Claimed { mut record, audio } = claimed;
        let id = record.id.clone();
        tracing::info!(job = %id, %worker, seconds = record.duration_seconds, "job started");
        let started = Instant::now();
        let outcome = match decode_wav(&audio) {
            Ok(decoded) => {
                let request = ClipRequest {
                    audio: decoded.samples,
                    source: record.params.source_lang.clone(),
                    target: record.params.target_lang.clone(),
                    tts: record.params.tts,
                    priority: Priority::Normal,
                    wait_when_busy: true,
                };
                // A job that would outlive the shutdown deadline is given back instead.
                let work = self.run_reporting(worker, &mut record, request, started);
                let expiring = self.services.shutdown.expiring();
                let finished = tokio::select! {
                    outcome = work => Some(outcome),
                    () = expiring => None,
                };
                match finished {
                    Some(outcome) => outcome,
                    None => return self.release(worker, record, audio).await,
                }
            }
            Err(e) => Err(PipelineError {
                code: ErrorCode::Internal,
                message: format!("the stored audio does not decode: {e}"),
            }),
        };
        record.eta_seconds = None;
        record.touch(self.config.result_ttl);
        let speech = match outcome {
            Ok(output) => {
                self.learn(record.duration_seconds, started.elapsed());
                let mut result = output.result;
                if output.speech.is_some() {
                    result.audio_url = Some(format!("/api/v1/translate/result/{id}/audio"));
                }
                record.status = JobStatus::Completed;
                crate::metrics::result(crate::metrics::Result::JobCompleted);
                record.progress = 100;
                record.result = Some(result);
                output.speech
            }
            Err(e) => {
                tracing::warn!(job = %id, code = %e.code, "job failed: {}", e.message);
                record.status = JobStatus::Failed;
                crate::metrics::result(crate::metrics::Result::JobFailed);
                record.error = Some(ErrorDetail {
                    code: e.code.as_str().to_string(),
                    message: e.message,
                    request_id: None,
                });
                None
            }
        };
        if let Err(e) = self.queue.finish(worker, &record, speech).await {
            // The claim lapses and another worker runs the job again.
            tracing::error!(job = %id, "cannot store the job's result: {e}");
            return;
        }
        tracing::info!(job = %id, status = ?record.status, ms = started.elapsed().as_millis() as u64, "job finished");
        if let Some(url) = record.params.callback_url.clone() {
            self.call_back(worker, &mut record, &url).await;
        }
    }

    /// Run the pipeline, storing progress as it moves (which also renews the claim).
    async fn run_reporting(
        &self,
        worker: &str,
        record: &mut JobRecord,
        request: ClipRequest,
        started: Instant,
    ) -> Result<pipeline::ClipOutput, PipelineError> {
        let (progress_tx, mut progress_rx) = watch::channel(0u8);
        let work = pipeline::process(&self.services, request, &self.instance, &progress_tx);
        tokio::pin!(work);
        let mut renew = tokio::time::interval(Duration::from_secs(5));
        let mut stored = Instant::now();
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                changed = progress_rx.changed() => {
                    if changed.is_err() || stored.elapsed() < Duration::from_millis(250) {
                        continue;
                    }
                }
                _ = renew.tick() => {}
            }
            let progress = *progress_rx.borrow_and_update();
            record.status = JobStatus::Processing;
            record.progress = progress;
            let elapsed = started.elapsed().as_secs_f64();
            record.eta_seconds = Some(if progress >= 10 {
                round1(elapsed * f64::from(100 - progress) / f64::from(progress))
            } else {
                round1(self.estimate(record.duration_seconds) - elapsed).max(0.5)
            });
            record.touch(self.config.result_ttl);
            if let Err(e) = self.queue.update(worker, record).await {
                tracing::warn!(job = %record.id, "cannot store progress: {e}");
            }
            stored = Instant::now();
        }
    }

    async fn call_back(&self, worker: &str, record: &mut JobRecord, url: &str) {
        let payload = CallbackPayload {
            workflow_id: record.id.clone(),
            status: record.status,
            result: record.result.clone(),
            error: record.error.clone(),
        };
        // The record is stored once delivery has succeeded or given up (a poll during the
        // retries still shows the callback as not delivered).
        let status = callback::deliver(&self.callbacks, url, &payload, |_| {}).await;
        tracing::info!(job = %record.id, delivered = status.delivered, attempts = status.attempts, "callback");
        record.callback = Some(status);
        if let Err(e) = self.queue.update(worker, record).await {
            tracing::warn!(job = %record.id, "cannot store the callback's outcome: {e}");
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn status_body(record: JobRecord) -> JobStatusResponse {
    JobStatusResponse {
        workflow_id: record.id,
        status: record.status,
        progress: record.progress,
        eta_seconds: record.eta_seconds,
        created_at: rfc3339(record.created_at_ms),
        updated_at: rfc3339(record.updated_at_ms),
        expires_at: rfc3339(record.expires_at_ms),
        error: record.error,
        result: record.result,
        callback: record.callback,
    }
}

/// Query of `POST /translate` and `POST /translate/sync`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TranslateQuery {
    /// ISO 639-1 code of the speech, or `auto` (the default) to detect it.
    pub source_lang: Option<String>,
    /// ISO 639-1 code to translate into; absent: transcription only.
    pub target_lang: Option<String>,
    /// Also synthesize speech of the translation (of the transcript without `target_lang`).
    pub tts: Option<bool>,
    /// Jobs only: POST the result here when the job finishes (HMAC-signed, see docs/rest.md).
    pub callback_url: Option<String>,
}

/// A request's parameters checked against what is installed.
fn check_params(services: &StreamServices, query: &TranslateQuery) -> Result<JobParams, ApiError> {
    let source = query.source_lang.as_deref().unwrap_or("auto");
    let target = query.target_lang.as_deref().filter(|t| !t.is_empty());
    let tts = query.tts.unwrap_or(false);
    let language = services
        .check_languages(
            source,
            target,
            tolk_protocol::transcript::Task::Transcribe,
            tts,
        )
        .map_err(|m| ApiError::new(ErrorCode::UnsupportedLanguage, m))?;
    Ok(JobParams {
        source_lang: language,
        target_lang: target.map(str::to_string),
        tts,
        callback_url: None,
        owner: None,
    })
}

const WAV_TYPES: [&str; 4] = ["audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"];

/// The audio of a request: the body (`audio/wav`) or the `audio` field of a form, at most
/// `limit` bytes (refused as soon as that is exceeded, not after buffering it all).
async fn read_audio(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the audio is over this endpoint's {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if WAV_TYPES.contains(&essence.as_str()) {
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("cannot read the body: {e}"),
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(body);
    }
    if essence == "multipart/form-data" {
        // The form around the audio is small; allow it a little room.
        if declared.is_some_and(|n| n > limit + 64 * 1024) {
            return Err(too_large());
        }
        let mut form = actix_multipart::Multipart::new(req.headers(), payload);
        let mut audio = None;
        loop {
            let field = form.try_next().await.map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("malformed multipart form: {e}"),
                )
            })?;
            let Some(mut field) = field else { break };
            let is_audio = field.name() == Some("audio");
            let mut bytes = Vec::new();
            while let Some(chunk) = field.try_next().await.map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("malformed multipart form: {e}"),
                )
            })? {
                if bytes.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                if is_audio {
                    bytes.extend_from_slice(&chunk);
                }
            }
            if is_audio {
                audio = Some(bytes);
            }
        }
        return audio.ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "the multipart form has no field named 'audio'",
            )
        });
    }
    Err(ApiError::new(ErrorCode::UnsupportedAudioFormat, format!(
            "Content-Type '{content_type}' is not taken: send a WAV file as the body with Content-Type audio/wav, or as the field 'audio' of a multipart/form-data form"
        ),
    ))
}

/// Decode WAV bytes to 16 kHz mono, refusing clips over `max_seconds`.
fn decode_audio(bytes: &[u8], max_seconds: f64) -> Result<Vec<f32>, ApiError> {
    let refuse = |e: WavError| match e {
        WavError::Unsupported(_) => ApiError::new(ErrorCode::UnsupportedAudioFormat, e.to_string()),
        _ => ApiError::new(
            ErrorCode::InvalidAudio,
            format!("the audio cannot be decoded: {e}"),
        ),
    };
    // From the header first: decoded and resampled to 16 kHz float, a long clip at a low
    // rate takes many times its size in memory (an 8-bit 1 kHz file, 64×).
    let seconds = tolk_models::wav::duration_seconds(bytes).map_err(refuse)?;
    if seconds > max_seconds + 0.01 {
        return Err(ApiError::new(
            ErrorCode::AudioTooLong,
            format!(
                "the audio is {seconds:.1} s long; this endpoint takes at most {max_seconds} s"
            ),
        ));
    }
    let audio = decode_wav(bytes).map_err(refuse)?;
    let seconds = audio.samples.len() as f64 / SAMPLE_RATE as f64;
    if seconds > max_seconds {
        return Err(ApiError::new(
            ErrorCode::AudioTooLong,
            format!(
                "the audio is {seconds:.1} s long; this endpoint takes at most {max_seconds} s"
            ),
        ));
    }
    if audio.samples.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidAudio,
            "the audio holds no samples",
        ));
    }
    Ok(audio.samples)
}

/// Count the clip against the caller's daily audio quota (when auth is on), or refuse it.
async fn charge(req: &HttpRequest, state: &AppState, seconds: f64) -> Result<(), ApiError> {
    let caller = req.extensions().get::<Caller>().cloned();
    match (&state.access, caller) {
        (Some(access), Some(caller)) => access.charge_audio(&caller, seconds).await,
        _ => Ok(()),
    }
}

/// Take an upload slot, read and decode the clip (at most `max_bytes`, `max_seconds`), and
/// charge it to the caller's quota: what every endpoint taking audio does first.
async fn receive_clip(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    jobs: &JobService,
    (max_bytes, max_seconds): (usize, f64),
) -> Result<(OwnedSemaphorePermit, Vec<f32>), ApiError> {
    let slot = jobs.upload_slot()?;
    let bytes = read_audio(req, payload, max_bytes).await?;
    let samples = decode_audio(&bytes, max_seconds)?;
    crate::metrics::audio(crate::metrics::Api::Http, samples.len() as u64);
    charge(req, state, samples.len() as f64 / SAMPLE_RATE as f64).await?;
    Ok((slot, samples))
}

fn jobs(state: &AppState) -> Result<&Arc<JobService>, ApiError> {
    state.jobs.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Overloaded,
            "jobs are not available: no models are loaded",
        )
    })
}

fn store_error(e: QueueError) -> ApiError {
    match e {
        QueueError::Full(_) => ApiError::new(ErrorCode::Overloaded, e.to_string()),
        QueueError::Store(_) => {
            tracing::error!("{e}");
            ApiError::new(
                ErrorCode::Overloaded,
                "the job store is unavailable; retry later",
            )
        }
    }
}

/// Submit a clip as a job.
#[utoipa::path(
    post,
    path = "/api/v1/translate",
    tag = "jobs",
    params(TranslateQuery),
    request_body(
        description = "A WAV file (PCM 8–32 bit or float, any rate, mono or stereo), as the body or as the field `audio` of a form.",
        content(
            (Vec<u8> = "audio/wav"),
            (openapi::AudioForm = "multipart/form-data"),
        )
    ),
    responses(
        (status = 202, description = "Accepted; poll `status_url`.", body = JobAccepted),
        (status = 400, description = "Malformed query, form or `callback_url`.", body = tolk_protocol::error::ErrorBody),
        (status = 413, description = "Body over the size limit.", body = tolk_protocol::error::ErrorBody),
        (status = 415, description = "Not a WAV body or form, or an unsupported WAV encoding.", body = tolk_protocol::error::ErrorBody),
        (status = 422, description = "Audio that does not decode, is too long, or a language no model covers.", body = tolk_protocol::error::ErrorBody),
        (status = 503, description = "The job queue is full; retry after `Retry-After` seconds.", body = tolk_protocol::error::ErrorBody),
    )
)]
pub async fn submit(
    req: HttpRequest,
    query: web::Query<TranslateQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Answer {
    let jobs = jobs(&state)?;
    let mut params = check_params(&jobs.services, &query)?;
    if let Some(url) = query.callback_url.as_deref() {
        jobs.callbacks
            .validate_url(url)
            .await
            .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, format!("callback_url: {m}")))?;
        params.callback_url = Some(url.to_string());
    }
    // Refuse before reading a body that cannot be queued.
    if jobs.queue.depth().await.map_err(store_error)? >= jobs.queue.capacity() {
        return Err(store_error(QueueError::Full(jobs.queue.capacity())));
    }
    let limits = (jobs.config.max_job_bytes, jobs.config.max_job_seconds);
    let (_slot, samples) = receive_clip(&req, payload, &state, jobs, limits).await?;
    let duration = samples.len() as f64 / SAMPLE_RATE as f64;
    params.owner = req.extensions().get::<Caller>().map(|c| c.id.clone());
    let id = format!("wf_{}", uuid::Uuid::new_v4().simple());
    let record = JobRecord::new(
        id.clone(),
        params,
        (duration * 1000.0).round() / 1000.0,
        jobs.config.result_ttl,
    );
    // Stored as 16 kHz 16-bit mono: a quarter of a 48 kHz stereo upload.
    let ahead = jobs.queue.depth().await.unwrap_or(0);
    jobs.queue
        .submit(&record, encode_pcm16(&samples, SAMPLE_RATE, 1))
        .await
        .map_err(store_error)?;
    tracing::info!(job = %id, seconds = duration, "job accepted");
    let estimate =
        jobs.estimate(duration) * (ahead as f64 / jobs.services.asr.workers().max(1) as f64 + 1.0);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/api/v1/translate/status/{id}")))
        .json(JobAccepted {
            status_url: format!("/api/v1/translate/status/{id}"),
            result_url: format!("/api/v1/translate/result/{id}"),
            workflow_id: id,
            status: JobStatus::Queued,
            estimated_seconds: round1(estimate),
        }))
}

/// The job `id`, if the caller may see it: with auth on, only the caller that submitted a
/// job sees it; to others it does not exist (404, which reveals nothing).
async fn find(req: &HttpRequest, state: &AppState, id: &str) -> Result<JobRecord, ApiError> {
    let jobs = jobs(state)?;
    let caller = req.extensions().get::<Caller>().map(|c| c.id.clone());
    match jobs.queue.get(id).await {
        Ok(Some(record)) if caller.is_none() || record.params.owner == caller => Ok(record),
        Ok(_) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no job '{id}': it never existed or its result has expired"),
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// A job's status and progress; its result once completed.
#[utoipa::path(
    get,
    path = "/api/v1/translate/status/{workflow_id}",
    tag = "jobs",
    params(("workflow_id" = String, Path, description = "From the 202 of `POST /api/v1/translate`.")),
    responses(
        (status = 200, description = "The job.", body = JobStatusResponse),
        (status = 404, description = "No such job, or it expired.", body = tolk_protocol::error::ErrorBody),
        (status = 503, description = "The job store is unavailable.", body = tolk_protocol::error::ErrorBody),
    )
)]
pub async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Answer {
    let record = find(&req, &state, &path).await?;
    Ok(HttpResponse::Ok().json(status_body(record)))
}

/// Refuse a job that has not completed: not yet (409), or failed (its error).
fn completed(record: &JobRecord) -> Result<(), ApiError> {
    match record.status {
        JobStatus::Completed => Ok(()),
        JobStatus::Failed => {
            let error = record.error.clone();
            let code = error
                .as_ref()
                .and_then(|e| e.code.parse().ok())
                .unwrap_or(ErrorCode::Internal);
            let message = error.map_or_else(
                || "the job failed".to_string(),
                |e| format!("the job failed: {}", e.message),
            );
            Err(ApiError::new(code, message))
        }
        status => Err(ApiError::new(
            ErrorCode::JobNotReady,
            format!(
                "the job is {}, at {} %; poll its status",
                status.as_str(),
                record.progress
            ),
        )),
    }
}

/// A completed job's result.
#[utoipa::path(
    get,
    path = "/api/v1/translate/result/{workflow_id}",
    tag = "jobs",
    params(("workflow_id" = String, Path, description = "From the 202 of `POST /api/v1/translate`.")),
    responses(
        (status = 200, description = "Transcript, translation, segments and metadata.", body = tolk_protocol::rest::TranslationResult),
        (status = 404, description = "No such job, or it expired.", body = tolk_protocol::error::ErrorBody),
        (status = 409, description = "The job has not completed yet.", body = tolk_protocol::error::ErrorBody),
        (status = 422, description = "The job failed on its input (e.g. speech in a language with no translation).", body = tolk_protocol::error::ErrorBody),
        (status = 500, description = "The job failed on the server's side.", body = tolk_protocol::error::ErrorBody),
        (status = 503, description = "The job store is unavailable.", body = tolk_protocol::error::ErrorBody),
    )
)]
pub async fn result(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Answer {
    let record = find(&req, &state, &path).await?;
    completed(&record)?;
    Ok(HttpResponse::Ok().json(record.result))
}

/// A completed job's synthesized speech.
#[utoipa::path(
    get,
    path = "/api/v1/translate/result/{workflow_id}/audio",
    tag = "jobs",
    params(("workflow_id" = String, Path, description = "From the 202 of `POST /api/v1/translate`.")),
    responses(
        (status = 200, description = "A 16-bit mono WAV.", content_type = "audio/wav", body = Vec<u8>),
        (status = 404, description = "No such job, or it was submitted without `tts`.", body = tolk_protocol::error::ErrorBody),
        (status = 409, description = "The job has not completed yet.", body = tolk_protocol::error::ErrorBody),
        (status = 422, description = "The job failed on its input.", body = tolk_protocol::error::ErrorBody),
        (status = 500, description = "The job failed on the server's side.", body = tolk_protocol::error::ErrorBody),
        (status = 503, description = "The job store is unavailable.", body = tolk_protocol::error::ErrorBody),
    )
)]
pub async fn result_audio(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Answer {
    let record = find(&req, &state, &path).await?;
    completed(&record)?;
    if !record.params.tts {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "the job was submitted without tts=true: it has no audio",
        ));
    }
    let jobs = jobs(&state)?;
    let wav = jobs
        .queue
        .output_audio(&record.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the job's audio has expired"))?;
    Ok(HttpResponse::Ok()
        .content_type("audio/wav")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.wav\"", record.id),
        ))
        .body(wav))
}

/// Translate a short clip and answer with the result.
#[utoipa::path(
    post,
    path = "/api/v1/translate/sync",
    tag = "sync",
    params(TranslateQuery),
    request_body(
        description = "A WAV file of at most 30 s and 10 MB, as the body or as the field `audio` of a form.",
        content(
            (Vec<u8> = "audio/wav"),
            (openapi::AudioForm = "multipart/form-data"),
        )
    ),
    responses(
        (status = 200, description = "The result.", body = SyncResponse),
        (status = 400, description = "Malformed query or form.", body = tolk_protocol::error::ErrorBody),
        (status = 413, description = "Body over 10 MB.", body = tolk_protocol::error::ErrorBody),
        (status = 415, description = "Not a WAV body or form, or an unsupported WAV encoding.", body = tolk_protocol::error::ErrorBody),
        (status = 422, description = "Audio that does not decode, is over 30 s, or a language no model covers.", body = tolk_protocol::error::ErrorBody),
        (status = 500, description = "An engine failed.", body = tolk_protocol::error::ErrorBody),
        (status = 503, description = "The workers are saturated; retry after `Retry-After` seconds.", body = tolk_protocol::error::ErrorBody),
    )
)]
pub async fn sync(
    req: HttpRequest,
    query: web::Query<TranslateQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Answer {
    let started = Instant::now();
    let jobs = jobs(&state)?;
    if query.callback_url.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "callback_url is for jobs (POST /api/v1/translate); the sync call answers directly",
        ));
    }
    let params = check_params(&jobs.services, &query)?;
    // The upload slot is held until the answer: a sync call's audio stays in memory.
    let limits = (jobs.config.max_sync_bytes, jobs.config.max_sync_seconds);
    let (_slot, samples) = receive_clip(&req, payload, &state, jobs, limits).await?;
    let request = ClipRequest {
        audio: samples,
        source: params.source_lang,
        target: params.target_lang,
        tts: params.tts,
        priority: Priority::High,
        wait_when_busy: false,
    };
    let (progress, _) = watch::channel(0);
    let output = pipeline::process(&jobs.services, request, &jobs.instance, &progress)
        .await
        .map_err(|e| ApiError::new(e.code, e.message))?;
    let result = output.result;
    crate::metrics::result(crate::metrics::Result::Sync);
    Ok(HttpResponse::Ok().json(SyncResponse {
        transcript: result.transcript,
        translation: result.translation,
        audio_base64: output
            .speech
            .map(|wav| base64::engine::general_purpose::STANDARD.encode(wav)),
        language: result.language,
        segments: result.segments,
        processing_ms: started.elapsed().as_millis() as u64,
        metadata: result.metadata,
    }))
}

/// `GET /docs`: the OpenAPI document, rendered.
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::html())
        .body(include_str!("docs.html"))
}
