//! Asynchronous translation jobs: the queue they wait in, the workers that run them, and
//! the callbacks that announce them.
//!
//! [`JobQueue`] is the one seam between the REST handlers and where jobs live:
//! [`memory::MemoryQueue`] inside the process (the default), [`redis::RedisQueue`] in a
//! Redis Stream with a consumer group, so that any instance's workers take any instance's
//! jobs and a job outlives the instance that accepted it.

pub mod callback;
pub mod memory;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tolk_protocol::error::ErrorDetail;
use tolk_protocol::rest::{CallbackStatus, JobStatus, TranslationResult};

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    /// ISO 639-1, or `None` to detect.
    pub source_lang: Option<String>,
    pub target_lang: Option<String>,
    pub tts: bool,
    pub callback_url: Option<String>,
    /// The caller that submitted it (with auth on): only it may see the job.
    #[serde(default)]
    pub owner: Option<String>,
}

/// Everything known about a job, as stored by a [`JobQueue`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub params: JobParams,
    pub status: JobStatus,
    /// 0–100.
    pub progress: u8,
    pub eta_seconds: Option<f64>,
    /// Length of the submitted audio.
    pub duration_seconds: f64,
    /// Unix milliseconds.
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub expires_at_ms: u64,
    pub error: Option<ErrorDetail>,
    pub result: Option<TranslationResult>,
    pub callback: Option<CallbackStatus>,
}

impl JobRecord {
    /// A queued job, kept for `ttl` from now.
    pub fn new(id: String, params: JobParams, duration_seconds: f64, ttl: Duration) -> Self {
        let now = now_ms();
        Self {
            id,
            callback: params.callback_url.as_ref().map(|url| CallbackStatus {
                url: url.clone(),
                delivered: false,
                attempts: 0,
                last_error: None,
            }),
            params,
            status: JobStatus::Queued,
            progress: 0,
            eta_seconds: None,
            duration_seconds,
            created_at_ms: now,
            updated_at_ms: now,
            expires_at_ms: now + ttl.as_millis() as u64,
            error: None,
            result: None,
        }
    }

    /// Mark the record changed now (and kept for `ttl` from now).
    pub fn touch(&mut self, ttl: Duration) {
        self.updated_at_ms = now_ms();
        self.expires_at_ms = self.updated_at_ms + ttl.as_millis() as u64;
    }
}

/// A job handed to a worker: its record and the audio (a 16 kHz mono 16-bit WAV).
#[derive(Debug)]
pub struct Claimed {
    pub record: JobRecord,
    pub audio: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// `capacity` jobs are queued or running already.
    #[error("{0} jobs are queued or running, the limit; retry later")]
    Full(usize),
    /// The store cannot be reached or answered nonsense.
    #[error("job store: {0}")]
    Store(String),
}

/// Where jobs wait and where their records and results are kept (for the queue's TTL).
///
/// A job moves: [`submit`](JobQueue::submit) (queued) → [`take`](JobQueue::take) by one
/// worker (processing) → [`update`](JobQueue::update)s while it runs →
/// [`finish`](JobQueue::finish) (completed or failed). A job whose worker vanished is
/// handed out again by `take` once its claim has not been renewed (by `update`) for the
/// queue's claim timeout.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Store the record and audio and queue the job; [`QueueError::Full`] when the queue
    /// holds its capacity of unfinished jobs.
    async fn submit(&self, record: &JobRecord, audio: Vec<u8>) -> Result<(), QueueError>;

    /// The next job for `worker`, waiting up to `wait` for one; its status is set to
    /// processing.
    async fn take(&self, worker: &str, wait: Duration) -> Result<Option<Claimed>, QueueError>;

    /// Store a running job's record (progress, callback state) and renew `worker`'s claim.
    async fn update(&self, worker: &str, record: &JobRecord) -> Result<(), QueueError>;

    /// Store a finished job's record and its synthesized speech (a WAV), drop its input
    /// audio and remove it from the queue.
    async fn finish(
        &self,
        worker: &str,
        record: &JobRecord,
        audio: Option<Vec<u8>>,
    ) -> Result<(), QueueError>;

    /// Give a running job back (this instance is shutting down): queued again with
    /// `record` (status queued), for any worker of any instance to take. `audio` is the
    /// input `take` handed out.
    async fn release(
        &self,
        worker: &str,
        record: &JobRecord,
        audio: Vec<u8>,
    ) -> Result<(), QueueError>;

    /// A job's record, unless unknown or expired.
    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError>;

    /// A completed job's synthesized speech.
    async fn output_audio(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError>;

    /// Jobs queued or running now.
    async fn depth(&self) -> Result<usize, QueueError>;

    /// Most jobs queued or running at once.
    fn capacity(&self) -> usize;
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
