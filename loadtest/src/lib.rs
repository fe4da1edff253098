//! `tolk-loadtest`: many simulated clients streaming real audio to tolk's WebSocket
//! endpoint at real-time pace, measuring latency percentiles (issue 7).
//!
//! It depends on `tolk-protocol` alone: it is a client, and speaks only the wire protocol.
//! Empty until that work lands; the crate exists so the workspace has its final shape.
#![forbid(unsafe_code)]
