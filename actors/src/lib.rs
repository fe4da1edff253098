//! tolk's actor graph (see DESIGN.md, "Data flow").
//!
//! This crate will hold the `Session` actor (one per WebSocket: heartbeat, bounded audio
//! buffer, the session state machine) and the ASR, translation and TTS worker pools that
//! run the `tolk-models` engines on dedicated threads. It depends on `protocol` and
//! `models`, never on HTTP.
//!
//! It is empty until the streaming work (issue 3) lands; the crate exists now so that the
//! workspace has its final shape and dependency direction from the start.
#![forbid(unsafe_code)]
