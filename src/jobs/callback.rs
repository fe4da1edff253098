//! Delivery of a finished job to its `callback_url`: a signed JSON `POST`, retried with
//! exponential backoff.
//!
//! The body is a [`CallbackPayload`]. Receivers authenticate it by the
//! `X-Tolk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` header
//! (see [`verify`]); the timestamp lets them refuse replays, and `X-Tolk-Delivery` (the same
//! on every retry of one delivery) lets them drop duplicates, since a delivery whose answer
//! was lost is sent again.
//!
//! Because the server makes these requests on a client's behalf, targets on loopback,
//! private, link-local and similar addresses are refused (unless
//! [`CallbackConfig::allow_private`]) so that a callback cannot probe the network the server
//! sits in. The check is made on the addresses the host resolves to, and the connection is
//! pinned to a checked address, so a DNS answer that changes between check and connect
//! cannot slip past it.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use awc::error::SendRequestError;
use awc::http::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use awc::http::uri::Scheme;
use awc::http::{StatusCode, Uri};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tolk_protocol::rest::{CallbackPayload, CallbackStatus, JobStatus};

type HmacSha256 = Hmac<Sha256>;

/// Longest `callback_url` accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest wait a receiver's `Retry-After` can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Longest wait between attempts however many are configured, so that a large attempt
/// count does not push retries past the job's lifetime.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

const USER_AGENT_VALUE: &str = concat!("tolk/", env!("CARGO_PKG_VERSION"));
pub const SIGNATURE_HEADER: &str = "X-Tolk-Signature";
pub const EVENT_HEADER: &str = "X-Tolk-Event";
pub const DELIVERY_HEADER: &str = "X-Tolk-Delivery";

/// How callbacks are signed, where they may go and how hard delivery is tried.
#[derive(Clone)]
pub struct CallbackConfig {
    /// HMAC key. Without one callbacks are refused, since receivers could not tell ours
    /// from forged ones.
    pub secret: Option<String>,
    /// Allow loopback, private (RFC 1918, fc00::/7), link-local and unspecified targets:
    /// for tests and deployments whose receivers sit on the same network.
    pub allow_private: bool,
    /// Tries per delivery, the first included (0 counts as 1).
    pub attempts: u32,
    /// Wait before the first retry, doubled before each later one.
    pub backoff: Duration,
    /// Limit, in each attempt, on the DNS lookup and (separately) on connecting, sending
    /// and receiving the answer's head.
    pub timeout: Duration,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            secret: None,
            allow_private: false,
            attempts: 5,
            backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Keeps the secret out of logs.
impl fmt::Debug for CallbackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("allow_private", &self.allow_private)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A checked `callback_url`: where to send and which addresses may be connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    pub uri: Uri,
    /// Every address the host resolved to; all passed the address rule.
    pub addrs: Vec<SocketAddr>,
}

/// Why a URL was refused, and whether asking again later might change the answer (a DNS
/// failure might; a private address or a bad scheme will not).
#[derive(Debug)]
struct Refusal {
    message: String,
    transient: bool,
}

impl Refusal {
    fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }
}

impl CallbackConfig {
    /// The secret, unless unset or empty (an empty HMAC key signs nothing).
    fn key(&self) -> Option<&[u8]> {
        self.secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
    }

    /// Check a `callback_url` at submission, so a client learns of a bad one at once (as a
    /// 400) rather than from a job whose callback silently fails. The error says what is
    /// wrong in words meant for the client, after "callback_url: ".
    pub async fn validate_url(&self, url: &str) -> Result<CallbackTarget, String> {
        if self.key().is_none() {
            return Err(
                "callbacks are disabled on this server: it has no signing secret \
                 (set --callback-secret or TOLK_CALLBACK_SECRET)"
                    .into(),
            );
        }
        self.check(url).await.map_err(|r| r.message)
    }

    async fn check(&self, url: &str) -> Result<CallbackTarget, Refusal> {
        if url.len() > MAX_URL_LEN {
            return Err(Refusal::permanent(format!(
                "longer than {MAX_URL_LEN} characters"
            )));
        }
        let uri: Uri = url
            .parse()
            .map_err(|e| Refusal::permanent(format!("not a valid URL: {e}")))?;
        let default_port = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => 80,
            Some(s) if *s == Scheme::HTTPS => 443,
            _ => {
                return Err(Refusal::permanent(
                    "not an absolute http:// or https:// URL",
                ))
            }
        };
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            // awc would not send them anyway, and the URL is shown in the job's status.
            return Err(Refusal::permanent(
                "credentials (user:password@) are not allowed in it",
            ));
        }
        let host = uri.host().unwrap_or("");
        if host.is_empty() {
            return Err(Refusal::permanent("no host"));
        }
        let port = uri.port_u16().unwrap_or(default_port);

        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>();
        let addrs: Vec<SocketAddr> = match literal {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self.resolve(host, port).await?,
        };
        if !self.allow_private {
            for addr in &addrs {
                if let Some(class) = forbidden_class(addr.ip()) {
                    // A resolved address is not echoed: it would map the internal network.
                    let what = if literal.is_ok() {
                        format!("host {host} is a {class} address")
                    } else {
                        format!("host {host} resolves to a {class} address")
                    };
                    return Err(Refusal::permanent(format!(
                        "{what}; callbacks to loopback, private, link-local and other \
                         non-public addresses are refused"
                    )));
                }
            }
        }
        Ok(CallbackTarget { uri, addrs })
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        let transient = |message: String| Refusal {
            message,
            transient: true,
        };
        match tokio::time::timeout(self.timeout, tokio::net::lookup_host((host, port))).await {
            Err(_) => Err(transient(format!(
                "host {host} could not be resolved: lookup timed out"
            ))),
            Ok(Err(e)) => Err(transient(format!("host {host} could not be resolved: {e}"))),
            Ok(Ok(found)) => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for a in found {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if addrs.is_empty() {
                    Err(transient(format!("host {host} resolves to no address")))
                } else {
                    Ok(addrs)
                }
            }
        }
    }

    fn client(&self) -> awc::Client {
        // awc's rustls connector panics without a process-wide crypto provider; an error
        // here only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        awc::Client::builder()
            .connector(awc::Connector::new().timeout(self.timeout))
            .timeout(self.timeout)
            // A redirect could lead past the address rule, and receivers should be
            // configured with their real URL.
            .disable_redirects()
            .finish()
    }
}

/// The `X-Tolk-Signature` value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    let mut header = format!("t={timestamp},v1=");
    for b in tag.iter() {
        let _ = write!(header, "{b:02x}");
    }
    header
}

/// Whether `header` (an `X-Tolk-Signature` value) signs `body` with `secret` and was made
/// within `tolerance` seconds of `now` (Unix seconds). Any one of several `v1` entries may match,
/// so that a receiver can accept signatures by an old and a new secret while rotating.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut timestamp = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                if timestamp.is_some() {
                    return false;
                }
                match t.parse::<u64>() {
                    Ok(t) => timestamp = Some(t),
                    Err(_) => return false,
                }
            }
            Some(("v1", tag)) => tags.push(tag),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance {
        return false;
    }
    tags.into_iter().any(|tag| {
        decode_hex(tag).is_some_and(|tag| mac(secret, timestamp, body).verify_slice(&tag).is_ok())
    })
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Why `ip` may not be a callback target, or `None` when it is a public address.
fn forbidden_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        // 0.0.0.0 reaches the local host on Linux.
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (10, _) | (172, 16..=31) | (192, 168) => "private",
        // Includes cloud metadata services (169.254.169.254).
        (169, 254) => "link-local",
        // Shared address space (RFC 6598): inside a provider's network, and where some
        // clouds put their metadata services.
        (100, 64..=127) => "shared (carrier-grade NAT)",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if let Some(v4) = embedded_v4(ip) {
        // ::ffff:127.0.0.1 and the like reach the IPv4 address they carry.
        forbidden_v4(v4)
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast")
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(low),
        _ => None,
    }
}

/// The `X-Tolk-Event` name for a job that ended as `status`.
fn event_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Completed => "job.completed",
        JobStatus::Failed => "job.failed",
        JobStatus::Queued => "job.queued",
        JobStatus::Processing => "job.processing",
    }
}

/// How one attempt ended.
enum Outcome {
    Delivered,
    /// Worth trying again, after at least the given wait when the receiver asked for one.
    Retry(String, Option<Duration>),
    /// The address tried could not be connected to: worth trying again, on the host's next
    /// address if it has several.
    Unreachable(String),
    /// Trying again would get the same answer.
    GiveUp(String),
}

/// Deliver `payload` to `url`: up to `config.attempts` tries, waiting `config.backoff`,
/// then twice that, and so on between them. `on_attempt` sees the status after each try
/// (and once, with no try made, when callbacks are disabled) so the job's record can show
/// progress; the final status is also returned.
///
/// The URL is checked again before every try, since the host's addresses may have changed
/// since submission. Must run on an actix (tokio `LocalSet`) runtime: awc is not `Send`.
pub async fn deliver(
    config: &CallbackConfig,
    url: &str,
    payload: &CallbackPayload,
    mut on_attempt: impl FnMut(&CallbackStatus),
) -> CallbackStatus {
    let mut status = CallbackStatus {
        url: url.to_owned(),
        delivered: false,
        attempts: 0,
        last_error: None,
    };
    let Some(secret) = config.key() else {
        status.last_error = Some("callbacks are disabled: no signing secret is set".into());
        on_attempt(&status);
        return status;
    };
    let body = match serde_json::to_vec(payload) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            status.last_error = Some(format!("serializing the payload: {e}"));
            on_attempt(&status);
            return status;
        }
    };
    let delivery = Delivery {
        config,
        client: config.client(),
        url,
        secret,
        body,
        event: event_name(payload.status),
        id: uuid::Uuid::new_v4().to_string(),
    };
    let (event, id) = (delivery.event, &delivery.id);
    // Logged instead of the URL, whose path or query may hold the receiver's own token.
    let host = url.parse::<Uri>().ok();
    let host = host.as_ref().and_then(Uri::host).unwrap_or("?");
    let mut backoff = config.backoff;
    // Which of the host's addresses to connect to; moves on when one is unreachable.
    let mut address = 0;

    loop {
        status.attempts += 1;
        let more = status.attempts < config.attempts;
        let retry_in = match delivery.attempt(address).await {
            Outcome::Delivered => {
                status.delivered = true;
                status.last_error = None;
                None
            }
            Outcome::GiveUp(error) => {
                status.last_error = Some(error);
                None
            }
            Outcome::Retry(error, asked) => {
                status.last_error = Some(error);
                more.then(|| asked.map_or(backoff, |a| a.max(backoff)))
            }
            Outcome::Unreachable(error) => {
                status.last_error = Some(error);
                address += 1;
                more.then_some(backoff)
            }
        };
        on_attempt(&status);
        let attempts = status.attempts;
        match (&status.last_error, retry_in) {
            (None, _) => {
                tracing::info!(delivery = %id, host, event, attempts, "callback delivered");
                return status;
            }
            (Some(error), None) => {
                tracing::warn!(
                    delivery = %id, host, event, attempts, %error,
                    "callback not delivered"
                );
                return status;
            }
            (Some(error), Some(wait)) => {
                tracing::info!(
                    delivery = %id, host, event, attempts, %error, retry_in = ?wait,
                    "callback attempt failed"
                );
                tokio::time::sleep(wait).await;
                backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
            }
        }
    }
}

/// One delivery's fixed parts, shared by its attempts.
struct Delivery<'a> {
    config: &'a CallbackConfig,
    client: awc::Client,
    url: &'a str,
    secret: &'a [u8],
    body: Bytes,
    event: &'static str,
    /// `X-Tolk-Delivery`: the same on every attempt, so receivers can drop duplicates.
    id: String,
}

impl Delivery<'_> {
    /// POST once, to the host's `address`th address (wrapping round).
    async fn attempt(&self, address: usize) -> Outcome {
        let target = match self.config.check(self.url).await {
            Ok(target) => target,
            Err(r) if r.transient => return Outcome::Retry(r.message, None),
            Err(r) => return Outcome::GiveUp(format!("refused: {}", r.message)),
        };
        // Pinned to a checked address: awc would otherwise resolve the host again.
        let addr = target.addrs[address % target.addrs.len()];
        let signature = sign(self.secret, unix_now(), &self.body);
        let sent = self
            .client
            .post(target.uri)
            .address(addr)
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((USER_AGENT, USER_AGENT_VALUE))
            .insert_header((EVENT_HEADER, self.event))
            .insert_header((DELIVERY_HEADER, self.id.as_str()))
            .insert_header((SIGNATURE_HEADER, signature))
            .send_body(self.body.clone())
            .await;
        match sent {
            Ok(response) => judge(response.status(), response.headers()),
            Err(SendRequestError::Timeout) => Outcome::Retry(
                format!(
                    "timeout: no answer within {}",
                    humantime::format_duration(self.config.timeout)
                ),
                None,
            ),
            Err(SendRequestError::Connect(e)) => Outcome::Unreachable(format!("connect: {e}")),
            Err(SendRequestError::Url(e)) => Outcome::GiveUp(format!("invalid URL: {e}")),
            Err(e) => Outcome::Retry(format!("send: {e}"), None),
        }
    }
}

/// What a receiver's answer means for the delivery.
fn judge(status: StatusCode, headers: &HeaderMap) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error = format!("HTTP {status}");
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        let asked = (status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::SERVICE_UNAVAILABLE)
            .then(|| retry_after(headers))
            .flatten();
        Outcome::Retry(error, asked)
    } else if status.is_redirection() {
        Outcome::GiveUp(format!("{error} (redirects are not followed)"))
    } else {
        Outcome::GiveUp(error)
    }
}

/// A `Retry-After` in seconds, capped; HTTP dates are ignored (the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use awc::http::header::HeaderValue;

    use super::*;

    const SECRET: &str = "whsec_test";

    /// How the test receiver answers one request.
    #[derive(Clone, Copy)]
    enum Answer {
        Status(u16),
        /// 200, after this long.
        Slow(Duration),
    }

    struct Hit {
        at: Instant,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Hit {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// The receiver's script (answers in turn, then 200) and what it was sent.
    #[derive(Default)]
    struct Receiver {
        answers: Mutex<VecDeque<Answer>>,
        hits: Mutex<Vec<Hit>>,
    }

    impl Receiver {
        fn hits(&self) -> std::sync::MutexGuard<'_, Vec<Hit>> {
            self.hits.lock().unwrap()
        }
    }

    async fn receive(state: web::Data<Receiver>, req: HttpRequest, body: Bytes) -> HttpResponse {
        state.hits.lock().unwrap().push(Hit {
            at: Instant::now(),
            headers: req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
        });
        let answer = state.answers.lock().unwrap().pop_front();
        match answer.unwrap_or(Answer::Status(200)) {
            Answer::Slow(wait) => {
                actix_web::rt::time::sleep(wait).await;
                HttpResponse::Ok().finish()
            }
            Answer::Status(code) => {
                let mut response = HttpResponse::build(StatusCode::from_u16(code).unwrap());
                if (300..400).contains(&code) {
                    response.insert_header(("Location", "/elsewhere"));
                }
                response.finish()
            }
        }
    }

    /// A receiver on 127.0.0.1 answering `answers`; its URL and state.
    fn receiver(answers: &[Answer]) -> (String, Arc<Receiver>) {
        let state = Arc::new(Receiver {
            answers: Mutex::new(answers.iter().copied().collect()),
            ..Receiver::default()
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        (format!("http://{addr}/hook?token=abc"), state)
    }

    fn config(attempts: u32, backoff_ms: u64) -> CallbackConfig {
        CallbackConfig {
            secret: Some(SECRET.into()),
            allow_private: true,
            attempts,
            backoff: Duration::from_millis(backoff_ms),
            timeout: Duration::from_secs(2),
        }
    }

    fn payload(status: JobStatus) -> CallbackPayload {
        CallbackPayload {
            workflow_id: "job-1".into(),
            status,
            result: None,
            error: None,
        }
    }

    /// Deliver, and also collect what `on_attempt` saw.
    async fn run(
        config: &CallbackConfig,
        url: &str,
        status: JobStatus,
    ) -> (CallbackStatus, Vec<CallbackStatus>) {
        let mut seen = Vec::new();
        let done = deliver(config, url, &payload(status), |s| seen.push(s.clone())).await;
        assert_eq!(seen.last(), Some(&done));
        (done, seen)
    }

    #[actix_web::test]
    async fn delivered_first_time_with_a_verifiable_signature() {
        let (url, receiver) = receiver(&[]);
        let (done, seen) = run(&config(3, 10), &url, JobStatus::Completed).await;
        assert_eq!(
            done,
            CallbackStatus {
                url: url.clone(),
                delivered: true,
                attempts: 1,
                last_error: None
            }
        );
        assert_eq!(seen.len(), 1);

        let hits = receiver.hits();
        assert_eq!(hits.len(), 1);
        let hit = &hits[0];
        assert_eq!(
            hit.body,
            serde_json::to_vec(&payload(JobStatus::Completed)).unwrap()
        );
        assert_eq!(hit.header("content-type"), Some("application/json"));
        assert_eq!(hit.header("user-agent"), Some(USER_AGENT_VALUE));
        assert_eq!(hit.header("x-tolk-event"), Some("job.completed"));
        assert!(uuid::Uuid::parse_str(hit.header("x-tolk-delivery").unwrap()).is_ok());

        let signature = hit.header("x-tolk-signature").unwrap();
        let tolerance = 300;
        let now = unix_now();
        assert!(verify(
            SECRET.as_bytes(),
            signature,
            &hit.body,
            now,
            tolerance
        ));
        assert!(!verify(
            b"wrong secret",
            signature,
            &hit.body,
            now,
            tolerance
        ));
        let mut altered = hit.body.clone();
        altered[2] ^= 1;
        assert!(!verify(
            SECRET.as_bytes(),
            signature,
            &altered,
            now,
            tolerance
        ));
        assert!(!verify(
            SECRET.as_bytes(),
            signature,
            &hit.body,
            now + 301,
            tolerance
        ));
    }

    #[actix_web::test]
    async fn server_errors_are_retried_with_doubling_backoff() {
        let (url, receiver) = receiver(&[Answer::Status(500), Answer::Status(500)]);
        let (done, seen) = run(&config(5, 50), &url, JobStatus::Completed).await;
        assert!(done.delivered);
        assert_eq!(done.attempts, 3);
        assert_eq!(done.last_error, None);
        let progress: Vec<_> = seen
            .iter()
            .map(|s| (s.attempts, s.delivered, s.last_error.as_deref()))
            .collect();
        assert_eq!(
            progress,
            [
                (1, false, Some("HTTP 500 Internal Server Error")),
                (2, false, Some("HTTP 500 Internal Server Error")),
                (3, true, None)
            ]
        );

        let hits = receiver.hits();
        assert_eq!(hits.len(), 3);
        let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(gaps[0] >= Duration::from_millis(50), "{gaps:?}");
        assert!(gaps[1] >= Duration::from_millis(100), "{gaps:?}");
        assert!(gaps[1] < Duration::from_secs(2), "{gaps:?}");
        let delivery = hits[0].header("x-tolk-delivery");
        assert!(hits.iter().all(|h| h.header("x-tolk-delivery") == delivery));
        for hit in hits.iter() {
            let signature = hit.header("x-tolk-signature").unwrap();
            let ok = verify(SECRET.as_bytes(), signature, &hit.body, unix_now(), 60);
            assert!(ok);
        }
    }

    #[actix_web::test]
    async fn client_errors_are_not_retried() {
        let (url, receiver) = receiver(&[Answer::Status(400)]);
        let (done, _) = run(&config(5, 10), &url, JobStatus::Failed).await;
        assert!(!done.delivered);
        assert_eq!(done.attempts, 1);
        assert_eq!(done.last_error.as_deref(), Some("HTTP 400 Bad Request"));
        let hits = receiver.hits();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].header("x-tolk-event"), Some("job.failed"));
    }

    #[actix_web::test]
    async fn redirects_are_not_followed() {
        let (url, receiver) = receiver(&[Answer::Status(302)]);
        let (done, _) = run(&config(5, 10), &url, JobStatus::Completed).await;
        assert!(!done.delivered);
        assert_eq!(done.attempts, 1);
        assert!(done.last_error.unwrap().contains("302"));
        assert_eq!(receiver.hits().len(), 1);
    }

    #[actix_web::test]
    async fn gives_up_after_the_configured_attempts() {
        let (url, receiver) = receiver(&[Answer::Status(503); 5]);
        let (done, seen) = run(&config(3, 10), &url, JobStatus::Completed).await;
        assert!(!done.delivered);
        assert_eq!(done.attempts, 3);
        assert!(done.last_error.unwrap().contains("503"));
        assert_eq!(seen.len(), 3);
        assert_eq!(receiver.hits().len(), 3);
    }

    #[actix_web::test]
    async fn connection_refused_is_retried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let (done, seen) = run(&config(3, 10), &url, JobStatus::Completed).await;
        assert!(!done.delivered);
        assert_eq!(done.attempts, 3);
        assert_eq!(seen.len(), 3);
        let error = done.last_error.unwrap();
        assert!(error.starts_with("connect: "), "{error}");
    }

    #[actix_web::test]
    async fn a_slow_receiver_times_out_and_is_retried() {
        let (url, receiver) = receiver(&[Answer::Slow(Duration::from_secs(2))]);
        let config = CallbackConfig {
            timeout: Duration::from_millis(200),
            ..config(2, 10)
        };
        let (done, seen) = run(&config, &url, JobStatus::Completed).await;
        assert!(done.delivered);
        assert_eq!(done.attempts, 2);
        assert!(seen[0]
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("timeout"));
        assert_eq!(receiver.hits().len(), 2);
    }

    #[actix_web::test]
    async fn deliver_checks_the_address_again() {
        let (url, receiver) = receiver(&[]);
        let config = CallbackConfig {
            allow_private: false,
            ..config(5, 10)
        };
        let (done, _) = run(&config, &url, JobStatus::Completed).await;
        assert!(!done.delivered);
        assert_eq!(done.attempts, 1);
        assert!(done.last_error.unwrap().contains("loopback"));
        assert_eq!(receiver.hits().len(), 0);

        let disabled = CallbackConfig {
            secret: None,
            ..config
        };
        let (done, _) = run(&disabled, &url, JobStatus::Completed).await;
        assert_eq!((done.delivered, done.attempts), (false, 0));
        assert!(done.last_error.unwrap().contains("secret"));
    }

    #[actix_web::test]
    async fn validate_url_refuses_private_and_malformed_targets() {
        let strict = CallbackConfig {
            secret: Some(SECRET.into()),
            ..CallbackConfig::default()
        };
        for (url, expected) in [
            ("http://127.0.0.1/hook", "loopback"),
            ("http://localhost:8080/hook", "loopback"),
            ("http://[::1]/hook", "loopback"),
            ("http://10.1.2.3/hook", "private"),
            ("http://172.20.0.1/hook", "private"),
            ("https://192.168.0.1/hook", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://0.0.0.0/hook", "unspecified"),
            ("http://[::]/hook", "unspecified"),
            ("http://100.100.100.200/hook", "carrier-grade NAT"),
            ("http://[::ffff:127.0.0.1]/hook", "loopback"),
            ("http://[64:ff9b::a01:203]/hook", "private"),
            ("http://[fd00::1]/hook", "private"),
            ("http://[fe80::1]/hook", "link-local"),
            (
                "ftp://example.com/hook",
                "not an absolute http:// or https://",
            ),
            ("example.com/hook", "not a valid URL"),
            ("example.com:443", "http:// or https://"),
            ("/hook", "http:// or https://"),
            ("http:///hook", "not a valid URL"),
            ("https://user:pw@example.com/hook", "credentials"),
            ("http://exa mple.com/", "not a valid URL"),
        ] {
            let error = strict.validate_url(url).await.unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        let error = strict.validate_url(&long).await.unwrap_err();
        assert!(error.contains("longer than 2048"), "{error}");

        let no_secret = CallbackConfig::default();
        let error = no_secret
            .validate_url("https://93.184.215.14/hook")
            .await
            .unwrap_err();
        assert!(error.contains("--callback-secret") && error.contains("TOLK_CALLBACK_SECRET"));
        let empty_secret = CallbackConfig {
            secret: Some(String::new()),
            ..CallbackConfig::default()
        };
        assert!(empty_secret
            .validate_url("https://93.184.215.14/hook")
            .await
            .is_err());
    }

    #[actix_web::test]
    async fn validate_url_accepts_public_and_allowed_private_targets() {
        let strict = CallbackConfig {
            secret: Some(SECRET.into()),
            ..CallbackConfig::default()
        };
        let target = strict
            .validate_url("https://93.184.215.14/hook")
            .await
            .unwrap();
        assert_eq!(target.addrs, ["93.184.215.14:443".parse().unwrap()]);
        assert_eq!(target.uri.path(), "/hook");
        let target = strict
            .validate_url("http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8080/h")
            .await
            .unwrap();
        assert_eq!(target.addrs[0].port(), 8080);

        let lax = config(1, 10);
        let target = lax.validate_url("http://127.0.0.1:9/hook").await.unwrap();
        assert_eq!(target.addrs, ["127.0.0.1:9".parse().unwrap()]);
        assert!(lax.validate_url("http://[::1]/hook").await.is_ok());
        let target = lax.validate_url("http://localhost:9/hook").await.unwrap();
        assert!(target
            .addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 9));
        assert!(lax.validate_url("ftp://127.0.0.1/").await.is_err());
    }

    #[test]
    fn signature_format_and_verification() {
        // HMAC-SHA256("whsec_test", "1700000000.{\"ok\":true}"), by Python's hmac module.
        let header = sign(SECRET.as_bytes(), 1_700_000_000, br#"{"ok":true}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=85876387ad9d6be57a04653bc0729da757049f58afb10ba6cac3bedaecf4fda3"
        );
        let body = br#"{"ok":true}"#;
        let tolerance = 300;
        let check = |h: &str, now| verify(SECRET.as_bytes(), h, body, now, tolerance);
        assert!(check(&header, 1_700_000_000));
        assert!(check(&header, 1_700_000_300));
        assert!(check(&header, 1_699_999_700));
        assert!(!check(&header, 1_700_000_301));
        // A second v1 (another secret's) does not hurt; order does not matter.
        let v1 = header.split_once(",v1=").unwrap().1;
        assert!(check(
            &format!("v1={},t=1700000000,v1={v1}", "00".repeat(32)),
            1_700_000_000
        ));
        for bad in [
            "",
            "v1=85876387",
            "t=1700000000",
            &format!("t=1700000001,v1={v1}"),
            &format!("t=1700000000,t=1700000000,v1={v1}"),
            &format!("t=x,v1={v1}"),
            &format!("t=1700000000,v1={}", &v1[..62]),
            &format!("t=1700000000,v1=+{}", &v1[1..]),
            &format!("t=1700000000,v1={}", v1.to_uppercase().replace('8', "g")),
        ] {
            assert!(!check(bad, 1_700_000_000), "{bad}");
        }
        // Uppercase hex is still hex.
        assert!(check(
            &format!("t=1700000000,v1={}", v1.to_uppercase()),
            1_700_000_000
        ));
    }

    #[test]
    fn retry_after_is_honoured_when_longer_and_capped() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            headers
        };
        let asked = |status: u16, headers: &HeaderMap| match judge(
            StatusCode::from_u16(status).unwrap(),
            headers,
        ) {
            Outcome::Retry(_, asked) => asked,
            _ => panic!("{status} should be retried"),
        };
        assert_eq!(asked(429, &with("5")), Some(Duration::from_secs(5)));
        assert_eq!(asked(503, &with("3600")), Some(MAX_RETRY_AFTER));
        assert_eq!(asked(503, &with("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(asked(500, &with("5")), None);
        assert_eq!(asked(408, &HeaderMap::new()), None);
        assert!(matches!(
            judge(StatusCode::NO_CONTENT, &HeaderMap::new()),
            Outcome::Delivered
        ));
        assert!(matches!(
            judge(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Outcome::GiveUp(_)
        ));
    }
}
