//! Bearer tokens: HS256 with a shared secret, RS256/ES256 with public keys from a JWKS file.
//!
//! Only these three algorithms are accepted, and each only with its own kind of key: an HS256
//! token is checked against the shared secret and nothing else, an RS256/ES256 token only
//! against a JWKS key of the matching type. That rules out `alg: none` and algorithm confusion
//! (a public key used as an HMAC secret).
//!
//! Keys rotate by `kid`: a token naming a `kid` the verifier does not know makes it re-read the
//! JWKS file if the file changed (at most once per [`JWKS_RELOAD_INTERVAL`]), so new keys work
//! without a restart and removed ones stop working once the file has been re-read.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{LimitOverrides, Permission};

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as long as the hash.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// How often a token with an unknown `kid` may make the verifier look at the JWKS file again,
/// so that a flood of made-up `kid`s costs at most one `stat` per interval.
pub const JWKS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Longer tokens are refused before any decoding (no legitimate token comes near this).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Smaller RSA keys are refused when the JWKS file is read (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

/// How the server checks bearer tokens.
#[derive(Clone)]
pub struct JwtConfig {
    /// Shared secret for HS256 (at least [`MIN_HS256_SECRET_LEN`] bytes); `None` refuses HS256.
    pub hs256_secret: Option<String>,
    /// JWKS file with the RS256/ES256 public keys; `None` refuses RS256 and ES256.
    pub jwks_file: Option<PathBuf>,
    /// Required `aud`: the token's `aud` must be this string or an array containing it.
    pub audience: String,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            jwks_file: None,
            audience: "tolk".to_owned(),
            issuer: None,
            leeway: Duration::from_secs(30),
        }
    }
}

// By hand, so that the secret never reaches a log.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("jwks_file", &self.jwks_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who the caller is (never empty).
    pub sub: String,
    pub user_tier: Option<String>,
    /// As written in the token, unknown names included (they may be other services').
    pub permissions: Vec<String>,
    pub rate_limits: Option<LimitOverrides>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    pub iat: Option<u64>,
    pub jti: Option<String>,
}

impl Claims {
    /// The permissions this server knows, sorted and without duplicates; other names are
    /// dropped.
    pub fn permissions(&self) -> Vec<Permission> {
        let mut known: Vec<Permission> = self
            .permissions
            .iter()
            .filter_map(|name| Permission::parse(name))
            .collect();
        known.sort_unstable();
        known.dedup();
        known
    }

    pub fn has_permission(&self, permission: Permission) -> bool {
        self.permissions.iter().any(|p| p == permission.as_str())
    }
}

/// Why a token was refused, or why the verifier could not be set up ([`JwtError::Config`]).
/// The messages are meant for the client (except `Config`, meant for the operator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm `{0}` is not accepted here")]
    UnsupportedAlgorithm(String),
    #[error("no key with kid `{0}`")]
    UnknownKey(String),
    #[error("key `{kid}` is not a {alg} key")]
    KeyMismatch { kid: String, alg: String },
    #[error("token has no `kid` and several keys could have signed it; put the key's `kid` in the header")]
    KidRequired,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (`nbf` is in the future)")]
    NotYetValid,
    #[error("token was issued in the future (`iat`); check the issuer's clock")]
    IssuedInFuture,
    #[error("token is not meant for this server (wrong `aud`)")]
    WrongAudience,
    #[error("token comes from an issuer this server does not trust (wrong `iss`)")]
    WrongIssuer,
    #[error("token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("this server does not accept JWTs")]
    NotConfigured,
    #[error("JWT configuration: {0}")]
    Config(String),
}

/// Checks bearer tokens; cheap to share (`Arc`) between request handlers.
pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    /// One per accepted algorithm, so that each only ever admits its own.
    hs256_validation: Validation,
    rs256_validation: Validation,
    es256_validation: Validation,
    leeway_secs: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("jwks_file", &self.jwks.as_ref().map(|j| &j.path))
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Reads and checks the JWKS file now, so that a bad file stops the server at start-up
    /// rather than failing every request.
    pub fn new(config: JwtConfig) -> Result<Self, JwtError> {
        if config.audience.is_empty() {
            return Err(JwtError::Config("the audience must not be empty".into()));
        }
        let hs256 = match &config.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_LEN => {
                return Err(JwtError::Config(format!(
                    "the HS256 secret is {} bytes long; at least {MIN_HS256_SECRET_LEN} are needed",
                    secret.len()
                )));
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let jwks = match &config.jwks_file {
            Some(path) => {
                let (keys, stamp) = load_jwks(path)?;
                if keys.is_empty() {
                    return Err(JwtError::Config(format!(
                        "JWKS file {} holds no signing keys",
                        path.display()
                    )));
                }
                tracing::info!(path = %path.display(), kids = ?keys.kids(), "JWKS loaded");
                Some(Jwks {
                    path: path.clone(),
                    keys: RwLock::new(Arc::new(keys)),
                    reload: Mutex::new(ReloadState {
                        last_check: Instant::now(),
                        stamp,
                    }),
                    min_reload_interval: JWKS_RELOAD_INTERVAL,
                })
            }
            None => None,
        };
        let leeway_secs = config.leeway.as_secs();
        Ok(Self {
            hs256,
            jwks,
            hs256_validation: validation(Algorithm::HS256, &config, leeway_secs),
            rs256_validation: validation(Algorithm::RS256, &config, leeway_secs),
            es256_validation: validation(Algorithm::ES256, &config, leeway_secs),
            leeway_secs,
        })
    }

    /// Whether any key is configured at all (if not, JWT authentication is off).
    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || self.jwks.is_some()
    }

    /// The claims of `token` (the part after `Bearer `) if its signature and claims check out.
    ///
    /// Tokens with a known `kid` never wait on I/O; an unknown `kid` may cost one small file
    /// read per [`JWKS_RELOAD_INTERVAL`].
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if !self.is_configured() {
            return Err(JwtError::NotConfigured);
        }
        let header = parse_header(token)?;
        let raw = match header.alg {
            Algorithm::HS256 => {
                // The `kid` is ignored: HS256 is only ever checked against the shared secret.
                let key = self.hs256.as_ref().ok_or_else(|| unsupported(header.alg))?;
                decode(token, key, &self.hs256_validation)?
            }
            alg => {
                let jwks = self.jwks.as_ref().ok_or_else(|| unsupported(alg))?;
                let validation = if alg == Algorithm::RS256 {
                    &self.rs256_validation
                } else {
                    &self.es256_validation
                };
                let kid = header.kid.as_deref();
                let keys = jwks.current();
                match keys.find(kid, alg) {
                    Ok(key) => decode(token, key, validation)?,
                    Err(JwtError::KidRequired) => return Err(JwtError::KidRequired),
                    Err(_) => {
                        match jwks.reload_if_changed(true) {
                            Ok(true) => tracing::info!(
                                path = %jwks.path.display(),
                                kids = ?jwks.current().kids(),
                                "JWKS reloaded"
                            ),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(
                                error = %e,
                                "JWKS reload failed; keeping the keys loaded before"
                            ),
                        }
                        let keys = jwks.current();
                        decode(token, keys.find(kid, alg)?, validation)?
                    }
                }
            }
        };
        self.finish(raw)
    }

    /// Re-reads the JWKS file now if it changed since it was last read (for a timer or a
    /// signal, so that removed keys stop verifying without waiting for an unknown `kid`).
    /// `Ok(true)` when new keys were loaded; on error the keys loaded before stay in use.
    pub fn reload_jwks(&self) -> Result<bool, JwtError> {
        match &self.jwks {
            Some(jwks) => jwks.reload_if_changed(false),
            None => Ok(false),
        }
    }

    /// The checks jsonwebtoken does not do: `sub` non-empty, `iat` not in the future.
    fn finish(&self, raw: RawClaims) -> Result<Claims, JwtError> {
        let sub = raw
            .sub
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| JwtError::MissingClaim("sub".into()))?;
        let exp = raw
            .exp
            .ok_or_else(|| JwtError::MissingClaim("exp".into()))?;
        if let Some(iat) = raw.iat {
            if iat > now_secs().saturating_add(self.leeway_secs) {
                return Err(JwtError::IssuedInFuture);
            }
        }
        Ok(Claims {
            sub,
            user_tier: raw.user_tier,
            permissions: raw.permissions.unwrap_or_default(),
            rate_limits: raw.rate_limits,
            exp,
            iat: raw.iat,
            jti: raw.jti,
        })
    }
}

fn validation(alg: Algorithm, config: &JwtConfig, leeway_secs: u64) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v.set_audience(&[&config.audience]);
    // Without a required `aud`, a token minted for another service would pass.
    let mut required = vec!["exp", "aud"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<RawClaims, JwtError> {
    jsonwebtoken::decode::<RawClaims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.into_kind() {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim),
            ErrorKind::InvalidClaimFormat(claim) => {
                JwtError::Malformed(format!("claim `{claim}` has the wrong type"))
            }
            ErrorKind::InvalidToken => {
                JwtError::Malformed("expected three dot-separated parts".into())
            }
            ErrorKind::Base64(_) => JwtError::Malformed("a part is not valid base64url".into()),
            ErrorKind::Utf8(_) => JwtError::Malformed("a part is not valid UTF-8".into()),
            ErrorKind::Json(e) => JwtError::Malformed(format!("invalid JSON: {e}")),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName => {
                let alg = validation.algorithms.first().map_or("?", |a| alg_name(*a));
                JwtError::UnsupportedAlgorithm(alg.to_owned())
            }
            other => {
                // Key problems are caught when the JWKS is read; this would be a bug.
                tracing::warn!(error = ?other, "JWT key could not be used");
                JwtError::BadSignature
            }
        })
}

/// The claims as they may appear in a token: everything optional, so that a missing claim is
/// reported as missing rather than as a JSON error.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    user_tier: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
    #[serde(default)]
    rate_limits: Option<LimitOverrides>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<u64>,
    #[serde(default)]
    jti: Option<String>,
}

/// A JWT NumericDate: seconds, which RFC 7519 allows to be fractional.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(Some(f.round() as u64)),
        _ => Err(D::Error::custom(
            "a date must be a non-negative number of seconds",
        )),
    }
}

struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the header ourselves, before jsonwebtoken does, so that `alg: none` and other
/// algorithms are named in the error rather than reported as undecodable JSON.
fn parse_header(token: &str) -> Result<Header, JwtError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        kid: Option<String>,
        crit: Option<Value>,
    }

    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!(
            "longer than {MAX_TOKEN_LEN} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("the header is not valid base64url".into()))?;
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|e| JwtError::Malformed(format!("invalid header: {e}")))?;
    if raw.crit.is_some() {
        // RFC 7515 §4.1.11: critical extensions that are not understood must be refused.
        return Err(JwtError::Malformed(
            "the header has `crit` extensions, which this server does not support".into(),
        ));
    }
    let alg = match raw.alg.as_deref() {
        None => return Err(JwtError::Malformed("the header has no `alg`".into())),
        Some("HS256") => Algorithm::HS256,
        Some("RS256") => Algorithm::RS256,
        Some("ES256") => Algorithm::ES256,
        Some(other) => return Err(JwtError::UnsupportedAlgorithm(clip(other))),
    };
    Ok(Header { alg, kid: raw.kid })
}

fn unsupported(alg: Algorithm) -> JwtError {
    JwtError::UnsupportedAlgorithm(alg_name(alg).to_owned())
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "unsupported",
    }
}

/// Caller-supplied text as it may appear in an error: short, no control characters.
fn clip(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The JWKS file and the keys last read from it.
struct Jwks {
    path: PathBuf,
    /// Swapped whole on reload; readers only clone the `Arc`, so they never wait on file I/O.
    keys: RwLock<Arc<KeySet>>,
    reload: Mutex<ReloadState>,
    min_reload_interval: Duration,
}

struct ReloadState {
    last_check: Instant,
    /// Of the file as last loaded; `None` if it could not be read.
    stamp: Option<FileStamp>,
}

/// Modification time and size: a rewrite within the file system's time granularity still
/// changes the size more often than not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok()?,
        len: meta.len(),
    })
}

impl Jwks {
    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the file if its stamp changed; with `throttle`, only if the last look was at
    /// least `min_reload_interval` ago. A file that fails to load leaves the old keys in place.
    fn reload_if_changed(&self, throttle: bool) -> Result<bool, JwtError> {
        let mut state = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
        if throttle && state.last_check.elapsed() < self.min_reload_interval {
            return Ok(false);
        }
        state.last_check = Instant::now();
        let stamp = file_stamp(&self.path);
        if stamp.is_some() && stamp == state.stamp {
            return Ok(false);
        }
        let (keys, stamp) = load_jwks(&self.path)?;
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        state.stamp = stamp;
        Ok(true)
    }
}

#[derive(Clone)]
struct KeyEntry {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, KeyEntry>,
    /// Every key (with a `kid` or not) by algorithm, for tokens that name no `kid`.
    by_alg: HashMap<Algorithm, Vec<KeyEntry>>,
}

impl KeySet {
    fn is_empty(&self) -> bool {
        self.by_alg.is_empty()
    }

    fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, JwtError> {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                Some(entry) if entry.alg == alg => Ok(&entry.key),
                Some(_) => Err(JwtError::KeyMismatch {
                    kid: clip(kid),
                    alg: alg_name(alg).to_owned(),
                }),
                None => Err(JwtError::UnknownKey(clip(kid))),
            },
            None => match self.by_alg.get(&alg).map(Vec::as_slice) {
                Some([only]) => Ok(&only.key),
                Some([_, _, ..]) => Err(JwtError::KidRequired),
                _ => Err(unsupported(alg)),
            },
        }
    }
}

/// Reads a JWKS file; every key must be usable for RS256 or ES256 (or be marked `"use": "enc"`,
/// which is skipped), so that a typo shows at start-up, not as failing tokens.
fn load_jwks(path: &Path) -> Result<(KeySet, Option<FileStamp>), JwtError> {
    let shown = path.display();
    let stamp = file_stamp(path);
    let text = fs::read(path)
        .map_err(|e| JwtError::Config(format!("cannot read JWKS file {shown}: {e}")))?;
    let doc: Value = serde_json::from_slice(&text)
        .map_err(|e| JwtError::Config(format!("JWKS file {shown} is not valid JSON: {e}")))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err(JwtError::Config(format!(
            "JWKS file {shown} has no `keys` array"
        )));
    };
    let mut set = KeySet::default();
    for (i, raw) in keys.iter().enumerate() {
        let unusable = |why: String| {
            let kid = match raw.get("kid").and_then(Value::as_str) {
                Some(kid) => format!(" (kid `{kid}`)"),
                None => String::new(),
            };
            JwtError::Config(format!(
                "JWKS file {shown}: keys[{i}]{kid} is unusable: {why}"
            ))
        };
        let Some((kid, entry)) = parse_jwk(raw).map_err(unusable)? else {
            continue;
        };
        if let Some(kid) = kid {
            if set.by_kid.insert(kid.clone(), entry.clone()).is_some() {
                return Err(unusable(format!("another key has the same kid `{kid}`")));
            }
        }
        set.by_alg.entry(entry.alg).or_default().push(entry);
    }
    Ok((set, stamp))
}

/// One JWK as `(kid, key)`, or `None` for an encryption key.
fn parse_jwk(raw: &Value) -> Result<Option<(Option<String>, KeyEntry)>, String> {
    let obj = raw.as_object().ok_or("not a JSON object")?;
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    match obj.get("use").map(|u| u.as_str()) {
        None | Some(Some("sig")) => {}
        Some(Some("enc")) => {
            tracing::debug!(?kid, "JWKS: skipping an encryption key");
            return Ok(None);
        }
        Some(_) => return Err(format!("`use` is {}, not \"sig\"", obj["use"])),
    }
    let kty = obj.get("kty").and_then(Value::as_str).ok_or("no `kty`")?;
    let alg = match kty {
        "RSA" => Algorithm::RS256,
        "EC" => match obj.get("crv").and_then(Value::as_str) {
            Some("P-256") => Algorithm::ES256,
            Some(crv) => {
                return Err(format!(
                    "curve {crv} is not accepted (only P-256, for ES256)"
                ))
            }
            None => return Err("an EC key without `crv`".into()),
        },
        "oct" => return Err(
            "symmetric (`oct`) keys do not belong in the JWKS file; HS256 uses the shared secret"
                .into(),
        ),
        other => {
            return Err(format!(
                "key type `{other}` is not accepted (only RSA for RS256, EC P-256 for ES256)"
            ))
        }
    };
    match obj.get("alg") {
        None => {}
        Some(Value::String(a)) if a == alg_name(alg) => {}
        Some(Value::String(a)) => {
            return Err(format!(
                "`alg` is {a}, but a {kty} key is accepted for {} only",
                alg_name(alg)
            ))
        }
        Some(_) => return Err("`alg` is not a string".into()),
    }
    check_key_material(obj, alg)?;
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("bad key material: {e}"))?;
    if alg == Algorithm::ES256 {
        // Building a verifier checks that the point is on the curve; the signature is junk.
        jsonwebtoken::crypto::verify("AA", b"probe", &key, alg)
            .map_err(|_| "the point (x, y) is not on the P-256 curve".to_owned())?;
    }
    Ok(Some((kid, KeyEntry { alg, key })))
}

/// Refuses keys that would parse but could never verify anything (or not safely).
fn check_key_material(obj: &serde_json::Map<String, Value>, alg: Algorithm) -> Result<(), String> {
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let text = obj
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("`{name}` is not valid base64url"))
    };
    if alg == Algorithm::RS256 {
        let n = bytes("n")?;
        let bits = match n.iter().position(|&b| b != 0) {
            Some(first) => (n.len() - first) * 8 - n[first].leading_zeros() as usize,
            None => 0,
        };
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed"
            ));
        }
        let e = bytes("e")?;
        let e = &e[e.iter().position(|&b| b != 0).unwrap_or(e.len())..];
        if e.is_empty() || e == [1] || e[e.len() - 1] & 1 == 0 {
            return Err("the RSA exponent `e` is not an odd number above 1".into());
        }
    } else if bytes("x")?.len() != 32 || bytes("y")?.len() != 32 {
        return Err("`x` and `y` must be 32 bytes each for P-256".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey};
    use serde_json::json;

    use super::*;

    // Test-only keys, see tests/fixtures/jwt/README.md. DER, because jsonwebtoken is built
    // without its `use_pem` feature.
    const RSA_A: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-a.key.der");
    const RSA_B: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-b.key.der");
    const RSA_A_PUB_PEM: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-a.pub.pem");
    const RSA_A_PUB_DER: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-a.pub.der");
    const EC_A: &[u8] = include_bytes!("../tests/fixtures/jwt/ec-a.key.der");
    const EC_B: &[u8] = include_bytes!("../tests/fixtures/jwt/ec-b.key.der");
    const JWKS: &str = include_str!("../tests/fixtures/jwt/jwks.json");
    const JWKS_ROTATED: &str = include_str!("../tests/fixtures/jwt/jwks-rotated.json");
    const SECRET: &str = "test-only-hs256-secret-0123456789abcdef";

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name)
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn claims() -> Value {
        json!({ "sub": "user-1", "aud": "tolk", "exp": now() + 600, "iat": now() })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            claims,
        )
    }

    fn rs(key: &[u8], kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::RS256,
            kid,
            &EncodingKey::from_rsa_der(key),
            claims,
        )
    }

    fn es(key: &[u8], kid: Option<&str>, claims: &Value) -> String {
        sign(
            Algorithm::ES256,
            kid,
            &EncodingKey::from_ec_der(key),
            claims,
        )
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// A correctly signed HS256 token made of raw (possibly broken) segments, for headers and
    /// payloads `encode` will not write.
    fn hs_raw(header: &str, payload: &str) -> String {
        let message = format!("{header}.{payload}");
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn config() -> JwtConfig {
        JwtConfig {
            hs256_secret: Some(SECRET.into()),
            jwks_file: Some(fixture("jwks.json")),
            ..JwtConfig::default()
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(config()).unwrap()
    }

    fn jwks_only() -> JwtVerifier {
        JwtVerifier::new(JwtConfig {
            hs256_secret: None,
            ..config()
        })
        .unwrap()
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tolk-auth-jwt-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes `file` and moves its modification time `ahead` into the future, so that a
        /// rewrite within the file system's time granularity still looks changed.
        fn write(&self, file: &str, contents: &str, ahead: Duration) -> PathBuf {
            let path = self.0.join(file);
            fs::write(&path, contents).unwrap();
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() + ahead)
                .unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn config_error(jwks: &str) -> String {
        let dir = TempDir::new(&format!("bad-{:x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            jwks.hash(&mut h);
            h.finish()
        }));
        let path = dir.write("jwks.json", jwks, Duration::ZERO);
        match JwtVerifier::new(JwtConfig {
            jwks_file: Some(path),
            ..JwtConfig::default()
        }) {
            Err(JwtError::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn valid_hs256() {
        let token = hs(&with(
            with(claims(), "user_tier", json!("pro")),
            "jti",
            json!("j-1"),
        ));
        let c = verifier().verify(&token).unwrap();
        assert_eq!(c.sub, "user-1");
        assert_eq!(c.user_tier.as_deref(), Some("pro"));
        assert_eq!(c.jti.as_deref(), Some("j-1"));
        assert!(c.exp > now());
        assert!(c.iat.is_some());
        assert!(c.permissions.is_empty());
        assert_eq!(c.rate_limits, None);
    }

    #[test]
    fn valid_rs256_and_es256() {
        let v = verifier();
        assert_eq!(
            v.verify(&rs(RSA_A, Some("rsa-a"), &claims())).unwrap().sub,
            "user-1"
        );
        assert_eq!(
            v.verify(&es(EC_A, Some("ec-a"), &claims())).unwrap().sub,
            "user-1"
        );
    }

    #[test]
    fn fractional_dates_accepted() {
        let c = claims();
        let c = with(c, "exp", json!(now() as f64 + 600.5));
        let c = with(c, "iat", json!(now() as f64 - 0.25));
        assert!(verifier().verify(&hs(&c)).is_ok());
    }

    #[test]
    fn forged_signatures_rejected() {
        let v = verifier();
        // Signed by keys the verifier does not have, under the kid of one it has.
        assert_eq!(
            v.verify(&rs(RSA_B, Some("rsa-a"), &claims())),
            Err(JwtError::BadSignature)
        );
        assert_eq!(
            v.verify(&es(EC_B, Some("ec-a"), &claims())),
            Err(JwtError::BadSignature)
        );
        let other_secret = EncodingKey::from_secret(b"another-secret-0123456789abcdef-xyz");
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, None, &other_secret, &claims())),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn altered_payload_rejected() {
        let v = verifier();
        let forged = with(claims(), "sub", json!("admin"));
        for token in [hs(&claims()), rs(RSA_A, Some("rsa-a"), &claims())] {
            let parts: Vec<&str> = token.split('.').collect();
            let altered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
            assert_eq!(v.verify(&altered), Err(JwtError::BadSignature));
        }
    }

    #[test]
    fn expiry_with_leeway() {
        let v = verifier();
        let expired = with(claims(), "exp", json!(now() - 120));
        assert_eq!(v.verify(&hs(&expired)), Err(JwtError::Expired));
        let within_leeway = with(claims(), "exp", json!(now() - 10));
        assert!(v.verify(&hs(&within_leeway)).is_ok());
        assert_eq!(
            v.verify(&hs(&without(claims(), "exp"))),
            Err(JwtError::MissingClaim("exp".into()))
        );
    }

    #[test]
    fn not_before() {
        let v = verifier();
        let future = with(claims(), "nbf", json!(now() + 120));
        assert_eq!(v.verify(&hs(&future)), Err(JwtError::NotYetValid));
        let within_leeway = with(claims(), "nbf", json!(now() + 10));
        assert!(v.verify(&hs(&within_leeway)).is_ok());
    }

    #[test]
    fn issued_in_future() {
        let v = verifier();
        let future = with(claims(), "iat", json!(now() + 120));
        assert_eq!(v.verify(&hs(&future)), Err(JwtError::IssuedInFuture));
        let within_leeway = with(claims(), "iat", json!(now() + 10));
        assert!(v.verify(&hs(&within_leeway)).is_ok());
    }

    #[test]
    fn audience() {
        let v = verifier();
        let wrong = with(claims(), "aud", json!("billing"));
        assert_eq!(v.verify(&hs(&wrong)), Err(JwtError::WrongAudience));
        let array = with(claims(), "aud", json!(["billing", "tolk"]));
        assert!(v.verify(&hs(&array)).is_ok());
        let array_without = with(claims(), "aud", json!(["billing", "search"]));
        assert_eq!(v.verify(&hs(&array_without)), Err(JwtError::WrongAudience));
        assert_eq!(
            v.verify(&hs(&without(claims(), "aud"))),
            Err(JwtError::MissingClaim("aud".into()))
        );
    }

    #[test]
    fn issuer_when_configured() {
        let v = JwtVerifier::new(JwtConfig {
            issuer: Some("https://id.example".into()),
            ..config()
        })
        .unwrap();
        let right = with(claims(), "iss", json!("https://id.example"));
        assert!(v.verify(&hs(&right)).is_ok());
        let wrong = with(claims(), "iss", json!("https://evil.example"));
        assert_eq!(v.verify(&hs(&wrong)), Err(JwtError::WrongIssuer));
        assert_eq!(
            v.verify(&hs(&claims())),
            Err(JwtError::MissingClaim("iss".into()))
        );
        // Without a configured issuer, any (or none) is fine.
        assert!(verifier().verify(&hs(&wrong)).is_ok());
    }

    #[test]
    fn alg_none_rejected() {
        let v = verifier();
        for alg in ["none", "None", "NONE"] {
            let token = format!("{}.{}.", b64(&json!({ "alg": alg })), b64(&claims()));
            assert_eq!(
                v.verify(&token),
                Err(JwtError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    #[test]
    fn hs256_signed_with_rsa_public_key_rejected() {
        // The classic confusion attack: HMAC keyed with the server's RSA public key.
        for public_key in [RSA_A_PUB_PEM, RSA_A_PUB_DER] {
            let token = sign(
                Algorithm::HS256,
                Some("rsa-a"),
                &EncodingKey::from_secret(public_key),
                &claims(),
            );
            assert_eq!(verifier().verify(&token), Err(JwtError::BadSignature));
            assert_eq!(
                jwks_only().verify(&token),
                Err(JwtError::UnsupportedAlgorithm("HS256".into()))
            );
        }
    }

    #[test]
    fn rs256_without_jwks_rejected() {
        let hs_only = JwtVerifier::new(JwtConfig {
            jwks_file: None,
            ..config()
        })
        .unwrap();
        assert_eq!(
            hs_only.verify(&rs(RSA_A, Some("rsa-a"), &claims())),
            Err(JwtError::UnsupportedAlgorithm("RS256".into()))
        );
    }

    #[test]
    fn kid_of_other_key_type_rejected() {
        let v = verifier();
        assert_eq!(
            v.verify(&es(EC_A, Some("rsa-a"), &claims())),
            Err(JwtError::KeyMismatch {
                kid: "rsa-a".into(),
                alg: "ES256".into()
            })
        );
        assert_eq!(
            v.verify(&rs(RSA_A, Some("ec-a"), &claims())),
            Err(JwtError::KeyMismatch {
                kid: "ec-a".into(),
                alg: "RS256".into()
            })
        );
    }

    #[test]
    fn other_algorithms_rejected() {
        let v = verifier();
        let rs384 = sign(
            Algorithm::RS384,
            Some("rsa-a"),
            &EncodingKey::from_rsa_der(RSA_A),
            &claims(),
        );
        let ps256 = sign(
            Algorithm::PS256,
            Some("rsa-a"),
            &EncodingKey::from_rsa_der(RSA_A),
            &claims(),
        );
        let hs512 = sign(
            Algorithm::HS512,
            None,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims(),
        );
        for (token, alg) in [(rs384, "RS384"), (ps256, "PS256"), (hs512, "HS512")] {
            assert_eq!(
                v.verify(&token),
                Err(JwtError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    #[test]
    fn unknown_kid_rejected() {
        assert_eq!(
            verifier().verify(&rs(RSA_A, Some("nope"), &claims())),
            Err(JwtError::UnknownKey("nope".into()))
        );
    }

    #[test]
    fn token_without_kid() {
        // jwks.json has one RSA and one EC key: each is the only one of its type.
        let v = verifier();
        assert!(v.verify(&rs(RSA_A, None, &claims())).is_ok());
        assert!(v.verify(&es(EC_A, None, &claims())).is_ok());

        let mut two_rsa: Value = serde_json::from_str(JWKS).unwrap();
        let rsa_b: Value = serde_json::from_str(JWKS_ROTATED).unwrap();
        two_rsa["keys"]
            .as_array_mut()
            .unwrap()
            .push(rsa_b["keys"][0].clone());
        let dir = TempDir::new("two-rsa");
        let path = dir.write("jwks.json", &two_rsa.to_string(), Duration::ZERO);
        let v = JwtVerifier::new(JwtConfig {
            jwks_file: Some(path),
            ..JwtConfig::default()
        })
        .unwrap();
        assert_eq!(
            v.verify(&rs(RSA_A, None, &claims())),
            Err(JwtError::KidRequired)
        );
        assert!(v.verify(&es(EC_A, None, &claims())).is_ok());
        assert!(v.verify(&rs(RSA_B, Some("rsa-b"), &claims())).is_ok());
    }

    #[test]
    fn key_rotation() {
        let dir = TempDir::new("rotation");
        let path = dir.write("jwks.json", JWKS, Duration::ZERO);
        let v = JwtVerifier::new(JwtConfig {
            jwks_file: Some(path.clone()),
            ..JwtConfig::default()
        })
        .unwrap();
        let token_a = rs(RSA_A, Some("rsa-a"), &claims());
        let token_b = rs(RSA_B, Some("rsa-b"), &claims());
        assert!(v.verify(&token_a).is_ok());
        assert_eq!(
            v.verify(&token_b),
            Err(JwtError::UnknownKey("rsa-b".into()))
        );

        dir.write("jwks.json", JWKS_ROTATED, Duration::from_secs(10));
        // Checked less than JWKS_RELOAD_INTERVAL ago: the file is not looked at yet.
        assert_eq!(
            v.verify(&token_b),
            Err(JwtError::UnknownKey("rsa-b".into()))
        );
        assert!(v.verify(&token_a).is_ok());

        let mut v = v;
        v.jwks.as_mut().unwrap().min_reload_interval = Duration::ZERO;
        assert_eq!(v.verify(&token_b).unwrap().sub, "user-1");
        assert_eq!(
            v.verify(&token_a),
            Err(JwtError::UnknownKey("rsa-a".into()))
        );
        assert_eq!(
            v.verify(&es(EC_A, Some("ec-a"), &claims())),
            Err(JwtError::UnknownKey("ec-a".into()))
        );
    }

    #[test]
    fn reload_jwks_explicitly() {
        let dir = TempDir::new("reload");
        let path = dir.write("jwks.json", JWKS, Duration::ZERO);
        let v = JwtVerifier::new(JwtConfig {
            jwks_file: Some(path.clone()),
            ..JwtConfig::default()
        })
        .unwrap();
        let token_a = rs(RSA_A, Some("rsa-a"), &claims());
        assert_eq!(v.reload_jwks(), Ok(false));

        // A broken file leaves the loaded keys in place.
        dir.write("jwks.json", "{ not json", Duration::from_secs(10));
        assert!(
            matches!(v.reload_jwks(), Err(JwtError::Config(m)) if m.contains("not valid JSON"))
        );
        assert!(v.verify(&token_a).is_ok());

        // Removing a key revokes it without waiting for an unknown kid.
        dir.write("jwks.json", JWKS_ROTATED, Duration::from_secs(20));
        assert_eq!(v.reload_jwks(), Ok(true));
        assert_eq!(
            v.verify(&token_a),
            Err(JwtError::UnknownKey("rsa-a".into()))
        );
    }

    #[test]
    fn subject_required() {
        let v = verifier();
        assert_eq!(
            v.verify(&hs(&without(claims(), "sub"))),
            Err(JwtError::MissingClaim("sub".into()))
        );
        assert_eq!(
            v.verify(&hs(&with(claims(), "sub", json!("")))),
            Err(JwtError::MissingClaim("sub".into()))
        );
        assert!(matches!(
            v.verify(&hs(&with(claims(), "sub", json!(42)))),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn permissions_parsed() {
        let token = hs(&with(
            claims(),
            "permissions",
            json!([
                "stream:create",
                "billing:admin",
                "translate:read",
                "stream:create"
            ]),
        ));
        let c = verifier().verify(&token).unwrap();
        assert_eq!(c.permissions.len(), 4);
        assert!(c.permissions.iter().any(|p| p == "billing:admin"));
        assert_eq!(
            c.permissions(),
            vec![Permission::TranslateRead, Permission::StreamCreate]
        );
        assert!(c.has_permission(Permission::StreamCreate));
        assert!(!c.has_permission(Permission::TranslateWrite));

        let wrong_type = hs(&with(claims(), "permissions", json!("translate:read")));
        assert!(matches!(
            verifier().verify(&wrong_type),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn rate_limits_parsed() {
        let token = hs(&with(
            claims(),
            "rate_limits",
            json!({ "requests_per_minute": 10, "audio_minutes_per_day": 60 }),
        ));
        assert_eq!(
            verifier().verify(&token).unwrap().rate_limits,
            Some(LimitOverrides {
                requests_per_minute: Some(10),
                concurrent_streams: None,
                audio_minutes_per_day: Some(60),
            })
        );
        let bad = hs(&with(
            claims(),
            "rate_limits",
            json!({ "requests_per_minute": -1 }),
        ));
        assert!(matches!(
            verifier().verify(&bad),
            Err(JwtError::Malformed(_))
        ));
    }

    #[test]
    fn malformed_tokens() {
        let v = verifier();
        let good = hs(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        for token in [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.extra"),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", b64(&json!("HS256")), parts[1], parts[2]),
            format!(
                "{}.{}.{}",
                b64(&json!({ "typ": "JWT" })),
                parts[1],
                parts[2]
            ),
            hs_raw(parts[0], "!!!"),
            hs_raw(parts[0], &URL_SAFE_NO_PAD.encode("[1, 2]")),
            hs_raw(parts[0], &URL_SAFE_NO_PAD.encode("not json")),
            format!("{}.{}.!!!", parts[0], parts[1]),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(v.verify(&token), Err(JwtError::Malformed(_))),
                "{token:.80}: {:?}",
                v.verify(&token)
            );
        }
    }

    #[test]
    fn crit_header_rejected() {
        let header = json!({ "alg": "HS256", "crit": ["exp"] });
        let token = hs_raw(&b64(&header), &b64(&claims()));
        assert!(
            matches!(verifier().verify(&token), Err(JwtError::Malformed(m)) if m.contains("crit"))
        );
        // The same header without `crit` verifies: the rejection is about `crit` alone.
        let token = hs_raw(&b64(&json!({ "alg": "HS256" })), &b64(&claims()));
        assert!(verifier().verify(&token).is_ok());
    }

    #[test]
    fn short_hs_secret_refused() {
        let err = JwtVerifier::new(JwtConfig {
            hs256_secret: Some("x".repeat(MIN_HS256_SECRET_LEN - 1)),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, JwtError::Config(m) if m.contains("31 bytes")));
    }

    #[test]
    fn jwks_file_missing() {
        let path = std::env::temp_dir().join("tolk-auth-jwt-does-not-exist/jwks.json");
        let err = JwtVerifier::new(JwtConfig {
            jwks_file: Some(path.clone()),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, JwtError::Config(m) if m.contains(&path.display().to_string())),
            "{err}"
        );
    }

    #[test]
    fn jwks_file_errors_name_the_problem() {
        assert!(config_error("not json").contains("not valid JSON"));
        assert!(config_error(r#"{"kid": "x"}"#).contains("no `keys` array"));
        assert!(config_error(r#"{"keys": []}"#).contains("no signing keys"));

        let jwks: Value = serde_json::from_str(JWKS).unwrap();
        let rsa = jwks["keys"][0].clone();
        let ec = jwks["keys"][1].clone();
        let set = |second: Value| json!({ "keys": [rsa.clone(), second] }).to_string();
        let cases = [
            (json!({ "kty": "oct", "k": "c2VjcmV0" }), "symmetric"),
            (
                json!({ "kty": "OKP", "crv": "Ed25519", "x": "AA" }),
                "`OKP`",
            ),
            (with(ec.clone(), "crv", json!("P-384")), "P-384"),
            (with(rsa.clone(), "alg", json!("RS384")), "RS384"),
            (with(ec.clone(), "alg", json!("RS256")), "RS256"),
            (with(ec.clone(), "kid", json!("rsa-a")), "same kid"),
            (with(rsa.clone(), "n", json!("AQAB")), "17 bits"),
            (with(rsa.clone(), "e", json!("AQ")), "exponent"),
            (with(ec.clone(), "x", json!("AAAA")), "32 bytes"),
            (
                with(ec.clone(), "y", ec["x"].clone()),
                "not on the P-256 curve",
            ),
            (with(ec.clone(), "x", json!("*not base64*")), "base64"),
            (with(rsa.clone(), "use", json!("other")), "`use`"),
            (without(ec.clone(), "kty"), "no `kty`"),
        ];
        for (key, why) in cases {
            let message = config_error(&set(key.clone()));
            assert!(
                message.contains("keys[1]") && message.contains(why),
                "{key}: {message}"
            );
        }

        // Encryption keys are skipped, not refused.
        let dir = TempDir::new("enc-key");
        let enc = with(
            with(rsa.clone(), "use", json!("enc")),
            "kid",
            json!("enc-1"),
        );
        let path = dir.write("jwks.json", &set(without(enc, "alg")), Duration::ZERO);
        let v = JwtVerifier::new(JwtConfig {
            jwks_file: Some(path),
            ..JwtConfig::default()
        })
        .unwrap();
        assert_eq!(
            v.verify(&rs(RSA_A, Some("enc-1"), &claims())),
            Err(JwtError::UnknownKey("enc-1".into()))
        );
        assert!(v.verify(&rs(RSA_A, None, &claims())).is_ok());
    }

    #[test]
    fn not_configured() {
        let v = JwtVerifier::new(JwtConfig::default()).unwrap();
        assert!(!v.is_configured());
        assert_eq!(v.verify(&hs(&claims())), Err(JwtError::NotConfigured));
        assert!(verifier().is_configured());
        assert!(jwks_only().is_configured());
    }

    #[test]
    fn secret_never_printed() {
        let printed = format!("{:?} {:?}", config(), verifier());
        assert!(!printed.contains(SECRET), "{printed}");
    }

    #[test]
    fn verifier_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<JwtVerifier>();
    }
}
