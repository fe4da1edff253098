//! WebSocket protocol v1 on `GET /ws/translate`: JSON text frames tagged by `type`, audio
//! as binary frames. `docs/protocol.md` is the client authors' description; its examples
//! are parsed by the tests below, so the two cannot drift apart.
//!
//! Client messages reject unknown fields, so a misspelt option fails loudly instead of
//! being ignored. Server messages accept them, so a v1 client keeps working when the
//! server adds a field.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::transcript::{Task, Word};

/// Lowest sample rate a stream may declare.
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest sample rate a stream may declare.
pub const MAX_SAMPLE_RATE: u32 = 48_000;

/// A JSON text frame from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Opens a stream; audio may follow once `stream_ready` arrives.
    StartStream {
        /// ISO 639-1 code of the spoken language, or `"auto"` to detect it.
        source_lang: String,
        /// Language to translate into; absent means no translation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_lang: Option<String>,
        audio_format: AudioFormat,
        #[serde(default = "default_true")]
        interim_results: bool,
        #[serde(default)]
        tts: bool,
        #[serde(default)]
        task: Task,
    },
    /// Audio in a text frame, for clients that cannot send binary frames.
    AudioChunk {
        chunk_id: u64,
        /// Base64 of raw audio in the stream's declared format.
        audio_data: String,
        /// Client clock in ms when the chunk was captured; only used to measure latency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timestamp: Option<u64>,
        /// The last chunk of the stream: the server finalizes as on `end_stream`.
        #[serde(default)]
        is_final: bool,
    },
    /// No more audio: the server finalizes what it holds and completes the stream.
    EndStream {},
    /// Application-level liveness check for clients that cannot see WebSocket pings.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Every server message up to `seq` has arrived: the server need not keep it for a
    /// resume.
    Ack { seq: u64 },
}

fn default_true() -> bool {
    true
}

/// serde's errors quote the client's own strings (an unknown `type`, a field name), where
/// JSON escapes may have put newlines or terminal control codes: escaped, the message
/// stays one line in the reply and in the log.
fn escape_controls(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl ClientMessage {
    /// Parses one text frame; the error is a single line fit for an `invalid_message` reply.
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        serde_json::from_str(text).map_err(|e| escape_controls(&e.to_string()))
    }

    /// The `type` tag, for logs and metrics without serializing.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::StartStream { .. } => "start_stream",
            ClientMessage::AudioChunk { .. } => "audio_chunk",
            ClientMessage::EndStream {} => "end_stream",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Ack { .. } => "ack",
        }
    }
}

/// Decodes the `audio_data` of an `audio_chunk` (standard base64, padded); the error is a
/// single line fit for an `invalid_message` reply. The result is never longer than
/// `audio_data.len() / 4 * 3` bytes, so a caller may bound a chunk's size before decoding it.
pub fn decode_audio_data(audio_data: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(audio_data.as_bytes())
        .map_err(|e| format!("audio_data is not base64: {e}"))
}

/// How the stream's raw audio is laid out: interleaved little-endian samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFormat {
    pub encoding: AudioEncoding,
    pub sample_rate: u32,
    pub channels: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioEncoding {
    /// Signed 16-bit integers, little-endian.
    PcmS16le,
    /// 32-bit IEEE floats in [-1, 1], little-endian.
    PcmF32le,
}

impl AudioEncoding {
    /// Bytes of one sample of one channel.
    pub fn sample_bytes(self) -> usize {
        match self {
            AudioEncoding::PcmS16le => 2,
            AudioEncoding::PcmF32le => 4,
        }
    }
}

impl AudioFormat {
    /// Checks the declared rate and channel count; the error names what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&self.sample_rate) {
            return Err(format!(
                "sample_rate {} is not supported: use {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz",
                self.sample_rate
            ));
        }
        if !(1..=2).contains(&self.channels) {
            return Err(format!(
                "channels {} is not supported: use 1 (mono) or 2 (stereo)",
                self.channels
            ));
        }
        Ok(())
    }

    /// Bytes of one sample frame (one sample of every channel); audio must come in
    /// whole multiples of it.
    pub fn frame_bytes(&self) -> usize {
        self.encoding.sample_bytes() * usize::from(self.channels)
    }

    /// Bytes of one second of audio; u64 so an unvalidated format cannot overflow.
    pub fn bytes_per_second(&self) -> u64 {
        u64::from(self.sample_rate) * self.frame_bytes() as u64
    }
}

/// A JSON text frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection.
    Connected {
        session_id: String,
        protocol_version: u32,
        /// ISO 639-1 codes accepted as `source_lang` (besides `"auto"`) and `target_lang`.
        supported_languages: Vec<String>,
        limits: Limits,
        /// Reconnect with `?resume=<token>` within `limits.resume_grace_seconds` of a
        /// dropped connection to carry on the same session; absent when resuming is off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// This connection resumed the session: the messages the client had not
        /// acknowledged follow, with their original `seq`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// Answer to `start_stream`: audio may flow.
    StreamReady {
        stream_id: String,
        /// How far, in ms of audio, the client may run ahead of the real-time pace before
        /// it gets `too_fast`.
        buffer_ms: u32,
        /// Audio per frame the server prefers.
        chunk_ms: u32,
    },
    PartialResult(PartialResult),
    /// Everything the stream produced, after the last committed `partial_result`.
    FinalResult {
        complete_transcript: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        final_translation: Option<String>,
        /// How the translation was made, e.g. `es→en (apertium) →pt (bergamot)`: a pair
        /// with no direct model pivots through English, and this says so.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        translation_route: Option<String>,
        /// The language spoken: the one given, or the one detected for `"auto"`.
        language: String,
        segments: Vec<FinalSegment>,
        quality_metrics: QualityMetrics,
    },
    /// The stream is over; the connection stays open for another `start_stream`.
    SessionComplete {
        session_id: String,
        stream_id: String,
        total_duration_ms: u64,
        usage: Usage,
    },
    Error {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
    /// Synthesized speech of a committed segment (its translation when the stream has a
    /// `target_lang`): the next binary frame from the server holds exactly `bytes` bytes
    /// of audio in `encoding` at `sample_rate`, mono.
    TtsAudio {
        segment_id: u32,
        encoding: AudioEncoding,
        sample_rate: u32,
        bytes: u32,
        /// The text spoken.
        text: String,
    },
    /// Answer to `ping`, echoing its `id`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl ServerMessage {
    /// An `error` message whose `retryable` comes from the code table, so the two never disagree.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error {
            code,
            message: message.into(),
            retryable: code.retryable(),
        }
    }

    /// The `type` tag, for logs and metrics without serializing.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Connected { .. } => "connected",
            ServerMessage::StreamReady { .. } => "stream_ready",
            ServerMessage::PartialResult(_) => "partial_result",
            ServerMessage::FinalResult { .. } => "final_result",
            ServerMessage::SessionComplete { .. } => "session_complete",
            ServerMessage::Error { .. } => "error",
            ServerMessage::TtsAudio { .. } => "tts_audio",
            ServerMessage::Pong { .. } => "pong",
        }
    }
}

/// What a connection may do, announced in `connected` so clients need not guess.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest audio payload per frame (binary, or decoded `audio_data`).
    pub max_frame_bytes: u32,
    pub max_stream_seconds: u32,
    /// Closed after this long without a text or binary frame from the client.
    pub idle_timeout_seconds: u32,
    /// Interval of the server's WebSocket pings.
    pub heartbeat_interval_seconds: u32,
    /// How much faster than real time audio may arrive.
    pub max_realtime_factor: f32,
    /// Lowest and highest accepted sample rate, in Hz.
    pub sample_rates: [u32; 2],
    /// How long a session outlives a dropped connection, waiting for a resume (0: never).
    #[serde(default)]
    pub resume_grace_seconds: u32,
}

/// A server message as sent: with its sequence number, which a client acknowledges and
/// gives back when it resumes. `connected` and `pong` are not numbered.
#[derive(Debug, Serialize)]
pub struct Sequenced<'a> {
    #[serde(flatten)]
    pub message: &'a ServerMessage,
    pub seq: u64,
}

/// Recognition of one segment so far. A result with `is_final: false` is the unstable tail
/// and is replaced by the next one with the same `segment_id`; `is_final: true` commits the
/// segment, which is never revised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialResult {
    pub segment_id: u32,
    pub transcript: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    /// 0 to 1.
    pub confidence: f32,
    pub is_final: bool,
    /// Audio time from the start of the stream.
    pub start_ms: u64,
    pub end_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<Word>>,
}

/// One committed segment, as repeated in `final_result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalSegment {
    pub segment_id: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub transcript: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation: Option<String>,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityMetrics {
    pub average_confidence: f32,
    /// Audio received.
    pub audio_ms: u64,
    /// Audio the voice activity detector judged to be speech.
    pub speech_ms: u64,
    pub segments: u32,
    pub partials_sent: u32,
    /// Interim results superseded before they could be sent to a slow client.
    pub partials_dropped: u32,
    /// Mean time from a segment's last audio arriving to its committed result being sent;
    /// absent when no segment was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_final_latency_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Audio received.
    pub audio_seconds: f64,
    /// Compute time spent in speech recognition.
    pub asr_seconds: f64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn mono16k() -> AudioFormat {
        AudioFormat {
            encoding: AudioEncoding::PcmS16le,
            sample_rate: 16_000,
            channels: 1,
        }
    }

    /// Every client variant, with optional fields both set and unset.
    fn client_samples() -> Vec<ClientMessage> {
        vec![
            ClientMessage::StartStream {
                source_lang: "auto".into(),
                target_lang: Some("pt".into()),
                audio_format: AudioFormat {
                    encoding: AudioEncoding::PcmF32le,
                    sample_rate: 48_000,
                    channels: 2,
                },
                interim_results: false,
                tts: true,
                task: Task::Translate,
            },
            ClientMessage::StartStream {
                source_lang: "en".into(),
                target_lang: None,
                audio_format: mono16k(),
                interim_results: true,
                tts: false,
                task: Task::Transcribe,
            },
            ClientMessage::AudioChunk {
                chunk_id: 7,
                audio_data: "AAABAAIA".into(),
                timestamp: Some(1_700_000_000_123),
                is_final: true,
            },
            ClientMessage::AudioChunk {
                chunk_id: 0,
                audio_data: String::new(),
                timestamp: None,
                is_final: false,
            },
            ClientMessage::EndStream {},
            ClientMessage::Ping { id: Some(42) },
            ClientMessage::Ping { id: None },
            ClientMessage::Ack { seq: 17 },
        ]
    }

    /// Every server variant, with optional fields both set and unset.
    fn server_samples() -> Vec<ServerMessage> {
        let partial = PartialResult {
            segment_id: 3,
            transcript: "Hello, world".into(),
            translation: Some("Olá, mundo".into()),
            confidence: 0.87,
            is_final: true,
            start_ms: 1200,
            end_ms: 2400,
            words: Some(vec![Word {
                word: "Hello,".into(),
                start_ms: 1200,
                end_ms: 1700,
                probability: 0.9,
            }]),
        };
        vec![
            ServerMessage::Connected {
                session_id: "s-1".into(),
                protocol_version: crate::PROTOCOL_VERSION,
                supported_languages: vec!["en".into(), "es".into(), "pt".into()],
                limits: Limits {
                    max_frame_bytes: 65_536,
                    max_stream_seconds: 3600,
                    idle_timeout_seconds: 30,
                    heartbeat_interval_seconds: 10,
                    max_realtime_factor: 2.0,
                    sample_rates: [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE],
                    resume_grace_seconds: 30,
                },
                resume_token: Some("res_0123".into()),
                resumed: true,
            },
            ServerMessage::StreamReady {
                stream_id: "st-1".into(),
                buffer_ms: 5000,
                chunk_ms: 100,
            },
            ServerMessage::PartialResult(partial.clone()),
            ServerMessage::PartialResult(PartialResult {
                translation: None,
                words: None,
                is_final: false,
                ..partial
            }),
            ServerMessage::FinalResult {
                complete_transcript: "Hello, world.".into(),
                final_translation: Some("Olá, mundo.".into()),
                translation_route: Some("en→pt (bergamot)".into()),
                language: "en".into(),
                segments: vec![FinalSegment {
                    segment_id: 0,
                    start_ms: 0,
                    end_ms: 1200,
                    transcript: "Hello, world.".into(),
                    translation: Some("Olá, mundo.".into()),
                    confidence: 0.91,
                }],
                quality_metrics: QualityMetrics {
                    average_confidence: 0.91,
                    audio_ms: 1500,
                    speech_ms: 1100,
                    segments: 1,
                    partials_sent: 6,
                    partials_dropped: 1,
                    mean_final_latency_ms: Some(420),
                },
            },
            ServerMessage::FinalResult {
                complete_transcript: String::new(),
                final_translation: None,
                translation_route: None,
                language: "en".into(),
                segments: vec![],
                quality_metrics: QualityMetrics {
                    average_confidence: 0.0,
                    audio_ms: 0,
                    speech_ms: 0,
                    segments: 0,
                    partials_sent: 0,
                    partials_dropped: 0,
                    mean_final_latency_ms: None,
                },
            },
            ServerMessage::SessionComplete {
                session_id: "s-1".into(),
                stream_id: "st-1".into(),
                total_duration_ms: 1830,
                usage: Usage {
                    audio_seconds: 1.5,
                    asr_seconds: 0.25,
                },
            },
            ServerMessage::error(ErrorCode::TooFast, "slow down"),
            ServerMessage::TtsAudio {
                segment_id: 3,
                encoding: AudioEncoding::PcmS16le,
                sample_rate: 22_050,
                bytes: 88_200,
                text: "Pergunte o que você pode fazer.".into(),
            },
            ServerMessage::Pong { id: Some(42) },
            ServerMessage::Pong { id: None },
        ]
    }

    fn kinds<T>(samples: &[T], kind: fn(&T) -> &'static str) -> BTreeSet<&'static str> {
        samples.iter().map(kind).collect()
    }

    const CLIENT_TYPES: [&str; 5] = ["start_stream", "audio_chunk", "end_stream", "ping", "ack"];
    const SERVER_TYPES: [&str; 8] = [
        "connected",
        "stream_ready",
        "partial_result",
        "final_result",
        "session_complete",
        "error",
        "tts_audio",
        "pong",
    ];

    #[test]
    fn samples_cover_every_type() {
        assert_eq!(
            kinds(&client_samples(), ClientMessage::kind),
            CLIENT_TYPES.into_iter().collect()
        );
        assert_eq!(
            kinds(&server_samples(), ServerMessage::kind),
            SERVER_TYPES.into_iter().collect()
        );
    }

    #[test]
    fn sequenced_messages_carry_seq_beside_their_fields_and_parse_as_before() {
        for msg in server_samples() {
            let text = serde_json::to_string(&Sequenced {
                message: &msg,
                seq: 9,
            })
            .unwrap();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["seq"], 9, "{text}");
            assert_eq!(value["type"], msg.kind(), "{text}");
            // A client that knows nothing of `seq` reads the same message.
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).unwrap(),
                msg,
                "{text}"
            );
        }
    }

    #[test]
    fn every_client_message_round_trips_with_its_type_tag() {
        for msg in client_samples() {
            let value = serde_json::to_value(&msg).unwrap();
            assert_eq!(value["type"], msg.kind(), "{value}");
            let text = value.to_string();
            assert_eq!(ClientMessage::parse(&text).unwrap(), msg, "{text}");
        }
    }

    #[test]
    fn every_server_message_round_trips_with_its_type_tag() {
        for msg in server_samples() {
            let value = serde_json::to_value(&msg).unwrap();
            assert_eq!(value["type"], msg.kind(), "{value}");
            let text = value.to_string();
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).unwrap(),
                msg,
                "{text}"
            );
        }
    }

    #[test]
    fn partial_result_is_flat_and_omits_absent_options() {
        let msg = &server_samples()[3];
        let value = serde_json::to_value(msg).unwrap();
        assert_eq!(value["type"], "partial_result");
        assert_eq!(value["segment_id"], 3);
        assert_eq!(value["is_final"], false);
        assert!(value.get("translation").is_none(), "{value}");
        assert!(value.get("words").is_none(), "{value}");
    }

    #[test]
    fn start_stream_defaults() {
        let msg = ClientMessage::parse(
            r#"{"type":"start_stream","source_lang":"en","audio_format":{"encoding":"pcm_s16le","sample_rate":16000,"channels":1}}"#,
        )
        .unwrap();
        assert_eq!(
            msg,
            ClientMessage::StartStream {
                source_lang: "en".into(),
                target_lang: None,
                audio_format: mono16k(),
                interim_results: true,
                tts: false,
                task: Task::Transcribe,
            }
        );
    }

    #[test]
    fn bare_messages_parse() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"end_stream"}"#).unwrap(),
            ClientMessage::EndStream {}
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping { id: None }
        );
        let chunk =
            ClientMessage::parse(r#"{"type":"audio_chunk","chunk_id":1,"audio_data":""}"#).unwrap();
        assert!(matches!(
            chunk,
            ClientMessage::AudioChunk {
                timestamp: None,
                is_final: false,
                ..
            }
        ));
    }

    #[test]
    fn unknown_type_is_rejected_with_one_line() {
        let err =
            ClientMessage::parse(r#"{"type":"start_streaming","source_lang":"en"}"#).unwrap_err();
        assert!(err.contains("unknown variant `start_streaming`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        assert!(ClientMessage::parse(r#"{"source_lang":"en"}"#).is_err());
        assert!(ClientMessage::parse("not json").is_err());
        // A server message is not a client message.
        assert!(ClientMessage::parse(r#"{"type":"pong"}"#).is_err());
        assert!(serde_json::from_str::<ServerMessage>(r#"{"type":"ping"}"#).is_err());
    }

    #[test]
    fn errors_quoting_client_strings_stay_one_line() {
        // Found by fuzz/ (client_message): JSON escapes put a newline into the unknown
        // variant that serde's error quotes.
        let found = "{\n  \"type\": \"start_s\\ng\": \"tream\",\n  \"source_l\\ng\": \"en{\n\",\n  \"target_lao\"start_st{";
        for text in [
            found,
            r#"{"type":"a\nb"}"#,
            r#"{"type":"ping","x\r\ny":1}"#,
            r#"{"type":"\u001b[31mred"}"#,
        ] {
            let err = ClientMessage::parse(text).unwrap_err();
            assert!(!err.chars().any(char::is_control), "{text}: {err:?}");
        }
        let err = ClientMessage::parse(r#"{"type":"a\nb"}"#).unwrap_err();
        assert!(err.starts_with("unknown variant `a\\nb`"), "{err}");
    }

    #[test]
    fn wrong_encoding_is_rejected() {
        let err = ClientMessage::parse(
            r#"{"type":"start_stream","source_lang":"en","audio_format":{"encoding":"pcm_s24le","sample_rate":16000,"channels":1}}"#,
        )
        .unwrap_err();
        assert!(err.contains("pcm_s24le"), "{err}");
    }

    #[test]
    fn unknown_client_fields_are_rejected() {
        for text in [
            r#"{"type":"end_stream","now":true}"#,
            r#"{"type":"ping","id":1,"payload":"x"}"#,
            r#"{"type":"start_stream","source_lang":"en","target_language":"pt","audio_format":{"encoding":"pcm_s16le","sample_rate":16000,"channels":1}}"#,
            r#"{"type":"start_stream","source_lang":"en","audio_format":{"encoding":"pcm_s16le","sample_rate":16000,"channels":1,"bits":16}}"#,
        ] {
            let err = ClientMessage::parse(text).unwrap_err();
            assert!(err.contains("unknown field"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_server_fields_are_tolerated() {
        let msg: ServerMessage =
            serde_json::from_str(r#"{"type":"pong","id":1,"server_time":5}"#).unwrap();
        assert_eq!(msg, ServerMessage::Pong { id: Some(1) });
    }

    #[test]
    fn error_helper_takes_retryable_from_the_code() {
        for code in ErrorCode::ALL {
            let value = serde_json::to_value(ServerMessage::error(code, "m")).unwrap();
            assert_eq!(value["code"], code.as_str());
            assert_eq!(value["retryable"], code.retryable());
        }
    }

    #[test]
    fn audio_data_is_standard_padded_base64() {
        assert_eq!(decode_audio_data("AAABAAIA").unwrap(), [0, 0, 1, 0, 2, 0]);
        assert_eq!(decode_audio_data("AAAAAA==").unwrap(), [0; 4]);
        assert!(decode_audio_data("").unwrap().is_empty());
        for bad in ["%%%", "AAAAAA", "AA-_AAAA", "AAAA\n"] {
            let err = decode_audio_data(bad).unwrap_err();
            assert!(
                err.starts_with("audio_data is not base64: "),
                "{bad}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn audio_format_bounds() {
        let with = |sample_rate, channels| AudioFormat {
            sample_rate,
            channels,
            ..mono16k()
        };
        assert!(with(8000, 1).validate().is_ok());
        assert!(with(48_000, 2).validate().is_ok());
        let err = with(7999, 1).validate().unwrap_err();
        assert!(err.contains("8000") && err.contains("48000"), "{err}");
        assert!(with(48_001, 1).validate().is_err());
        let err = with(16_000, 3).validate().unwrap_err();
        assert!(err.contains("1") && err.contains("2"), "{err}");
        assert!(with(16_000, 0).validate().is_err());
    }

    #[test]
    fn audio_format_sizes() {
        assert_eq!(mono16k().frame_bytes(), 2);
        assert_eq!(mono16k().bytes_per_second(), 32_000);
        let stereo_f32 = AudioFormat {
            encoding: AudioEncoding::PcmF32le,
            sample_rate: 48_000,
            channels: 2,
        };
        assert_eq!(stereo_f32.frame_bytes(), 8);
        assert_eq!(stereo_f32.bytes_per_second(), 384_000);
    }

    /// The ```json blocks of a Markdown document.
    fn json_blocks(markdown: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for line in markdown.lines() {
            let fence = line.trim_start();
            match current.as_mut() {
                None if fence.starts_with("```json") => current = Some(String::new()),
                Some(block) if fence.starts_with("```") => {
                    blocks.push(std::mem::take(block));
                    current = None;
                }
                Some(block) => {
                    block.push_str(line);
                    block.push('\n');
                }
                None => {}
            }
        }
        assert!(current.is_none(), "unterminated ```json block");
        blocks
    }

    #[test]
    fn docs_examples_parse_and_cover_every_message() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let mut client = BTreeSet::new();
        let mut server = BTreeSet::new();
        for block in json_blocks(&doc) {
            if let Ok(msg) = ClientMessage::parse(&block) {
                client.insert(msg.kind());
            } else {
                match serde_json::from_str::<ServerMessage>(&block) {
                    Ok(msg) => {
                        server.insert(msg.kind());
                    }
                    Err(e) => panic!("docs/protocol.md example is neither message: {e}\n{block}"),
                }
            }
        }
        assert_eq!(client, CLIENT_TYPES.into_iter().collect());
        assert_eq!(server, SERVER_TYPES.into_iter().collect());
        for code in ErrorCode::ALL {
            assert!(
                doc.contains(&format!("`{code}`")),
                "docs/protocol.md does not document `{code}`"
            );
        }
    }
}
