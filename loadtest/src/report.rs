//! Aggregating stream reports: HDR histograms and percentiles.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::DecodeCounters;
use crate::stream::StreamReport;

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// For ratios against other means (whisper's share of the final latency).
    pub mean: f64,
}

impl Percentiles {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        // 1 µs to 10 min, 3 significant digits: latencies are recorded in microseconds.
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .expect("static histogram bounds are valid");
        for v in values {
            h.saturating_record((v * 1000.0).max(1.0) as u64);
        }
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(0.50),
            p90: ms(0.90),
            p95: ms(0.95),
            p99: ms(0.99),
            max: h.max() as f64 / 1000.0,
            mean: h.mean() / 1000.0,
        }
    }
}

/// The whole run: what `--json` prints as its last line.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub streams: usize,
    pub duration_s: f64,
    pub completed: usize,
    pub dropped: usize,
    pub errors: BTreeMap<String, u64>,
    pub connect_ms: Percentiles,
    pub first_partial_ms: Percentiles,
    pub final_latency_ms: Percentiles,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_translation_ms: Option<Percentiles>,
    /// First audio frame sent → first `tts_audio`; absent when no stream got speech.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_tts_ms: Option<Percentiles>,
    pub finals: u64,
    pub messages_per_s: f64,
    /// Whisper's mean time per final decode over the run, from the server's counters:
    /// separates model time from queueing and transport in the final latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_final_decode_ms_mean: Option<f64>,
    /// `server_final_decode_ms_mean` ÷ the mean final latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whisper_share_of_final_latency: Option<f64>,
}

impl Summary {
    pub fn of(reports: &[StreamReport], duration_s: f64) -> Self {
        let mut errors = BTreeMap::new();
        for r in reports {
            for (code, n) in &r.errors {
                *errors.entry(code.clone()).or_insert(0) += n;
            }
        }
        let translations: Vec<f64> = reports
            .iter()
            .filter_map(|r| r.first_translation_ms)
            .collect();
        let tts: Vec<f64> = reports.iter().filter_map(|r| r.first_tts_ms).collect();
        Self {
            streams: reports.len(),
            duration_s,
            completed: reports.iter().filter(|r| r.completed).count(),
            dropped: reports.iter().filter(|r| r.dropped).count(),
            errors,
            connect_ms: Percentiles::of(reports.iter().filter_map(|r| r.connect_ms)),
            first_partial_ms: Percentiles::of(reports.iter().filter_map(|r| r.first_partial_ms)),
            final_latency_ms: Percentiles::of(
                reports
                    .iter()
                    .flat_map(|r| r.final_latency_ms.iter().copied()),
            ),
            first_translation_ms: (!translations.is_empty()).then(|| Percentiles::of(translations)),
            first_tts_ms: (!tts.is_empty()).then(|| Percentiles::of(tts)),
            finals: reports.iter().map(|r| r.finals).sum(),
            messages_per_s: reports.iter().map(|r| r.messages).sum::<u64>() as f64
                / duration_s.max(1e-9),
            server_final_decode_ms_mean: None,
            whisper_share_of_final_latency: None,
        }
    }

    /// Add the server's decode time, given its counters scraped before and after the run;
    /// left out when either scrape lacked them or no final was decoded in between.
    pub fn with_server_decode(
        mut self,
        before: Option<DecodeCounters>,
        after: Option<DecodeCounters>,
    ) -> Self {
        let mean = before
            .zip(after)
            .and_then(|(before, after)| after.mean_ms_since(&before));
        self.server_final_decode_ms_mean = mean;
        self.whisper_share_of_final_latency = mean.and_then(|m| {
            let latency = self.final_latency_ms.mean;
            (self.final_latency_ms.count > 0 && latency > 0.0).then(|| m / latency)
        });
        self
    }

    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = format!(
            "streams {}  completed {}  dropped {}  finals {}  messages/s {:.1}  duration {:.1} s\n",
            self.streams,
            self.completed,
            self.dropped,
            self.finals,
            self.messages_per_s,
            self.duration_s
        );
        out.push_str(&format!(
            "{:<22} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "latency (ms)", "n", "p50", "p90", "p95", "p99", "max"
        ));
        let mut row = |name: &str, p: &Percentiles| {
            out.push_str(&format!(
                "{name:<22} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}\n",
                p.count, p.p50, p.p90, p.p95, p.p99, p.max
            ));
        };
        row("connect", &self.connect_ms);
        row("first partial", &self.first_partial_ms);
        row("final", &self.final_latency_ms);
        if let Some(t) = &self.first_translation_ms {
            row("first translation", t);
        }
        if let Some(t) = &self.first_tts_ms {
            row("first tts", t);
        }
        if let Some(m) = self.server_final_decode_ms_mean {
            out.push_str(&format!("server final decode: mean {m:.0} ms"));
            if let Some(share) = self.whisper_share_of_final_latency {
                out.push_str(&format!(
                    " = {:.0}% of mean final latency ({:.0} ms)",
                    share * 100.0,
                    self.final_latency_ms.mean
                ));
            }
            out.push('\n');
        }
        if self.errors.is_empty() {
            out.push_str("errors: none\n");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c} {n}"))
                .collect();
            out.push_str(&format!("errors: {}\n", list.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let p = Percentiles::of((1..=100).map(|v| v as f64));
        assert_eq!(p.count, 100);
        assert!(
            (p.p50 - 50.0).abs() < 0.1 && (p.p95 - 95.0).abs() < 0.1 && (p.max - 100.0).abs() < 0.1,
            "{p:?}"
        );
        assert_eq!(Percentiles::of([]), Percentiles::default());
        assert!((p.mean - 50.5).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn tts_latency_and_message_rate() {
        let a = StreamReport {
            first_tts_ms: Some(800.0),
            messages: 30,
            ..Default::default()
        };
        let b = StreamReport {
            messages: 10,
            dropped: true,
            ..Default::default()
        };
        let s = Summary::of(&[a.clone(), b.clone()], 4.0);
        assert_eq!(s.first_tts_ms.map(|p| p.count), Some(1));
        assert!((s.first_tts_ms.unwrap().p50 - 800.0).abs() < 1.0);
        assert!((s.messages_per_s - 10.0).abs() < 1e-9);
        assert_eq!(s.dropped, 1);
        let json = serde_json::to_value(&s).unwrap();
        assert!(json["first_tts_ms"]["p50"].is_number());
        assert_eq!(json["dropped"], 1);
        assert!(json["messages_per_s"].is_number());
        // No speech at all: the field is left out.
        let s = Summary::of(&[b], 4.0);
        assert!(s.first_tts_ms.is_none());
        assert!(serde_json::to_value(&s)
            .unwrap()
            .get("first_tts_ms")
            .is_none());
        assert!(!s.table().contains("first tts"));
    }

    #[test]
    fn server_decode_share() {
        let r = StreamReport {
            final_latency_ms: vec![400.0, 600.0],
            ..Default::default()
        };
        let before = DecodeCounters {
            seconds: 10.0,
            count: 100.0,
        };
        let after = DecodeCounters {
            seconds: 10.5,
            count: 102.0,
        };
        let s = Summary::of(std::slice::from_ref(&r), 1.0)
            .with_server_decode(Some(before), Some(after));
        assert_eq!(s.server_final_decode_ms_mean, Some(250.0));
        let share = s.whisper_share_of_final_latency.unwrap();
        assert!((share - 0.5).abs() < 0.01, "{share}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["server_final_decode_ms_mean"], 250.0);
        assert!(
            s.table().contains("server final decode: mean 250 ms = 50%"),
            "{}",
            s.table()
        );
        // Absent metrics: both fields are left out.
        let s = Summary::of(&[r], 1.0).with_server_decode(None, Some(after));
        let json = serde_json::to_value(&s).unwrap();
        assert!(json.get("server_final_decode_ms_mean").is_none());
        assert!(json.get("whisper_share_of_final_latency").is_none());
        assert!(!s.table().contains("server final decode"));
    }

    #[test]
    fn errors_are_summed_by_code() {
        let mut a = StreamReport::default();
        a.errors.insert("too_fast".into(), 2);
        let mut b = StreamReport {
            completed: true,
            ..Default::default()
        };
        b.errors.insert("too_fast".into(), 1);
        b.final_latency_ms = vec![100.0, 300.0];
        let s = Summary::of(&[a, b], 10.0);
        assert_eq!(s.errors["too_fast"], 3);
        assert_eq!((s.completed, s.final_latency_ms.count), (1, 2));
    }
}
