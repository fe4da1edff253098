//! A whole clip through the pools: VAD → chunks of speech → ASR → translation → speech.
//!
//! The REST endpoints use it: sync calls at high priority, jobs at normal priority, so a
//! long job never holds a worker for more than one chunk and streaming finals (also high)
//! overtake it.

use std::ops::Range;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tolk_actors::engines::{AsrRequest, SpeakRequest, TranslateRequest, VadRequest};
use tolk_actors::pool::{Engine, Pool, PoolError, Priority, Ticket};
use tolk_models::asr::{RecognizeOptions, SAMPLE_RATE};
use tolk_models::tts::VoiceChoice;
use tolk_models::vad::{VadState, VAD_WINDOW};
use tolk_models::wav::encode_pcm16;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::rest::{ResultMetadata, ResultSegment, TranslationResult};
use tolk_protocol::transcript::Task;

use crate::ws::StreamServices;

/// Longest piece of audio given to whisper at once: its window is 30 s.
const MAX_CHUNK_S: f64 = 28.0;
/// A chunk longer than this is cut at its quietest window after this point.
const SPLIT_AFTER_S: f64 = 20.0;
/// Speech probability at or above which a VAD window is speech.
const SPEECH_THRESHOLD: f32 = 0.5;
/// Silence shorter than this stays inside a stretch of speech.
const MERGE_GAP_S: f64 = 0.3;
/// Audio kept around each stretch of speech.
const PAD_S: f64 = 0.2;
/// Audio the VAD judges per pool job, so long clips interleave with streams.
const VAD_PIECE_S: usize = 30;

/// What to do with a clip.
#[derive(Debug, Clone)]
pub struct ClipRequest {
    /// 16 kHz mono.
    pub audio: Vec<f32>,
    /// ISO 639-1, or `None` to detect.
    pub source: Option<String>,
    pub target: Option<String>,
    pub tts: bool,
    pub priority: Priority,
    /// When a full pool is answered by waiting (jobs) rather than by an error (sync).
    pub wait_when_busy: bool,
}

/// A clip's result, and its speech as a 16-bit WAV when asked for.
#[derive(Debug)]
pub struct ClipOutput {
    pub result: TranslationResult,
    pub speech: Option<Vec<u8>>,
}

/// Why a clip could not be processed, with the code its client sees.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct PipelineError {
    pub code: ErrorCode,
    pub message: String,
}

impl PipelineError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Run a pool job, waiting for room when the pool is full and the caller may wait.
async fn run_job<E: Engine>(
    pool: &Pool<E>,
    make: impl Fn() -> E::Request,
    priority: Priority,
    wait_when_busy: bool,
) -> Result<E::Response, PipelineError>
where
    E::Error: std::fmt::Display,
{
    let ticket: Ticket<E> = loop {
        match pool.submit(make(), priority) {
            Ok(ticket) => break ticket,
            Err(PoolError::Full(name)) if wait_when_busy => {
                tracing::debug!(pool = name, "pool full: job waits");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e @ PoolError::Full(_)) => {
                return Err(PipelineError::new(
                    ErrorCode::Overloaded,
                    format!("{e}; retry later"),
                ))
            }
            Err(e) => return Err(PipelineError::new(ErrorCode::Internal, e.to_string())),
        }
    };
    match ticket.await {
        Ok(done) => done
            .result
            .map_err(|e| PipelineError::new(ErrorCode::Internal, e.to_string())),
        Err(_) => Err(PipelineError::new(
            ErrorCode::Internal,
            "a worker pool shut down",
        )),
    }
}

/// Process a clip, reporting progress (0–99) on `progress` as it goes.
pub async fn process(
    services: &StreamServices,
    request: ClipRequest,
    instance: &str,
    progress: &watch::Sender<u8>,
) -> Result<ClipOutput, PipelineError> {
    let started = Instant::now();
    let ClipRequest {
        audio,
        source,
        target,
        tts,
        priority,
        wait_when_busy,
    } = request;
    let duration = audio.len() as f64 / SAMPLE_RATE as f64;
    let audio = std::sync::Arc::new(audio);

    // 1. Where is there speech? (0–5 %)
    let mut probabilities = Vec::with_capacity(audio.len() / VAD_WINDOW + 1);
    let mut state = VadState::default();
    for piece in audio.chunks(VAD_PIECE_S * SAMPLE_RATE as usize) {
        let response = run_job(
            &services.vad,
            || VadRequest {
                state: state.clone(),
                audio: piece.to_vec(),
            },
            priority,
            wait_when_busy,
        )
        .await?;
        state = response.state;
        probabilities.extend(response.probabilities);
    }
    progress.send_replace(5);
    let chunks = plan_chunks(&probabilities, audio.len());

    // 2. Recognise each chunk (5–80 %), pinning the language detected in the first.
    let mut language = source;
    let mut segments = Vec::new();
    let speech_samples: usize = chunks.iter().map(|c| c.len()).sum::<usize>().max(1);
    let mut done_samples = 0;
    for chunk in &chunks {
        let prompt = segments
            .last()
            .map(|s: &ResultSegment| s.text.clone())
            .filter(|t| !t.is_empty());
        let options = RecognizeOptions {
            language: language.clone(),
            task: Task::Transcribe,
            initial_prompt: prompt,
            max_tokens: None,
            temperature_fallback: true,
        };
        let transcript = run_job(
            &services.asr,
            || AsrRequest {
                audio: audio[chunk.clone()].to_vec(),
                options: options.clone(),
            },
            priority,
            wait_when_busy,
        )
        .await?;
        language.get_or_insert(transcript.language);
        let offset = chunk.start as f64 / SAMPLE_RATE as f64;
        // Whisper's timestamps may run past the audio it was given: keep them inside.
        let chunk_end = chunk.end as f64 / SAMPLE_RATE as f64;
        let at = |ms: u64| round_ms((offset + ms as f64 / 1000.0).min(chunk_end));
        segments.extend(
            transcript
                .segments
                .into_iter()
                .filter(|s| !s.text.trim().is_empty())
                .map(|s| ResultSegment {
                    start: at(s.start_ms),
                    end: at(s.end_ms),
                    text: s.text.trim().to_string(),
                    translation: None,
                }),
        );
        done_samples += chunk.len();
        progress.send_replace(5 + (75 * done_samples / speech_samples) as u8);
    }
    // No speech at all: the language asked for, else English (nothing was detected).
    let language = language.unwrap_or_else(|| "en".to_string());
    progress.send_replace(80);

    // 3. Translate each segment (80–90 %).
    let target = target.filter(|t| *t != language);
    let mut route = None;
    if let Some(target) = &target {
        if services.catalog.route(&language, target).is_none() {
            return Err(PipelineError::new(
                ErrorCode::UnsupportedLanguage,
                format!("the speech is in '{language}', and no translation from '{language}' to '{target}' is installed"),
            ));
        }
        let n = segments.len().max(1);
        for (i, segment) in segments.iter_mut().enumerate() {
            let response = run_job(
                &services.translation,
                || TranslateRequest {
                    source: language.clone(),
                    target: target.clone(),
                    text: segment.text.clone(),
                },
                priority,
                wait_when_busy,
            )
            .await?;
            segment.translation = Some(response.text);
            route.get_or_insert(response.route);
            progress.send_replace(80 + (10 * (i + 1) / n) as u8);
        }
    }
    progress.send_replace(90);

    // 4. Speak the translation, else the transcript (90–99 %).
    let spoken_language = target.clone().unwrap_or_else(|| language.clone());
    let mut voice = None;
    let mut speech = None;
    let mut audio_seconds = None;
    if tts {
        let Some(choice) = services.voices.voice_for(&spoken_language) else {
            return Err(PipelineError::new(
                ErrorCode::UnsupportedLanguage,
                format!(
                    "the result is in '{spoken_language}', which no installed voice speaks; installed: {}",
                    services.voices.languages().join(", ")
                ),
            ));
        };
        voice = Some(voice_name(&choice));
        let mut samples = Vec::new();
        let mut rate = 22_050;
        let n = segments.len().max(1);
        for (i, segment) in segments.iter().enumerate() {
            let text = segment
                .translation
                .as_ref()
                .unwrap_or(&segment.text)
                .clone();
            let response = run_job(
                &services.speech,
                || SpeakRequest {
                    language: spoken_language.clone(),
                    text: text.clone(),
                },
                priority,
                wait_when_busy,
            )
            .await?;
            rate = response.sample_rate;
            samples.extend(response.samples);
            progress.send_replace(90 + (9 * (i + 1) / n) as u8);
        }
        audio_seconds = Some(round_ms(samples.len() as f64 / rate as f64));
        speech = Some(encode_pcm16(&samples, rate, 1));
    }

    let transcript = join(segments.iter().map(|s| s.text.as_str()));
    let translation = target
        .as_ref()
        .map(|_| join(segments.iter().filter_map(|s| s.translation.as_deref())));
    Ok(ClipOutput {
        result: TranslationResult {
            transcript,
            translation,
            language,
            target_lang: target,
            segments,
            audio_url: None,
            metadata: ResultMetadata {
                duration_seconds: round_ms(duration),
                processing_ms: started.elapsed().as_millis() as u64,
                asr_model: services.model.clone(),
                translation_route: route,
                voice,
                audio_seconds,
                processed_by: instance.to_string(),
            },
        },
        speech,
    })
}

fn voice_name(choice: &VoiceChoice) -> String {
    match choice {
        VoiceChoice::Piper { voice, .. } => voice.name.clone(),
        VoiceChoice::Espeak { voice, .. } => format!("espeak-ng {voice}"),
    }
}

fn join<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Sample ranges to recognise: stretches of speech (per-window `probabilities`), padded,
/// merged across short pauses and grouped up to [`MAX_CHUNK_S`]; a stretch longer than
/// that is cut at its quietest window past [`SPLIT_AFTER_S`]. Silence is never decoded,
/// which is also where whisper would invent words.
pub fn plan_chunks(probabilities: &[f32], total_samples: usize) -> Vec<Range<usize>> {
    let window_s = VAD_WINDOW as f64 / SAMPLE_RATE as f64;
    let to_windows = |s: f64| (s / window_s).round() as usize;
    let (merge_gap, pad) = (to_windows(MERGE_GAP_S), to_windows(PAD_S));
    let (max_chunk, split_after) = (to_windows(MAX_CHUNK_S), to_windows(SPLIT_AFTER_S));
    let max_gap = to_windows(2.0);
    let n = probabilities.len();

    // Stretches of speech in windows, short gaps merged, padded.
    let mut stretches: Vec<Range<usize>> = Vec::new();
    let mut i = 0;
    while i < n {
        if probabilities[i] < SPEECH_THRESHOLD {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && probabilities[i] >= SPEECH_THRESHOLD {
            i += 1;
        }
        let range = start.saturating_sub(pad)..(i + pad).min(n);
        match stretches.last_mut() {
            Some(last) if range.start <= last.end + merge_gap => last.end = range.end,
            _ => stretches.push(range),
        }
    }

    // Group stretches into chunks, cutting over-long ones.
    let mut chunks: Vec<Range<usize>> = Vec::new();
    for stretch in stretches {
        let mut start = stretch.start;
        while stretch.end - start > max_chunk {
            let window = start + split_after..start + max_chunk;
            let cut = window
                .clone()
                .min_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
                .unwrap_or(window.end);
            chunks.push(start..cut);
            start = cut;
        }
        // Neighbours share a chunk across a pause of up to 2 s; longer silence is skipped.
        match chunks.last_mut() {
            Some(last) if start <= last.end + max_gap && stretch.end - last.start <= max_chunk => {
                last.end = stretch.end
            }
            _ => chunks.push(start..stretch.end),
        }
    }
    chunks
        .into_iter()
        .map(|c| c.start * VAD_WINDOW..(c.end * VAD_WINDOW).min(total_samples))
        .filter(|c| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W_PER_S: f64 = SAMPLE_RATE as f64 / VAD_WINDOW as f64; // 31.25 (32 ms windows)

    /// Per-window probabilities: `speech` ranges (in seconds) are 0.9, the rest 0.05.
    fn probs(total_s: f64, speech: &[(f64, f64)]) -> Vec<f32> {
        let n = (total_s * SAMPLE_RATE as f64) as usize / VAD_WINDOW;
        (0..n)
            .map(|i| {
                let t = i as f64 * VAD_WINDOW as f64 / SAMPLE_RATE as f64;
                if speech.iter().any(|&(a, b)| t >= a && t < b) {
                    0.9
                } else {
                    0.05
                }
            })
            .collect()
    }

    fn seconds(chunks: &[Range<usize>]) -> Vec<(f64, f64)> {
        let s = |x: usize| (x as f64 / SAMPLE_RATE as f64 * 10.0).round() / 10.0;
        chunks.iter().map(|c| (s(c.start), s(c.end))).collect()
    }

    #[test]
    fn silence_gives_no_chunks() {
        assert!(plan_chunks(&probs(10.0, &[]), 160_000).is_empty());
        assert!(plan_chunks(&[], 0).is_empty());
    }

    #[test]
    fn speech_is_padded_and_short_pauses_merge() {
        let p = probs(10.0, &[(1.0, 3.0), (3.2, 4.0)]);
        assert_eq!(seconds(&plan_chunks(&p, 160_000)), vec![(0.8, 4.2)]);
    }

    #[test]
    fn long_silence_separates_chunks() {
        let p = probs(20.0, &[(1.0, 3.0), (10.0, 12.0)]);
        assert_eq!(
            seconds(&plan_chunks(&p, 320_000)),
            vec![(0.8, 3.2), (9.8, 12.2)]
        );
    }

    #[test]
    fn nearby_stretches_group_up_to_the_chunk_limit() {
        // Ten 4 s stretches 1 s apart: grouped, no chunk over 28 s, all speech covered.
        let speech: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 5.0, i as f64 * 5.0 + 4.0))
            .collect();
        let p = probs(50.0, &speech);
        let chunks = plan_chunks(&p, 800_000);
        assert_eq!(chunks.len(), 2, "{:?}", seconds(&chunks));
        for c in &chunks {
            assert!(c.len() <= (MAX_CHUNK_S * SAMPLE_RATE as f64) as usize + VAD_WINDOW);
        }
        for &(a, b) in &speech {
            let (a, b) = ((a * 16_000.0) as usize, (b * 16_000.0) as usize);
            assert!(
                chunks.iter().any(|c| c.start <= a && b <= c.end),
                "{a}..{b} not covered"
            );
        }
    }

    #[test]
    fn unbroken_speech_is_cut_at_its_quietest_point() {
        let mut p = probs(60.0, &[(0.0, 60.0)]);
        // A dip at 24 s: the cut lands there.
        p[(24.0 * W_PER_S) as usize] = 0.6;
        let chunks = plan_chunks(&p, 960_000);
        let s = seconds(&chunks);
        assert_eq!(s[0], (0.0, 24.0), "{s:?}");
        assert!(
            chunks.windows(2).all(|w| w[0].end == w[1].start),
            "contiguous: {s:?}"
        );
        assert_eq!(chunks.last().unwrap().end, 960_000);
        assert!(
            chunks.iter().all(|c| c.len() <= 28 * 16_000 + VAD_WINDOW),
            "{s:?}"
        );
    }
}
