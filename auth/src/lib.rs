//! Who is calling, and how much they may do.
//!
//! - [`jwt`]: bearer tokens (HS256 with a shared secret; RS256/ES256 with keys from a JWKS
//!   file, rotated by `kid`).
//! - [`keys`]: API keys, of which only a hash is stored (a file, or Redis).
//! - [`limits`]: per-caller request rate, concurrent streams and daily audio quota (in
//!   memory, or Redis shared by every instance).
//!
//! No HTTP here: the server maps these to its middleware and error codes.
#![forbid(unsafe_code)]

pub mod jwt;
pub mod keys;
pub mod limits;
#[cfg(test)]
mod test_redis;

use serde::{Deserialize, Serialize};

/// What a caller may do. Tokens and keys carry these as strings (`translate:write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Poll jobs, fetch results.
    #[serde(rename = "translate:read")]
    TranslateRead,
    /// Submit jobs and sync calls.
    #[serde(rename = "translate:write")]
    TranslateWrite,
    /// Open WebSocket streams.
    #[serde(rename = "stream:create")]
    StreamCreate,
    /// List models and languages.
    #[serde(rename = "models:list")]
    ModelsList,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::TranslateRead,
        Permission::TranslateWrite,
        Permission::StreamCreate,
        Permission::ModelsList,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TranslateRead => "translate:read",
            Permission::TranslateWrite => "translate:write",
            Permission::StreamCreate => "stream:create",
            Permission::ModelsList => "models:list",
        }
    }

    /// The permission a string names; unknown names are `None` (and ignored by callers, so
    /// tokens may carry permissions of other services).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// Per-caller overrides of the tier's limits (a token's `rate_limits` claim, or a key's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_streams: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_minutes_per_day: Option<u32>,
}
