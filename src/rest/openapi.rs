//! The OpenAPI 3.1 document of the REST API, generated from the handlers' annotations and
//! the wire types (`GET /api/v1/openapi.json`, rendered at `/docs`).

use actix_web::HttpResponse;
use serde_json::json;
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

/// The document: utoipa's, plus what every guarded operation shares (its credentials and
/// the 401/403/429 the guard answers), added here once instead of on each handler.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document is JSON");
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "HS256, or RS256/ES256 from the server's JWKS; `aud` tolk."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "A key from `tolk keys create`."},
    });
    let error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
    };
    let limit_header =
        |description: &str| json!({"description": description, "schema": {"type": "integer"}});
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
            continue;
        }
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            operation["security"] = json!([{"bearer": []}, {"apiKey": []}]);
            let responses = &mut operation["responses"];
            responses["401"] = error("No credentials, or credentials that do not verify (when the server requires them).");
            responses["403"] = error("The credentials lack the permission this operation needs.");
            responses["429"] = error("Over the tier's requests per minute (`rate_limited`) or daily audio (`quota_exceeded`); see `Retry-After`.");
            for (_, response) in responses
                .as_object_mut()
                .into_iter()
                .flat_map(|r| r.iter_mut())
            {
                response["headers"]["X-RateLimit-Limit"] =
                    limit_header("Requests the caller's bucket holds (with auth on).");
                response["headers"]["X-RateLimit-Remaining"] =
                    limit_header("Requests left in it now.");
                response["headers"]["X-RateLimit-Reset"] =
                    limit_header("Seconds until it is full again.");
            }
        }
    }
    doc
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> HttpResponse {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    HttpResponse::Ok().json(DOCUMENT.get_or_init(document_json))
}
