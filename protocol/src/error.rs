//! The uniform error body: `{"error": {"code", "message", "request_id"}}`, and the one
//! table of error codes that both it and the WebSocket `error` message carry.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, snake_case; clients branch on this, never on the message.
    pub code: String,
    /// For people: what went wrong and how to fix it.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Every stable error code, declared once with its HTTP status and whether a client may
/// retry; the REST body and the WebSocket `error` message both draw from this table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A text frame that is not valid JSON or not a known message.
    InvalidMessage,
    /// Audio or `end_stream` with no stream open.
    StreamNotStarted,
    /// `start_stream` while a stream is still open.
    StreamAlreadyStarted,
    /// An encoding, sample rate or channel count outside what the server takes, or audio
    /// that is not whole sample frames.
    UnsupportedAudioFormat,
    /// A source or target language (or pair) no installed model covers.
    UnsupportedLanguage,
    /// An audio frame larger than the advertised `max_frame_bytes`.
    FrameTooLarge,
    /// Audio arriving faster than the advertised real-time factor allows.
    TooFast,
    /// The server is at capacity.
    Overloaded,
    /// Nothing arrived from the client within the idle timeout.
    SessionTimeout,
    /// The stream passed the advertised `max_stream_seconds`.
    StreamTooLong,
    /// A bug or a failing engine on the server's side.
    Internal,
    /// A REST request whose query, fields or form are malformed.
    InvalidRequest,
    /// A body declared as audio that cannot be decoded as such.
    InvalidAudio,
    /// Audio longer than the endpoint takes (30 s for `/translate/sync`).
    AudioTooLong,
    /// A request body larger than the endpoint takes.
    PayloadTooLarge,
    /// No such job (never existed, or its result expired).
    NotFound,
    /// The job's result is asked for before the job has completed.
    JobNotReady,
    /// A known path asked with a method it does not serve (`Allow` lists those it does).
    MethodNotAllowed,
    /// No credentials, or credentials that do not verify (bad signature, expired, revoked).
    Unauthorized,
    /// Valid credentials without the permission the request needs.
    Forbidden,
    /// More requests than the caller's tier allows per minute.
    RateLimited,
    /// The caller's daily audio quota (or concurrent-stream allowance) is used up.
    QuotaExceeded,
    /// A WebSocket `?resume=` token that names no session: unknown, or its grace period
    /// has passed. Start a new session.
    SessionExpired,
}

impl ErrorCode {
    /// All codes, in table order, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 23] = [
        ErrorCode::InvalidMessage,
        ErrorCode::StreamNotStarted,
        ErrorCode::StreamAlreadyStarted,
        ErrorCode::UnsupportedAudioFormat,
        ErrorCode::UnsupportedLanguage,
        ErrorCode::FrameTooLarge,
        ErrorCode::TooFast,
        ErrorCode::Overloaded,
        ErrorCode::SessionTimeout,
        ErrorCode::StreamTooLong,
        ErrorCode::Internal,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidAudio,
        ErrorCode::AudioTooLong,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotFound,
        ErrorCode::JobNotReady,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
        ErrorCode::SessionExpired,
    ];

    /// The status a REST response (or a refused WebSocket upgrade) carries for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidMessage | ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::SessionExpired => 410,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited | ErrorCode::QuotaExceeded => 429,
            ErrorCode::StreamNotStarted
            | ErrorCode::StreamAlreadyStarted
            | ErrorCode::JobNotReady => 409,
            ErrorCode::UnsupportedAudioFormat => 415,
            ErrorCode::UnsupportedLanguage | ErrorCode::InvalidAudio | ErrorCode::AudioTooLong => {
                422
            }
            ErrorCode::FrameTooLarge | ErrorCode::StreamTooLong | ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooFast => 429,
            ErrorCode::Overloaded => 503,
            ErrorCode::SessionTimeout => 408,
            ErrorCode::Internal => 500,
        }
    }

    /// Whether the same request, unchanged, may succeed after a back-off.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::TooFast
                | ErrorCode::Overloaded
                | ErrorCode::Internal
                | ErrorCode::JobNotReady
                | ErrorCode::RateLimited
                | ErrorCode::QuotaExceeded
        )
    }

    /// The wire spelling, identical to the serde one.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::StreamNotStarted => "stream_not_started",
            ErrorCode::StreamAlreadyStarted => "stream_already_started",
            ErrorCode::UnsupportedAudioFormat => "unsupported_audio_format",
            ErrorCode::UnsupportedLanguage => "unsupported_language",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::TooFast => "too_fast",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::SessionTimeout => "session_timeout",
            ErrorCode::StreamTooLong => "stream_too_long",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidAudio => "invalid_audio",
            ErrorCode::AudioTooLong => "audio_too_long",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::JobNotReady => "job_not_ready",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::SessionExpired => "session_expired",
        }
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = String;

    /// The code a wire spelling names (`"not_found"`).
    fn from_str(s: &str) -> Result<Self, String> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown error code '{s}'"))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_serde_for_every_code() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
    }

    #[test]
    fn all_lists_every_code_once() {
        // A new variant breaks this match, which points here to extend ALL.
        let n = ErrorCode::ALL
            .iter()
            .map(|c| match c {
                ErrorCode::InvalidMessage
                | ErrorCode::StreamNotStarted
                | ErrorCode::StreamAlreadyStarted
                | ErrorCode::UnsupportedAudioFormat
                | ErrorCode::UnsupportedLanguage
                | ErrorCode::FrameTooLarge
                | ErrorCode::TooFast
                | ErrorCode::Overloaded
                | ErrorCode::SessionTimeout
                | ErrorCode::StreamTooLong
                | ErrorCode::Internal
                | ErrorCode::InvalidRequest
                | ErrorCode::InvalidAudio
                | ErrorCode::AudioTooLong
                | ErrorCode::PayloadTooLarge
                | ErrorCode::NotFound
                | ErrorCode::JobNotReady
                | ErrorCode::MethodNotAllowed
                | ErrorCode::Unauthorized
                | ErrorCode::Forbidden
                | ErrorCode::RateLimited
                | ErrorCode::QuotaExceeded
                | ErrorCode::SessionExpired => c.as_str(),
            })
            .collect::<std::collections::HashSet<_>>()
            .len();
        assert_eq!(n, ErrorCode::ALL.len());
    }

    #[test]
    fn status_and_retryable_follow_the_table() {
        let table = [
            ("invalid_message", 400, false),
            ("stream_not_started", 409, false),
            ("stream_already_started", 409, false),
            ("unsupported_audio_format", 415, false),
            ("unsupported_language", 422, false),
            ("frame_too_large", 413, false),
            ("too_fast", 429, true),
            ("overloaded", 503, true),
            ("session_timeout", 408, false),
            ("stream_too_long", 413, false),
            ("internal", 500, true),
            ("invalid_request", 400, false),
            ("invalid_audio", 422, false),
            ("audio_too_long", 422, false),
            ("payload_too_large", 413, false),
            ("not_found", 404, false),
            ("job_not_ready", 409, true),
            ("method_not_allowed", 405, false),
            ("unauthorized", 401, false),
            ("forbidden", 403, false),
            ("rate_limited", 429, true),
            ("quota_exceeded", 429, true),
            ("session_expired", 410, false),
        ];
        for (code, (name, status, retryable)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.http_status(), status, "{name}");
            assert_eq!(code.retryable(), retryable, "{name}");
        }
    }

    #[test]
    fn unknown_code_is_rejected() {
        assert!(serde_json::from_str::<ErrorCode>("\"teapot\"").is_err());
        assert!("teapot".parse::<ErrorCode>().is_err());
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
        }
    }
}
