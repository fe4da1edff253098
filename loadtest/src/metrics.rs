//! The server's own view, read from its Prometheus endpoint (or /proc as a fallback):
//! memory, open sessions, and time spent decoding. A plain blocking HTTP/1.1 GET is enough,
//! so the load tester needs no HTTP client dependency.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// Metric names the load tester reads.
pub const RSS: &str = "process_resident_memory_bytes";
pub const SESSIONS_ACTIVE: &str = "tolk_sessions_active";
pub const DECODE_SECONDS: &str = "tolk_asr_decode_seconds_total";
pub const DECODES: &str = "tolk_asr_decodes_total";

/// `ws[s]://host[:port]/anything?query` → `http[s]://host[:port]/metrics`: the metrics are
/// served by the same listener as the WebSocket endpoint.
pub fn metrics_url(ws_url: &str) -> Option<String> {
    let (scheme, rest) = ws_url.split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the URL (user:pass@) are not for /metrics.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{host}/metrics"))
}

/// `http://host[:port]/path` → ("host:port", "host", "/path"); https is refused (no TLS here).
fn split_http_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// is supported for metrics");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let has_port = match authority.rfind(']') {
        // [v6]:port
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((addr, authority.to_string(), path.to_string()))
}

/// GET `url` and return the body of a 200 response. Short timeouts: this runs between
/// measurements and must not stall a run against a server with no metrics.
pub fn http_get(url: &str) -> anyhow::Result<String> {
    let (addr, host, path) = split_http_url(url)?;
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let (status, body) = parse_response(&raw)?;
    if status != 200 {
        bail!("GET {url}: HTTP {status}");
    }
    Ok(body)
}

/// Status and body of a raw HTTP/1.x response (Content-Length, chunked, or until EOF).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = &raw[split + 4..];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&body[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

type Labels = Vec<(String, String)>;

/// One sample line of the Prometheus text format: name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // The value; a timestamp may follow it.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// Labels up to the closing `}`: values are quoted, with `\"`, `\\` and `\n` escapes.
fn parse_labels(mut s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

/// The value of `name` among the series carrying all of `labels` (others may be present),
/// summed when several match; `None` when no series matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        // Cheap prefix test first: /metrics may be long.
        if !line.starts_with(name) {
            continue;
        }
        let Some((n, series, value)) = parse_sample(line) else {
            continue;
        };
        let matches = labels
            .iter()
            .all(|(k, v)| series.iter().any(|(sk, sv)| sk == k && sv == v));
        if n == name && matches {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// VmRSS of a local process in bytes, from /proc: the fallback when the server does not
/// export its memory.
pub fn proc_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    vm_rss_bytes(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = match parts.next().unwrap_or("kB").to_ascii_lowercase().as_str() {
        "b" => 1,
        "kb" => 1024,
        "mb" => 1024 * 1024,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    Some(n * unit)
}

/// Cumulative whisper time and count of final decodes, from one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeCounters {
    pub seconds: f64,
    pub count: f64,
}

impl DecodeCounters {
    pub fn from_text(text: &str) -> Option<Self> {
        let kind = [("kind", "final")];
        Some(Self {
            seconds: metric_value(text, DECODE_SECONDS, &kind)?,
            count: metric_value(text, DECODES, &kind)?,
        })
    }

    /// Scrape the server now; `None` if it has no such metrics or cannot be reached.
    pub fn read(metrics_url: &str) -> Option<Self> {
        Self::from_text(&http_get(metrics_url).ok()?)
    }

    /// Mean milliseconds per final decode between two scrapes; `None` without decodes.
    pub fn mean_ms_since(&self, before: &Self) -> Option<f64> {
        let count = self.count - before.count;
        (count > 0.0).then(|| (self.seconds - before.seconds) / count * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tolk_sessions_active WebSocket sessions open now.
# TYPE tolk_sessions_active gauge
tolk_sessions_active 20
tolk_sessions_active_peak 31
tolk_asr_queue_depth{lane="final"} 2
tolk_asr_queue_depth{lane="partial"} 5
# TYPE tolk_asr_decode_seconds_total counter
tolk_asr_decode_seconds_total{kind="partial",model="base"} 12.5
tolk_asr_decode_seconds_total{model="base",kind="final"} 3.25 1712345678000
tolk_asr_decodes_total{kind="final"} 13
tolk_weird{note="a \"quoted\", {braced} value",kind="final"} 7
process_resident_memory_bytes 1.2345e8
"#;

    #[test]
    fn reads_plain_and_labelled_samples() {
        assert_eq!(metric_value(TEXT, SESSIONS_ACTIVE, &[]), Some(20.0));
        assert_eq!(metric_value(TEXT, RSS, &[]), Some(123_450_000.0));
        assert_eq!(
            metric_value(TEXT, "tolk_asr_queue_depth", &[("lane", "partial")]),
            Some(5.0)
        );
        // No label asked: every series of the name, summed.
        assert_eq!(metric_value(TEXT, "tolk_asr_queue_depth", &[]), Some(7.0));
        // Label order and extra labels do not matter; a timestamp is ignored.
        assert_eq!(
            metric_value(TEXT, DECODE_SECONDS, &[("kind", "final")]),
            Some(3.25)
        );
        assert_eq!(
            metric_value(TEXT, "tolk_weird", &[("kind", "final")]),
            Some(7.0)
        );
        assert_eq!(
            metric_value(
                TEXT,
                "tolk_weird",
                &[("note", "a \"quoted\", {braced} value")]
            ),
            Some(7.0)
        );
        assert_eq!(metric_value(TEXT, "tolk_missing", &[]), None);
        assert_eq!(metric_value(TEXT, DECODES, &[("kind", "partial")]), None);
    }

    #[test]
    fn decode_mean_is_the_difference_of_two_scrapes() {
        let before = DecodeCounters::from_text(TEXT).unwrap();
        assert_eq!(
            before,
            DecodeCounters {
                seconds: 3.25,
                count: 13.0
            }
        );
        let after = DecodeCounters {
            seconds: 4.25,
            count: 17.0,
        };
        assert_eq!(after.mean_ms_since(&before), Some(250.0));
        assert_eq!(before.mean_ms_since(&before), None);
        assert_eq!(DecodeCounters::from_text("tolk_sessions_active 1\n"), None);
    }

    #[test]
    fn metrics_url_from_ws_url() {
        let cases = [
            (
                "ws://127.0.0.1:8080/ws/translate",
                "http://127.0.0.1:8080/metrics",
            ),
            (
                "ws://host:9/ws/translate?token=abc&x=1",
                "http://host:9/metrics",
            ),
            ("ws://example.com/ws", "http://example.com/metrics"),
            (
                "wss://example.com:8443/ws",
                "https://example.com:8443/metrics",
            ),
            ("WS://[::1]:8080/ws/translate", "http://[::1]:8080/metrics"),
            ("ws://user:pw@h:1/ws", "http://h:1/metrics"),
            ("ws://h:1?token=a", "http://h:1/metrics"),
        ];
        for (ws, http) in cases {
            assert_eq!(metrics_url(ws).as_deref(), Some(http), "{ws}");
        }
        assert_eq!(metrics_url("ftp://h/ws"), None);
        assert_eq!(metrics_url("ws:///ws"), None);
        assert_eq!(metrics_url("no scheme"), None);
    }

    #[test]
    fn http_url_parts() {
        assert_eq!(
            split_http_url("http://127.0.0.1:8080/metrics").unwrap(),
            (
                "127.0.0.1:8080".into(),
                "127.0.0.1:8080".into(),
                "/metrics".into()
            )
        );
        assert_eq!(
            split_http_url("http://example.com/metrics").unwrap().0,
            "example.com:80"
        );
        assert_eq!(split_http_url("http://[::1]/m").unwrap().0, "[::1]:80");
        assert_eq!(split_http_url("http://[::1]:9/m").unwrap().0, "[::1]:9");
        assert!(split_http_url("https://h/metrics").is_err());
    }

    #[test]
    fn http_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(plain).unwrap(), (200, "hello".into()));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "wikipedia ".into()));
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert_eq!(parse_response(missing).unwrap().0, 404);
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn vm_rss_from_proc_status() {
        let status = "Name:\ttolk\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(12345 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        // This process has one.
        assert!(proc_rss_bytes(std::process::id()).unwrap() > 0);
    }
}
