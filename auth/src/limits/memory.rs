//! Limits kept in this process: right for a single instance, and for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use dashmap::DashMap;

use super::{
    audio_ms, quota_decision, rate_decision, take_token, LimitError, LimitStore, QuotaDecision,
    RateDecision, StreamLease, DAY_MS,
};

/// A sweep of idle entries runs every this many calls, so memory stays bounded by the
/// callers of the last day without a background task.
const SWEEP_EVERY: u64 = 4096;
/// Buckets idle this long are dropped (a dropped bucket is a full one).
const IDLE: Duration = Duration::from_secs(86_400);

/// In-memory [`LimitStore`]. Each caller's state is updated under its `DashMap` shard
/// lock, so concurrent requests of one caller never both take the last token.
#[derive(Debug, Default)]
pub struct MemoryLimits {
    /// caller → (tokens, last refill).
    buckets: DashMap<String, (f64, Instant)>,
    /// caller → lease id → expiry.
    streams: DashMap<String, HashMap<String, Instant>>,
    /// caller → (UTC day number, milliseconds of audio that day).
    audio: DashMap<String, (u64, u64)>,
    calls: AtomicU64,
}

impl MemoryLimits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count a call and sweep now and then. Call with no map entry held: `retain` locks
    /// every shard.
    fn tick(&self) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(Instant::now(), today().0);
        }
    }

    /// Drop buckets idle for over a day, callers without live leases, and audio totals of
    /// past days.
    fn sweep(&self, now: Instant, today: u64) {
        self.buckets
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= IDLE);
        self.streams.retain(|_, leases| {
            leases.retain(|_, expiry| *expiry > now);
            !leases.is_empty()
        });
        self.audio.retain(|_, (day, _)| *day >= today);
    }

    fn audio_decision(&self, caller: &str, add_ms: u64, per_day: u64) -> QuotaDecision {
        let (day, now_ms) = today();
        let used = if add_ms == 0 {
            // Reads (and empty adds) create no entry.
            self.audio
                .get(caller)
                .filter(|e| e.0 == day)
                .map_or(0, |e| e.1)
        } else {
            let mut entry = self.audio.entry(caller.to_owned()).or_insert((day, 0));
            if entry.0 != day {
                *entry = (day, 0);
            }
            entry.1 = entry.1.saturating_add(add_ms);
            entry.1
        };
        quota_decision(used, per_day, now_ms)
    }
}

/// The UTC day number and the Unix time in milliseconds.
fn today() -> (u64, u64) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    (now_ms / DAY_MS, now_ms)
}

/// `now + ttl`, without overflowing on absurd TTLs.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

#[async_trait]
impl LimitStore for MemoryLimits {
    async fn check_request(
        &self,
        caller: &str,
        per_minute: u32,
        burst: u32,
    ) -> Result<RateDecision, LimitError> {
        let now = Instant::now();
        let decision = {
            let mut bucket = self
                .buckets
                .entry(caller.to_owned())
                .or_insert((f64::from(burst), now));
            let elapsed = now.saturating_duration_since(bucket.1).as_secs_f64();
            let (tokens, allowed) = take_token(bucket.0, elapsed, per_minute, burst);
            *bucket = (tokens, now);
            rate_decision(allowed, tokens, per_minute, burst)
        };
        self.tick();
        Ok(decision)
    }

    async fn open_stream(
        &self,
        caller: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<StreamLease>, LimitError> {
        let now = Instant::now();
        let lease = {
            let mut leases = self.streams.entry(caller.to_owned()).or_default();
            leases.retain(|_, expiry| *expiry > now);
            if leases.len() < max as usize {
                let id = uuid::Uuid::new_v4().to_string();
                leases.insert(id.clone(), expiry(now, ttl));
                Some(StreamLease {
                    caller: caller.to_owned(),
                    id,
                })
            } else {
                None
            }
        };
        self.tick();
        Ok(lease)
    }

    async fn renew_stream(&self, lease: &StreamLease, ttl: Duration) -> Result<(), LimitError> {
        let now = Instant::now();
        {
            let mut leases = self.streams.entry(lease.caller.clone()).or_default();
            leases.retain(|_, expiry| *expiry > now);
            leases.insert(lease.id.clone(), expiry(now, ttl));
        }
        self.tick();
        Ok(())
    }

    async fn close_stream(&self, lease: &StreamLease) -> Result<(), LimitError> {
        let now = Instant::now();
        self.streams.remove_if_mut(&lease.caller, |_, leases| {
            leases.remove(&lease.id);
            leases.retain(|_, expiry| *expiry > now);
            leases.is_empty()
        });
        self.tick();
        Ok(())
    }

    async fn open_streams(&self, caller: &str) -> Result<u32, LimitError> {
        let now = Instant::now();
        let open = match self.streams.get_mut(caller) {
            Some(mut leases) => {
                leases.retain(|_, expiry| *expiry > now);
                leases.len() as u32
            }
            None => 0,
        };
        self.tick();
        Ok(open)
    }

    async fn add_audio(
        &self,
        caller: &str,
        seconds: f64,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError> {
        let decision = self.audio_decision(caller, audio_ms(seconds), per_day_seconds);
        self.tick();
        Ok(decision)
    }

    async fn audio_today(
        &self,
        caller: &str,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError> {
        let decision = self.audio_decision(caller, 0, per_day_seconds);
        self.tick();
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sweep_drops_idle_entries_only() {
        let store = MemoryLimits::new();
        let ttl = Duration::from_secs(60);
        store.check_request("old", 60, 5).await.unwrap();
        store.open_stream("old", 1, ttl).await.unwrap().unwrap();
        store.add_audio("old", 1.0, 60).await.unwrap();
        let (day, _) = today();

        // A minute later nothing is idle enough.
        store.sweep(Instant::now() + Duration::from_secs(59), day);
        assert_eq!(store.buckets.len(), 1);
        assert_eq!(store.streams.len(), 1);
        assert_eq!(store.audio.len(), 1);

        // Two days later everything is.
        store.sweep(Instant::now() + 2 * IDLE, day + 2);
        assert!(store.buckets.is_empty());
        assert!(store.streams.is_empty());
        assert!(store.audio.is_empty());
    }

    #[tokio::test]
    async fn sweeps_run_by_themselves() {
        let store = MemoryLimits::new();
        store
            .open_stream("gone", 1, Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for i in 0..SWEEP_EVERY {
            store.audio_today(&format!("reader{i}"), 1).await.unwrap();
        }
        assert!(store.streams.is_empty(), "the expired caller was swept");
        assert!(store.audio.is_empty(), "reads create no entries");
    }

    #[tokio::test]
    async fn closing_the_last_lease_forgets_the_caller() {
        let store = MemoryLimits::new();
        let lease = store
            .open_stream("c", 1, Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        store.close_stream(&lease).await.unwrap();
        assert!(store.streams.is_empty());
    }
}
