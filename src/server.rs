//! `tolk serve`: the HTTP server.
//!
//! Routes so far: `GET /healthz` (the process is up) and `GET /api/v1/models` (what is
//! installed). The model registry is scanned once at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Args;
use serde_json::json;
use tolk_models::registry::Registry;
use tolk_protocol::catalog::ModelsResponse;

use crate::commands::CommandError;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "TOLK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Directory models are installed in (by models/fetch).
    #[arg(long, env = "TOLK_MODELS_DIR", default_value = "models/cache")]
    pub models_dir: PathBuf,
    /// HTTP worker threads (async I/O only; inference has its own threads).
    #[arg(long, env = "TOLK_HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,
}

/// State shared by every request handler.
pub struct AppState {
    pub registry: Registry,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn models(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ModelsResponse {
        models_dir: state.registry.dir.display().to_string(),
        models: state.registry.models.clone(),
    })
}

/// Register every route; used by the server and by in-process tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .service(web::scope("/api/v1").route("/models", web::get().to(models)));
}

pub fn run(args: ServeArgs) -> Result<(), CommandError> {
    let registry = Registry::scan(&args.models_dir);
    tracing::info!(models = registry.models.len(), dir = %registry.dir.display(), "model registry scanned");
    let state = web::Data::new(AppState { registry });
    actix_web::rt::System::new().block_on(async move {
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(configure))
                .workers(args.http_workers.max(1))
                .bind(args.bind)
                .map_err(|e| {
                    CommandError::Config(format!("cannot listen on {}: {e}", args.bind))
                })?;
        for addr in server.addrs() {
            // Tests and scripts read this line to find the port.
            println!("tolk listening on http://{addr}");
        }
        server
            .run()
            .await
            .map_err(|e| CommandError::Other(e.into()))
    })
}
