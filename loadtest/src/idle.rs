//! Idle mode: many connections that only stay open, to measure what an open session costs
//! the server (memory per connection) and how many it admits.
//!
//! N may be 10,000, so there is no thread per connection: a small pool of threads does the
//! (blocking) handshakes and hands each socket, made non-blocking, to one thread that owns
//! them all. That thread reads every socket in turn (which answers the server's WebSocket
//! pings) and sends a `ping` message every [`IdlePlan::ping_interval`] (the server closes
//! a session that sends nothing for its idle timeout; WebSocket pongs do not count).

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::metrics;

/// What an idle run is asked to do.
#[derive(Debug, Clone)]
pub struct IdlePlan {
    pub url: String,
    pub connections: usize,
    /// Connection i is started at `ramp_up * i / (connections - 1)`.
    pub ramp_up: Duration,
    /// How long all are held open once opened, before closing them.
    pub hold: Duration,
    /// Interval of the app-level `ping` each connection sends: well under the server's
    /// idle timeout (60 s by default).
    pub ping_interval: Duration,
    /// Threads doing handshakes at once.
    pub connect_threads: usize,
    /// Bound on connect + handshake + `connected` for one connection.
    pub connect_timeout: Duration,
    /// Where the server's memory and session count are read; derived from `url`.
    pub metrics_url: Option<String>,
    /// The server's pid, to read its RSS from /proc when /metrics has no memory gauge.
    pub server_pid: Option<u32>,
}

impl IdlePlan {
    pub fn new(url: impl Into<String>, connections: usize, hold: Duration) -> Self {
        let url = url.into();
        Self {
            metrics_url: metrics::metrics_url(&url),
            url,
            connections,
            ramp_up: Duration::ZERO,
            hold,
            ping_interval: Duration::from_secs(20),
            connect_threads: 8,
            connect_timeout: Duration::from_secs(10),
            server_pid: None,
        }
    }
}

/// An idle run: what `--idle --json` prints as its last line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleSummary {
    /// Always "idle": tells this object apart from a streaming summary.
    pub mode: &'static str,
    /// Connections attempted.
    pub streams: usize,
    /// Connections that got `connected`.
    pub open: usize,
    /// Refused or failed connections by cause: `http_503`, `connect_refused`, `timeout`, …
    pub failed: BTreeMap<String, u64>,
    /// From the first connection started to the last one open or failed (ramp-up included).
    pub connect_s: f64,
    pub rss_before_bytes: Option<u64>,
    /// With all connections open.
    pub rss_open_bytes: Option<u64>,
    /// Just before closing, after the hold.
    pub rss_before_close_bytes: Option<u64>,
    /// (rss_open − rss_before) / open. Meaningful on a fresh server only: memory freed by
    /// earlier sessions stays in the allocator and is reused, so a second run reads low.
    pub bytes_per_connection: Option<f64>,
    /// Where the RSS came from: "metrics" (process_resident_memory_bytes) or "proc" (VmRSS).
    pub rss_source: Option<&'static str>,
    pub sessions_active_before: Option<u64>,
    /// `tolk_sessions_active` with all connections open.
    pub sessions_active: Option<u64>,
    pub sessions_active_before_close: Option<u64>,
    /// Open connections that the server closed, or that broke, before we closed them.
    pub dropped: usize,
    /// `error` messages the server sent on open connections, by code.
    pub server_errors: BTreeMap<String, u64>,
    pub held_s: f64,
    /// Anything that makes the numbers incomplete (no memory gauge, low fd limit, …).
    pub notes: Vec<String>,
}

impl IdleSummary {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "idle connections {}  open {}  failed {}  dropped {}  opened in {:.2} s  held {:.1} s\n",
            self.streams,
            self.open,
            self.failed.values().sum::<u64>(),
            self.dropped,
            self.connect_s,
            self.held_s
        );
        if !self.failed.is_empty() {
            out.push_str(&format!("failed: {}\n", list(&self.failed)));
        }
        if !self.server_errors.is_empty() {
            out.push_str(&format!("server errors: {}\n", list(&self.server_errors)));
        }
        let source = self.rss_source.unwrap_or("unknown");
        out.push_str(&format!(
            "server RSS ({source}): before {}  all open {}  before close {}",
            bytes(self.rss_before_bytes),
            bytes(self.rss_open_bytes),
            bytes(self.rss_before_close_bytes)
        ));
        match self.bytes_per_connection {
            Some(b) => out.push_str(&format!("  → {:.1} KiB per connection\n", b / 1024.0)),
            None => out.push('\n'),
        }
        let n = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        out.push_str(&format!(
            "sessions active: before {}  all open {}  before close {}\n",
            n(self.sessions_active_before),
            n(self.sessions_active),
            n(self.sessions_active_before_close)
        ));
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

fn list(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bytes(b: Option<u64>) -> String {
    b.map_or("?".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// (with − before) / open: the server's memory per open connection.
pub fn bytes_per_connection(
    before: Option<u64>,
    open_rss: Option<u64>,
    open: usize,
) -> Option<f64> {
    let (before, with) = (before?, open_rss?);
    (open > 0).then(|| (with as f64 - before as f64) / open as f64)
}

/// The server as seen at one moment.
#[derive(Debug, Default)]
struct Snapshot {
    rss: Option<u64>,
    rss_source: Option<&'static str>,
    sessions_active: Option<u64>,
}

/// Reads server state: /metrics first, /proc/PID/status for memory when /metrics has none.
struct Probe {
    metrics_url: Option<String>,
    server_pid: Option<u32>,
    notes: Vec<String>,
}

impl Probe {
    fn read(&mut self) -> Snapshot {
        let mut snap = Snapshot::default();
        let text = match &self.metrics_url {
            Some(url) => match metrics::http_get(url) {
                Ok(text) => Some(text),
                Err(e) => {
                    self.note(format!("reading {url}: {e:#}"));
                    None
                }
            },
            None => None,
        };
        if let Some(text) = &text {
            snap.sessions_active = metrics::metric_value(text, metrics::SESSIONS_ACTIVE, &[])
                .map(|v| v.max(0.0) as u64);
            if snap.sessions_active.is_none() {
                self.note(format!("{} absent from /metrics", metrics::SESSIONS_ACTIVE));
            }
            snap.rss = metrics::metric_value(text, metrics::RSS, &[]).map(|v| v.max(0.0) as u64);
            if snap.rss.is_some() {
                snap.rss_source = Some("metrics");
            } else {
                self.note(format!("{} absent from /metrics", metrics::RSS));
            }
        }
        if snap.rss.is_none() {
            match self.server_pid {
                Some(pid) => match metrics::proc_rss_bytes(pid) {
                    Ok(rss) => {
                        snap.rss = Some(rss);
                        snap.rss_source = Some("proc");
                    }
                    Err(e) => self.note(format!("{e:#}")),
                },
                None => self.note(
                    "server memory unknown: no memory gauge in /metrics and no --server-pid".into(),
                ),
            }
        }
        snap
    }

    /// Each note once, however many snapshots repeat it.
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }
}

type Socket = WebSocket<TcpStream>;

/// Counters the owner thread and the connectors update, for the progress line.
#[derive(Debug, Default)]
struct Live {
    open: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    /// When the last connection attempt ended, in µs since the start.
    last_done_us: AtomicU64,
}

/// Open `plan.connections`, hold them, close them; prints progress to stderr when
/// `progress` is set. Fails only on a URL it cannot use.
pub fn run_idle(plan: &IdlePlan, progress: bool) -> anyhow::Result<IdleSummary> {
    let target = resolve(&plan.url)?;
    let mut probe = Probe {
        metrics_url: plan.metrics_url.clone(),
        server_pid: plan.server_pid,
        notes: Vec::new(),
    };
    if let Some(limit) = open_files_limit() {
        if plan.connections as u64 + 32 > limit {
            probe.note(format!(
                "the open-file limit is {limit}: raise it (ulimit -n) for {} connections",
                plan.connections
            ));
        }
    }
    let before = probe.read();
    let live = Live::default();
    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut summary = std::thread::scope(|scope| {
        let (to_owner, sockets) = mpsc::channel::<Socket>();
        let owner = scope.spawn(|| hold_all(sockets, plan.ping_interval, &stop, &live));
        let connectors: Vec<_> = (0..plan.connect_threads.clamp(1, plan.connections.max(1)))
            .map(|_| {
                let to_owner = to_owner.clone();
                let (next, live, target) = (&next, &live, &target);
                scope.spawn(move || {
                    let mut failed = BTreeMap::<String, u64>::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= plan.connections {
                            return failed;
                        }
                        let due = start + ramp_delay(plan.ramp_up, i, plan.connections);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let result = open_one(&plan.url, target, plan.connect_timeout);
                        let done_us = start.elapsed().as_micros() as u64;
                        live.last_done_us.fetch_max(done_us, Ordering::Relaxed);
                        match result {
                            Ok(ws) => {
                                live.open.fetch_add(1, Ordering::Relaxed);
                                if to_owner.send(ws).is_err() {
                                    return failed;
                                }
                            }
                            Err(code) => {
                                live.failed.fetch_add(1, Ordering::Relaxed);
                                *failed.entry(code).or_default() += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        drop(to_owner);
        while progress && !connectors.iter().all(|h| h.is_finished()) {
            eprint!(
                "\r[{:>5.1} s] open {}/{}  failed {}   ",
                start.elapsed().as_secs_f64(),
                live.open.load(Ordering::Relaxed),
                plan.connections,
                live.failed.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let mut failed = BTreeMap::new();
        for h in connectors {
            for (code, n) in h.join().unwrap_or_default() {
                *failed.entry(code).or_insert(0) += n;
            }
        }
        // Not the join's time: the progress line polls every 250 ms.
        let connect_s = live.last_done_us.load(Ordering::Relaxed) as f64 / 1e6;
        if progress {
            eprintln!(
                "\r[{connect_s:>5.1} s] open {}/{}  failed {}   ",
                live.open.load(Ordering::Relaxed),
                plan.connections,
                live.failed.load(Ordering::Relaxed)
            );
        }
        // Let the server finish setting up the last sessions before measuring.
        std::thread::sleep(Duration::from_millis(500));
        let open_snap = probe.read();
        let held = Instant::now();
        while held.elapsed() < plan.hold {
            if progress {
                eprint!(
                    "\r[{:>5.1} s] holding {} open, dropped {}   ",
                    start.elapsed().as_secs_f64(),
                    live.open
                        .load(Ordering::Relaxed)
                        .saturating_sub(live.dropped.load(Ordering::Relaxed)),
                    live.dropped.load(Ordering::Relaxed)
                );
            }
            std::thread::sleep(
                (plan.hold - held.elapsed().min(plan.hold)).min(Duration::from_millis(250)),
            );
        }
        if progress {
            eprintln!();
        }
        let close_snap = probe.read();
        let held_s = held.elapsed().as_secs_f64();
        stop.store(true, Ordering::Release);
        let server_errors = owner.join().unwrap_or_default();
        let open = live.open.load(Ordering::Relaxed);
        IdleSummary {
            mode: "idle",
            streams: plan.connections,
            open,
            failed,
            connect_s,
            rss_before_bytes: before.rss,
            rss_open_bytes: open_snap.rss,
            rss_before_close_bytes: close_snap.rss,
            bytes_per_connection: (before.rss_source == open_snap.rss_source)
                .then(|| bytes_per_connection(before.rss, open_snap.rss, open))
                .flatten(),
            rss_source: open_snap.rss_source.or(before.rss_source),
            sessions_active_before: before.sessions_active,
            sessions_active: open_snap.sessions_active,
            sessions_active_before_close: close_snap.sessions_active,
            dropped: live.dropped.load(Ordering::Relaxed),
            server_errors,
            held_s,
            notes: Vec::new(),
        }
    });
    if summary.failed.contains_key("too_many_open_files") {
        probe.note("connections failed for lack of file descriptors: raise ulimit -n".into());
    }
    summary.notes = probe.notes;
    Ok(summary)
}

/// When connection `i` of `n` starts, relative to the first.
fn ramp_delay(ramp_up: Duration, i: usize, n: usize) -> Duration {
    if n > 1 {
        ramp_up.mul_f64(i as f64 / (n - 1) as f64)
    } else {
        Duration::ZERO
    }
}

/// The address to connect to, resolved once (not 10,000 times). Only ws:// is supported:
/// the idle sockets are plain TCP streams.
fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let request = url
        .into_client_request()
        .with_context(|| format!("bad URL {url}"))?;
    let uri = request.uri();
    if uri.scheme_str() != Some("ws") {
        bail!("{url}: --idle supports ws:// only");
    }
    let host = uri.host().context("URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))
}

/// Connect, handshake, and wait for `connected`; the socket is then non-blocking.
/// Errors are the cause's code for the report.
fn open_one(url: &str, addr: &SocketAddr, timeout: Duration) -> Result<Socket, String> {
    let deadline = Instant::now() + timeout;
    let stream = TcpStream::connect_timeout(addr, timeout).map_err(|e| io_code(&e))?;
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| io_code(&e))?;
    let request = url
        .into_client_request()
        .map_err(|_| "bad_url".to_string())?;
    // Small buffers: an idle connection receives a few short messages, and 10,000 of the
    // default 128 KiB read buffers would be over a GiB on this side.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut ws = match tungstenite::client::client_with_config(request, stream, Some(config)) {
        Ok((ws, _)) => ws,
        Err(HandshakeError::Failure(e)) => return Err(ws_code(&e)),
        // A blocking read that timed out.
        Err(HandshakeError::Interrupted(_)) => return Err("timeout".into()),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no_connected_message".into());
        }
        let _ = ws.get_ref().set_read_timeout(Some(left));
        match ws.read() {
            Ok(Message::Text(text)) => match message_type(&text) {
                (Some("connected"), _) => break,
                (Some("error"), code) => return Err(code.unwrap_or_else(|| "error".into())),
                _ => {}
            },
            Ok(Message::Close(_)) => return Err("closed_before_connected".into()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no_connected_message".into())
            }
            Err(e) => return Err(ws_code(&e)),
        }
    }
    ws.get_ref()
        .set_nonblocking(true)
        .map_err(|e| io_code(&e))?;
    Ok(ws)
}

/// The report's code for a WebSocket error.
fn ws_code(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(r) => format!("http_{}", r.status().as_u16()),
        tungstenite::Error::Io(e) => io_code(e),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "connection_reset".into()
        }
        tungstenite::Error::Protocol(_) => "protocol_error".into(),
        _ => "handshake_failed".into(),
    }
}

/// The report's code for a socket error: the causes that need different fixes apart.
fn io_code(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match (e.kind(), e.raw_os_error()) {
        // EMFILE, ENFILE: this side's (or the system's) descriptor limit.
        (_, Some(24 | 23)) => "too_many_open_files",
        // EADDRNOTAVAIL: out of local ports.
        (_, Some(99)) => "no_local_port",
        (ConnectionRefused, _) => "connect_refused",
        (TimedOut | WouldBlock, _) => "timeout",
        (ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof, _) => "connection_reset",
        _ => "connect_failed",
    }
    .into()
}

/// One held connection.
struct Held {
    ws: Socket,
    next_ping: Instant,
}

/// The owner thread: keeps every socket it is sent alive until `stop`, then closes them
/// all. Returns the `error` codes the server sent.
fn hold_all(
    sockets: mpsc::Receiver<Socket>,
    ping_interval: Duration,
    stop: &AtomicBool,
    live: &Live,
) -> BTreeMap<String, u64> {
    // Well inside the server's 30 s pong deadline, and cheap: one pass over 10,000 sockets
    // is 10,000 reads that find nothing.
    const PASS: Duration = Duration::from_millis(200);
    let ping = Message::text(r#"{"type":"ping"}"#);
    let mut held: Vec<Held> = Vec::new();
    let mut errors = BTreeMap::new();
    loop {
        // Checked before taking the last sockets: every connector has finished by now.
        let stopping = stop.load(Ordering::Acquire);
        while let Ok(ws) = sockets.try_recv() {
            held.push(Held {
                ws,
                next_ping: Instant::now() + ping_interval,
            });
        }
        if stopping {
            break;
        }
        let pass = Instant::now();
        held.retain_mut(|h| {
            let alive = service(h, &mut errors)
                && (pass < h.next_ping || {
                    h.next_ping = pass + ping_interval;
                    sent(h.ws.send(ping.clone()))
                });
            if !alive {
                live.dropped.fetch_add(1, Ordering::Relaxed);
            }
            alive
        });
        std::thread::sleep(PASS.saturating_sub(pass.elapsed()));
    }
    close_all(held);
    errors
}

/// Read whatever has arrived (which also writes the pongs tungstenite queued); false once
/// the connection is closed or broken.
fn service(h: &mut Held, errors: &mut BTreeMap<String, u64>) -> bool {
    loop {
        match h.ws.read() {
            Ok(Message::Text(text)) => {
                if let (Some("error"), code) = message_type(&text) {
                    *errors
                        .entry(code.unwrap_or_else(|| "error".into()))
                        .or_default() += 1;
                }
            }
            Ok(Message::Close(_)) => return false,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return true
            }
            Err(_) => return false,
        }
    }
}

/// A server message's `type` and, for errors, `code`. Only these two fields are read so
/// that idle mode keeps working whatever else the messages carry.
fn message_type(text: &str) -> (Option<&'static str>, Option<String>) {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return (None, None);
    };
    let kind = match value.get("type").and_then(|t| t.as_str()) {
        Some("connected") => Some("connected"),
        Some("error") => Some("error"),
        _ => None,
    };
    let code = value
        .get("code")
        .and_then(|c| c.as_str())
        .map(str::to_string);
    (kind, code)
}

/// Whether a write on a non-blocking socket went out or was buffered for later.
fn sent(result: tungstenite::Result<()>) -> bool {
    match result {
        Ok(()) => true,
        // Buffered by tungstenite; the next read or write flushes it.
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => true,
        Err(tungstenite::Error::WriteBufferFull(_)) => true,
        Err(_) => false,
    }
}

/// Send every close frame, then give the close handshakes a moment to finish so the
/// server sees clean closes rather than resets.
fn close_all(mut held: Vec<Held>) {
    held.retain_mut(|h| sent(h.ws.close(None)));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !held.is_empty() && Instant::now() < deadline {
        held.retain_mut(|h| loop {
            match h.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break true
                }
                // ConnectionClosed: the handshake is complete.
                Err(_) => break false,
            }
        });
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The soft limit on open files, from /proc/self/limits (Linux).
fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn memory_per_connection() {
        assert_eq!(
            bytes_per_connection(Some(1_000), Some(21_000), 20),
            Some(1_000.0)
        );
        assert_eq!(bytes_per_connection(Some(1_000), Some(21_000), 0), None);
        assert_eq!(bytes_per_connection(None, Some(21_000), 20), None);
        // Memory can shrink between two readings; that is reported, not hidden.
        assert_eq!(
            bytes_per_connection(Some(2_000), Some(1_000), 10),
            Some(-100.0)
        );
    }

    #[test]
    fn ramp_spreads_starts() {
        let ramp = Duration::from_secs(10);
        assert_eq!(ramp_delay(ramp, 0, 11), Duration::ZERO);
        assert_eq!(ramp_delay(ramp, 5, 11), Duration::from_secs(5));
        assert_eq!(ramp_delay(ramp, 10, 11), ramp);
        assert_eq!(ramp_delay(ramp, 0, 1), Duration::ZERO);
    }

    #[test]
    fn error_codes() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            io_code(&Error::from_raw_os_error(24)),
            "too_many_open_files"
        );
        assert_eq!(
            io_code(&Error::from(ErrorKind::ConnectionRefused)),
            "connect_refused"
        );
        assert_eq!(io_code(&Error::from(ErrorKind::WouldBlock)), "timeout");
        assert_eq!(io_code(&Error::other("x")), "connect_failed");
        assert_eq!(
            ws_code(&tungstenite::Error::ConnectionClosed),
            "connection_reset"
        );
    }

    #[test]
    fn open_files_limit_line() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             63704                63704                processes\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_open_files_limit(limits), Some(1024));
        assert_eq!(parse_open_files_limit("nothing"), None);
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn summary_json_has_the_agreed_fields() {
        let mut failed = BTreeMap::new();
        failed.insert("http_503".to_string(), 15);
        let s = IdleSummary {
            mode: "idle",
            streams: 20,
            open: 5,
            failed,
            connect_s: 0.25,
            rss_before_bytes: Some(100 << 20),
            rss_open_bytes: Some((100 << 20) + 5 * 40_960),
            bytes_per_connection: Some(40_960.0),
            rss_source: Some("metrics"),
            sessions_active: Some(5),
            ..Default::default()
        };
        let json = serde_json::to_value(&s).unwrap();
        for field in [
            "mode",
            "streams",
            "open",
            "failed",
            "connect_s",
            "rss_before_bytes",
            "rss_open_bytes",
            "bytes_per_connection",
            "sessions_active",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(json["mode"], "idle");
        assert_eq!(json["failed"]["http_503"], 15);
        assert_eq!(json["bytes_per_connection"], 40_960.0);
        // Unknown readings are null, not left out.
        assert!(json["rss_before_close_bytes"].is_null());
        let table = s.table();
        assert!(table.contains("open 5  failed 15"), "{table}");
        assert!(table.contains("http_503 15"), "{table}");
        assert!(table.contains("40.0 KiB per connection"), "{table}");
    }

    #[test]
    fn refuses_urls_it_cannot_hold() {
        assert!(resolve("wss://127.0.0.1:1/ws").is_err());
        assert!(resolve("not a url").is_err());
        assert_eq!(
            resolve("ws://127.0.0.1:9/ws/translate?token=x").unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }

    /// A minimal server: the handshake, `connected`, then echoes nothing; records pings.
    #[test]
    fn holds_pings_and_closes_against_a_local_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pings = std::sync::Arc::new(AtomicUsize::new(0));
        let server_pings = pings.clone();
        let server = std::thread::spawn(move || {
            let mut handlers = Vec::new();
            for (i, stream) in listener.incoming().take(4).enumerate() {
                let stream = stream.unwrap();
                let pings = server_pings.clone();
                handlers.push(std::thread::spawn(move || {
                    if i == 3 {
                        // The fourth is refused as at capacity.
                        use std::io::{Read, Write};
                        let mut s = stream;
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                        );
                        return;
                    }
                    let mut ws = tungstenite::accept(stream).unwrap();
                    ws.send(Message::text(r#"{"type":"connected","session_id":"s"}"#))
                        .unwrap();
                    let _ = ws.send(Message::Ping(Vec::new().into()));
                    while let Ok(m) = ws.read() {
                        if m.to_text().is_ok_and(|t| t.contains("\"ping\"")) {
                            pings.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        let mut plan = IdlePlan::new(
            format!("ws://{addr}/ws/translate"),
            4,
            Duration::from_millis(700),
        );
        plan.ping_interval = Duration::from_millis(200);
        // The test server answers WebSockets only.
        plan.metrics_url = None;
        plan.connect_threads = 1;
        let s = run_idle(&plan, false).unwrap();
        server.join().unwrap();
        // Parse failures of `connected` would show as no_connected_message.
        assert_eq!((s.open, s.dropped), (3, 0), "{}", s.table());
        assert_eq!(s.failed.get("http_503"), Some(&1), "{}", s.table());
        // 3 connections × at least 3 intervals in 0.5 s settle + 0.7 s hold.
        assert!(
            pings.load(Ordering::Relaxed) >= 6,
            "{}",
            pings.load(Ordering::Relaxed)
        );
        // No /metrics on this server.
        assert!(s.rss_open_bytes.is_none() && s.bytes_per_connection.is_none());
        assert!(!s.notes.is_empty());
    }
}
