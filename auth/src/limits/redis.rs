//! Limits in Redis, shared by every instance (data model in the [module docs](super)).
//!
//! Each operation is one Lua script: atomic (no two instances both take the last token)
//! and one round trip (`EVALSHA`, loaded again by `redis::Script` after a Redis restart).
//! Scripts read the clock with `TIME`, which Redis ≥ 5 allows before writes (effects
//! replication), so the instances' own clocks never matter. Callers go into key names as
//! they are: Redis keys are binary safe, and every key kind has its own fixed segment
//! after the prefix, so no caller string can reach another caller's or kind's key.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, FromRedisValue, Script, ScriptInvocation};

use super::{
    audio_ms, quota_decision, rate_decision, LimitError, LimitStore, QuotaDecision, RateDecision,
    StreamLease,
};

/// An outage must fail requests within about a second or two, not hang them.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_RETRIES: usize = 2;
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(400);
/// A cap on any one call, reconnection included: a black-holed server would otherwise
/// hold a request through three connection timeouts.
const CALL_DEADLINE: Duration = Duration::from_millis(2500);
/// Audio keys outlive their UTC day by one, for inspection.
const AUDIO_KEY_SECONDS: u64 = 2 * 86_400;
/// TTLs longer than this are clamped (a year): PEXPIRE and scores stay small integers.
const MAX_TTL_MS: u64 = 365 * 86_400_000;

/// `KEYS[1]`: bucket; ARGV per_minute, burst. Returns {allowed 0/1, tokens left as a string}.
/// Mirrors `take_token`; the decision is computed in Rust from the tokens left.
const CHECK_REQUEST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local rate = tonumber(ARGV[1]) / 60000
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local ttl = 86400000
if rate > 0 then ttl = math.ceil((burst - tokens) / rate) + 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], ttl)
return {allowed, tostring(tokens)}
";

/// Shared by the stream scripts: set the lease set to expire with its last lease.
const EXPIRE_WITH_LAST_LEASE: &str = r"
local function expire_with_last(key, now)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now + 1))
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// `KEYS[1]`: lease set; ARGV max, lease id, ttl ms. Returns 1 if opened, else 0.
const OPEN_STREAM: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
expire_with_last(KEYS[1], now)
return 1
";

/// `KEYS[1]`: lease set; ARGV lease id, ttl ms. Re-adds an expired lease (its stream lives).
const RENEW_STREAM: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
expire_with_last(KEYS[1], now)
return 1
";

/// `KEYS[1]`: lease set. Counts unexpired leases; writes nothing.
const OPEN_STREAMS: &str = r"
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
";

/// `KEYS[1]`: audio key without its day; ARGV ms to add (0 to read), key lifetime in s.
/// Returns {ms used today, server Unix ms}. The day suffix comes from the server clock,
/// so the key is derived in the script (fine on one Redis; not Cluster-safe).
const AUDIO: &str = r"
local t = redis.call('TIME')
local sec = tonumber(t[1])
local key = KEYS[1] .. ':' .. string.format('%d', math.floor(sec / 86400))
local used
if ARGV[1] == '0' then
  used = tonumber(redis.call('GET', key) or '0')
else
  used = redis.call('INCRBY', key, ARGV[1])
  redis.call('EXPIRE', key, ARGV[2])
end
return {used, sec * 1000 + math.floor(tonumber(t[2]) / 1000)}
";

/// Redis-backed [`LimitStore`]: cheap to clone, one multiplexed connection that
/// reconnects by itself after an outage.
#[derive(Clone)]
pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    /// host:port for error messages; the URL may carry a password.
    addr: String,
    check_request: Script,
    open_stream: Script,
    renew_stream: Script,
    open_streams: Script,
    audio: Script,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimits {
    /// Connect to `url` (`redis://[:password@]host:port[/db]`) and keep keys under
    /// `prefix`. Fails within a few seconds when Redis is unreachable, so a misconfigured
    /// instance does not start silently without limits.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, LimitError> {
        let client = Client::open(url).map_err(|e| {
            // The parser's message may quote the URL, password included.
            LimitError::Unavailable(format!("invalid Redis URL ({:?})", e.kind()))
        })?;
        let addr = client.get_connection_info().addr().to_string();
        let fail = |op: &str, e: redis::RedisError| unavailable(op, &addr, &e);

        // One plain attempt first: the manager would retry with backoff before failing,
        // and PING proves that whatever answered is Redis.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| fail("connect", e))?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(|e| fail("PING", e))?;
        drop(probe);

        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| fail("connect", e))?;

        let with_clock = |body: &str| Script::new(&format!("{EXPIRE_WITH_LAST_LEASE}{body}"));
        let store = RedisLimits {
            prefix: prefix.to_owned(),
            check_request: Script::new(CHECK_REQUEST),
            open_stream: with_clock(OPEN_STREAM),
            renew_stream: with_clock(RENEW_STREAM),
            open_streams: with_clock(OPEN_STREAMS),
            audio: Script::new(AUDIO),
            addr: addr.clone(),
            conn: conn.clone(),
        };
        // Load the scripts now, so the first requests already take one round trip.
        for script in [
            &store.check_request,
            &store.open_stream,
            &store.renew_stream,
            &store.open_streams,
            &store.audio,
        ] {
            script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| fail("SCRIPT LOAD", e))?;
        }
        Ok(store)
    }

    fn key(&self, kind: &str, caller: &str) -> String {
        format!("{}:{kind}:{caller}", self.prefix)
    }

    /// Run one script under [`CALL_DEADLINE`].
    async fn eval<T: FromRedisValue>(
        &self,
        op: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, LimitError> {
        let mut conn = self.conn.clone();
        self.deadline(op, invocation.invoke_async(&mut conn)).await
    }

    async fn deadline<T>(
        &self,
        op: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, LimitError> {
        match tokio::time::timeout(CALL_DEADLINE, call).await {
            Ok(result) => result.map_err(|e| unavailable(op, &self.addr, &e)),
            Err(_) => Err(unavailable(op, &self.addr, &"timed out")),
        }
    }

    async fn audio(
        &self,
        caller: &str,
        add_ms: u64,
        per_day: u64,
    ) -> Result<QuotaDecision, LimitError> {
        let op = if add_ms == 0 {
            "audio_today"
        } else {
            "add_audio"
        };
        let (used, now_ms): (i64, i64) = self
            .eval(
                op,
                self.audio
                    .key(self.key("audio", caller))
                    .arg(add_ms)
                    .arg(AUDIO_KEY_SECONDS),
            )
            .await?;
        Ok(quota_decision(
            used.max(0) as u64,
            per_day,
            now_ms.max(0) as u64,
        ))
    }
}

fn unavailable(op: &str, addr: &str, e: &dyn std::fmt::Display) -> LimitError {
    tracing::debug!(op, addr, error = %e, "redis limit store failed");
    LimitError::Unavailable(format!("{op} on Redis at {addr}: {e}"))
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).min(MAX_TTL_MS)
}

#[async_trait]
impl LimitStore for RedisLimits {
    async fn check_request(
        &self,
        caller: &str,
        per_minute: u32,
        burst: u32,
    ) -> Result<RateDecision, LimitError> {
        let (allowed, tokens): (i64, String) = self
            .eval(
                "check_request",
                self.check_request
                    .key(self.key("rl", caller))
                    .arg(per_minute)
                    .arg(burst),
            )
            .await?;
        let tokens = tokens.parse::<f64>().unwrap_or(0.0);
        Ok(rate_decision(allowed == 1, tokens, per_minute, burst))
    }

    async fn open_stream(
        &self,
        caller: &str,
        max: u32,
        ttl: Duration,
    ) -> Result<Option<StreamLease>, LimitError> {
        let id = uuid::Uuid::new_v4().to_string();
        let opened: i64 = self
            .eval(
                "open_stream",
                self.open_stream
                    .key(self.key("streams", caller))
                    .arg(max)
                    .arg(&id)
                    .arg(ttl_ms(ttl)),
            )
            .await?;
        Ok((opened == 1).then(|| StreamLease {
            caller: caller.to_owned(),
            id,
        }))
    }

    async fn renew_stream(&self, lease: &StreamLease, ttl: Duration) -> Result<(), LimitError> {
        self.eval(
            "renew_stream",
            self.renew_stream
                .key(self.key("streams", &lease.caller))
                .arg(&lease.id)
                .arg(ttl_ms(ttl)),
        )
        .await
    }

    async fn close_stream(&self, lease: &StreamLease) -> Result<(), LimitError> {
        // One command, atomic by itself; Redis deletes the set with its last member.
        let mut conn = self.conn.clone();
        let zrem = redis::cmd("ZREM")
            .arg(self.key("streams", &lease.caller))
            .arg(&lease.id)
            .to_owned();
        self.deadline("close_stream", zrem.query_async::<()>(&mut conn))
            .await
    }

    async fn open_streams(&self, caller: &str) -> Result<u32, LimitError> {
        let open: u64 = self
            .eval(
                "open_streams",
                &self.open_streams.key(self.key("streams", caller)),
            )
            .await?;
        Ok(u32::try_from(open).unwrap_or(u32::MAX))
    }

    async fn add_audio(
        &self,
        caller: &str,
        seconds: f64,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError> {
        self.audio(caller, audio_ms(seconds), per_day_seconds).await
    }

    async fn audio_today(
        &self,
        caller: &str,
        per_day_seconds: u64,
    ) -> Result<QuotaDecision, LimitError> {
        self.audio(caller, 0, per_day_seconds).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{caller, free_port, RedisServer, Stores};
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::time::Instant;

    /// Two instances on one Redis share one bucket, one stream count and one quota.
    #[tokio::test]
    async fn instances_share_limits() {
        let server = RedisServer::start();
        let a = server.store_with_prefix("shared").await;
        let b = server.store_with_prefix("shared").await;
        let c = caller("shared");

        for _ in 0..3 {
            assert!(a.check_request(&c, 1, 5).await.unwrap().allowed);
        }
        let d = b.check_request(&c, 1, 5).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        assert!(b.check_request(&c, 1, 5).await.unwrap().allowed);
        let d = b.check_request(&c, 1, 5).await.unwrap();
        assert!(!d.allowed);
        assert!(d.retry_after_seconds >= 1);
        assert!(!a.check_request(&c, 1, 5).await.unwrap().allowed);

        let ttl = Duration::from_secs(30);
        let lease = a.open_stream(&c, 2, ttl).await.unwrap().unwrap();
        assert!(b.open_stream(&c, 2, ttl).await.unwrap().is_some());
        assert!(a.open_stream(&c, 2, ttl).await.unwrap().is_none());
        assert_eq!(b.open_streams(&c).await.unwrap(), 2);
        b.close_stream(&lease).await.unwrap(); // any instance may close it
        assert_eq!(a.open_streams(&c).await.unwrap(), 1);

        a.add_audio(&c, 40.0, 60).await.unwrap();
        let q = b.add_audio(&c, 30.0, 60).await.unwrap();
        assert_eq!(q.used_seconds, 70.0);
        assert!(q.exceeded);
        assert!(a.audio_today(&c, 60).await.unwrap().exceeded);

        // Another prefix is another deployment: nothing shared.
        let other = server.store_with_prefix("other").await;
        assert!(other.check_request(&c, 1, 5).await.unwrap().allowed);
        assert_eq!(other.open_streams(&c).await.unwrap(), 0);
    }

    /// The documented data model, and no key left without an expiry.
    #[tokio::test]
    async fn keys_follow_the_data_model() {
        let server = RedisServer::start();
        let store = server.store_with_prefix("model").await;
        store.check_request("k", 60, 5).await.unwrap();
        store
            .open_stream("k", 1, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        store.add_audio("k", 1.5, 60).await.unwrap();

        let mut conn = server_conn(&server).await;
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("model:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.sort();
        let day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 86_400;
        // (Flaky only across a UTC midnight between the two clocks' reads.)
        assert_eq!(
            keys,
            [
                format!("model:audio:k:{day}"),
                "model:rl:k".to_owned(),
                "model:streams:k".to_owned()
            ]
        );
        let ms: i64 = redis::cmd("GET")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(ms, 1500);
        for key in &keys {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl > 0, "{key} has no expiry ({ttl})");
        }
        // A bucket one token short expires once refilled (1 s at 60/min).
        let ttl: i64 = redis::cmd("PTTL")
            .arg("model:rl:k")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl <= 1001, "{ttl}");
    }

    async fn server_conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
        Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn connect_fails_fast_when_unreachable() {
        // Nothing listening: refused at once.
        let port = free_port();
        let start = Instant::now();
        let err = RedisLimits::connect(&format!("redis://:hunter2@127.0.0.1:{port}"), "x")
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        let LimitError::Unavailable(msg) = err;
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains("hunter2"), "the password leaked: {msg}");

        // Something listening that never answers: the response timeout.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let start = Instant::now();
        let err = RedisLimits::connect(&format!("redis://127.0.0.1:{port}"), "x")
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(err, LimitError::Unavailable(_)));

        let err = RedisLimits::connect("redis://:hunter2@host:notaport", "x")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Redis dies under a running store: every call errors quickly, none panics, and the
    /// store works again once Redis is back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_is_unavailable_then_recovers() {
        let mut server = RedisServer::start();
        let store = Arc::new(server.store().await);
        let c = caller("outage");
        assert!(store.check_request(&c, 60, 5).await.unwrap().allowed);

        server.kill();
        let start = Instant::now();
        for _ in 0..3 {
            let err = store.check_request(&c, 60, 5).await.unwrap_err();
            assert!(err.to_string().contains("check_request"), "{err}");
        }
        assert!(store
            .open_stream(&c, 1, Duration::from_secs(1))
            .await
            .is_err());
        assert!(store.add_audio(&c, 1.0, 60).await.is_err());
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );

        // Back on the same port (an empty Redis: restarted without persistence).
        let port = server.port;
        let _again = RedisServer::start_on(port);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match store.check_request(&c, 60, 5).await {
                Ok(d) => {
                    assert!(d.allowed);
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "not recovered: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A server that stops answering (paused, or a network black hole) fails calls at the
    /// deadline instead of holding them; the store recovers when it answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_server_fails_at_the_deadline() {
        let server = RedisServer::start();
        let store = server.store().await;
        let c = caller("paused");
        assert!(store.check_request(&c, 60, 5).await.unwrap().allowed);

        server.signal("STOP");
        for _ in 0..2 {
            let start = Instant::now();
            let err = store.check_request(&c, 60, 5).await.unwrap_err();
            let took = start.elapsed();
            assert!(
                took < CALL_DEADLINE + Duration::from_millis(500),
                "{took:?} {err}"
            );
        }
        server.signal("CONT");
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = store.check_request(&c, 60, 5).await {
            assert!(Instant::now() < deadline, "not recovered: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
