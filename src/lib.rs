//! tolk: real-time speech translation server.
//!
//! Layout:
//! - [`access`]: authentication, permissions and limits (the middleware and its config).
//! - [`cli`]: the `tolk` command line and its subcommands.
//! - [`commands`]: one module per subcommand (`transcribe`, `models`, `bench`).
//! - [`config`]: `tolk serve`'s settings from flags, `TOLK_*` variables and a TOML file
//!   (docs/configuration.md), checked before anything starts; `tolk config check`.
//! - [`server`]: the HTTP server (`tolk serve`) and its routes.
//! - [`ws`]: the streaming WebSocket endpoint and its session actor.
//! - [`rest`]: the REST API (jobs, sync translation, OpenAPI) and the clip pipeline.
//! - [`jobs`]: where jobs wait (in process, or Redis) and how their callbacks are sent.
//! - [`metrics`]: `/metrics` (Prometheus) and the counters behind it.
//! - [`shutdown`]: graceful shutdown on SIGTERM/SIGINT: streams finalized, jobs finished or given back.
//! - [`telemetry`]: logging set-up.
//! - [`web`]: the browser client (`web/`, built into the binary), served at `/`.
//!
//! Engines live in `tolk-models`, the actor graph in `tolk-actors`, wire types in
//! `tolk-protocol`.

pub mod access;
pub mod cli;
pub mod commands;
pub mod config;
pub mod jobs;
pub mod metrics;
pub mod rest;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod web;
pub mod ws;
