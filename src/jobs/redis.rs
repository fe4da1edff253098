//! [`RedisQueue`]: jobs in Redis, shared by every instance that uses the same Redis and
//! prefix, so that any instance's workers take any instance's jobs.
//!
//! Keys, under a prefix (`tolk` unless configured):
//! - `{prefix}:jobs`: a Stream with one entry (field `id`) per unfinished job, read through
//!   the consumer group `{prefix}:workers`. `submit` adds the entry and `finish` acks and
//!   deletes it, so the stream's length is the number of queued and running jobs, which
//!   `submit` holds to the capacity.
//! - `{prefix}:job:{id}`: the [`JobRecord`], as JSON.
//! - `{prefix}:job:{id}:input`: the submitted WAV, until the job finishes.
//! - `{prefix}:job:{id}:audio`: a finished job's synthesized WAV.
//! - `{prefix}:job:{id}:entry`: the job's stream entry id, for `update` and `finish`, which
//!   may run on another instance than the `submit` that created the entry.
//!
//! All keys of a job expire with its record (`expires_at_ms`), and each store of the
//! record moves their expiry with it. Steps that touch several keys are Lua scripts, so a
//! job is never half submitted or half finished.
//!
//! A taken job stays in the group's pending list under its worker's name, and `update`
//! resets its idle time. `take` first claims (XAUTOCLAIM) a job idle for longer than the
//! claim timeout, one whose worker died, and only then reads new ones (XREADGROUP).
//! Delivery is therefore at least once: a job whose worker stalls past the claim timeout
//! runs again elsewhere.
//!
//! A blocking XREADGROUP holds its connection for the whole block, so it does not go
//! over the shared connection that `get` and the rest use: each `take` borrows a dedicated
//! connection from a pool that grows to the number of workers waiting at once.
//!
//! Needs Redis 6.2 or later (XAUTOCLAIM); not Redis Cluster (a script touches a job's keys
//! and the stream, which do not share a hash slot).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply,
};
use ::redis::{AsyncCommands, AsyncConnectionConfig, Client, RedisError, RedisResult, Script};
use async_trait::async_trait;
use tolk_protocol::error::{ErrorCode, ErrorDetail};
use tolk_protocol::rest::JobStatus;

use super::{now_ms, Claimed, JobQueue, JobRecord, QueueError};

/// Longest single XREADGROUP block. `take` waits longer in several, looking for abandoned
/// jobs between them.
const MAX_BLOCK: Duration = Duration::from_secs(2);
/// Answer timeout on the shared connection; generous, as a request may carry minutes of
/// audio.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Answer timeout on a blocking read: [`MAX_BLOCK`] plus slack for the network.
const BLOCKING_RESPONSE_TIMEOUT: Duration = Duration::from_secs(7);

/// KEYS: stream, record, input, entry. ARGV: capacity, record JSON, audio, px, job id.
/// Returns the stream entry id, or nil when the queue is full.
const SUBMIT: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[5])
redis.call('SET', KEYS[4], entry, 'PX', ARGV[4])
return entry
";

/// KEYS: stream, record, input, audio, entry. ARGV: group, worker, record JSON, px.
/// Renews the claim only where `worker` holds it: a worker whose job was handed to another
/// after the claim timeout must not take it back.
const UPDATE: &str = r"
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[4], ARGV[4])
local entry = redis.call('GET', KEYS[5])
if entry then
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1, ARGV[2])
  if #held > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry, 'JUSTID')
  end
end
return 1
";

/// KEYS: stream, record, input, audio, entry. ARGV: group, record JSON, px, [audio].
const FINISH: &str = r"
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if ARGV[4] then
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[3])
end
redis.call('DEL', KEYS[3])
local entry = redis.call('GET', KEYS[5])
if entry then
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
  redis.call('DEL', KEYS[5])
end
return 1
";

/// KEYS: stream, record, entry. ARGV: group, record JSON, px, job id.
/// Acks and deletes the job's entry and adds a new one, so it is read as a new job by any
/// worker at once (not after the claim timeout); the stream's length is unchanged.
const RELEASE: &str = r"
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local entry = redis.call('GET', KEYS[3])
if entry then
  redis.call('XACK', KEYS[1], ARGV[1], entry)
  redis.call('XDEL', KEYS[1], entry)
end
local fresh = redis.call('XADD', KEYS[1], '*', 'id', ARGV[4])
redis.call('SET', KEYS[3], fresh, 'PX', ARGV[3])
return fresh
";

/// A [`JobQueue`] in Redis (see the module docs for the data model).
pub struct RedisQueue {
    client: Client,
    /// Shared, multiplexed, reconnecting; everything but blocking reads.
    conn: ConnectionManager,
    /// Connections for blocking reads, idle between `take`s. One that failed, or whose
    /// `take` was dropped mid-read, is not put back.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    keys: Keys,
    capacity: usize,
    ttl: Duration,
    claim_timeout: Duration,
    scripts: Scripts,
}

struct Scripts {
    submit: Script,
    update: Script,
    finish: Script,
    release: Script,
}

struct Keys {
    prefix: String,
    stream: String,
    group: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            stream: format!("{prefix}:jobs"),
            group: format!("{prefix}:workers"),
        }
    }

    fn record(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    fn input(&self, id: &str) -> String {
        format!("{}:job:{id}:input", self.prefix)
    }

    fn audio(&self, id: &str) -> String {
        format!("{}:job:{id}:audio", self.prefix)
    }

    fn entry(&self, id: &str) -> String {
        format!("{}:job:{id}:entry", self.prefix)
    }
}

impl RedisQueue {
    /// Connect to `url` (`redis://[user:password@]host[:port][/db]`) and create the stream
    /// and consumer group unless they exist.
    ///
    /// `capacity` bounds the jobs queued or running across all instances, `ttl` is how long
    /// a record is kept after `take` touches it, and a running job whose claim is not
    /// renewed by `update` for `claim_timeout` is handed to another worker.
    pub async fn connect(
        url: &str,
        prefix: &str,
        capacity: usize,
        ttl: Duration,
        claim_timeout: Duration,
    ) -> Result<Self, QueueError> {
        // Not the URL itself: it may hold a password.
        let client =
            Client::open(url).map_err(|e| QueueError::Store(format!("invalid Redis URL: {e}")))?;
        let unreachable = |e: RedisError| {
            QueueError::Store(format!(
                "connecting to Redis at {}: {e}",
                client.get_connection_info().addr()
            ))
        };
        // One plain attempt first, so that an unreachable Redis fails the start at once: the
        // manager's first connect retries with back-off for seconds. It becomes the first
        // connection for blocking reads.
        let first = client
            .get_multiplexed_async_connection_with_config(&blocking_config())
            .await
            .map_err(unreachable)?;
        // Few, short reconnection tries: during an outage a poll should get its 503 in
        // about a second (the next call tries again), not after the default ~6 s of retries.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(400));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unreachable)?;
        let queue = Self {
            client,
            conn,
            blocking: Mutex::new(vec![first]),
            keys: Keys::new(prefix),
            capacity,
            ttl,
            claim_timeout,
            scripts: Scripts {
                submit: Script::new(SUBMIT),
                update: Script::new(UPDATE),
                finish: Script::new(FINISH),
                release: Script::new(RELEASE),
            },
        };
        queue.create_group().await?;
        Ok(queue)
    }

    /// From the stream's first entry, not `$`: where the group is missing but the stream is
    /// not (the group was destroyed), its entries are jobs that still have to run.
    async fn create_group(&self) -> Result<(), QueueError> {
        let created: RedisResult<()> = self
            .conn
            .clone()
            .xgroup_create_mkstream(&self.keys.stream, &self.keys.group, "0")
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(store_error(
                format!(
                    "creating consumer group {} on {}",
                    self.keys.group, self.keys.stream
                ),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// The next stream entry for `worker`: an abandoned one, else a new one, waiting up to
    /// `block` for it.
    async fn next_entry(&self, worker: &str, block: Duration) -> RedisResult<Option<StreamId>> {
        if let Some(entry) = self.reclaim(worker).await? {
            return Ok(Some(entry));
        }
        self.read_new(worker, block).await
    }

    /// Claim for `worker` one pending entry idle for longer than the claim timeout.
    async fn reclaim(&self, worker: &str) -> RedisResult<Option<StreamId>> {
        let mut conn = self.conn.clone();
        let min_idle = self.claim_timeout.as_millis() as usize;
        let mut cursor = "0-0".to_owned();
        // XAUTOCLAIM looks at a few pending entries per call; go on from its cursor through
        // the pending list (the running jobs) until one is claimed or the list ends.
        loop {
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &self.keys.stream,
                    &self.keys.group,
                    worker,
                    min_idle,
                    &cursor,
                    StreamAutoClaimOptions::default().count(1),
                )
                .await?;
            if let Some(entry) = reply.claimed.into_iter().next() {
                return Ok(Some(entry));
            }
            if reply.next_stream_id == "0-0" {
                return Ok(None);
            }
            cursor = reply.next_stream_id;
        }
    }

    /// XREADGROUP one new entry for `worker` on a connection of its own, waiting up to
    /// `block` (not at all when zero).
    async fn read_new(&self, worker: &str, block: Duration) -> RedisResult<Option<StreamId>> {
        let idle = self
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => {
                self.client
                    .get_multiplexed_async_connection_with_config(&blocking_config())
                    .await?
            }
        };
        let mut options = StreamReadOptions::default()
            .group(&self.keys.group, worker)
            .count(1);
        let block_ms = block.as_nanos().div_ceil(1_000_000) as usize;
        if block_ms > 0 {
            options = options.block(block_ms);
        }
        let reply: Option<StreamReadReply> = conn
            .xread_options(&[&self.keys.stream], &[">"], &options)
            .await?;
        self.blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        Ok(reply
            .and_then(|reply| reply.keys.into_iter().next())
            .and_then(|key| key.ids.into_iter().next()))
    }

    /// Load the job behind a stream entry just handed to `worker` and mark it processing;
    /// `None` (and the entry dropped) when there is nothing left to run.
    async fn start(&self, worker: &str, entry: StreamId) -> Result<Option<Claimed>, QueueError> {
        let Some(id) = entry.get::<String>("id") else {
            tracing::warn!(
                entry = %entry.id,
                stream = %self.keys.stream,
                "dropping a job entry without an id"
            );
            self.drop_entry(&entry.id, None).await?;
            return Ok(None);
        };
        let record_key = self.keys.record(&id);
        let input_key = self.keys.input(&id);
        let (record, audio): (Option<String>, Option<Vec<u8>>) = ::redis::pipe()
            .get(&record_key)
            .get(&input_key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(format!("reading {record_key} and {input_key}"), e))?;
        let mut record = match record.map(|json| serde_json::from_str::<JobRecord>(&json)) {
            // Expired while queued.
            None => {
                self.drop_entry(&entry.id, Some(&id)).await?;
                return Ok(None);
            }
            Some(Err(e)) => {
                // Keeping the entry would fail every take after this one.
                tracing::warn!(
                    key = %record_key,
                    error = %e,
                    "dropping a job whose record is not a JobRecord"
                );
                self.drop_entry(&entry.id, Some(&id)).await?;
                return Ok(None);
            }
            Some(Ok(record)) => record,
        };
        if record.status.is_terminal() {
            self.drop_entry(&entry.id, Some(&id)).await?;
            return Ok(None);
        }
        let Some(audio) = audio else {
            // Every store of the record extends the input's expiry too, so this takes a key
            // deleted behind the queue's back; fail the job rather than leave it queued.
            record.status = JobStatus::Failed;
            record.error = Some(ErrorDetail {
                code: ErrorCode::Internal.as_str().to_owned(),
                message: "the job's audio was lost before a worker took it".to_owned(),
                request_id: None,
            });
            record.touch(self.ttl);
            self.finish(worker, &record, None).await?;
            self.drop_entry(&entry.id, Some(&id)).await?;
            return Ok(None);
        };
        record.status = JobStatus::Processing;
        record.touch(self.ttl);
        self.update(worker, &record).await?;
        Ok(Some(Claimed { record, audio }))
    }

    /// Ack and delete a stream entry that will not run, with the job's input and entry keys
    /// (its record, if any, stays for its TTL).
    async fn drop_entry(&self, entry: &str, id: Option<&str>) -> Result<(), QueueError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .xack(&self.keys.stream, &self.keys.group, &[entry])
            .ignore()
            .xdel(&self.keys.stream, &[entry])
            .ignore();
        if let Some(id) = id {
            pipe.del(&[self.keys.input(id), self.keys.entry(id)])
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(format!("dropping entry {entry} of {}", self.keys.stream), e))
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn submit(&self, record: &JobRecord, audio: Vec<u8>) -> Result<(), QueueError> {
        let record_key = self.keys.record(&record.id);
        let entry: Option<String> = self
            .scripts
            .submit
            .key(&self.keys.stream)
            .key(&record_key)
            .key(self.keys.input(&record.id))
            .key(self.keys.entry(&record.id))
            .arg(self.capacity)
            .arg(to_json(record)?)
            .arg(audio)
            .arg(px(record))
            .arg(&record.id)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(format!("submitting {record_key}"), e))?;
        match entry {
            Some(_) => Ok(()),
            None => Err(QueueError::Full(self.capacity)),
        }
    }

    // Waits in slices of at most MAX_BLOCK and the claim timeout, looking for abandoned
    // jobs before each. A take dropped mid-read may leave the entry it was being handed
    // pending under `worker`; it is claimed again after the claim timeout.
    async fn take(&self, worker: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        let deadline = Instant::now() + wait;
        let mut group_created = false;
        loop {
            let block = deadline
                .saturating_duration_since(Instant::now())
                .min(self.claim_timeout)
                .min(MAX_BLOCK);
            let entry = match self.next_entry(worker, block).await {
                Ok(entry) => entry,
                // The group is gone (say Redis restarted without persistence): make it
                // again, once per take.
                Err(e) if e.code() == Some("NOGROUP") && !group_created => {
                    group_created = true;
                    self.create_group().await?;
                    continue;
                }
                Err(e) => {
                    return Err(store_error(
                        format!(
                            "taking a job from {} as {}/{worker}",
                            self.keys.stream, self.keys.group
                        ),
                        e,
                    ))
                }
            };
            match entry {
                Some(entry) => {
                    if let Some(claimed) = self.start(worker, entry).await? {
                        return Ok(Some(claimed));
                    }
                }
                None if Instant::now() >= deadline => return Ok(None),
                None => {}
            }
        }
    }

    async fn update(&self, worker: &str, record: &JobRecord) -> Result<(), QueueError> {
        let record_key = self.keys.record(&record.id);
        self.scripts
            .update
            .key(&self.keys.stream)
            .key(&record_key)
            .key(self.keys.input(&record.id))
            .key(self.keys.audio(&record.id))
            .key(self.keys.entry(&record.id))
            .arg(&self.keys.group)
            .arg(worker)
            .arg(to_json(record)?)
            .arg(px(record))
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(format!("updating {record_key}"), e))
    }

    async fn finish(
        &self,
        _worker: &str,
        record: &JobRecord,
        audio: Option<Vec<u8>>,
    ) -> Result<(), QueueError> {
        let record_key = self.keys.record(&record.id);
        let mut invocation = self.scripts.finish.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&record_key)
            .key(self.keys.input(&record.id))
            .key(self.keys.audio(&record.id))
            .key(self.keys.entry(&record.id))
            .arg(&self.keys.group)
            .arg(to_json(record)?)
            .arg(px(record));
        if let Some(audio) = audio {
            invocation.arg(audio);
        }
        invocation
            .invoke_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| store_error(format!("finishing {record_key}"), e))
    }

    async fn release(
        &self,
        _worker: &str,
        record: &JobRecord,
        _audio: Vec<u8>, // the input key is kept until `finish`
    ) -> Result<(), QueueError> {
        let record_key = self.keys.record(&record.id);
        self.scripts
            .release
            .key(&self.keys.stream)
            .key(&record_key)
            .key(self.keys.entry(&record.id))
            .arg(&self.keys.group)
            .arg(to_json(record)?)
            .arg(px(record))
            .arg(&record.id)
            .invoke_async::<String>(&mut self.conn.clone())
            .await
            .map(|_| ())
            .map_err(|e| store_error(format!("releasing {record_key}"), e))
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let key = self.keys.record(id);
        let json: Option<String> = self
            .conn
            .clone()
            .get(&key)
            .await
            .map_err(|e| store_error(format!("reading {key}"), e))?;
        json.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| QueueError::Store(format!("{key} is not a job record: {e}")))
        })
        .transpose()
    }

    async fn output_audio(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let key = self.keys.audio(id);
        self.conn
            .clone()
            .get(&key)
            .await
            .map_err(|e| store_error(format!("reading {key}"), e))
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        self.conn
            .clone()
            .xlen(&self.keys.stream)
            .await
            .map_err(|e| store_error(format!("XLEN {}", self.keys.stream), e))
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

fn blocking_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_response_timeout(Some(BLOCKING_RESPONSE_TIMEOUT))
}

fn store_error(context: String, e: RedisError) -> QueueError {
    QueueError::Store(format!("{context}: {e}"))
}

fn to_json(record: &JobRecord) -> Result<String, QueueError> {
    serde_json::to_string(record)
        .map_err(|e| QueueError::Store(format!("encoding job {}: {e}", record.id)))
}

/// Milliseconds until the record expires, at least 1 (`PX 0` is an error).
fn px(record: &JobRecord) -> u64 {
    record.expires_at_ms.saturating_sub(now_ms()).max(1)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};

    use tolk_protocol::rest::{ResultMetadata, TranslationResult};

    use super::*;
    use crate::jobs::JobParams;

    /// A `redis-server` of this test's own on a free port, killed on drop.
    struct RedisServer {
        child: Child,
        port: u16,
    }

    impl RedisServer {
        fn start() -> Self {
            // Another process may take the port between our probe and the server's bind;
            // the server then exits and we try another.
            for _ in 0..5 {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|listener| listener.local_addr())
                    .expect("a free port")
                    .port();
                let spawned = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn();
                let child = match spawned {
                    Ok(child) => child,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                        "redis-server is not on PATH: the RedisQueue tests need a real Redis \
                         (apt-get install redis-server)"
                    ),
                    Err(e) => panic!("cannot start redis-server: {e}"),
                };
                let mut server = Self { child, port };
                if server.wait_ready() {
                    return server;
                }
            }
            panic!("redis-server did not come up on any of 5 ports");
        }

        fn wait_ready(&mut self) -> bool {
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if self
                    .child
                    .try_wait()
                    .expect("redis-server status")
                    .is_some()
                {
                    return false;
                }
                if ping(self.port) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        /// A plain connection, to look at keys behind the queue's back.
        async fn raw(&self) -> MultiplexedConnection {
            Client::open(self.url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        }

        async fn queue(&self, prefix: &str, capacity: usize, ttl: Duration) -> RedisQueue {
            RedisQueue::connect(&self.url(), prefix, capacity, ttl, CLAIM_TIMEOUT)
                .await
                .unwrap()
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn ping(port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    const CLAIM_TIMEOUT: Duration = Duration::from_millis(300);
    const TTL: Duration = Duration::from_secs(60);

    fn record(ttl: Duration) -> JobRecord {
        let params = JobParams {
            source_lang: Some("en".into()),
            target_lang: Some("es".into()),
            tts: true,
            callback_url: Some("http://127.0.0.1:9/hook".into()),
            owner: Some("key:abc".into()),
        };
        JobRecord::new(uuid::Uuid::new_v4().to_string(), params, 2.5, ttl)
    }

    /// Not valid UTF-8, so a lossy text round trip would show.
    fn input_audio() -> Vec<u8> {
        let mut audio = b"RIFF\xff\xfe\x00\x01WAVE".to_vec();
        audio.extend((0..=255u8).cycle().take(64 * 1024));
        audio
    }

    fn completed(mut record: JobRecord) -> JobRecord {
        record.status = JobStatus::Completed;
        record.progress = 100;
        record.result = Some(TranslationResult {
            transcript: "hello".into(),
            translation: Some("hola".into()),
            language: "en".into(),
            target_lang: Some("es".into()),
            segments: Vec::new(),
            audio_url: Some(format!("/api/v1/jobs/{}/audio", record.id)),
            metadata: ResultMetadata {
                duration_seconds: 2.5,
                processing_ms: 120,
                asr_model: "tiny".into(),
                translation_route: None,
                voice: None,
                audio_seconds: Some(1.0),
                processed_by: "test".into(),
            },
        });
        record.touch(TTL);
        record
    }

    async fn exists(conn: &mut MultiplexedConnection, key: &str) -> bool {
        conn.exists(key).await.unwrap()
    }

    async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
        ::redis::cmd("PTTL")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap()
    }

    /// Owner of each pending entry of the stream.
    async fn pending_owners(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
        let pending: Vec<(String, String, u64, u64)> = ::redis::cmd("XPENDING")
            .arg(format!("{prefix}:jobs"))
            .arg(format!("{prefix}:workers"))
            .arg("-")
            .arg("+")
            .arg(10)
            .query_async(conn)
            .await
            .unwrap();
        pending.into_iter().map(|(_, owner, _, _)| owner).collect()
    }

    #[tokio::test]
    async fn unreachable_redis_fails_connect_at_once() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let started = Instant::now();
        let url = format!("redis://:secret@127.0.0.1:{port}/");
        let err = RedisQueue::connect(&url, "none", 4, TTL, CLAIM_TIMEOUT)
            .await
            .err()
            .expect("no Redis there");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let message = err.to_string();
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[tokio::test]
    async fn submitted_job_is_queued_with_its_keys_expiring_with_the_record() {
        let server = RedisServer::start();
        let queue = server.queue("submit", 4, TTL).await;
        let job = record(TTL);
        queue.submit(&job, input_audio()).await.unwrap();

        assert_eq!(queue.get(&job.id).await.unwrap(), Some(job.clone()));
        assert_eq!(queue.depth().await.unwrap(), 1);
        assert_eq!(queue.capacity(), 4);
        assert_eq!(queue.get("no-such-job").await.unwrap(), None);
        assert_eq!(queue.output_audio(&job.id).await.unwrap(), None);

        let mut raw = server.raw().await;
        let left = job.expires_at_ms - now_ms();
        for key in [
            format!("submit:job:{}", job.id),
            format!("submit:job:{}:input", job.id),
            format!("submit:job:{}:entry", job.id),
        ] {
            let pttl = pttl(&mut raw, &key).await;
            assert!(
                pttl > left as i64 - 2_000 && pttl <= TTL.as_millis() as i64,
                "{key}: PTTL {pttl}, record expires in {left} ms"
            );
        }
    }

    #[tokio::test]
    async fn take_hands_out_the_job_with_its_audio_as_processing() {
        let server = RedisServer::start();
        let queue = server.queue("take", 4, TTL).await;
        let job = record(TTL);
        queue.submit(&job, input_audio()).await.unwrap();

        let claimed = queue
            .take("w1", Duration::from_secs(1))
            .await
            .unwrap()
            .expect("the queued job");
        assert_eq!(claimed.record.id, job.id);
        assert_eq!(claimed.record.status, JobStatus::Processing);
        assert_eq!(claimed.record.params, job.params);
        assert_eq!(claimed.audio, input_audio());
        assert_eq!(queue.get(&job.id).await.unwrap(), Some(claimed.record));
        // Still counted: running.
        assert_eq!(queue.depth().await.unwrap(), 1);
        assert!(queue.take("w2", Duration::ZERO).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn update_stores_progress() {
        let server = RedisServer::start();
        let queue = server.queue("update", 4, TTL).await;
        queue.submit(&record(TTL), input_audio()).await.unwrap();
        let mut job = queue
            .take("w1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
            .record;

        job.progress = 40;
        job.eta_seconds = Some(3.5);
        job.touch(TTL);
        queue.update("w1", &job).await.unwrap();
        assert_eq!(queue.get(&job.id).await.unwrap(), Some(job.clone()));

        // A job no longer in the stream (finished) is updated all the same: callbacks do.
        let mut done = completed(job);
        queue.finish("w1", &done, None).await.unwrap();
        done.callback.as_mut().unwrap().attempts = 1;
        queue.update("w1", &done).await.unwrap();
        assert_eq!(queue.get(&done.id).await.unwrap(), Some(done));
    }

    #[tokio::test]
    async fn finish_stores_the_result_and_output_and_empties_the_queue() {
        let server = RedisServer::start();
        let queue = server.queue("finish", 4, TTL).await;
        queue.submit(&record(TTL), input_audio()).await.unwrap();
        let job = queue
            .take("w1", Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
            .record;

        let done = completed(job);
        let output = b"RIFF\x00\xffspeech".to_vec();
        queue
            .finish("w1", &done, Some(output.clone()))
            .await
            .unwrap();

        assert_eq!(queue.get(&done.id).await.unwrap(), Some(done.clone()));
        assert_eq!(queue.output_audio(&done.id).await.unwrap(), Some(output));
        assert_eq!(queue.depth().await.unwrap(), 0);
        let mut raw = server.raw().await;
        assert!(!exists(&mut raw, &format!("finish:job:{}:input", done.id)).await);
        assert!(!exists(&mut raw, &format!("finish:job:{}:entry", done.id)).await);
        assert!(pending_owners(&mut raw, "finish").await.is_empty());
        let audio_pttl = pttl(&mut raw, &format!("finish:job:{}:audio", done.id)).await;
        assert!(
            audio_pttl > TTL.as_millis() as i64 - 2_000,
            "PTTL {audio_pttl}"
        );
        assert!(queue.take("w1", Duration::ZERO).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_released_job_is_taken_at_once_by_another_worker() {
        let server = RedisServer::start();
        let queue = server.queue("release", 4, TTL).await;
        queue.submit(&record(TTL), input_audio()).await.unwrap();
        let taken = queue.take("w1", Duration::ZERO).await.unwrap().unwrap();
        let mut back = taken.record.clone();
        back.status = JobStatus::Queued;
        queue.release("w1", &back, taken.audio).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 1);
        assert_eq!(
            queue.get(&back.id).await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        let mut raw = server.raw().await;
        assert!(pending_owners(&mut raw, "release").await.is_empty());
        // Long before the claim timeout: a new entry, not an abandoned one.
        let again = queue.take("w2", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(again.record.id, back.id);
        assert_eq!(again.audio, input_audio());
        queue
            .finish("w2", &completed(again.record), None)
            .await
            .unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn full_queue_refuses_and_stores_nothing() {
        let server = RedisServer::start();
        let queue = server.queue("full", 2, TTL).await;
        let (first, second, refused) = (record(TTL), record(TTL), record(TTL));
        queue.submit(&first, input_audio()).await.unwrap();
        queue.submit(&second, input_audio()).await.unwrap();

        let err = queue.submit(&refused, input_audio()).await.unwrap_err();
        assert!(matches!(err, QueueError::Full(2)), "{err:?}");
        assert_eq!(queue.depth().await.unwrap(), 2);
        assert_eq!(queue.get(&refused.id).await.unwrap(), None);
        let mut raw = server.raw().await;
        for suffix in ["", ":input", ":entry"] {
            let key = format!("full:job:{}{suffix}", refused.id);
            assert!(!exists(&mut raw, &key).await, "{key}");
        }

        // A running job still counts; a finished one no longer does.
        let running = queue.take("w1", Duration::ZERO).await.unwrap().unwrap();
        assert!(matches!(
            queue.submit(&refused, input_audio()).await,
            Err(QueueError::Full(2))
        ));
        queue
            .finish("w1", &completed(running.record), None)
            .await
            .unwrap();
        queue.submit(&refused, input_audio()).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn expired_job_is_gone_and_dropped_from_the_queue() {
        let server = RedisServer::start();
        let ttl = Duration::from_millis(300);
        let queue = server.queue("ttl", 4, ttl).await;
        let job = record(ttl);
        queue.submit(&job, input_audio()).await.unwrap();
        let mut raw = server.raw().await;
        let pttl = pttl(&mut raw, &format!("ttl:job:{}", job.id)).await;
        assert!(pttl > 0 && pttl <= 300, "PTTL {pttl}");

        tokio::time::sleep(Duration::from_millis(450)).await;
        assert_eq!(queue.get(&job.id).await.unwrap(), None);
        // Still in the stream until a take comes across it.
        assert_eq!(queue.depth().await.unwrap(), 1);
        assert!(queue.take("w1", Duration::ZERO).await.unwrap().is_none());
        assert_eq!(queue.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn job_of_a_silent_worker_goes_to_another_after_the_claim_timeout() {
        let server = RedisServer::start();
        let queue = server.queue("claim", 4, TTL).await;
        let job = record(TTL);
        queue.submit(&job, input_audio()).await.unwrap();
        let first = queue.take("a", Duration::ZERO).await.unwrap().unwrap();

        assert!(queue.take("b", Duration::ZERO).await.unwrap().is_none());
        let started = Instant::now();
        let second = queue
            .take("b", Duration::from_secs(2))
            .await
            .unwrap()
            .expect("the abandoned job");
        assert_eq!(second.record.id, job.id);
        assert_eq!(second.audio, input_audio());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        // The first worker coming back to life does not take the claim back.
        queue.update("a", &first.record).await.unwrap();
        let mut raw = server.raw().await;
        assert_eq!(pending_owners(&mut raw, "claim").await, ["b"]);
    }

    #[tokio::test]
    async fn updates_keep_the_claim() {
        let server = RedisServer::start();
        let queue = server.queue("renew", 4, TTL).await;
        queue.submit(&record(TTL), input_audio()).await.unwrap();
        let mut job = queue
            .take("a", Duration::ZERO)
            .await
            .unwrap()
            .unwrap()
            .record;

        let updates = async {
            for progress in 1..=10 {
                tokio::time::sleep(CLAIM_TIMEOUT / 3).await;
                job.progress = progress;
                queue.update("a", &job).await.unwrap();
            }
        };
        let (taken, ()) = tokio::join!(queue.take("b", CLAIM_TIMEOUT * 3), updates);
        assert!(taken.unwrap().is_none());

        // Silent from now on.
        let taken = queue.take("b", Duration::from_secs(2)).await.unwrap();
        assert_eq!(taken.expect("the abandoned job").record.id, job.id);
    }

    #[tokio::test]
    async fn instances_sharing_redis_share_jobs() {
        let server = RedisServer::start();
        let accepting = server.queue("shared", 4, TTL).await;
        let working = server.queue("shared", 4, TTL).await;
        let job = record(TTL);
        accepting.submit(&job, input_audio()).await.unwrap();

        assert_eq!(working.depth().await.unwrap(), 1);
        let claimed = working.take("w1", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(claimed.record.id, job.id);
        let done = completed(claimed.record);
        working
            .finish("w1", &done, Some(b"out".to_vec()))
            .await
            .unwrap();

        assert_eq!(accepting.get(&job.id).await.unwrap(), Some(done));
        assert_eq!(
            accepting.output_audio(&job.id).await.unwrap(),
            Some(b"out".to_vec())
        );
        assert_eq!(accepting.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn waiting_take_gets_a_later_job_without_stalling_reads() {
        let server = RedisServer::start();
        let queue = server.queue("wait", 4, TTL).await;

        let started = Instant::now();
        assert!(queue
            .take("w1", Duration::from_millis(200))
            .await
            .unwrap()
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(200));

        let job = record(TTL);
        let started = Instant::now();
        let submitter = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // The waiting take holds its own connection, not this one.
            let read = Instant::now();
            assert_eq!(queue.depth().await.unwrap(), 0);
            assert!(read.elapsed() < Duration::from_millis(100));
            queue.submit(&job, input_audio()).await.unwrap();
        };
        let (taken, ()) = tokio::join!(queue.take("w1", Duration::from_secs(5)), submitter);
        assert_eq!(taken.unwrap().expect("the job").record.id, job.id);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn concurrent_takes_get_different_jobs() {
        let server = RedisServer::start();
        let queue = server.queue("workers", 4, TTL).await;
        let jobs = [record(TTL), record(TTL), record(TTL)];
        let submitter = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for job in &jobs {
                queue.submit(job, input_audio()).await.unwrap();
            }
        };
        let wait = Duration::from_secs(2);
        let (a, b, c, ()) = tokio::join!(
            queue.take("w1", wait),
            queue.take("w2", wait),
            queue.take("w3", wait),
            submitter
        );
        let mut taken: Vec<String> = [a, b, c]
            .into_iter()
            .map(|claimed| claimed.unwrap().expect("a job").record.id)
            .collect();
        taken.sort();
        let mut submitted: Vec<String> = jobs.iter().map(|job| job.id.clone()).collect();
        submitted.sort();
        assert_eq!(taken, submitted);
    }

    #[tokio::test]
    async fn job_whose_audio_is_lost_fails() {
        let server = RedisServer::start();
        let queue = server.queue("lost", 4, TTL).await;
        let job = record(TTL);
        queue.submit(&job, input_audio()).await.unwrap();
        let mut raw = server.raw().await;
        let _: () = raw.del(format!("lost:job:{}:input", job.id)).await.unwrap();

        assert!(queue.take("w1", Duration::ZERO).await.unwrap().is_none());
        let failed = queue.get(&job.id).await.unwrap().unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.error.unwrap().code, "internal");
        assert_eq!(queue.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn lost_consumer_group_is_made_again_with_its_jobs() {
        let server = RedisServer::start();
        let queue = server.queue("group", 4, TTL).await;
        let job = record(TTL);
        queue.submit(&job, input_audio()).await.unwrap();
        let mut raw = server.raw().await;
        let _: () = ::redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg("group:jobs")
            .arg("group:workers")
            .query_async(&mut raw)
            .await
            .unwrap();

        let taken = queue.take("w1", Duration::ZERO).await.unwrap();
        assert_eq!(taken.expect("the queued job").record.id, job.id);
    }
}
