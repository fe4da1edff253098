//! Properties of the stream's audio window under arbitrary interleavings of audio, VAD
//! verdicts, decode requests and their answers (proptest).
//!
//! Every sample pushed is its own index in the stream, so a slice of audio says exactly
//! where it came from. The recognizer is a model that hears a word in every 300 ms slot of
//! the stream that lies wholly inside its audio and that the VAD judged speech, named
//! after the slot (`w7`, every fourth ending a sentence), so consecutive hypotheses agree
//! the way whisper's do and words can be followed from audio to committed text. The VAD
//! runs as the session runs it: one job at a time, given every new sample once (the tail
//! of `unjudged_audio`), its verdicts arriving later, whatever happened in between.

use proptest::prelude::*;
use tolk_models::vad::VAD_WINDOW;

use super::*;

const WINDOW: u64 = VAD_WINDOW as u64;
/// A word slot: 300 ms, of which the word takes the first 250.
const SLOT: u64 = 300 * SAMPLES_PER_MS;
const WORD: u64 = 250 * SAMPLES_PER_MS;

/// Sample `i` of the stream (exact in f32 below 2^24 samples, 17 minutes).
fn marker(i: u64) -> f32 {
    i as f32
}

#[derive(Debug, Clone)]
enum Op {
    /// `n` samples of audio arrive.
    Push(usize),
    /// The VAD is given the audio it has not had (if no job of it is in flight).
    VadSubmit,
    /// The VAD job in flight answers: its windows are speech, or not.
    VadDone { speech: bool },
    /// `take_ready`, then `poll_request`.
    Poll,
    /// An outstanding request (picked by index) is answered: words, a failure, or
    /// "could not queue, ask again later".
    Answer { pick: usize, outcome: Outcome },
    /// No more audio; what is left is judged (`speech` or not) first.
    EndStream { speech: bool },
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Decoded,
    Failed,
    RetryLater,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6_000).prop_map(Op::Push),
        3 => Just(Op::VadSubmit),
        3 => prop::bool::weighted(0.6).prop_map(|speech| Op::VadDone { speech }),
        3 => Just(Op::Poll),
        3 => (any::<usize>(), prop_oneof![
                8 => Just(Outcome::Decoded),
                1 => Just(Outcome::Failed),
                1 => Just(Outcome::RetryLater),
            ])
            .prop_map(|(pick, outcome)| Op::Answer { pick, outcome }),
        1 => any::<bool>().prop_map(|speech| Op::EndStream { speech }),
    ]
}

fn config() -> impl Strategy<Value = StreamingConfig> {
    // Short windows and steps, so that a few seconds of audio reach every limit.
    (
        100u64..800,
        1_000u64..4_000,
        100u64..800,
        0u64..400,
        0u64..300,
    )
        .prop_map(
            |(step_ms, max_window_ms, min_silence_ms, min_speech_ms, pad_ms)| StreamingConfig {
                step_ms,
                max_window_ms,
                hard_window_ms: max_window_ms + 1_000,
                min_silence_ms,
                min_speech_ms,
                pad_ms,
                speech_threshold: 0.5,
            },
        )
}

/// The stream, the model around it, and the invariants checked after every step.
struct Harness {
    s: StreamingAsr,
    /// The VAD's verdict on every window judged so far.
    judged: Vec<bool>,
    outstanding: Vec<DecodeRequest>,
    /// Committed words, as slot numbers, in the order committed.
    committed: Vec<u64>,
    next_segment: u32,
    window_start: u64,
    requests: usize,
    /// `end_stream` was called: no more audio.
    ended: bool,
    /// Samples given to the VAD.
    vad_fed: u64,
    /// The VAD job in flight: how many verdicts it will give.
    vad_job: Option<usize>,
    /// Verdicts owed by the job in flight.
    vad_pending: usize,
}

impl Harness {
    fn new(config: StreamingConfig) -> Self {
        Self {
            s: StreamingAsr::new(config),
            judged: Vec::new(),
            outstanding: Vec::new(),
            committed: Vec::new(),
            next_segment: 0,
            window_start: 0,
            requests: 0,
            ended: false,
            vad_fed: 0,
            vad_job: None,
            vad_pending: 0,
        }
    }

    fn push(&mut self, n: usize) {
        if self.ended {
            return;
        }
        let from = self.s.received;
        let audio: Vec<f32> = (from..from + n as u64).map(marker).collect();
        self.s.push_audio(&audio);
    }

    /// The server's VAD: it is given every new sample once, in order (its state keeps a
    /// partial window for the next job), and answers later with one verdict per whole window.
    fn vad_submit(&mut self) -> Result<(), TestCaseError> {
        if self.vad_job.is_some() {
            return Ok(()); // one job at a time, as the session runs it
        }
        let new = (self.s.received - self.vad_fed) as usize;
        let unjudged = self.s.unjudged_audio();
        // As src/ws/session.rs takes it: the tail of the unjudged audio.
        let audio = &unjudged[unjudged.len().saturating_sub(new)..];
        prop_assert_eq!(
            audio.len(),
            new,
            "the VAD was not given samples {}..{} (window from {})",
            self.vad_fed,
            self.s.received - audio.len() as u64,
            self.s.window_start
        );
        prop_assert!(audio.first().is_none_or(|&v| v == marker(self.vad_fed)));
        self.vad_fed += new as u64;
        let whole = (self.vad_fed / WINDOW) as usize - self.judged.len() - self.vad_pending;
        self.vad_job = Some(whole);
        self.vad_pending += whole;
        Ok(())
    }

    fn vad_done(&mut self, speech: bool) {
        if let Some(n) = self.vad_job.take() {
            let p = if speech { 0.9 } else { 0.1 };
            self.s.push_vad(&vec![p; n]);
            self.judged.extend(std::iter::repeat_n(speech, n));
            self.vad_pending -= n;
        }
    }

    /// Give the VAD everything and have it answer.
    fn vad_all(&mut self, speech: bool) -> Result<(), TestCaseError> {
        self.vad_done(speech);
        self.vad_submit()?;
        self.vad_done(speech);
        Ok(())
    }

    /// `end_stream` as the server calls it: once the VAD has judged all it can.
    fn end_stream(&mut self, speech: bool) -> Result<(), TestCaseError> {
        if !self.ended {
            self.vad_all(speech)?;
            self.ended = true;
        }
        self.s.end_stream();
        Ok(())
    }

    fn poll(&mut self) -> Result<(), TestCaseError> {
        let ready = self.s.take_ready();
        self.updates(&ready)?;
        if let Some(r) = self.s.poll_request() {
            // The request's audio is the stream's samples [start, end), all received.
            let len = r.audio.len() as u64;
            let end = r.ticket.end;
            prop_assert!(end <= self.s.received && len <= end);
            let start = end - len;
            prop_assert_eq!(r.ticket.start_ms, start / SAMPLES_PER_MS);
            prop_assert!(start >= self.window_start, "audio before the window");
            for (i, &v) in r.audio.iter().enumerate().step_by(97) {
                prop_assert_eq!(v, marker(start + i as u64));
            }
            prop_assert!(r.audio.last().is_none_or(|&v| v == marker(end - 1)));
            self.requests += 1;
            self.outstanding.push(r);
        }
        Ok(())
    }

    /// The model recognizer: the speech slots wholly inside the request's audio.
    fn hear(&self, r: &DecodeRequest) -> Vec<Word> {
        let end = r.ticket.end;
        let start = end - r.audio.len() as u64;
        let start_ms = r.ticket.start_ms;
        (start.div_ceil(SLOT)..)
            .map(|slot| (slot, slot * SLOT))
            .take_while(|&(_, at)| at + WORD <= end)
            .filter(|&(_, at)| {
                let windows = at / WINDOW..(at + WORD).div_ceil(WINDOW);
                windows
                    .clone()
                    .all(|w| self.judged.get(w as usize) == Some(&true))
            })
            .map(|(slot, at)| Word {
                word: format!("w{slot}{}", if slot % 4 == 3 { "." } else { "" }),
                // Relative to the request, as whisper gives them.
                start_ms: at / SAMPLES_PER_MS - start_ms,
                end_ms: (at + WORD) / SAMPLES_PER_MS - start_ms,
                probability: 0.9,
            })
            .collect()
    }

    fn answer(&mut self, pick: usize, outcome: Outcome) -> Result<(), TestCaseError> {
        if self.outstanding.is_empty() {
            return Ok(());
        }
        let r = self.outstanding.remove(pick % self.outstanding.len());
        let updates = match outcome {
            Outcome::Decoded => {
                let words = self.hear(&r);
                self.s.on_decoded(&r.ticket, words)
            }
            Outcome::Failed => self.s.on_failed(&r.ticket),
            Outcome::RetryLater => {
                self.s.retry_later(&r.ticket);
                Vec::new()
            }
        };
        self.updates(&updates)
    }

    fn updates(&mut self, updates: &[SegmentUpdate]) -> Result<(), TestCaseError> {
        for u in updates {
            // Segment ids count up from 0: a partial is of the segment being built, a
            // final commits it and the next one begins.
            prop_assert_eq!(u.segment_id, self.next_segment, "{:?}", u);
            prop_assert!(u.words.windows(2).all(|w| w[0].end_ms <= w[1].start_ms));
            if u.is_final {
                self.next_segment += 1;
                for w in &u.words {
                    let slot: u64 = w
                        .word
                        .trim_start_matches('w')
                        .trim_end_matches('.')
                        .parse()
                        .unwrap();
                    // Stream times: the slot's own.
                    prop_assert_eq!(w.start_ms, slot * SLOT / SAMPLES_PER_MS);
                    self.committed.push(slot);
                }
            }
        }
        // Committed words are never repeated and come in the order spoken.
        prop_assert!(
            self.committed.windows(2).all(|w| w[0] < w[1]),
            "committed slots {:?}",
            self.committed
        );
        Ok(())
    }

    /// The audio held is the stream's samples [audio_start, received), nothing lost
    /// inside it and nothing repeated; it starts where the uncommitted window or the
    /// audio the VAD has not judged starts, whichever is first (no earlier: nothing is kept
    /// that neither needs); the window only moves forward.
    fn check_window(&mut self) -> Result<(), TestCaseError> {
        let s = &self.s;
        prop_assert!(s.window_start >= self.window_start, "the window moved back");
        self.window_start = s.window_start;
        prop_assert!(s.window_start <= s.received);
        prop_assert_eq!(s.audio_start, s.window_start.min(s.vad_cursor));
        prop_assert_eq!(s.audio_start + s.audio.len() as u64, s.received);
        for (i, &v) in s.audio.iter().enumerate().step_by(89) {
            prop_assert_eq!(v, marker(s.audio_start + i as u64));
        }
        prop_assert!(s.audio.last().is_none_or(|&v| v == marker(s.received - 1)));
        prop_assert_eq!(s.window_len() as u64, s.received - s.window_start);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Push(n) => self.push(n),
            Op::VadSubmit => self.vad_submit()?,
            Op::VadDone { speech } => self.vad_done(speech),
            Op::Poll => self.poll()?,
            Op::Answer { pick, outcome } => self.answer(pick, outcome)?,
            Op::EndStream { speech } => self.end_stream(speech)?,
        }
        self.check_window()
    }

    /// End of stream with a VAD and a pool that keep up: the stream finishes.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        self.end_stream(false)?;
        for _ in 0..100 {
            if self.s.is_finished() {
                break;
            }
            self.poll()?;
            while !self.outstanding.is_empty() {
                self.answer(self.outstanding.len() - 1, Outcome::Decoded)?;
            }
            self.check_window()?;
        }
        prop_assert!(
            self.s.is_finished(),
            "not finished after 100 rounds: {:?}",
            self.s
        );
        prop_assert_eq!(
            self.s.poll_request(),
            None,
            "a request after the stream finished"
        );
        // Answers to abandoned requests, arriving late, change nothing.
        while let Some(r) = self.outstanding.pop() {
            let words = self.hear(&r);
            prop_assert!(self.s.on_decoded(&r.ticket, words).is_empty());
            prop_assert!(self.s.is_finished());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any interleaving: the window stays the exact suffix of the stream, requests carry
    /// exactly the stream's samples, committed words are never repeated nor out of order,
    /// segment ids count up, and at end of stream everything finishes.
    #[test]
    fn window_requests_and_commits_stay_consistent(
        config in config(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut h = Harness::new(config);
        for op in &ops {
            h.apply(op)?;
        }
        h.finish()?;
    }

    /// With a VAD and a pool that keep up, the window never outgrows the hard limit by
    /// more than the audio of one push; in silence, it stays within the padding.
    #[test]
    fn the_window_is_bounded_when_the_pool_keeps_up(
        config in config(),
        pushes in prop::collection::vec((1usize..4_000, prop::bool::weighted(0.7)), 1..150),
    ) {
        let hard = config.hard_window_ms * SAMPLES_PER_MS;
        let pad = config.pad_ms * SAMPLES_PER_MS;
        let mut h = Harness::new(config);
        for &(n, speech) in &pushes {
            h.push(n);
            h.vad_all(speech)?;
            let heard_speech = h.judged.contains(&true);
            h.poll()?;
            while !h.outstanding.is_empty() {
                h.answer(0, Outcome::Decoded)?;
            }
            h.check_window()?;
            let window = h.s.window_len() as u64;
            prop_assert!(window <= hard + n as u64, "window {window} > hard {hard} + push {n}");
            if !heard_speech {
                let unjudged = h.s.received - h.judged.len() as u64 * WINDOW;
                prop_assert!(window <= pad + unjudged, "silence kept: window {window}");
            }
        }
        h.finish()?;
    }
}
