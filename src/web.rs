//! The browser client: the files of `web/`, built into the binary and served at `/` and
//! `/web/<file>`. Plain ES modules, so there is no build step, for us or for the user.
//!
//! Each file gets a strong `ETag` (its SHA-256) and `Cache-Control: no-cache`: a browser
//! asks every time and is answered 304 until the binary changes. The page's
//! `Content-Security-Policy` allows only this origin (and its WebSocket).

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use tolk_protocol::error::ErrorCode;

use crate::server::error_response;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("session.js", JS),
    asset!("microphone.js", JS),
    asset!("capture-worklet.js", JS),
    asset!("resample.js", JS),
    asset!("player.js", JS),
    asset!("words.js", JS),
];

/// What the page may load and connect to: this origin only. `ws:`/`wss:` because CSP's
/// `'self'` does not cover WebSocket URLs in every browser still in use.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

fn serve(req: &HttpRequest, name: &str) -> HttpResponse {
    let Some(index) = ASSETS.iter().position(|a| a.name == name) else {
        return error_response(
            ErrorCode::NotFound,
            &format!("no file {name} in the browser client"),
        );
    };
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    if fresh {
        return response.finish();
    }
    response.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    ));
    if name == "index.html" {
        response
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .insert_header((header::REFERRER_POLICY, "no-referrer"));
    }
    response.body(asset.body)
}

/// `GET /`: the page.
pub async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, "index.html")
}

/// `GET /web/{file}`: the page's scripts and styles.
pub async fn file(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    serve(&req, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn every_module_the_page_imports_is_served() {
        // A module missing from ASSETS would 404 in the browser: check each import.
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let from = line.split('"').nth(1).expect("import with a quoted path");
                let name = from.strip_prefix("./").expect("relative import");
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {from}, which is not served",
                    asset.name
                );
            }
        }
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for asset in &ASSETS[1..] {
            // Worklet and imported modules are loaded by scripts, the rest by the page.
            let linked = page.contains(&format!("/web/{}", asset.name))
                || ASSETS.iter().any(|a| {
                    std::str::from_utf8(a.body)
                        .unwrap()
                        .contains(&format!("./{}", asset.name))
                });
            assert!(linked, "{} is served but nothing loads it", asset.name);
        }
    }

    #[actix_web::test]
    async fn etag_answers_304_and_unknown_files_404() {
        let req = TestRequest::get().uri("/web/app.js").to_http_request();
        let first = serve(&req, "app.js");
        assert_eq!(first.status(), 200);
        let etag = first.headers().get(header::ETAG).unwrap().clone();
        assert_eq!(first.headers().get(header::CONTENT_TYPE).unwrap(), JS);

        let again = TestRequest::get()
            .insert_header((header::IF_NONE_MATCH, etag.clone()))
            .to_http_request();
        assert_eq!(serve(&again, "app.js").status(), 304);
        // Another file's tag does not match.
        assert_eq!(serve(&again, "style.css").status(), 200);

        let page = serve(&req, "index.html");
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(serve(&req, "../Cargo.toml").status(), 404);
        assert_eq!(serve(&req, "nope.js").status(), 404);
    }
}
