//! The messages of a session that its client has not acknowledged, kept so that a resumed
//! connection gets them again (docs/protocol.md, "Resuming a session").
//!
//! Bounded in messages and in bytes (speech frames are large): past either bound the
//! oldest go, and a resume that needed them is told how many were lost.

use std::collections::VecDeque;

use actix_web::web::Bytes;

/// One frame on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
}

impl Frame {
    fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }
}

#[derive(Debug)]
pub struct Replay {
    /// (seq, frames): a `tts_audio` header and its audio frame share one seq.
    entries: VecDeque<(u64, Vec<Frame>)>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Highest seq dropped unacknowledged (for bounds), 0 if none.
    lost_up_to: u64,
}

impl Replay {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            lost_up_to: 0,
        }
    }

    /// Keep message `seq` (greater than every kept one).
    pub fn push(&mut self, seq: u64, frames: Vec<Frame>) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < seq));
        self.bytes += frames.iter().map(Frame::len).sum::<usize>();
        self.entries.push_back((seq, frames));
        while self.entries.len() > self.max_entries
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
        {
            self.drop_oldest(true);
        }
    }

    /// The client has everything up to `seq`.
    pub fn ack(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|(s, _)| *s <= seq) {
            self.drop_oldest(false);
        }
    }

    fn drop_oldest(&mut self, lost: bool) {
        if let Some((seq, frames)) = self.entries.pop_front() {
            self.bytes -= frames.iter().map(Frame::len).sum::<usize>();
            if lost {
                self.lost_up_to = seq;
            }
        }
    }

    /// Frames of every kept message after `seq`, in order, and how many messages after
    /// `seq` were dropped by the bounds before they could be acknowledged.
    pub fn since(&self, seq: u64) -> (Vec<Frame>, u64) {
        let frames = self
            .entries
            .iter()
            .filter(|(s, _)| *s > seq)
            .flat_map(|(_, f)| f.iter().cloned())
            .collect();
        (frames, self.lost_up_to.saturating_sub(seq))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest seq kept, if any.
    pub fn first_seq(&self) -> Option<u64> {
        self.entries.front().map(|(s, _)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: u64) -> Vec<Frame> {
        vec![Frame::Text(format!("m{n}"))]
    }

    #[test]
    fn acknowledged_messages_are_forgotten_and_the_rest_replayed_in_order() {
        let mut r = Replay::new(10, 1 << 20);
        for seq in 1..=5 {
            r.push(seq, text(seq));
        }
        r.ack(2);
        assert_eq!(r.len(), 3);
        let (frames, lost) = r.since(2);
        assert_eq!(frames, [text(3), text(4), text(5)].concat());
        assert_eq!(lost, 0);
        // A client that says it has 4 gets only 5.
        assert_eq!(r.since(4).0, text(5));
    }

    #[test]
    fn bounds_drop_the_oldest_and_a_resume_learns_how_many() {
        let mut r = Replay::new(3, 1 << 20);
        for seq in 1..=5 {
            r.push(seq, text(seq));
        }
        assert_eq!(r.first_seq(), Some(3));
        let (frames, lost) = r.since(0);
        assert_eq!(frames.len(), 3);
        assert_eq!(lost, 2);
        assert_eq!(r.since(2).1, 0, "nothing after 2 was lost");

        // Bytes: a large speech frame pushes older messages out, but is itself kept.
        let mut r = Replay::new(100, 10);
        r.push(1, text(1));
        r.push(
            2,
            vec![
                Frame::Text("tts".into()),
                Frame::Binary(Bytes::from(vec![0; 50])),
            ],
        );
        assert_eq!(r.first_seq(), Some(2));
        assert_eq!(r.since(1).0.len(), 2, "header and audio travel together");
    }
}
