//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations and
//! the wire types (`GET /api/v1/openapi.json`, rendered at `/docs`).

use actix_web::HttpResponse;
use utoipa::OpenApi;

/// A form carrying the audio (`multipart/form-data`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the form; the handler reads it field by field
pub struct AudioForm {
    /// A WAV file.
    #[schema(value_type = String, format = Binary, content_media_type = "audio/wav")]
    pub audio: Vec<u8>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tolk",
        description = "Real-time speech translation. Asynchronous jobs (`POST /api/v1/translate`, then poll), a synchronous call for clips up to 30 s, and discovery of models and languages. Streaming runs over the WebSocket at `/ws/translate` (docs/protocol.md). Every response carries `X-Request-Id`; errors are `{\"error\": {\"code\", \"message\", \"request_id\"}}`.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        super::submit,
        super::status,
        super::result,
        super::result_audio,
        super::sync,
        crate::server::models,
        crate::server::languages,
        crate::server::healthz,
        crate::server::readyz,
    ),
    components(schemas(tolk_protocol::error::ErrorDetail, tolk_protocol::rest::CallbackPayload)),
    tags(
        (name = "jobs", description = "Asynchronous translation: submit, poll, fetch."),
        (name = "sync", description = "Short clips answered in the response."),
        (name = "discovery", description = "What the server can do."),
        (name = "health", description = "Liveness and readiness."),
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
