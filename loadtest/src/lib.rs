//! `tolk-loadtest`: many simulated clients streaming real audio to tolk's WebSocket
//! endpoint at real-time pace, measuring latency percentiles.
//!
//! It depends on `tolk-protocol` alone among tolk's crates: it is a client, and speaks
//! only the wire protocol.
//!
//! Layout: [`audio`] (the clip and its frames), [`stream`] (one simulated client),
//! [`report`] (histograms and the summary), [`run`] (many streams at once), [`idle`]
//! (many connections that only stay open), [`metrics`] (the server's /metrics).
#![forbid(unsafe_code)]

pub mod audio;
pub mod idle;
pub mod metrics;
pub mod report;
pub mod stream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audio::Clip;
use metrics::DecodeCounters;
use report::Summary;
use stream::{run_stream, Live, StreamPlan, StreamReport};

/// Run `streams` clients at once, started `ramp_up` apart in total; prints a progress
/// line to stderr every second when `progress` is set. The server's decode counters are
/// scraped before and after, when it exports them, to split out whisper's share.
pub fn run(
    plan: &StreamPlan,
    clip: &Clip,
    streams: usize,
    ramp_up: Duration,
    progress: bool,
) -> (Summary, Vec<StreamReport>) {
    let metrics_url = metrics::metrics_url(&plan.url);
    let decodes = || metrics_url.as_deref().and_then(DecodeCounters::read);
    let decodes_before = decodes();
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let reports = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..streams)
            .map(|i| {
                let live = live.clone();
                let delay = if streams > 1 {
                    ramp_up.mul_f64(i as f64 / (streams - 1) as f64)
                } else {
                    Duration::ZERO
                };
                scope.spawn(move || {
                    std::thread::sleep(delay);
                    run_stream(plan, clip, live)
                })
            })
            .collect();
        if progress {
            let live = live.clone();
            let handles_done = || handles.iter().all(|h| h.is_finished());
            while !handles_done() {
                eprint!(
                    "\r[{:>5.1} s] streams {}/{}  partials {}  finals {}  errors {}   ",
                    start.elapsed().as_secs_f64(),
                    live.active.load(Ordering::Relaxed),
                    streams,
                    live.partials.load(Ordering::Relaxed),
                    live.finals.load(Ordering::Relaxed),
                    live.errors.load(Ordering::Relaxed)
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            eprintln!();
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect::<Vec<_>>()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let summary = Summary::of(&reports, elapsed)
        .with_server_decode(decodes_before, decodes_before.and_then(|_| decodes()));
    (summary, reports)
}
