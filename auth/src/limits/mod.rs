//! Per-caller limits: request rate, concurrent streams and daily audio quota.
//!
//! A caller is an API key id or a JWT subject; the server picks the numbers (tier, then the
//! caller's [`LimitOverrides`](crate::LimitOverrides)) and passes them on every call, so
//! the stores keep state only, never configuration.
//!
//! # Algorithms
//!
//! - **Requests**: a token bucket per caller holding up to `burst` tokens, refilled
//!   continuously at `per_minute / 60` tokens a second. A new (or forgotten) bucket is
//!   full. Each request takes one token or is refused; refusal consumes nothing.
//! - **Streams**: a set of leases per caller, each with an expiry. Opening counts the
//!   unexpired leases and adds one if fewer than `max`; the server renews a lease while its
//!   WebSocket lives and closes it at the end. A lease that is not renewed (its instance
//!   crashed) expires by itself, so the count heals without cleanup jobs.
//! - **Audio**: a counter of processed audio per caller and UTC day, in integer
//!   milliseconds (sums of floats drift). `exceeded` once the total is strictly past the
//!   limit; the next UTC day starts from zero.
//!
//! # Stores
//!
//! - [`MemoryLimits`]: one process; `DashMap`s, each caller's update under its shard lock.
//! - [`RedisLimits`]: several instances sharing limits. Every operation is one Lua script
//!   (one round trip, atomic), timed by the Redis server's clock (`TIME`) so instances with
//!   skewed clocks agree. Data model, under a configurable `prefix`:
//!   - `{prefix}:rl:{caller}`: hash `tokens` (float), `ts` (server ms of the last refill);
//!     expires when the bucket would be full again (a missing bucket is a full one).
//!   - `{prefix}:streams:{caller}`: sorted set, lease id → expiry (server ms); expired
//!     members are removed before counting; the key expires with its last lease.
//!   - `{prefix}:audio:{caller}:{day}`: integer milliseconds of audio, `day` being the UTC
//!     day number (days since 1970-01-01); expires two days after its last write.
//!
//! Errors: the only failure is an unreachable store ([`LimitError::Unavailable`]); what to
//! do then (refuse, by default) is the server's decision.

use std::time::Duration;

use async_trait::async_trait;

mod memory;
mod redis;

pub use self::memory::MemoryLimits;
pub use self::redis::RedisLimits;

/// Per-caller limit state, shared by every request and stream of a caller.
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Take one request token from `caller`'s bucket: capacity `burst`, refilled at
    /// `per_minute`/60 per second.
    async fn check_request(
        &self,
        caller: &str,
        per_minute: u32,
        burst: u32,
    ) -> Result<RateDecision, LimitError>;

    /// Open a stream if `caller` has fewer than `max` open; the lease expires after `ttl`
    /// unless renewed (so a crashed instance's streams free themselves).
    async fn open_stream(
        &self,
        caller: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<StreamLease>, LimitError>;

    /// Push the lease's expiry to `ttl` from now. A lease that already expired is added
    /// back (its stream is still open, so it counts), even past the caller's `max`.
    async fn renew_stream(&self, lease: &StreamLease, ttl: Duration) -> Result<(), LimitError>;

    /// Free the lease's place; closing an unknown or expired lease is not an error.
    async fn close_stream(&self, lease: &StreamLease) -> Result<(), LimitError>;

    /// How many unexpired leases `caller` holds.
    async fn open_streams(&self, caller: &str) -> Result<u32, LimitError>;

    /// Add processed audio to today's (UTC) total; `exceeded` when the total passes
    /// `per_day_seconds`. Negative or NaN `seconds` count as zero.
    async fn add_audio(
        &self,
        caller: &str,
        seconds: f64,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError>;

    /// Today's total without adding to it.
    async fn audio_today(
        &self,
        caller: &str,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError>;
}

/// The outcome of [`LimitStore::check_request`], with what the `RateLimit-*` and
/// `Retry-After` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// The bucket's capacity (`burst`).
    pub limit: u32,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// Seconds until the bucket is full again (rounded up).
    pub reset_seconds: u64,
    /// When refused: seconds until one token is back (rounded up, at least 1); else 0.
    pub retry_after_seconds: u64,
}

/// A place among a caller's concurrent streams, held until closed or expired.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamLease {
    pub caller: String,
    /// Unique per lease (a UUID), so two streams of one caller never share a place.
    pub id: String,
}

/// A caller's audio use today.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaDecision {
    pub used_seconds: f64,
    pub limit_seconds: u64,
    /// `limit - used`, never negative.
    pub remaining_seconds: f64,
    /// The total is strictly past the limit.
    pub exceeded: bool,
    /// Seconds until the next UTC midnight, when the total starts again from zero.
    pub resets_in_seconds: u64,
}

/// Why a limit could not be checked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LimitError {
    /// The store is unreachable or failed; callers fail closed by default. The text names
    /// the operation and the server's host:port, never its URL (it may carry a password).
    #[error("limit store unavailable: {0}")]
    Unavailable(String),
}

/// Reported as reset/retry time when a bucket never refills (`per_minute` 0 or `burst`
/// 0): a day, rather than an unbounded number.
const NEVER_SECONDS: u64 = 86_400;
const DAY_MS: u64 = 86_400_000;

/// Refill a bucket by `elapsed_secs` and try to take one token: the new token count and
/// whether a token was taken. The Redis script does the same arithmetic.
fn take_token(tokens: f64, elapsed_secs: f64, per_minute: u32, burst: u32) -> (f64, bool) {
    let rate = f64::from(per_minute) / 60.0;
    let refilled = (tokens + elapsed_secs.max(0.0) * rate).min(f64::from(burst));
    if refilled >= 1.0 {
        (refilled - 1.0, true)
    } else {
        (refilled, false)
    }
}

/// The decision for a bucket left with `tokens` after the request; shared by both stores
/// so they report identically.
fn rate_decision(allowed: bool, tokens: f64, per_minute: u32, burst: u32) -> RateDecision {
    let rate = f64::from(per_minute) / 60.0;
    let tokens = tokens.clamp(0.0, f64::from(burst));
    // Float noise (2.9999999) must not turn an exact wait of 3 s into 4 s.
    let secs_until = |target: f64| -> u64 {
        if tokens >= target {
            0
        } else if rate <= 0.0 {
            NEVER_SECONDS
        } else {
            ((target - tokens) / rate - 1e-9).ceil().max(0.0) as u64
        }
    };
    let retry_after_seconds = if allowed {
        0
    } else if burst == 0 {
        NEVER_SECONDS
    } else {
        secs_until(1.0).max(1)
    };
    RateDecision {
        allowed,
        limit: burst,
        remaining: (tokens + 1e-9).floor() as u32,
        reset_seconds: secs_until(f64::from(burst)),
        retry_after_seconds,
    }
}

/// Audio seconds as the integer milliseconds the stores count in.
fn audio_ms(seconds: f64) -> u64 {
    // At most ~31,000 years, so Redis' INCRBY (i64) can never overflow on one add.
    const MAX_MS: f64 = 1e15;
    if seconds.is_nan() || seconds <= 0.0 {
        0
    } else {
        (seconds * 1000.0).round().min(MAX_MS) as u64
    }
}

fn quota_decision(used_ms: u64, per_day_seconds: u64, now_unix_ms: u64) -> QuotaDecision {
    let limit_ms = per_day_seconds.saturating_mul(1000);
    QuotaDecision {
        used_seconds: used_ms as f64 / 1000.0,
        limit_seconds: per_day_seconds,
        remaining_seconds: limit_ms.saturating_sub(used_ms) as f64 / 1000.0,
        exceeded: used_ms > limit_ms,
        resets_in_seconds: (DAY_MS - now_unix_ms % DAY_MS).div_ceil(1000),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The behavioural battery, written once and run against both stores, plus the
    //! `redis-server` harness the Redis tests share.

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    // ---- pure arithmetic ----

    #[test]
    fn decision_arithmetic() {
        // Full bucket of 5 at 60/min: take one, 4 left, 1 s to refill.
        let (t, ok) = take_token(5.0, 0.0, 60, 5);
        assert!(ok);
        let d = rate_decision(ok, t, 60, 5);
        assert_eq!((d.limit, d.remaining, d.reset_seconds), (5, 4, 1));
        assert_eq!(d.retry_after_seconds, 0);
        // Empty bucket at 6/min (one per 10 s), 2.5 s after the last token went.
        let (t, ok) = take_token(0.0, 2.5, 6, 3);
        assert!(!ok);
        let d = rate_decision(ok, t, 6, 3);
        assert_eq!((d.remaining, d.retry_after_seconds), (0, 8));
        assert_eq!(d.reset_seconds, 28);
        // Never refills: bounded answers instead of infinity.
        let d = rate_decision(false, 0.0, 0, 1);
        assert_eq!(
            (d.retry_after_seconds, d.reset_seconds),
            (NEVER_SECONDS, NEVER_SECONDS)
        );
        let (t, ok) = take_token(0.0, 100.0, 600, 0);
        assert!(!ok);
        assert_eq!(
            rate_decision(ok, t, 600, 0).retry_after_seconds,
            NEVER_SECONDS
        );
        // Elapsed time never goes negative (a clock stepping back).
        assert_eq!(take_token(0.5, -10.0, 60, 5), (0.5, false));
    }

    #[test]
    fn quota_arithmetic() {
        assert_eq!(audio_ms(1.2345), 1235);
        assert_eq!(audio_ms(-3.0), 0);
        assert_eq!(audio_ms(f64::NAN), 0);
        assert_eq!(audio_ms(f64::INFINITY), 1e15 as u64);
        let q = quota_decision(10_500, 10, DAY_MS * 20_000 + 1);
        assert!(q.exceeded);
        assert_eq!(q.remaining_seconds, 0.0);
        assert_eq!(q.used_seconds, 10.5);
        assert_eq!(q.resets_in_seconds, 86_400);
        let q = quota_decision(10_000, 10, DAY_MS * 20_000 + DAY_MS - 1);
        assert!(!q.exceeded, "exactly at the limit is not past it");
        assert_eq!(q.resets_in_seconds, 1);
    }

    // ---- the battery ----

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A caller name no other test uses, with characters keys must survive.
    pub(crate) fn caller(tag: &str) -> String {
        format!(
            "{tag}:{} key/ü {{x}}*",
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Burst allowed, then refused with a retry time; numbers consistent throughout.
    pub(crate) async fn burst_then_refused<S: LimitStore>(store: Arc<S>) {
        let c = caller("burst");
        // 6/min: one token per 10 s, so nothing refills during the test.
        for i in 0..4u32 {
            let d = store.check_request(&c, 6, 4).await.unwrap();
            assert!(d.allowed, "request {i} within the burst");
            assert_eq!(d.limit, 4);
            assert_eq!(d.remaining, 3 - i);
            assert_eq!(d.retry_after_seconds, 0);
            // 1 + i tokens missing at 10 s each.
            let want = 10 * u64::from(i + 1);
            assert!(
                (want - 1..=want).contains(&d.reset_seconds),
                "reset {} for {} missing tokens",
                d.reset_seconds,
                i + 1
            );
        }
        let d = store.check_request(&c, 6, 4).await.unwrap();
        assert!(!d.allowed);
        assert_eq!((d.limit, d.remaining), (4, 0));
        assert!((9..=10).contains(&d.retry_after_seconds), "{d:?}");
        assert!((39..=40).contains(&d.reset_seconds), "{d:?}");
        // Refusals take nothing: still one token short, not two.
        let again = store.check_request(&c, 6, 4).await.unwrap();
        assert!(!again.allowed);
        assert!(again.retry_after_seconds <= d.retry_after_seconds);
        // Even a refusal a moment before the token is back says at least 1 s.
        let c2 = caller("burst-fast");
        assert!(store.check_request(&c2, 6000, 1).await.unwrap().allowed);
        let d = store.check_request(&c2, 6000, 1).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_seconds, 1);
    }

    /// At 10 tokens/s, 250 ms gives back about two tokens.
    pub(crate) async fn bucket_refills<S: LimitStore>(store: Arc<S>) {
        let c = caller("refill");
        for _ in 0..5 {
            assert!(store.check_request(&c, 600, 5).await.unwrap().allowed);
        }
        assert!(!store.check_request(&c, 600, 5).await.unwrap().allowed);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut allowed = 0;
        while store.check_request(&c, 600, 5).await.unwrap().allowed {
            allowed += 1;
            assert!(allowed <= 5, "never more than the burst");
        }
        assert!(
            (1..=4).contains(&allowed),
            "{allowed} tokens back after 250 ms"
        );
        // A long enough wait fills the bucket, and no further.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let d = store.check_request(&c, 600, 5).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    pub(crate) async fn callers_independent<S: LimitStore>(store: Arc<S>) {
        let (a, b) = (caller("indep-a"), caller("indep-b"));
        assert!(store.check_request(&a, 1, 1).await.unwrap().allowed);
        assert!(!store.check_request(&a, 1, 1).await.unwrap().allowed);
        let d = store.check_request(&b, 1, 1).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        let lease = store
            .open_stream(&a, 1, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.caller, a);
        assert!(store
            .open_stream(&b, 1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.open_streams(&a).await.unwrap(), 1);
        store.add_audio(&a, 50.0, 10).await.unwrap();
        let q = store.audio_today(&b, 10).await.unwrap();
        assert_eq!(q.used_seconds, 0.0);
        assert!(!q.exceeded);
    }

    /// `max` reached → refused; closing frees a place.
    pub(crate) async fn streams_limit_and_close<S: LimitStore>(store: Arc<S>) {
        let c = caller("streams");
        let ttl = Duration::from_secs(30);
        assert_eq!(store.open_streams(&c).await.unwrap(), 0);
        let first = store.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        let second = store.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(store.open_streams(&c).await.unwrap(), 2);
        assert!(store.open_stream(&c, 2, ttl).await.unwrap().is_none());
        store.close_stream(&first).await.unwrap();
        assert_eq!(store.open_streams(&c).await.unwrap(), 1);
        let third = store.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        assert!(store.open_stream(&c, 2, ttl).await.unwrap().is_none());
        // Closing twice, or a lease never opened, is harmless.
        store.close_stream(&first).await.unwrap();
        let stranger = StreamLease {
            caller: caller("stranger"),
            id: "nope".into(),
        };
        store.close_stream(&stranger).await.unwrap();
        store.close_stream(&second).await.unwrap();
        store.close_stream(&third).await.unwrap();
        assert_eq!(store.open_streams(&c).await.unwrap(), 0);
        assert!(store.open_stream(&c, 0, ttl).await.unwrap().is_none());
    }

    /// An unrenewed lease frees its place after `ttl`; a renewed one keeps it.
    pub(crate) async fn leases_expire_unless_renewed<S: LimitStore>(store: Arc<S>) {
        let c = caller("expiry");
        let ttl = Duration::from_millis(300);
        let kept = store.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        let _lost = store.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        assert!(store.open_stream(&c, 2, ttl).await.unwrap().is_none());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            store.renew_stream(&kept, ttl).await.unwrap();
        }
        // 450 ms in: the unrenewed lease is gone, the renewed one stays.
        assert_eq!(store.open_streams(&c).await.unwrap(), 1);
        let next = store.open_stream(&c, 2, ttl).await.unwrap();
        assert!(next.is_some());
        assert!(store.open_stream(&c, 2, ttl).await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.open_streams(&c).await.unwrap(), 0);
    }

    /// Audio accumulates across calls; exceeded past the limit; remaining never negative.
    pub(crate) async fn audio_accumulates<S: LimitStore>(store: Arc<S>) {
        let c = caller("audio");
        let q = store.audio_today(&c, 60).await.unwrap();
        assert_eq!((q.used_seconds, q.remaining_seconds), (0.0, 60.0));
        assert_eq!(q.limit_seconds, 60);
        assert!((1..=86_400).contains(&q.resets_in_seconds));
        // Many small chunks sum exactly (integer milliseconds, no float drift).
        for _ in 0..100 {
            store.add_audio(&c, 0.1, 60).await.unwrap();
        }
        let q = store.add_audio(&c, 39.5, 60).await.unwrap();
        assert_eq!(q.used_seconds, 49.5);
        assert_eq!(q.remaining_seconds, 10.5);
        assert!(!q.exceeded);
        let q = store.add_audio(&c, 10.5, 60).await.unwrap();
        assert_eq!((q.used_seconds, q.remaining_seconds), (60.0, 0.0));
        assert!(!q.exceeded, "at the limit, not past it");
        let q = store.add_audio(&c, 0.25, 60).await.unwrap();
        assert!(q.exceeded);
        assert_eq!(q.remaining_seconds, 0.0);
        let q = store.add_audio(&c, 100.0, 60).await.unwrap();
        assert_eq!((q.used_seconds, q.remaining_seconds), (160.25, 0.0));
        // Nothing added by negative or NaN input; reads agree with writes.
        store.add_audio(&c, -50.0, 60).await.unwrap();
        store.add_audio(&c, f64::NAN, 60).await.unwrap();
        let q = store.audio_today(&c, 60).await.unwrap();
        assert_eq!(q.used_seconds, 160.25);
        assert!(q.exceeded);
        // The limit is the caller's to change: a bigger tier is no longer exceeded.
        let q = store.audio_today(&c, 3600).await.unwrap();
        assert!(!q.exceeded);
        assert_eq!(q.remaining_seconds, 3600.0 - 160.25);
    }

    /// 20 concurrent requests on a burst of 10: exactly 10 get through.
    pub(crate) async fn concurrent_requests_take_exactly_burst<S: LimitStore>(store: Arc<S>) {
        let c = Arc::new(caller("concurrent"));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move { store.check_request(&c, 1, 10).await.unwrap() })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            allowed += usize::from(t.await.unwrap().allowed);
        }
        assert_eq!(allowed, 10);
        // Same for streams: 20 concurrent opens on a max of 5.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (store, c) = (store.clone(), c.clone());
                tokio::spawn(async move {
                    store
                        .open_stream(&c, 5, Duration::from_secs(30))
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut opened = 0;
        for t in tasks {
            opened += usize::from(t.await.unwrap().is_some());
        }
        assert_eq!(opened, 5);
        assert_eq!(store.open_streams(&c).await.unwrap(), 5);
    }

    /// Not a benchmark: prints the per-call latency of `check_request` (`--nocapture`).
    pub(crate) async fn check_request_latency<S: LimitStore>(store: Arc<S>, label: &str) {
        let c = caller("latency");
        let start = Instant::now();
        for _ in 0..1000 {
            store.check_request(&c, 60_000, 100).await.unwrap();
        }
        let per_call = start.elapsed() / 1000;
        println!("check_request on {label}: {per_call:?} per call (1000 sequential calls)");
    }

    /// Trait objects work: the server holds an `Arc<dyn LimitStore>`.
    pub(crate) async fn usable_as_trait_object<S: LimitStore>(store: Arc<S>) {
        let store: Arc<dyn LimitStore> = store;
        assert!(
            store
                .check_request(&caller("dyn"), 1, 1)
                .await
                .unwrap()
                .allowed
        );
    }

    macro_rules! battery {
        ($($test:ident),* $(,)?) => {
            mod memory_store {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        super::$test(Arc::new(MemoryLimits::new())).await;
                    }
                )*
            }
            mod redis_store {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let server = RedisServer::start();
                        super::$test(Arc::new(server.store().await)).await;
                    }
                )*
            }
        };
    }

    battery!(
        burst_then_refused,
        bucket_refills,
        callers_independent,
        streams_limit_and_close,
        leases_expire_unless_renewed,
        audio_accumulates,
        concurrent_requests_take_exactly_burst,
        usable_as_trait_object,
    );

    #[tokio::test]
    async fn memory_latency() {
        check_request_latency(Arc::new(MemoryLimits::new()), "MemoryLimits").await;
    }

    #[tokio::test]
    async fn redis_latency() {
        let server = RedisServer::start();
        let store = Arc::new(server.store().await);
        check_request_latency(store, "RedisLimits, local redis-server").await;
    }

    // ---- redis-server harness (crate::test_redis), with a store of this module ----

    pub(crate) use crate::test_redis::{free_port, RedisServer};

    /// Opening `RedisLimits` on a test server.
    pub(crate) trait Stores {
        /// A store with a prefix of its own (the server is per test anyway).
        async fn store(&self) -> RedisLimits;
        async fn store_with_prefix(&self, prefix: &str) -> RedisLimits;
    }

    impl Stores for RedisServer {
        async fn store(&self) -> RedisLimits {
            self.store_with_prefix(&format!("test{}", NEXT.fetch_add(1, Ordering::Relaxed)))
                .await
        }

        async fn store_with_prefix(&self, prefix: &str) -> RedisLimits {
            RedisLimits::connect(&self.url(), prefix)
                .await
                .expect("connect to the test redis-server")
        }
    }
}
