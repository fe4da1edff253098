//! tolk's wire types: what crosses a socket or a file boundary, and nothing else.
//!
//! Layout:
//! - [`transcript`]: a recognised utterance (language, segments, words), as printed by
//!   `tolk transcribe --json` and returned by the REST and WebSocket APIs.
//! - [`catalog`]: what the server can do (installed models, language pairs), as served by
//!   `GET /api/v1/models`.
//! - [`error`]: the uniform error body and its stable codes.
//! - [`rest`]: bodies of the REST API (jobs, sync translation).
//! - [`ws`]: the WebSocket protocol on `GET /ws/translate` (`docs/protocol.md`).
//!
//! This crate has no I/O and depends on serde (and serde_json, to parse client frames)
//! alone (plus utoipa with the `openapi` feature, for the server's OpenAPI document), so clients (the load tester, tests) share the exact types the server speaks.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod error;
pub mod rest;
pub mod transcript;
pub mod ws;

/// Version of the wire protocol; bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
