//! The streaming policy: turns a live audio stream into stable partials and final segments.
//!
//! Whisper is not a streaming model, so the stream is re-decoded: every step (default
//! 500 ms of new audio) the uncommitted window is decoded again. Words are committed by
//! LocalAgreement-2 (as in ufal/whisper_streaming): a word is stable once two consecutive
//! hypotheses agree on it and on everything before it. A final segment is sent
//! - when the agreed words end a sentence and more words follow it (the window is then
//!   trimmed after that sentence, so it stays short);
//! - when the window grows past `max_window_ms` (the agreed words are committed);
//! - at end of speech, detected by the voice activity detector (VAD), or at end of stream:
//!   the utterance is decoded one last time and committed whole.
//!
//! Silence is never decoded: whisper hallucinates on it.
//!
//! This is a sans-I/O state machine: the caller feeds audio, VAD probabilities and decode
//! results, and asks for the next decode request. It holds at most one request in flight,
//! so a slow pool slows a stream's partials down instead of queueing work for it.

use tolk_models::vad::VAD_WINDOW;
use tolk_protocol::transcript::Word;

const SAMPLES_PER_MS: u64 = 16;
/// Non-speech after speech before a covering decode is made (three VAD windows).
const COVER_AFTER_MS: u64 = 96;

/// Tuning of the policy. Times are in milliseconds of audio.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingConfig {
    /// New audio between two partial decodes.
    pub step_ms: u64,
    /// Beyond this window length, agreed words are committed even mid-sentence.
    pub max_window_ms: u64,
    /// Hard cap on the window: decoded as final when reached (whisper's window with the
    /// short encoder context is 15.36 s).
    pub hard_window_ms: u64,
    /// Silence after speech that ends an utterance.
    pub min_silence_ms: u64,
    /// Speech shorter than this is a blip, not an utterance.
    pub min_speech_ms: u64,
    /// Audio kept before the detected start of speech, and after its end.
    pub pad_ms: u64,
    /// VAD probability at or above which a window is speech.
    pub speech_threshold: f32,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            step_ms: 500,
            max_window_ms: 10_000,
            hard_window_ms: 14_500,
            min_silence_ms: 500,
            min_speech_ms: 200,
            pad_ms: 200,
            speech_threshold: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeKind {
    /// A look at the utterance so far; may be skipped under load.
    Partial,
    /// The last decode of an utterance; its result is committed and must not be lost.
    Final,
}

/// Identifies a decode; hand it back with the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    seq: u64,
    pub kind: DecodeKind,
    /// Stream time of the first sample of the request's audio.
    pub start_ms: u64,
    /// Its result is likely to be committed soon (a final, or a partial covering the end
    /// of speech): worth running before ordinary partials.
    pub urgent: bool,
    /// Sample just past the request's audio.
    end: u64,
}

/// Audio to decode: `audio` starts at `ticket.start_ms` of the stream.
#[derive(Clone, PartialEq)]
pub struct DecodeRequest {
    pub ticket: Ticket,
    pub audio: Vec<f32>,
    /// Text committed just before this window in the same utterance (context for whisper).
    pub prompt: Option<String>,
}

impl std::fmt::Debug for DecodeRequest {
    // The samples would drown everything else.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeRequest")
            .field("ticket", &self.ticket)
            .field("audio_ms", &(self.audio.len() as u64 / SAMPLES_PER_MS))
            .field("prompt", &self.prompt)
            .finish()
    }
}

/// What the stream produced: the words of one segment, with stream-relative times.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentUpdate {
    pub segment_id: u32,
    pub words: Vec<Word>,
    /// `false`: the current hypothesis of a segment, replaced by later updates.
    /// `true`: the segment is committed and never revised.
    pub is_final: bool,
}

impl SegmentUpdate {
    pub fn text(&self) -> String {
        join_words(&self.words)
    }

    pub fn confidence(&self) -> f32 {
        if self.words.is_empty() {
            return 0.0;
        }
        self.words.iter().map(|w| w.probability).sum::<f32>() / self.words.len() as f32
    }

    pub fn start_ms(&self) -> u64 {
        self.words.first().map_or(0, |w| w.start_ms)
    }

    pub fn end_ms(&self) -> u64 {
        self.words.last().map_or(0, |w| w.end_ms)
    }
}

pub fn join_words(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.word.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Per-stream state.
#[derive(Debug)]
pub struct StreamingAsr {
    config: StreamingConfig,
    /// Audio held, starting at sample `audio_start` of the stream: the uncommitted audio
    /// (from `window_start`) and any the VAD has not judged yet (from `vad_cursor`), which a
    /// commit can pass when the VAD lags; it must still reach the VAD.
    audio: Vec<f32>,
    audio_start: u64,
    /// Start of the uncommitted audio.
    window_start: u64,
    /// Samples received so far.
    received: u64,
    /// Samples the VAD has judged.
    vad_cursor: u64,
    in_speech: bool,
    speech_start: u64,
    /// End (sample) of the last window judged as speech.
    last_voice: u64,
    /// The window holds speech that has not been committed yet.
    speech_in_window: bool,
    /// End of an utterance waiting for its final decode.
    pending_final: Option<u64>,
    /// Window end (sample) of the last partial decode.
    last_partial_end: u64,
    /// The request whose result is awaited; results of other tickets are stale.
    in_flight: Option<Ticket>,
    next_seq: u64,
    /// Window end (sample) of the audio `previous` was decoded from.
    previous_end: u64,
    /// Where the speech of the utterance awaiting its final ended (sample).
    utterance_voice_end: u64,
    /// The previous hypothesis, for LocalAgreement.
    previous: Vec<Word>,
    /// Text committed in the current utterance before the window (prompt for whisper).
    utterance_prompt: String,
    segment_id: u32,
    ending: bool,
    /// Samples of audio judged as speech.
    speech_samples: u64,
}

impl StreamingAsr {
    pub fn new(config: StreamingConfig) -> Self {
        Self {
            config,
            audio: Vec::new(),
            audio_start: 0,
            window_start: 0,
            received: 0,
            vad_cursor: 0,
            in_speech: false,
            speech_start: 0,
            last_voice: 0,
            speech_in_window: false,
            pending_final: None,
            last_partial_end: 0,
            in_flight: None,
            next_seq: 0,
            previous_end: 0,
            utterance_voice_end: 0,
            previous: Vec::new(),
            utterance_prompt: String::new(),
            segment_id: 0,
            ending: false,
            speech_samples: 0,
        }
    }

    /// Append 16 kHz mono audio.
    pub fn push_audio(&mut self, samples: &[f32]) {
        self.audio.extend_from_slice(samples);
        self.received += samples.len() as u64;
    }

    /// Audio waiting for the VAD: from the VAD cursor to the end of what was received.
    /// The caller runs the VAD over it (on a worker) and feeds the probabilities back.
    pub fn unjudged_audio(&self) -> &[f32] {
        let from = (self.vad_cursor.max(self.audio_start) - self.audio_start) as usize;
        &self.audio[from.min(self.audio.len())..]
    }

    /// Feed VAD probabilities, one per `VAD_WINDOW` samples, in order from the cursor.
    pub fn push_vad(&mut self, probabilities: &[f32]) {
        let c = &self.config;
        let min_silence = c.min_silence_ms * SAMPLES_PER_MS;
        for &p in probabilities {
            let start = self.vad_cursor;
            let end = start + VAD_WINDOW as u64;
            self.vad_cursor = end;
            if p >= c.speech_threshold {
                if !self.in_speech {
                    self.in_speech = true;
                    self.speech_start = start;
                }
                self.last_voice = end;
                self.speech_in_window = true;
                self.speech_samples += VAD_WINDOW as u64;
            } else if self.in_speech && end - self.last_voice >= min_silence {
                self.in_speech = false;
                let long_enough =
                    self.last_voice - self.speech_start >= c.min_speech_ms * SAMPLES_PER_MS;
                if long_enough && self.pending_final.is_none() {
                    self.utterance_voice_end = self.last_voice;
                    self.pending_final =
                        Some((self.last_voice + c.pad_ms * SAMPLES_PER_MS).min(self.received));
                }
            }
        }
        self.trim_silence();
        self.drop_used_audio();
    }

    /// No more audio: flush what is left.
    pub fn end_stream(&mut self) {
        if self.ending {
            return;
        }
        self.ending = true;
        if self.speech_in_window && self.pending_final.is_none() {
            self.pending_final = Some(self.received);
            self.utterance_voice_end = self.received;
        }
    }

    /// Everything is committed and nothing is in flight: `final_result` may be sent.
    pub fn is_finished(&self) -> bool {
        self.ending && self.in_flight.is_none() && self.pending_final.is_none()
    }

    pub fn speech_ms(&self) -> u64 {
        self.speech_samples / SAMPLES_PER_MS
    }

    /// Change the step between partial decodes: callers lengthen it when the ASR pool is
    /// behind, so partials give way to finals instead of queueing ahead of them.
    pub fn set_step_ms(&mut self, step_ms: u64) {
        self.config.step_ms = step_ms.max(100);
    }

    /// Samples held in the window (for buffer accounting).
    pub fn window_len(&self) -> usize {
        self.window().len()
    }

    /// The uncommitted audio, from `window_start`.
    fn window(&self) -> &[f32] {
        &self.audio[(self.window_start - self.audio_start) as usize..]
    }

    /// The next decode to run, if one is due. At most one is in flight.
    pub fn poll_request(&mut self) -> Option<DecodeRequest> {
        if let Some(t) = self.in_flight {
            // A partial that cannot hear the end of the utterance awaiting its final is
            // abandoned (its result will be ignored): waiting for it would delay the final.
            let useless = t.kind == DecodeKind::Partial
                && self.pending_final.is_some()
                && t.end < self.utterance_voice_end;
            if !useless {
                return None;
            }
            self.in_flight = None;
        }
        let hard = self.config.hard_window_ms * SAMPLES_PER_MS;
        if self.pending_final.is_none()
            && self.speech_in_window
            && self.received - self.window_start >= hard
        {
            // Speech without a pause for too long: close the utterance where it stands.
            self.pending_final = Some(self.received);
            self.utterance_voice_end = self.received;
        }
        if self.final_is_covered() {
            return None; // take_ready() commits it without another decode
        }
        if let Some(end) = self.pending_final {
            let len = (end.saturating_sub(self.window_start) as usize).min(self.window_len());
            return Some(self.request(DecodeKind::Final, len));
        }
        let step = self.config.step_ms * SAMPLES_PER_MS;
        // Only while the speaker is still talking: a partial in flight at end of speech
        // would delay the final decode by its whole duration.
        let silent_for = self.vad_cursor.saturating_sub(self.last_voice);
        let talking = self.in_speech && silent_for < 200 * SAMPLES_PER_MS;
        // When the speaker pauses, one decode covering the end of their speech: if the
        // pause turns out to end the utterance, that hypothesis is its final, and the
        // final costs no decode after the silence.
        let covering = self.in_speech
            && silent_for >= COVER_AFTER_MS * SAMPLES_PER_MS
            && self.last_partial_end < self.last_voice;
        let step_due = talking && self.received >= self.last_partial_end + step;
        if (step_due || covering) && !self.ending {
            self.last_partial_end = self.received;
            let mut request = self.request(DecodeKind::Partial, self.window_len());
            request.ticket.urgent = covering;
            self.in_flight = Some(request.ticket);
            return Some(request);
        }
        None
    }

    fn request(&mut self, kind: DecodeKind, len: usize) -> DecodeRequest {
        self.next_seq += 1;
        let ticket = Ticket {
            seq: self.next_seq,
            kind,
            start_ms: self.window_start / SAMPLES_PER_MS,
            urgent: kind == DecodeKind::Final,
            end: self.window_start + len as u64,
        };
        self.in_flight = Some(ticket);
        DecodeRequest {
            ticket,
            audio: self.window()[..len].to_vec(),
            prompt: (!self.utterance_prompt.is_empty()).then(|| self.utterance_prompt.clone()),
        }
    }

    /// Whether `ticket` is the request awaited, and if so, no longer await it.
    fn settle(&mut self, ticket: &Ticket) -> bool {
        if self.in_flight.map(|t| t.seq) != Some(ticket.seq) {
            return false;
        }
        self.in_flight = None;
        true
    }

    /// A decode failed. A failed partial is forgotten; a failed final commits the last
    /// hypothesis, so that what the client already saw is not lost.
    pub fn on_failed(&mut self, ticket: &Ticket) -> Vec<SegmentUpdate> {
        if !self.settle(ticket) {
            return Vec::new();
        }
        match ticket.kind {
            DecodeKind::Partial => vec![],
            DecodeKind::Final => {
                let words = self.take_previous_within_utterance();
                self.finish_utterance(words)
            }
        }
    }

    /// A partial decoded after the end of the speech of the utterance awaiting its final
    /// heard all of it: its hypothesis is the final.
    fn final_is_covered(&self) -> bool {
        self.pending_final.is_some()
            && self.in_flight.is_none()
            && self.previous_end >= self.utterance_voice_end
    }

    /// Commits that need no decode: the final of an utterance whose last partial already
    /// covered its speech. Call before `poll_request`.
    pub fn take_ready(&mut self) -> Vec<SegmentUpdate> {
        if !self.final_is_covered() {
            return Vec::new();
        }
        let words = self.take_previous_within_utterance();
        self.finish_utterance(words)
    }

    /// The last hypothesis, to commit as the utterance awaiting its final, less the words
    /// past the utterance's end: a partial whose audio reached into the next utterance
    /// heard some of it, and the window is cut at the end, so those words are decoded
    /// again with the next utterance (committed here too, they came out twice).
    fn take_previous_within_utterance(&mut self) -> Vec<Word> {
        let mut words = std::mem::take(&mut self.previous);
        if let Some(end) = self.pending_final {
            words.retain(|w| (w.start_ms + w.end_ms) * SAMPLES_PER_MS / 2 < end);
        }
        words
    }

    /// The request could not be queued: forget it was made, so the next poll makes it again.
    pub fn retry_later(&mut self, ticket: &Ticket) {
        self.settle(ticket);
    }

    /// Feed the words a decode produced (times relative to the request's audio).
    pub fn on_decoded(&mut self, ticket: &Ticket, words: Vec<Word>) -> Vec<SegmentUpdate> {
        if !self.settle(ticket) {
            return Vec::new(); // abandoned: a newer request replaced it
        }
        let request_start_ms = ticket.start_ms;
        let words: Vec<Word> = words
            .into_iter()
            .filter(|w| !is_non_speech(&w.word))
            .map(|w| Word {
                start_ms: w.start_ms + request_start_ms,
                end_ms: w.end_ms + request_start_ms,
                ..w
            })
            .collect();
        match ticket.kind {
            DecodeKind::Final => self.finish_utterance(words),
            DecodeKind::Partial => {
                let mut out = self.agree(words);
                self.previous_end = ticket.end;
                let ready = self.take_ready();
                if !ready.is_empty() {
                    // The hypothesis just became final: no partial for it.
                    out.retain(|u| u.is_final);
                    out.extend(ready);
                }
                out
            }
        }
    }

    fn finish_utterance(&mut self, words: Vec<Word>) -> Vec<SegmentUpdate> {
        let end = self.pending_final.take().unwrap_or(self.received);
        self.cut_window(end);
        self.previous.clear();
        // No hypothesis of audio past the cut is left: the next utterance needs a decode.
        self.previous_end = self.previous_end.min(end);
        self.utterance_prompt.clear();
        // Speech after the cut (the speaker went on) is the next utterance's; at end of
        // stream it is decoded as one more final.
        self.speech_in_window = self.last_voice > end || (self.in_speech && !self.ending);
        if self.ending && self.speech_in_window {
            self.pending_final = Some(self.received);
        }
        self.last_partial_end = self.received;
        let mut out = Vec::new();
        if !words.is_empty() {
            out.push(SegmentUpdate {
                segment_id: self.segment_id,
                words,
                is_final: true,
            });
            self.segment_id += 1;
        }
        self.trim_silence();
        out
    }

    fn agree(&mut self, words: Vec<Word>) -> Vec<SegmentUpdate> {
        let agreed = self
            .previous
            .iter()
            .zip(&words)
            .take_while(|(a, b)| same_word(&a.word, &b.word))
            .count();
        // Commit through the last agreed sentence end that more words follow.
        let sentence_end = (0..agreed)
            .rev()
            .find(|&i| ends_sentence(&words[i].word) && i + 1 < words.len());
        let window_ms = (self.received - self.window_start) / SAMPLES_PER_MS;
        let commit = match sentence_end {
            Some(i) => i + 1,
            None if window_ms > self.config.max_window_ms && agreed > 0 && agreed < words.len() => {
                agreed
            }
            None => 0,
        };
        let mut out = Vec::new();
        let mut words = words;
        if commit > 0 {
            let rest = words.split_off(commit);
            // Cut between the last committed word and the next one.
            let cut_ms = match rest.first() {
                Some(next) => (words[commit - 1].end_ms + next.start_ms) / 2,
                None => words[commit - 1].end_ms,
            };
            self.cut_window(cut_ms * SAMPLES_PER_MS);
            let text = join_words(&words);
            self.utterance_prompt = tail_chars(&format!("{} {text}", self.utterance_prompt), 200);
            out.push(SegmentUpdate {
                segment_id: self.segment_id,
                words,
                is_final: true,
            });
            self.segment_id += 1;
            words = rest;
        }
        if !words.is_empty() {
            out.push(SegmentUpdate {
                segment_id: self.segment_id,
                words: words.clone(),
                is_final: false,
            });
        }
        self.previous = words;
        out
    }

    /// Drop window audio before sample `at`.
    fn cut_window(&mut self, at: u64) {
        self.window_start = at.clamp(self.window_start, self.received);
        self.drop_used_audio();
    }

    /// Drop the audio that is neither uncommitted nor waiting for the VAD.
    fn drop_used_audio(&mut self) {
        let keep_from = self.window_start.min(self.vad_cursor).max(self.audio_start);
        let drop = (keep_from - self.audio_start) as usize;
        self.audio.drain(..drop.min(self.audio.len()));
        self.audio_start += drop as u64;
    }

    /// Outside speech, keep only the padding before the VAD cursor: silence is never
    /// decoded, and the window stays bounded however long the silence lasts.
    fn trim_silence(&mut self) {
        if self.in_flight.is_some() || self.speech_in_window || self.pending_final.is_some() {
            return;
        }
        let keep_from = self
            .vad_cursor
            .saturating_sub(self.config.pad_ms * SAMPLES_PER_MS);
        if keep_from > self.window_start {
            self.cut_window(keep_from);
        }
    }
}

fn normalize(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn same_word(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

fn ends_sentence(word: &str) -> bool {
    word.ends_with(['.', '?', '!', '。', '？', '！'])
}

/// whisper marks non-speech as `[BLANK_AUDIO]`, `(music)`, `[Applause]`, …
fn is_non_speech(word: &str) -> bool {
    let w = word.trim();
    (w.starts_with('[') && w.ends_with(']')) || (w.starts_with('(') && w.ends_with(')'))
}

fn tail_chars(text: &str, n: usize) -> String {
    let chars: Vec<char> = text.trim().chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn word(w: &str, start_ms: u64, end_ms: u64) -> Word {
        Word {
            word: w.into(),
            start_ms,
            end_ms,
            probability: 0.9,
        }
    }

    /// Words spoken at 300 ms each from `from_ms`, relative to `from_ms`.
    fn spoken(text: &str) -> Vec<Word> {
        text.split(' ')
            .enumerate()
            .map(|(i, w)| word(w, i as u64 * 300, i as u64 * 300 + 250))
            .collect()
    }

    fn vad_windows(ms: u64) -> usize {
        (ms * SAMPLES_PER_MS) as usize / VAD_WINDOW
    }

    /// Push `ms` of audio judged speech (p = 0.9) or silence (p = 0.05).
    fn feed(s: &mut StreamingAsr, ms: u64, speech: bool) {
        let n = vad_windows(ms);
        s.push_audio(&vec![0.0; n * VAD_WINDOW]);
        s.push_vad(&vec![if speech { 0.9 } else { 0.05 }; n]);
    }

    #[test]
    fn silence_is_never_decoded_and_the_window_stays_small() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        for _ in 0..100 {
            feed(&mut s, 1000, false);
            assert_eq!(s.poll_request(), None);
        }
        assert!(
            s.window_len() <= 300 * SAMPLES_PER_MS as usize,
            "window {}",
            s.window_len()
        );
        s.end_stream();
        assert_eq!(s.poll_request(), None);
        assert!(s.is_finished());
    }

    #[test]
    fn partials_come_every_step_while_speaking() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 300, false);
        feed(&mut s, 600, true);
        let r = s.poll_request().expect("a partial after 500 ms of speech");
        assert_eq!(r.ticket.kind, DecodeKind::Partial);
        // The window starts a little before the speech: padding is kept.
        assert!(
            r.ticket.start_ms > 0 && r.ticket.start_ms <= 300,
            "start {}",
            r.ticket.start_ms
        );
        assert_eq!(s.poll_request(), None, "one request in flight at a time");
        let out = s.on_decoded(&r.ticket, spoken("and so"));
        assert_eq!(out.len(), 1);
        assert!(!out[0].is_final);
        assert_eq!(out[0].text(), "and so");
        feed(&mut s, 200, true);
        assert_eq!(s.poll_request(), None, "less than a step of new audio");
        feed(&mut s, 400, true);
        assert_eq!(
            s.poll_request().map(|r| r.ticket.kind),
            Some(DecodeKind::Partial)
        );
    }

    #[test]
    fn agreed_sentences_are_committed_and_trimmed() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 2000, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("Ask not. What your"));
        feed(&mut s, 600, true);
        let r = s.poll_request().unwrap();
        let out = s.on_decoded(&r.ticket, spoken("Ask not. What your country"));
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].is_final && out[0].text() == "Ask not." && out[0].segment_id == 0);
        assert!(!out[1].is_final && out[1].text() == "What your country" && out[1].segment_id == 1);
        // The window now starts between "not." (ends 550 ms) and "What" (starts 600 ms).
        feed(&mut s, 600, true);
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.start_ms, 575);
        assert_eq!(r.prompt.as_deref(), Some("Ask not."));
    }

    #[test]
    fn disagreement_commits_nothing() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 2000, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("Ask knot. What"));
        feed(&mut s, 600, true);
        let r = s.poll_request().unwrap();
        let out = s.on_decoded(&r.ticket, spoken("Ask not. What your"));
        assert_eq!(out.len(), 1);
        assert!(!out[0].is_final);
    }

    #[test]
    fn a_partial_that_heard_the_whole_utterance_becomes_its_final() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("hello"));
        feed(&mut s, 300, true);
        assert_eq!(
            s.poll_request(),
            None,
            "less than a step since the last partial"
        );
        feed(&mut s, 128, false);
        // The pause gets a covering decode at once, before a step of new audio.
        let r = s.poll_request().expect("a covering partial");
        assert_eq!(r.ticket.kind, DecodeKind::Partial);
        assert!(s.take_ready().is_empty());
        let out = s.on_decoded(&r.ticket, spoken("hello world"));
        assert!(out.iter().all(|u| !u.is_final));
        feed(&mut s, 500, false);
        let out = s.take_ready();
        assert_eq!(out.len(), 1);
        assert!(out[0].is_final && out[0].text() == "hello world");
        assert_eq!(s.poll_request(), None, "no final decode needed");
        // A covering partial still in flight when the silence ends becomes the final.
        feed(&mut s, 1000, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("next"));
        feed(&mut s, 300, true);
        feed(&mut s, 128, false);
        let r = s.poll_request().unwrap();
        feed(&mut s, 500, false);
        assert_eq!(s.poll_request(), None);
        let out = s.on_decoded(&r.ticket, spoken("next one"));
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].is_final && out[0].text() == "next one" && out[0].segment_id == 1);
    }

    #[test]
    fn end_of_speech_triggers_a_final_decode_of_the_utterance() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 600, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("hello"));
        // The speech goes on past the last partial, then ends: that partial did not hear
        // the end, so the utterance is decoded again.
        feed(&mut s, 400, true);
        feed(&mut s, 600, false);
        let r = s.poll_request().expect("final after 500 ms of silence");
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        // Speech plus 200 ms of padding, not the trailing silence.
        let speech = (vad_windows(600) + vad_windows(400)) * VAD_WINDOW;
        assert_eq!(r.audio.len() as u64, speech as u64 + 200 * SAMPLES_PER_MS);
        let out = s.on_decoded(&r.ticket, spoken("hello world."));
        assert_eq!(out.len(), 1);
        assert!(out[0].is_final && out[0].text() == "hello world.");
        // The next utterance gets the next segment id.
        feed(&mut s, 1000, true);
        s.end_stream();
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        let out = s.on_decoded(&r.ticket, spoken("again"));
        assert_eq!(out[0].segment_id, 1);
        assert!(s.is_finished());
    }

    #[test]
    fn a_final_waits_for_a_partial_that_covers_it_and_not_for_one_that_cannot() {
        // In flight and covering everything: the final waits for it and takes its words.
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        let partial = s.poll_request().unwrap();
        s.end_stream();
        assert_eq!(s.poll_request(), None);
        let out = s.on_decoded(&partial.ticket, spoken("hi"));
        assert!(
            out.len() == 1 && out[0].is_final && out[0].text() == "hi",
            "{out:?}"
        );
        assert!(s.is_finished());

        // In flight but deaf to the last 300 ms: abandoned, the final is decoded at once,
        // and the late partial's words are ignored.
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        let partial = s.poll_request().unwrap();
        feed(&mut s, 300, true);
        s.end_stream();
        let last = s.poll_request().expect("a final without waiting");
        assert_eq!(last.ticket.kind, DecodeKind::Final);
        assert!(s.on_decoded(&partial.ticket, spoken("stale")).is_empty());
        let out = s.on_decoded(&last.ticket, spoken("hi there"));
        assert_eq!(out[0].text(), "hi there");
        assert!(s.is_finished());
    }

    #[test]
    fn a_failed_final_commits_the_last_hypothesis() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        let r = s.poll_request().unwrap();
        s.on_decoded(&r.ticket, spoken("so close"));
        feed(&mut s, 300, true);
        s.end_stream();
        let r = s.poll_request().unwrap();
        let out = s.on_failed(&r.ticket);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_final && out[0].text() == "so close");
        assert!(s.is_finished());
    }

    #[test]
    fn endless_speech_is_cut_at_the_hard_limit() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 15_000, true);
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        assert!(r.audio.len() as u64 <= 15_000 * SAMPLES_PER_MS);
    }

    #[test]
    fn speech_after_a_pending_final_is_not_lost_at_end_of_stream() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        feed(&mut s, 600, false); // utterance 1 ends
        feed(&mut s, 1000, true); // utterance 2 starts...
        s.end_stream(); // ...and the stream ends mid-speech
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        s.on_decoded(&r.ticket, spoken("one"));
        let r = s.poll_request().expect("a final for the second utterance");
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        let out = s.on_decoded(&r.ticket, spoken("two"));
        assert_eq!((out[0].segment_id, out[0].text().as_str()), (1, "two"));
        assert!(s.is_finished());
        assert_eq!(s.poll_request(), None);
    }

    #[test]
    fn audio_a_commit_passes_still_reaches_the_vad() {
        // Found by the properties: the hard limit commits all audio received while the
        // VAD has judged less (its job still running). That audio used to go with the
        // window, so the VAD never had it (and the session, which ends the stream only
        // once the VAD has had every sample, would have waited for ever).
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 14_000, true);
        s.push_audio(&vec![0.5; 16_000]); // not judged yet
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        let out = s.on_decoded(&r.ticket, spoken("on and on"));
        assert!(out[0].is_final);
        assert_eq!(s.window_len(), 0, "all committed");
        let unjudged = s.unjudged_audio();
        assert_eq!(unjudged.len(), 16_000);
        assert!(unjudged.iter().all(|&v| v == 0.5));
        // Once judged, it goes.
        s.push_vad(&[0.1; 31]);
        assert_eq!(s.unjudged_audio().len(), 16_000 - 31 * VAD_WINDOW);
        assert_eq!(s.audio.len(), 16_000 - 31 * VAD_WINDOW);
    }

    #[test]
    fn a_partial_that_heard_into_the_next_utterance_commits_only_its_own_words() {
        // Found by the properties: a partial asked for while the VAD lagged heard the end
        // of one utterance and the start of the next; taken whole as the first one's
        // final, the next one's words were committed twice.
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        s.push_audio(&vec![0.0; 16 * 1600]); // 600 ms of pause, 1 s of speech: unjudged
        let r = s.poll_request().expect("a partial");
        assert_eq!(r.ticket.kind, DecodeKind::Partial);
        s.push_vad(&vec![0.05; vad_windows(600)]);
        s.push_vad(&vec![0.9; vad_windows(1000)]);
        // "hello" in the first utterance; "again" 1.7 s in, in the second.
        let mut words = spoken("hello");
        words.push(word("again", 1700, 1950));
        let out = s.on_decoded(&r.ticket, words);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].is_final && out[0].text() == "hello", "{out:?}");
        // The second utterance's decode hears "again" and commits it, once.
        s.end_stream();
        let r = s.poll_request().unwrap();
        assert_eq!(r.ticket.kind, DecodeKind::Final);
        let start = r.ticket.start_ms;
        let out = s.on_decoded(&r.ticket, vec![word("again", 1700 - start, 1950 - start)]);
        assert_eq!((out[0].segment_id, out[0].text().as_str()), (1, "again"));
    }

    #[test]
    fn blips_shorter_than_min_speech_are_not_utterances() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 64, true);
        feed(&mut s, 1000, false);
        assert_eq!(s.poll_request(), None);
    }

    #[test]
    fn non_speech_marks_are_dropped() {
        let mut s = StreamingAsr::new(StreamingConfig::default());
        feed(&mut s, 1000, true);
        let r = s.poll_request().unwrap();
        let out = s.on_decoded(&r.ticket, spoken("[BLANK_AUDIO]"));
        assert!(out.is_empty());
    }
}
