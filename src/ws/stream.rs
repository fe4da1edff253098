//! One stream of a session, from `start_stream` to `session_complete`: its audio intake
//! (limits, pacing, decoding), its recognition state, and what it has committed. No I/O:
//! the session actor feeds it and sends what it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tolk_actors::streaming::{DecodeKind, DecodeRequest, SegmentUpdate, StreamingAsr};
use tolk_models::asr::RecognizeOptions;
use tolk_models::vad::VadState;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::transcript::Task;
use tolk_protocol::ws::{
    AudioFormat, FinalSegment, PartialResult, QualityMetrics, ServerMessage, Usage,
};

use super::pcm::FrameDecoder;
use super::WsConfig;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking audio.
    Streaming,
    /// `end_stream` received: no more audio; committing what is left.
    Finalizing,
}

/// What `start_stream` asked for, once validated.
pub struct StreamSpec {
    pub format: AudioFormat,
    /// `None`: detect the spoken language.
    pub language: Option<String>,
    pub task: Task,
    pub interim_results: bool,
    pub target: Option<String>,
    pub tts: bool,
}

/// Why a piece of audio was refused.
pub type Refusal = (ErrorCode, String);

pub struct Stream {
    pub id: String,
    pub phase: Phase,
    decoder: FrameDecoder,
    pub asr: StreamingAsr,
    /// `None` while the VAD job that owns it is in flight.
    pub vad_state: Option<VadState>,
    /// Samples (16 kHz) handed to the VAD so far.
    pub vad_fed: u64,
    pub received_16k: u64,
    /// Language given, or detected on the first decode of an `auto` stream.
    pub language: Option<String>,
    task: Task,
    interim_results: bool,
    pub started: Instant,
    first_audio: Option<Instant>,
    /// Client audio received, in ms.
    audio_ms: f64,
    segments: Vec<FinalSegment>,
    partials_sent: u32,
    pub partials_dropped: u32,
    pub asr_busy: Duration,
    /// When the final decode of the current utterance was asked for, for latency.
    final_asked: Option<Instant>,
    final_latencies_ms: Vec<u64>,
    /// `too_fast` was reported for the current burst; not repeated for every frame.
    warned_too_fast: bool,
    /// Language to translate committed segments into.
    pub target: Option<String>,
    /// Speak every committed segment.
    pub tts: bool,
    /// Speech jobs not yet answered; the stream completes after them.
    pub pending_speech: u32,
    /// The route the last translation took (reported in `final_result`).
    pub translation_route: Option<String>,
    /// Results in the order they must reach the client; a committed segment waits here for
    /// its translation, and everything after it waits behind it.
    outbox: VecDeque<Outgoing>,
}

struct Outgoing {
    result: PartialResult,
    awaiting_translation: bool,
}

/// A committed segment to translate.
pub struct TranslationJob {
    pub segment_id: u32,
    pub source: String,
    pub target: String,
    pub text: String,
}

impl Stream {
    pub fn new(spec: StreamSpec, config: &WsConfig) -> Self {
        let StreamSpec {
            format,
            language,
            task,
            interim_results,
            target,
            tts,
        } = spec;
        Self {
            id: format!("strm_{}", uuid::Uuid::new_v4().simple()),
            phase: Phase::Streaming,
            decoder: FrameDecoder::new(format),
            asr: StreamingAsr::new(config.streaming.clone()),
            vad_state: Some(VadState::default()),
            vad_fed: 0,
            received_16k: 0,
            language,
            task,
            interim_results,
            started: Instant::now(),
            first_audio: None,
            audio_ms: 0.0,
            segments: Vec::new(),
            partials_sent: 0,
            partials_dropped: 0,
            asr_busy: Duration::ZERO,
            final_asked: None,
            final_latencies_ms: Vec::new(),
            warned_too_fast: false,
            target,
            tts,
            pending_speech: 0,
            translation_route: None,
            outbox: VecDeque::new(),
        }
    }

    /// Take a frame of client audio. `Ok(false)`: dropped without a new error (the client
    /// was already told it sends too fast).
    pub fn accept_audio(&mut self, bytes: &[u8], config: &WsConfig) -> Result<bool, Refusal> {
        if self.phase == Phase::Finalizing {
            return Err((
                ErrorCode::StreamNotStarted,
                "audio after end_stream: start a new stream".into(),
            ));
        }
        if bytes.len() > config.max_frame_bytes {
            let message = format!(
                "frame of {} bytes; the limit is {}",
                bytes.len(),
                config.max_frame_bytes
            );
            return Err((ErrorCode::FrameTooLarge, message));
        }
        let frame_ms = self.decoder.duration_ms(bytes.len());
        // Pace: audio may run ahead of the wall clock by `burst_ms`, and no faster than
        // `max_realtime_factor` sustained.
        let first = *self.first_audio.get_or_insert_with(Instant::now);
        let allowed = first.elapsed().as_secs_f64() * 1000.0 * config.max_realtime_factor as f64
            + config.burst_ms as f64;
        if self.audio_ms + frame_ms > allowed {
            if std::mem::replace(&mut self.warned_too_fast, true) {
                return Ok(false);
            }
            let message = format!(
                "audio arrives faster than {}x real time: frames are being dropped; send at real-time pace",
                config.max_realtime_factor
            );
            return Err((ErrorCode::TooFast, message));
        }
        let buffered_ms = self.asr.window_len() as u64 / 16;
        if buffered_ms > config.max_buffer_ms {
            self.partials_dropped += 1;
            let message =
                format!("{buffered_ms} ms of audio are waiting for recognition: the server is behind, frame dropped");
            return Err((ErrorCode::Overloaded, message));
        }
        let samples = self
            .decoder
            .decode(bytes)
            .map_err(|e| (ErrorCode::UnsupportedAudioFormat, e))?;
        self.warned_too_fast = false;
        self.audio_ms += frame_ms;
        self.push(&samples);
        Ok(true)
    }

    fn push(&mut self, samples: &[f32]) {
        self.received_16k += samples.len() as u64;
        crate::metrics::audio(crate::metrics::Api::Ws, samples.len() as u64);
        self.asr.push_audio(samples);
    }

    /// `end_stream`: no more audio. False if the stream was already finalizing.
    pub fn finish_input(&mut self) -> bool {
        if self.phase == Phase::Finalizing {
            return false;
        }
        self.phase = Phase::Finalizing;
        let tail = self.decoder.flush();
        self.push(&tail);
        true
    }

    /// Everything is committed: `final_result` may be sent.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Finalizing
            && self.asr.is_finished()
            && self.outbox.is_empty()
            && self.pending_speech == 0
    }

    /// The language of the text being committed: English for speech translation, else
    /// the spoken language (once known).
    pub fn text_language(&self) -> Option<&str> {
        if self.task == Task::Translate {
            Some("en")
        } else {
            self.language.as_deref()
        }
    }

    /// How to recognise a request of this stream.
    pub fn recognize_options(&mut self, request: &DecodeRequest) -> RecognizeOptions {
        let kind = request.ticket.kind;
        if kind == DecodeKind::Final && self.final_asked.is_none() {
            self.final_asked = Some(Instant::now());
        }
        let audio_s = request.audio.len() as u32 / 16_000;
        RecognizeOptions {
            language: self.language.clone(),
            task: self.task,
            initial_prompt: request.prompt.clone(),
            // Speech is 2–4 tokens a second; four times that stops a loop early.
            max_tokens: Some(16 + audio_s * 16),
            // A partial is replaced within a step: not worth five more decodes.
            temperature_fallback: kind == DecodeKind::Final,
        }
    }

    /// Take segment updates: committed segments are recorded, and those that need a
    /// translation are returned as jobs. Send what `ready()` gives afterwards.
    pub fn take_updates(&mut self, updates: Vec<SegmentUpdate>) -> Vec<TranslationJob> {
        let mut jobs = Vec::new();
        for update in updates {
            let result = PartialResult {
                segment_id: update.segment_id,
                transcript: update.text(),
                translation: None,
                confidence: update.confidence(),
                is_final: update.is_final,
                start_ms: update.start_ms(),
                end_ms: update.end_ms(),
                words: Some(update.words),
            };
            if !result.is_final && !self.interim_results {
                continue;
            }
            let mut awaiting_translation = false;
            if result.is_final {
                if let Some(asked) = self.final_asked.take() {
                    self.final_latencies_ms
                        .push(asked.elapsed().as_millis() as u64);
                }
                self.segments.push(FinalSegment {
                    segment_id: result.segment_id,
                    start_ms: result.start_ms,
                    end_ms: result.end_ms,
                    transcript: result.transcript.clone(),
                    translation: None,
                    confidence: result.confidence,
                });
                // Committed text is translated, never the unstable tail.
                if let (Some(target), Some(source)) = (self.target.clone(), self.text_language()) {
                    if target != source && !result.transcript.is_empty() {
                        awaiting_translation = true;
                        jobs.push(TranslationJob {
                            segment_id: result.segment_id,
                            source: source.to_string(),
                            target,
                            text: result.transcript.clone(),
                        });
                    }
                }
            }
            // A newer partial of the same segment replaces one still waiting to be sent.
            if !result.is_final {
                if let Some(last) = self.outbox.back_mut() {
                    if !last.result.is_final && last.result.segment_id == result.segment_id {
                        last.result = result;
                        continue;
                    }
                }
            }
            self.outbox.push_back(Outgoing {
                result,
                awaiting_translation,
            });
        }
        jobs
    }

    /// A segment's translation arrived (`None`: it failed; the segment goes out without).
    pub fn on_translated(&mut self, segment_id: u32, translation: Option<String>) {
        if let Some(out) = self
            .outbox
            .iter_mut()
            .find(|o| o.result.segment_id == segment_id && o.result.is_final)
        {
            out.result.translation = translation.clone();
            out.awaiting_translation = false;
        }
        if let Some(segment) = self
            .segments
            .iter_mut()
            .find(|s| s.segment_id == segment_id)
        {
            segment.translation = translation;
        }
    }

    /// The results that may be sent now, in order.
    pub fn ready(&mut self) -> Vec<ServerMessage> {
        let mut messages = Vec::new();
        while self.outbox.front().is_some_and(|o| !o.awaiting_translation) {
            let Some(out) = self.outbox.pop_front() else {
                break;
            };
            if !out.result.is_final {
                self.partials_sent += 1;
            }
            messages.push(ServerMessage::PartialResult(out.result));
        }
        messages
    }

    /// `final_result` and `session_complete`, ending the stream.
    pub fn completion(self, session_id: &str) -> [ServerMessage; 2] {
        let complete_transcript = self
            .segments
            .iter()
            .map(|s| s.transcript.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let average_confidence = if self.segments.is_empty() {
            0.0
        } else {
            self.segments.iter().map(|s| s.confidence).sum::<f32>() / self.segments.len() as f32
        };
        let mean_final_latency_ms = (!self.final_latencies_ms.is_empty()).then(|| {
            self.final_latencies_ms.iter().sum::<u64>() / self.final_latencies_ms.len() as u64
        });
        let final_result = ServerMessage::FinalResult {
            complete_transcript,
            final_translation: self.target.as_ref().map(|_| {
                let parts: Vec<&str> = self
                    .segments
                    .iter()
                    .map(|s| s.translation.as_deref().unwrap_or(s.transcript.as_str()))
                    .collect();
                parts.join(" ")
            }),
            translation_route: self.translation_route.clone(),
            language: self.language.clone().unwrap_or_else(|| "und".into()),
            quality_metrics: QualityMetrics {
                average_confidence,
                audio_ms: self.audio_ms as u64,
                speech_ms: self.asr.speech_ms(),
                segments: self.segments.len() as u32,
                partials_sent: self.partials_sent,
                partials_dropped: self.partials_dropped,
                mean_final_latency_ms,
            },
            segments: self.segments,
        };
        let complete = ServerMessage::SessionComplete {
            session_id: session_id.to_string(),
            stream_id: self.id,
            total_duration_ms: self.started.elapsed().as_millis() as u64,
            usage: Usage {
                audio_seconds: self.audio_ms / 1000.0,
                asr_seconds: self.asr_busy.as_secs_f64(),
            },
        };
        [final_result, complete]
    }
}
