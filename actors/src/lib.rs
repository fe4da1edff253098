//! tolk's actor graph (see DESIGN.md, "Data flow"): the per-stream streaming policy and
//! the inference worker pools. The WebSocket session that drives them lives in the server
//! (`src/ws/`); this crate knows nothing of HTTP.
//!
//! Layout:
//! - [`pool`]: worker threads running a synchronous engine behind a bounded, two-lane queue.
//! - [`engines`]: the ASR (whisper) and VAD (Silero) engines as pool engines.
//! - [`histogram`]: lock-free latency histograms (pool jobs, for `/metrics`).
//! - [`streaming`]: the streaming policy (VAD gating, LocalAgreement-2, segmentation).
#![forbid(unsafe_code)]

pub mod engines;
pub mod histogram;
pub mod pool;
pub mod streaming;
