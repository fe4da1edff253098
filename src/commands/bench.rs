//! `tolk bench`: real-time factor (inference time / audio duration) of file transcription.
//!
//! Each model is loaded once, warmed up with one run (whisper.cpp allocates its compute
//! buffers on first use), then timed over `--runs` runs; the median is reported.

use std::time::Instant;

use serde::Serialize;
use tolk_models::asr::{RecognizeOptions, Recognizer};
use tolk_models::audio::read_wav;

use super::transcribe::{language_option, load_model};
use super::CommandError;
use crate::cli::{BenchArgs, WhisperArgs};

#[derive(Debug, Serialize)]
struct BenchResult {
    model: String,
    audio_s: f64,
    device: String,
    threads: usize,
    runs_s: Vec<f64>,
    median_s: f64,
    rtf: f64,
    transcript: String,
}

pub fn run(args: BenchArgs) -> Result<(), CommandError> {
    let audio_path = args
        .audio
        .clone()
        .unwrap_or_else(|| args.dir.models_dir.join("testdata/jfk.wav"));
    let audio = read_wav(&audio_path)?;
    let audio_s = audio.samples.len() as f64 / 16_000.0;
    let options = RecognizeOptions {
        language: language_option(&args.language)?,
        ..Default::default()
    };
    if !args.json {
        println!(
            "audio: {} ({audio_s:.2} s), {} threads, {} runs after 1 warm-up",
            audio_path.display(),
            args.threads,
            args.runs
        );
        println!(
            "{:<14} {:>7} {:>10} {:>8}  transcript",
            "model", "device", "median s", "RTF"
        );
    }
    for name in &args.models {
        let whisper = WhisperArgs {
            model: name.clone(),
            language: args.language.clone(),
            threads: Some(args.threads),
            audio_ctx: args.audio_ctx,
            device: args.device,
        };
        let model = load_model(&args.dir.models_dir, &whisper)?;
        let mut worker = model.worker()?;
        let mut transcript = worker.recognize(&audio.samples, &options)?.text;
        let mut runs_s = Vec::with_capacity(args.runs);
        for _ in 0..args.runs.max(1) {
            let start = Instant::now();
            transcript = worker.recognize(&audio.samples, &options)?.text;
            runs_s.push(start.elapsed().as_secs_f64());
        }
        let mut sorted = runs_s.clone();
        sorted.sort_by(f64::total_cmp);
        let median_s = sorted[sorted.len() / 2];
        let result = BenchResult {
            model: model.name().to_string(),
            audio_s,
            device: model.device().to_string(),
            threads: args.threads,
            rtf: median_s / audio_s,
            median_s,
            runs_s,
            transcript,
        };
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&result).map_err(anyhow::Error::from)?
            );
        } else {
            println!(
                "{:<14} {:>7} {:>10.3} {:>8.3}  {}",
                result.model, result.device, result.median_s, result.rtf, result.transcript
            );
        }
    }
    Ok(())
}
