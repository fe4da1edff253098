//! `/metrics` in Prometheus's text format, and the process-wide counters behind it.
//!
//! Pools time their own jobs (`tolk_actors::pool::PoolStats`); what only the server sees
//! (audio received, results and errors sent) is counted here, in statics, so that every
//! path that sends an error or a result counts it without threading a handle through.
//! Names are prefixed `tolk_`; histograms use `tolk_actors::histogram::LATENCY_BUCKETS`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tolk_actors::histogram::Snapshot;
use tolk_actors::pool::PoolStats;
use tolk_protocol::error::ErrorCode;

/// Where a request came in.
#[derive(Debug, Clone, Copy)]
pub enum Api {
    /// The WebSocket protocol.
    Ws = 0,
    /// HTTP (REST, and WebSocket upgrades refused before they open).
    Http = 1,
}

const APIS: [(&str, Api); 2] = [("ws", Api::Ws), ("http", Api::Http)];

/// What a client was sent.
#[derive(Debug, Clone, Copy)]
pub enum Result {
    /// An unstable `partial_result` (`is_final: false`).
    Interim = 0,
    /// A committed `partial_result`.
    Committed = 1,
    /// A stream's `final_result`.
    Final = 2,
    /// A sentence of speech (`tts_audio` + its frame).
    Speech = 3,
    /// A REST job that completed.
    JobCompleted = 4,
    /// A REST job that failed.
    JobFailed = 5,
    /// A `/translate/sync` answer.
    Sync = 6,
}

const RESULTS: [&str; 7] = [
    "interim",
    "committed",
    "final",
    "speech",
    "job_completed",
    "job_failed",
    "sync",
];

#[allow(clippy::declare_interior_mutable_const)] // each use is a fresh atomic: intended
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZEROS: [AtomicU64; ErrorCode::ALL.len()] = [ZERO; ErrorCode::ALL.len()];
static ERRORS: [[AtomicU64; ErrorCode::ALL.len()]; 2] = [ZEROS, ZEROS];
static RESULT_COUNTS: [AtomicU64; RESULTS.len()] = [ZERO; RESULTS.len()];
/// Audio received, in 16 kHz samples, by API.
static AUDIO_SAMPLES: [AtomicU64; 2] = [ZERO; 2];

pub fn error(api: Api, code: ErrorCode) {
    let i = ErrorCode::ALL
        .iter()
        .position(|c| *c == code)
        .expect("ALL lists every code (a protocol test checks it)");
    ERRORS[api as usize][i].fetch_add(1, Ordering::Relaxed);
}

pub fn result(kind: Result) {
    RESULT_COUNTS[kind as usize].fetch_add(1, Ordering::Relaxed);
}

/// `samples` of 16 kHz audio received.
pub fn audio(api: Api, samples: u64) {
    AUDIO_SAMPLES[api as usize].fetch_add(samples, Ordering::Relaxed);
}

/// Prometheus text exposition, built up metric by metric.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A metric with one sample and no labels.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one sample per label set (`labels` already formatted: `a="b"`).
    pub fn labelled<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, V)>,
    ) {
        self.head(name, kind, help);
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    /// A histogram with one series per label set.
    pub fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (String, &'a Snapshot)>,
    ) {
        self.head(name, "histogram", help);
        for (labels, s) in series {
            let sep = if labels.is_empty() { "" } else { "," };
            for (bound, count) in &s.cumulative {
                let le = if bound.is_infinite() {
                    "+Inf".to_string()
                } else {
                    bound.to_string()
                };
                let _ = writeln!(
                    self.out,
                    "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {count}"
                );
            }
            let braces = |l: &str| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{{{l}}}")
                }
            };
            let _ = writeln!(
                self.out,
                "{name}_sum{} {:.6}",
                braces(&labels),
                s.sum_seconds
            );
            let _ = writeln!(self.out, "{name}_count{} {}", braces(&labels), s.count);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The counters of this module.
pub fn counters(e: &mut Exposition) {
    e.labelled(
        "tolk_audio_seconds_total",
        "counter",
        "Audio received, in seconds, by API.",
        APIS.iter().map(|(name, api)| {
            let samples = AUDIO_SAMPLES[*api as usize].load(Ordering::Relaxed);
            (format!("api=\"{name}\""), samples as f64 / 16_000.0)
        }),
    );
    e.labelled(
        "tolk_results_total",
        "counter",
        "Results sent: stream partials (interim, committed), finals, speech; REST jobs and sync answers.",
        RESULTS.iter().enumerate().map(|(i, kind)| {
            (
                format!("kind=\"{kind}\""),
                RESULT_COUNTS[i].load(Ordering::Relaxed),
            )
        }),
    );
    let mut errors = Vec::new();
    for (name, api) in APIS {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let n = ERRORS[api as usize][i].load(Ordering::Relaxed);
            // Codes never sent are left out: 44 zero series say nothing.
            if n > 0 {
                errors.push((format!("api=\"{name}\",code=\"{}\"", code.as_str()), n));
            }
        }
    }
    e.labelled(
        "tolk_errors_total",
        "counter",
        "Errors sent to clients, by API and code (docs/protocol.md).",
        errors,
    );
}

/// Queue depth, busy workers and job timings of one pool.
pub struct PoolView {
    pub name: &'static str,
    pub queued: (usize, usize),
    pub busy: usize,
    pub workers: usize,
    pub stats: PoolStats,
}

impl PoolView {
    /// Read a pool now, under its own name ("asr", "vad", "translate", "tts").
    pub fn of<E: tolk_actors::pool::Engine>(pool: &tolk_actors::pool::Pool<E>) -> Self {
        Self {
            name: pool.name(),
            queued: pool.queued(),
            busy: pool.busy(),
            workers: pool.workers(),
            stats: pool.stats(),
        }
    }
}

pub fn pools(e: &mut Exposition, pools: &[PoolView]) {
    e.labelled(
        "tolk_pool_queue_depth",
        "gauge",
        "Jobs waiting, by pool and lane (high: finals and translations; normal: partials).",
        pools.iter().flat_map(|p| {
            [
                (format!("pool=\"{}\",lane=\"high\"", p.name), p.queued.0),
                (format!("pool=\"{}\",lane=\"normal\"", p.name), p.queued.1),
            ]
        }),
    );
    e.labelled(
        "tolk_pool_workers_busy",
        "gauge",
        "Workers running a job now, by pool.",
        pools
            .iter()
            .map(|p| (format!("pool=\"{}\"", p.name), p.busy)),
    );
    e.labelled(
        "tolk_pool_workers",
        "gauge",
        "Worker threads, by pool.",
        pools
            .iter()
            .map(|p| (format!("pool=\"{}\"", p.name), p.workers)),
    );
    e.labelled(
        "tolk_pool_jobs_failed_total",
        "counter",
        "Jobs whose engine returned an error, by pool.",
        pools
            .iter()
            .map(|p| (format!("pool=\"{}\"", p.name), p.stats.failed)),
    );
    let of = |name: &str| pools.iter().find(|p| p.name == name);
    if let Some(asr) = of("asr") {
        e.histogram(
            "tolk_asr_inference_seconds",
            "Whisper time per decode (stream windows and REST chunks).",
            [(String::new(), &asr.stats.busy)],
        );
    }
    if let Some(vad) = of("vad") {
        e.histogram(
            "tolk_vad_inference_seconds",
            "Silero VAD time per job.",
            [(String::new(), &vad.stats.busy)],
        );
    }
    if let Some(translation) = of("translate") {
        e.histogram(
            "tolk_translation_seconds",
            "Translation latency per segment: queue wait plus engine time.",
            [(String::new(), &translation.stats.latency)],
        );
    }
    if let Some(speech) = of("tts") {
        e.histogram(
            "tolk_tts_seconds",
            "Speech synthesis latency per sentence: queue wait plus engine time.",
            [(String::new(), &speech.stats.latency)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tolk_actors::histogram::Histogram;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let h = Histogram::new(&[0.5, 1.0]);
        h.observe(std::time::Duration::from_millis(200));
        h.observe(std::time::Duration::from_millis(700));
        let mut e = Exposition::default();
        e.histogram(
            "x_seconds",
            "help",
            [("pool=\"a\"".to_string(), &h.snapshot())],
        );
        let text = e.finish();
        for line in [
            "# TYPE x_seconds histogram",
            "x_seconds_bucket{pool=\"a\",le=\"0.5\"} 1",
            "x_seconds_bucket{pool=\"a\",le=\"1\"} 2",
            "x_seconds_bucket{pool=\"a\",le=\"+Inf\"} 2",
            "x_seconds_sum{pool=\"a\"} 0.900000",
            "x_seconds_count{pool=\"a\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn errors_are_counted_by_api_and_code() {
        error(Api::Ws, ErrorCode::TooFast);
        error(Api::Ws, ErrorCode::TooFast);
        error(Api::Http, ErrorCode::NotFound);
        let mut e = Exposition::default();
        counters(&mut e);
        let text = e.finish();
        let value = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        // Other tests in this process may count too: at least ours.
        assert!(value("tolk_errors_total{api=\"ws\",code=\"too_fast\"}") >= 2);
        assert!(value("tolk_errors_total{api=\"http\",code=\"not_found\"}") >= 1);
    }
}
