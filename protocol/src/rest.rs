//! Bodies of the REST API under `/api/v1/translate`: asynchronous jobs (submit, poll,
//! fetch the result) and the synchronous call for short clips.

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and waiting for a worker.
    Queued,
    /// A worker is recognising, translating or speaking it.
    Processing,
    /// Done; the result is kept until `expires_at`.
    Completed,
    /// Given up on; `error` says why.
    Failed,
}

impl JobStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
        }
    }

    /// Completed or failed: nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}

/// Body of `202 Accepted` from `POST /api/v1/translate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    pub workflow_id: String,
    pub status: JobStatus,
    /// Poll this for progress (`GET`).
    pub status_url: String,
    /// The result, once `status` is `completed`.
    pub result_url: String,
    /// A guess at the seconds until completion, from the queue ahead and the clip length.
    pub estimated_seconds: f64,
}

/// Body of `GET /api/v1/translate/status/{workflow_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatusResponse {
    pub workflow_id: String,
    pub status: JobStatus,
    /// 0–100; 100 only when completed.
    pub progress: u8,
    /// Seconds until completion, while queued or processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    /// When the job and its result are forgotten (RFC 3339).
    pub expires_at: String,
    /// Why a job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TranslationResult>,
    /// Delivery of the result to the job's `callback_url`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackStatus>,
}

/// What a finished job (or a sync call) produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TranslationResult {
    /// Everything recognised, segments joined by spaces.
    pub transcript: String,
    /// The transcript in `target_lang`, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    /// Language of the speech (ISO 639-1), given or detected.
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_lang: Option<String>,
    pub segments: Vec<ResultSegment>,
    /// `GET` this for the synthesized speech, when `tts` was asked for (jobs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_url: Option<String>,
    pub metadata: ResultMetadata,
}

/// One recognised stretch of speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultSegment {
    /// Seconds from the start of the clip.
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultMetadata {
    /// Length of the submitted audio.
    pub duration_seconds: f64,
    /// Time from the start of processing to the result (queueing excluded).
    pub processing_ms: u64,
    /// Whisper model that recognised the speech.
    pub asr_model: String,
    /// How the text was translated, e.g. `es→en (apertium) →pt (bergamot)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation_route: Option<String>,
    /// Voice that spoke the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Length of the synthesized speech.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_seconds: Option<f64>,
    /// The server instance that did the work.
    pub processed_by: String,
}

/// Delivery state of a job's callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackStatus {
    pub url: String,
    /// A 2xx answer was received.
    pub delivered: bool,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Body of `200 OK` from `POST /api/v1/translate/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResponse {
    pub transcript: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    /// The synthesized speech as a base64 WAV (16-bit PCM), when `tts` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_base64: Option<String>,
    pub language: String,
    pub segments: Vec<ResultSegment>,
    /// Time the server spent, queueing included.
    pub processing_ms: u64,
    pub metadata: ResultMetadata,
}

/// The body POSTed to a job's `callback_url` when it completes or fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CallbackPayload {
    pub workflow_id: String,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TranslationResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_spellings() {
        for (status, name) in [
            (JobStatus::Queued, "queued"),
            (JobStatus::Processing, "processing"),
            (JobStatus::Completed, "completed"),
            (JobStatus::Failed, "failed"),
        ] {
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(status.as_str(), name);
        }
        assert!(JobStatus::Failed.is_terminal() && !JobStatus::Processing.is_terminal());
    }
}
