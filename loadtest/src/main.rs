//! `tolk-loadtest --url ws://127.0.0.1:8080/ws/translate --audio clip.wav --streams 4 --duration 30`
//! `tolk-loadtest --idle --streams 10000 --ramp-up 10 --duration 60` (memory per open connection)

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use tolk_loadtest::audio::Clip;
use tolk_loadtest::idle::{run_idle, IdlePlan};
use tolk_loadtest::stream::StreamPlan;

#[derive(Debug, Parser)]
#[command(
    name = "tolk-loadtest",
    about = "Many real-time streams against tolk; latency percentiles"
)]
struct Args {
    /// WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/translate")]
    url: String,
    /// WAV file each stream sends in a loop (16-bit PCM sent as pcm_s16le, at its own rate).
    #[arg(long, required_unless_present = "idle")]
    audio: Option<PathBuf>,
    /// Concurrent streams (with --idle: connections).
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Seconds of audio each stream sends (wall-clock at --speed 1); with --idle, seconds
    /// the connections are held once all are open.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds over which the streams are started.
    #[arg(long, default_value_t = 0.0)]
    ramp_up: f64,
    /// Pace: 1.0 = real time.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Milliseconds of audio per frame.
    #[arg(long, default_value_t = 100)]
    frame_ms: u64,
    /// Silence inserted after each loop of the clip, in ms (speech has pauses).
    #[arg(long, default_value_t = 1000)]
    gap_ms: u64,
    #[arg(long, default_value = "en")]
    source_lang: String,
    #[arg(long)]
    target_lang: Option<String>,
    #[arg(long)]
    tts: bool,
    /// Bearer token, sent as ?token=.
    #[arg(long)]
    token: Option<String>,
    /// Concurrency levels to run one after the other, e.g. 1,2,4,8.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Latency bound for --sweep: the largest N whose p95 final latency stays under it.
    #[arg(long, default_value_t = 1500.0)]
    slo_ms: f64,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Open --streams connections that never stream, hold them, and report the server's
    /// memory per connection (from /metrics, else --server-pid).
    #[arg(long, conflicts_with = "sweep")]
    idle: bool,
    /// The server's pid, for its RSS from /proc when /metrics has no
    /// process_resident_memory_bytes (the server must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let url = match &args.token {
        Some(t) => format!(
            "{}{}token={t}",
            args.url,
            if args.url.contains('?') { '&' } else { '?' }
        ),
        None => args.url.clone(),
    };
    if args.idle {
        return idle(&args, url);
    }
    let Some(audio) = &args.audio else {
        eprintln!("tolk-loadtest: --audio is required");
        return ExitCode::from(2);
    };
    let clip = match Clip::read(audio) {
        Ok(c) => c.with_silence(args.gap_ms),
        Err(e) => {
            eprintln!("tolk-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    let plan = StreamPlan {
        url,
        duration: Duration::from_secs_f64(args.duration),
        speed: args.speed,
        frame_ms: args.frame_ms,
        source_lang: args.source_lang.clone(),
        target_lang: args.target_lang.clone(),
        tts: args.tts,
        drain_timeout: Duration::from_secs(60),
    };
    let levels = if args.sweep.is_empty() {
        vec![args.streams]
    } else {
        args.sweep.clone()
    };
    let ramp_up = Duration::from_secs_f64(args.ramp_up);
    let mut results = Vec::new();
    for &n in &levels {
        if !args.json || levels.len() > 1 {
            eprintln!(
                "== {n} stream(s), {} s of {} at {}x",
                args.duration,
                audio.display(),
                args.speed
            );
        }
        let (summary, _) = tolk_loadtest::run(&plan, &clip, n, ramp_up, !args.json);
        eprint!("{}", summary.table());
        results.push(summary);
    }
    // The largest concurrency that dropped nothing and kept p95 final latency in bound.
    let best = results
        .iter()
        .filter(|s| {
            s.dropped == 0 && s.final_latency_ms.count > 0 && s.final_latency_ms.p95 <= args.slo_ms
        })
        .map(|s| s.streams)
        .max();
    if args.json {
        let last = if results.len() == 1 {
            serde_json::to_value(&results[0]).unwrap_or_default()
        } else {
            json!({ "sweep": results, "slo_ms": args.slo_ms, "max_streams_within_slo": best })
        };
        println!("{last}");
    } else if results.len() > 1 {
        match best {
            Some(n) => println!("largest N with p95 final latency ≤ {} ms: {n}", args.slo_ms),
            None => println!("no level kept p95 final latency ≤ {} ms", args.slo_ms),
        }
    }
    ExitCode::SUCCESS
}

/// `--idle`: hold connections open and measure what they cost the server.
fn idle(args: &Args, url: String) -> ExitCode {
    let mut plan = IdlePlan::new(url, args.streams, Duration::from_secs_f64(args.duration));
    plan.ramp_up = Duration::from_secs_f64(args.ramp_up);
    plan.server_pid = args.server_pid;
    if !args.json {
        eprintln!(
            "== {} idle connection(s), opened over {} s, held {} s",
            args.streams, args.ramp_up, args.duration
        );
    }
    match run_idle(&plan, !args.json) {
        Ok(summary) => {
            eprint!("{}", summary.table());
            if args.json {
                println!("{}", serde_json::to_value(&summary).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tolk-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
