//! A recognised utterance.

use serde::{Deserialize, Serialize};

/// What the recogniser was asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Text in the spoken language.
    #[default]
    Transcribe,
    /// English text, whatever the spoken language (Whisper's speech translation).
    Translate,
}

/// The result of recognising one piece of audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// ISO 639-1 code of the spoken language: detected when none was given.
    pub language: String,
    /// Probability the detector gave `language`; absent when the language was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_probability: Option<f32>,
    pub task: Task,
    /// All segments' text joined, trimmed.
    pub text: String,
    pub segments: Vec<Segment>,
    /// Length of the audio that was recognised.
    pub duration_ms: u64,
}

/// A stretch of speech the recogniser decoded as one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    /// Probability that the segment holds no speech.
    pub no_speech_probability: f32,
    pub words: Vec<Word>,
}

/// One word with its timing; punctuation stays attached to the word before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub word: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Mean probability of the word's tokens.
    pub probability: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_round_trips_through_json() {
        let t = Transcript {
            language: "en".into(),
            language_probability: Some(0.97),
            task: Task::Transcribe,
            text: "Hello, world.".into(),
            segments: vec![Segment {
                id: 0,
                start_ms: 0,
                end_ms: 1200,
                text: "Hello, world.".into(),
                no_speech_probability: 0.01,
                words: vec![Word {
                    word: "Hello,".into(),
                    start_ms: 0,
                    end_ms: 500,
                    probability: 0.9,
                }],
            }],
            duration_ms: 1250,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""task":"transcribe""#), "{json}");
        assert_eq!(serde_json::from_str::<Transcript>(&json).unwrap(), t);
    }

    #[test]
    fn language_probability_is_omitted_when_unknown() {
        let t = Transcript {
            language: "en".into(),
            language_probability: None,
            task: Task::Translate,
            text: String::new(),
            segments: vec![],
            duration_ms: 0,
        };
        let json = serde_json::to_value(&t).unwrap();
        assert!(json.get("language_probability").is_none());
        assert_eq!(json["task"], "translate");
    }
}
