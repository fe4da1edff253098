//! Who may call, and how much: authentication (JWT or API key), permissions, and the
//! per-tier limits (requests per minute, concurrent streams, daily audio), applied to every
//! `/api/v1` request and WebSocket upgrade by [`guard`].
//!
//! With `--auth-mode disabled` (the default only on a loopback address) nothing is checked
//! and no limits apply: a single-user server on a laptop.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use serde::{Deserialize, Serialize};
use tolk_auth::jwt::JwtVerifier;
use tolk_auth::keys::KeyStore;
use tolk_auth::limits::{LimitStore, QuotaDecision, RateDecision, StreamLease};
use tolk_auth::{LimitOverrides, Permission};
use tolk_protocol::error::ErrorCode;

use crate::rest::ApiError;

/// Whether credentials are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Required,
    Disabled,
}

/// What a tier allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub requests_per_minute: u32,
    /// Requests that may arrive at once before the per-minute rate applies.
    pub burst: u32,
    pub concurrent_streams: u32,
    /// Seconds of audio per UTC day; 0 means no limit.
    pub audio_seconds_per_day: u64,
}

/// The tiers a server knows: built-in defaults, replaced per name by `--tiers-file`.
pub fn default_tiers() -> BTreeMap<String, Tier> {
    let tier = |rpm, streams, minutes: u64| Tier {
        requests_per_minute: rpm,
        burst: rpm,
        concurrent_streams: streams,
        audio_seconds_per_day: minutes * 60,
    };
    BTreeMap::from([
        ("free".to_string(), tier(60, 1, 10)),
        ("basic".to_string(), tier(300, 3, 120)),
        ("premium".to_string(), tier(1000, 10, 1440)),
        ("enterprise".to_string(), tier(10_000, 100, 0)),
    ])
}

/// Read a JSON object of tiers (`{"free": {"requests_per_minute": 60, …}}`) over the
/// defaults.
pub fn load_tiers(path: Option<&Path>) -> Result<BTreeMap<String, Tier>, String> {
    let mut tiers = default_tiers();
    if let Some(path) = path {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let custom: BTreeMap<String, Tier> = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a tiers object: {e}", path.display()))?;
        tiers.extend(custom);
    }
    Ok(tiers)
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `key:<id>` or `sub:<subject>`: what limits are counted against.
    pub id: String,
    pub tier_name: String,
    pub limits: Tier,
    pub permissions: HashSet<Permission>,
}

impl Caller {
    fn new(
        id: String,
        tier_name: &str,
        permissions: impl IntoIterator<Item = Permission>,
        overrides: LimitOverrides,
        tiers: &BTreeMap<String, Tier>,
    ) -> Result<Self, ApiError> {
        let Some(tier) = tiers.get(tier_name) else {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("tier '{tier_name}' is not configured on this server"),
            ));
        };
        let mut limits = *tier;
        if let Some(rpm) = overrides.requests_per_minute {
            limits.requests_per_minute = rpm;
            limits.burst = rpm;
        }
        if let Some(streams) = overrides.concurrent_streams {
            limits.concurrent_streams = streams;
        }
        if let Some(minutes) = overrides.audio_minutes_per_day {
            limits.audio_seconds_per_day = u64::from(minutes) * 60;
        }
        Ok(Self {
            id,
            tier_name: tier_name.to_string(),
            limits,
            permissions: permissions.into_iter().collect(),
        })
    }
}

/// Everything the guard needs.
pub struct Access {
    pub mode: AuthMode,
    pub jwt: JwtVerifier,
    pub keys: Arc<dyn KeyStore>,
    pub limits: Arc<dyn LimitStore>,
    pub tiers: BTreeMap<String, Tier>,
    /// Serve when the limit store is unreachable (limits unenforced) instead of 503.
    pub fail_open: bool,
}

/// How long a stream's place is held without renewal (a crashed instance frees it).
pub const STREAM_LEASE: Duration = Duration::from_secs(60);

impl Access {
    /// The caller a request's credentials name: `X-API-Key`, `Authorization: Bearer`, and
    /// for WebSocket upgrades also `?token=` or a `Sec-WebSocket-Protocol` entry
    /// `bearer.<token>`; each of the last three may carry a JWT or an API key.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: &str,
        websocket: bool,
    ) -> Result<Caller, ApiError> {
        let unauthorized = |m: String| ApiError::new(ErrorCode::Unauthorized, m);
        // Two credentials, one perhaps bad: refuse rather than pick one.
        if headers.contains_key("x-api-key") && headers.contains_key("authorization") {
            return Err(unauthorized(
                "send one credential, X-API-Key or Authorization, not both".into(),
            ));
        }
        let key_header = match headers.get("x-api-key") {
            Some(key) => Some(
                key.to_str()
                    .map_err(|_| unauthorized("X-API-Key is not ASCII".into()))?
                    .to_string(),
            ),
            None => None,
        };
        let token = bearer(headers)
            .or_else(|| websocket.then(|| query_token(query)).flatten())
            .or_else(|| websocket.then(|| protocol_token(headers)).flatten());
        // An API key may also come where a token would (`Authorization: Bearer`, and for
        // a browser's WebSocket `?token=` or `bearer.<key>`): a JWT never starts `tolk_`.
        let (key, token) = match (key_header, token) {
            (Some(key), _) => (Some(key), None),
            (None, Some(t)) if t.starts_with(tolk_auth::keys::KEY_PREFIX) => (Some(t), None),
            (None, token) => (None, token),
        };
        if let Some(key) = key {
            let record = self
                .keys
                .verify(key.trim())
                .await
                .map_err(|e| {
                    tracing::error!("API key store: {e}");
                    ApiError::new(
                        ErrorCode::Overloaded,
                        "the key store is unavailable; retry later",
                    )
                })?
                .ok_or_else(|| unauthorized("the API key is unknown or revoked".into()))?;
            let permissions = record
                .permissions
                .iter()
                .filter_map(|p| Permission::parse(p));
            return Caller::new(
                format!("key:{}", record.id),
                &record.tier,
                permissions,
                record.limits,
                &self.tiers,
            );
        }
        let token = token.ok_or_else(|| {
            unauthorized(
                "credentials required: an X-API-Key header or Authorization: Bearer <JWT>".into(),
            )
        })?;
        let claims = self
            .jwt
            .verify(&token)
            .map_err(|e| unauthorized(format!("bearer token refused: {e}")))?;
        Caller::new(
            format!("sub:{}", claims.sub),
            claims.user_tier.as_deref().unwrap_or("free"),
            claims.permissions(),
            claims.rate_limits.unwrap_or_default(),
            &self.tiers,
        )
    }

    fn store_down(&self, what: &str, e: impl std::fmt::Display) -> Option<ApiError> {
        tracing::error!("limit store ({what}): {e}");
        (!self.fail_open).then(|| {
            ApiError::new(
                ErrorCode::Overloaded,
                "the limit store is unavailable; retry later",
            )
        })
    }

    /// Count one request; `Err` with 429 when over the rate.
    pub async fn check_rate(&self, caller: &Caller) -> Result<Option<RateDecision>, ApiError> {
        let tier = caller.limits;
        match self
            .limits
            .check_request(&caller.id, tier.requests_per_minute, tier.burst.max(1))
            .await
        {
            Ok(decision) => Ok(Some(decision)),
            Err(e) => self.store_down("rate", e).map_or(Ok(None), Err),
        }
    }

    /// A place among `caller`'s concurrent streams (`None` when the store is down and
    /// limits fail open), or 429 when they are all taken or today's audio is used up.
    pub async fn open_stream(&self, caller: &Caller) -> Result<Option<StreamLease>, ApiError> {
        let per_day = caller.limits.audio_seconds_per_day;
        if per_day > 0 {
            match self.limits.audio_today(&caller.id, per_day).await {
                Ok(today) if today.remaining_seconds <= 0.0 => {
                    return Err(quota_error(&today, 0.0))
                }
                Ok(_) => {}
                Err(e) => return self.store_down("quota", e).map_or(Ok(None), Err),
            }
        }
        let max = caller.limits.concurrent_streams;
        match self.limits.open_stream(&caller.id, max, STREAM_LEASE).await {
            Ok(Some(lease)) => Ok(Some(lease)),
            Ok(None) => Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "{max} concurrent stream(s) allowed on the {} tier, all open; close one first",
                    caller.tier_name
                ),
            )),
            Err(e) => self.store_down("streams", e).map_or(Ok(None), Err),
        }
    }

    /// Refuse audio that would take `caller` past today's quota; count it otherwise.
    pub async fn charge_audio(&self, caller: &Caller, seconds: f64) -> Result<(), ApiError> {
        let per_day = caller.limits.audio_seconds_per_day;
        if per_day == 0 {
            return Ok(());
        }
        let today = match self.limits.audio_today(&caller.id, per_day).await {
            Ok(d) => d,
            Err(e) => return self.store_down("quota", e).map_or(Ok(()), Err),
        };
        if today.remaining_seconds < seconds {
            return Err(quota_error(&today, seconds));
        }
        if let Err(e) = self.limits.add_audio(&caller.id, seconds, per_day).await {
            return self.store_down("quota", e).map_or(Ok(()), Err);
        }
        Ok(())
    }
}

pub fn quota_error(today: &QuotaDecision, asked: f64) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "daily audio quota: {:.0} of {} s used, {:.1} s asked; it resets in {} s",
            today.used_seconds, today.limit_seconds, asked, today.resets_in_seconds
        ),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_string())
}

/// Browsers cannot set headers on a WebSocket: a subprotocol `bearer.<token>` carries it.
fn protocol_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get("sec-websocket-protocol")?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_string))
}

/// The permission a route needs; `None` for routes open to all (health, docs, metrics).
pub fn required_permission(method: &Method, path: &str) -> Option<Permission> {
    if path == "/ws/translate" {
        return Some(Permission::StreamCreate);
    }
    let rest = path.strip_prefix("/api/v1/")?;
    match (method, rest) {
        (_, "openapi.json") => None,
        (_, "models" | "languages") => Some(Permission::ModelsList),
        (&Method::POST, r) if r.starts_with("translate") => Some(Permission::TranslateWrite),
        (_, r) if r.starts_with("translate/") => Some(Permission::TranslateRead),
        _ => None,
    }
}

/// Middleware: authenticate, authorize, count the request, and put the [`Caller`] in the
/// request's extensions; every limited response carries the `X-RateLimit-*` headers.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let access = req
        .app_data::<actix_web::web::Data<crate::server::AppState>>()
        .and_then(|s| s.access.clone());
    let Some(access) = access.filter(|a| a.mode == AuthMode::Required) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let Some(permission) = required_permission(req.method(), req.path()) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let refuse = |req: ServiceRequest, e: ApiError, decision: Option<&RateDecision>| {
        let mut response = e.error_response();
        if let Some(d) = decision {
            rate_headers(response.headers_mut(), d);
            if !d.allowed {
                insert(
                    response.headers_mut(),
                    "retry-after",
                    d.retry_after_seconds.max(1),
                );
            }
        }
        Ok(req.into_response(response).map_into_right_body())
    };
    let websocket = req.path() == "/ws/translate";
    let caller = match access
        .authenticate(req.headers(), req.query_string(), websocket)
        .await
    {
        Ok(c) => c,
        Err(e) => return refuse(req, e, None),
    };
    if !caller.permissions.contains(&permission) {
        let e = ApiError::new(
            ErrorCode::Forbidden,
            format!("this needs the permission '{}'", permission.as_str()),
        );
        return refuse(req, e, None);
    }
    let decision = match access.check_rate(&caller).await {
        Ok(d) => d,
        Err(e) => return refuse(req, e, None),
    };
    if let Some(d) = decision.as_ref().filter(|d| !d.allowed) {
        let e = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "{} requests per minute ({} tier): retry in {} s",
                caller.limits.requests_per_minute, caller.tier_name, d.retry_after_seconds
            ),
        );
        return refuse(req, e, Some(d));
    }
    req.extensions_mut().insert(caller);
    let mut response = next.call(req).await?;
    if let Some(d) = &decision {
        rate_headers(response.headers_mut(), d);
    }
    Ok(response.map_into_left_body())
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

fn rate_headers(headers: &mut HeaderMap, d: &RateDecision) {
    insert(headers, "x-ratelimit-limit", d.limit);
    insert(headers, "x-ratelimit-remaining", d.remaining);
    insert(headers, "x-ratelimit-reset", d.reset_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_right_permission() {
        let cases = [
            (Method::GET, "/api/v1/models", Some(Permission::ModelsList)),
            (
                Method::GET,
                "/api/v1/languages",
                Some(Permission::ModelsList),
            ),
            (
                Method::POST,
                "/api/v1/translate",
                Some(Permission::TranslateWrite),
            ),
            (
                Method::POST,
                "/api/v1/translate/sync",
                Some(Permission::TranslateWrite),
            ),
            (
                Method::GET,
                "/api/v1/translate/status/wf_1",
                Some(Permission::TranslateRead),
            ),
            (
                Method::GET,
                "/api/v1/translate/result/wf_1/audio",
                Some(Permission::TranslateRead),
            ),
            (Method::GET, "/ws/translate", Some(Permission::StreamCreate)),
            (Method::GET, "/api/v1/openapi.json", None),
            (Method::GET, "/healthz", None),
            (Method::GET, "/docs", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(required_permission(&method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn tokens_are_found_where_browsers_can_put_them() {
        assert_eq!(
            query_token("a=1&token=abc.def&b=2").as_deref(),
            Some("abc.def")
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("sec-websocket-protocol"),
            HeaderValue::from_static("tolk.v1, bearer.xyz"),
        );
        assert_eq!(protocol_token(&headers).as_deref(), Some("xyz"));
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_static("Bearer t0k"),
        );
        assert_eq!(bearer(&headers).as_deref(), Some("t0k"));
    }

    #[test]
    fn overrides_replace_the_tiers_numbers() {
        let tiers = default_tiers();
        let overrides = LimitOverrides {
            requests_per_minute: Some(5),
            concurrent_streams: None,
            audio_minutes_per_day: Some(1),
        };
        let caller = Caller::new("sub:a".into(), "free", [], overrides, &tiers).unwrap();
        assert_eq!(caller.limits.requests_per_minute, 5);
        assert_eq!(caller.limits.concurrent_streams, 1);
        assert_eq!(caller.limits.audio_seconds_per_day, 60);
        assert!(Caller::new("sub:a".into(), "gold", [], overrides, &tiers).is_err());
    }
}
