//! A pool of worker threads running a synchronous engine, fed by a bounded queue.
//!
//! Each worker owns one engine instance (built on its own thread by a factory), so engines
//! need not be `Sync`: whisper shares its weights between instances and keeps one decoder
//! state per worker. Requests carry everything the engine needs, so any worker serves any
//! session. Inference never runs on the async executors: callers get a future (a oneshot
//! receiver) and await it.
//!
//! The queue has two lanes. `Priority::High` (work whose result must not be lost, such as
//! the final decode of an utterance) is always taken before `Priority::Normal` (partials,
//! which may be skipped under load). Both lanes are bounded; a full lane refuses the job at
//! once, so callers can tell the client `overloaded` instead of queueing without end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::histogram::{Histogram, Snapshot};

/// A synchronous engine a worker thread runs.
pub trait Engine: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    type Error: Send + 'static;
    fn process(&mut self, request: Self::Request) -> Result<Self::Response, Self::Error>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    High,
    Normal,
}

/// What a job's future resolves to.
#[derive(Debug)]
pub struct Done<R, E> {
    pub result: Result<R, E>,
    /// Time spent waiting in the queue.
    pub queued: Duration,
    /// Time the engine took.
    pub busy: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the {0} queue is full")]
    Full(&'static str),
    #[error("the {0} pool has shut down")]
    Closed(&'static str),
}

type Reply<E> = oneshot::Sender<Done<<E as Engine>::Response, <E as Engine>::Error>>;
/// Resolves when a worker has run the job.
pub type Ticket<E> = oneshot::Receiver<Done<<E as Engine>::Response, <E as Engine>::Error>>;

struct Job<E: Engine> {
    request: E::Request,
    reply: Reply<E>,
    enqueued: Instant,
}

struct Queue<E: Engine> {
    high: VecDeque<Job<E>>,
    normal: VecDeque<Job<E>>,
    closed: bool,
}

struct Shared<E: Engine> {
    queue: Mutex<Queue<E>>,
    ready: Condvar,
    capacity: usize,
    busy_workers: AtomicUsize,
    stats: JobStats,
}

/// What the pool's jobs took, for `/metrics`.
#[derive(Debug, Default)]
struct JobStats {
    /// Engine time per job.
    busy: Histogram,
    /// Queue wait plus engine time: what a caller waited.
    latency: Histogram,
    failed: std::sync::atomic::AtomicU64,
}

/// A pool's job statistics read at one moment.
#[derive(Debug, Clone)]
pub struct PoolStats {
    pub busy: Snapshot,
    pub latency: Snapshot,
    pub failed: u64,
}

/// A handle to the pool; cheap to clone. Dropping the last handle stops the workers once
/// the queue is drained.
pub struct Pool<E: Engine> {
    name: &'static str,
    shared: Arc<Shared<E>>,
    workers: usize,
    _threads: Arc<Threads<E>>,
}

impl<E: Engine> Clone for Pool<E> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            shared: self.shared.clone(),
            workers: self.workers,
            _threads: self._threads.clone(),
        }
    }
}

struct Threads<E: Engine> {
    shared: Arc<Shared<E>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl<E: Engine> Drop for Threads<E> {
    fn drop(&mut self) {
        // poison: a worker that panicked already logged it; closing must still happen.
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        drop(q);
        self.shared.ready.notify_all();
        for handle in self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = handle.join();
        }
    }
}

impl<E: Engine> Pool<E> {
    /// Start `workers` threads; `factory(i)` builds worker i's engine on its own thread.
    /// Fails if any engine cannot be built.
    pub fn start<F, Err>(
        name: &'static str,
        workers: usize,
        capacity: usize,
        factory: F,
    ) -> Result<Self, Err>
    where
        F: Fn(usize) -> Result<E, Err> + Send + Sync + 'static,
        Err: Send + 'static,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                high: VecDeque::new(),
                normal: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            busy_workers: AtomicUsize::new(0),
            stats: JobStats::default(),
        });
        let factory = Arc::new(factory);
        let mut handles = Vec::new();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        for i in 0..workers.max(1) {
            let shared = shared.clone();
            let factory = factory.clone();
            let built_tx = built_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || match factory(i) {
                    Ok(engine) => {
                        let _ = built_tx.send(Ok(()));
                        drop(built_tx);
                        work(engine, &shared);
                    }
                    Err(e) => {
                        let _ = built_tx.send(Err(e));
                    }
                })
                .expect("spawning a worker thread: the OS refused a thread, nothing can run");
            handles.push(handle);
        }
        drop(built_tx);
        let threads = Arc::new(Threads {
            shared: shared.clone(),
            handles: Mutex::new(handles),
        });
        for outcome in built_rx {
            outcome?; // dropping `threads` stops the workers that did start
        }
        Ok(Self {
            name,
            shared,
            workers: workers.max(1),
            _threads: threads,
        })
    }

    /// Queue a job; the receiver resolves when a worker has run it.
    pub fn submit(&self, request: E::Request, priority: Priority) -> Result<Ticket<E>, PoolError> {
        let (reply, rx) = oneshot::channel();
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(PoolError::Closed(self.name));
        }
        let lane = match priority {
            Priority::High => &mut q.high,
            Priority::Normal => &mut q.normal,
        };
        if lane.len() >= self.shared.capacity {
            return Err(PoolError::Full(self.name));
        }
        lane.push_back(Job {
            request,
            reply,
            enqueued: Instant::now(),
        });
        drop(q);
        self.shared.ready.notify_one();
        Ok(rx)
    }

    /// Jobs waiting (high, normal).
    pub fn queued(&self) -> (usize, usize) {
        let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        (q.high.len(), q.normal.len())
    }

    /// Workers running a job right now.
    pub fn busy(&self) -> usize {
        self.shared.busy_workers.load(Ordering::Relaxed)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Time taken by the jobs run so far.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared.stats;
        PoolStats {
            busy: s.busy.snapshot(),
            latency: s.latency.snapshot(),
            failed: s.failed.load(Ordering::Relaxed),
        }
    }
}

fn work<E: Engine>(mut engine: E, shared: &Shared<E>) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = q.high.pop_front().or_else(|| q.normal.pop_front()) {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        if job.reply.is_closed() {
            continue; // the caller went away (session closed): skip the work
        }
        let queued = job.enqueued.elapsed();
        shared.busy_workers.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = engine.process(job.request);
        let busy = start.elapsed();
        shared.busy_workers.fetch_sub(1, Ordering::Relaxed);
        shared.stats.busy.observe(busy);
        shared.stats.latency.observe(queued + busy);
        if result.is_err() {
            shared.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        let _ = job.reply.send(Done {
            result,
            queued,
            busy,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test engine: doubles its input after sleeping the given milliseconds.
    struct FakeDoubler;

    impl Engine for FakeDoubler {
        type Request = (u64, u64);
        type Response = u64;
        type Error = String;
        fn process(&mut self, (value, sleep_ms): (u64, u64)) -> Result<u64, String> {
            std::thread::sleep(Duration::from_millis(sleep_ms));
            if value == 13 {
                return Err("unlucky".into());
            }
            Ok(value * 2)
        }
    }

    fn pool(workers: usize, capacity: usize) -> Pool<FakeDoubler> {
        Pool::start("test", workers, capacity, |_| Ok::<_, ()>(FakeDoubler)).unwrap()
    }

    #[tokio::test]
    async fn runs_jobs_and_reports_errors() {
        let p = pool(2, 8);
        let a = p.submit((2, 0), Priority::Normal).unwrap();
        let b = p.submit((13, 0), Priority::High).unwrap();
        assert_eq!(a.await.unwrap().result, Ok(4));
        assert_eq!(b.await.unwrap().result, Err("unlucky".to_string()));
        let stats = p.stats();
        assert_eq!(
            (stats.busy.count, stats.latency.count, stats.failed),
            (2, 2, 1)
        );
    }

    #[tokio::test]
    async fn stats_count_engine_time_and_queue_wait() {
        // One worker: the second job waits for the first's 30 ms.
        let p = pool(1, 8);
        let a = p.submit((1, 30), Priority::Normal).unwrap();
        let b = p.submit((1, 30), Priority::Normal).unwrap();
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert!(b.queued >= Duration::from_millis(25), "{:?}", b.queued);
        let stats = p.stats();
        assert_eq!(stats.busy.count, 2);
        let busy = (a.busy + b.busy).as_secs_f64();
        assert!((stats.busy.sum_seconds - busy).abs() < 0.001);
        assert!(stats.latency.sum_seconds >= busy + 0.025);
    }

    #[tokio::test]
    async fn high_priority_jobs_overtake_queued_normal_ones() {
        let p = pool(1, 8);
        let blocker = p.submit((0, 100), Priority::Normal).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the worker is now busy
        let normal = p.submit((1, 0), Priority::Normal).unwrap();
        let high = p.submit((2, 0), Priority::High).unwrap();
        blocker.await.unwrap();
        let high = high.await.unwrap();
        let normal = normal.await.unwrap();
        assert!(
            high.queued < normal.queued,
            "high waited {:?}, normal {:?}",
            high.queued,
            normal.queued
        );
    }

    #[test]
    fn a_full_lane_refuses_at_once() {
        let p = pool(1, 2);
        let _running = p.submit((0, 200), Priority::Normal).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let _q1 = p.submit((1, 0), Priority::Normal).unwrap();
        let _q2 = p.submit((1, 0), Priority::Normal).unwrap();
        assert_eq!(
            p.submit((1, 0), Priority::Normal).unwrap_err(),
            PoolError::Full("test")
        );
        // The other lane has its own room.
        assert!(p.submit((1, 0), Priority::High).is_ok());
        assert_eq!(p.queued(), (1, 2));
    }

    #[test]
    fn a_failing_factory_fails_start() {
        let r = Pool::<FakeDoubler>::start("test", 2, 1, |i| {
            if i == 1 {
                Err("no model")
            } else {
                Ok(FakeDoubler)
            }
        });
        assert_eq!(r.err(), Some("no model"));
    }

    #[tokio::test]
    async fn abandoned_jobs_are_skipped() {
        let p = pool(1, 8);
        let blocker = p.submit((0, 100), Priority::Normal).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(p.submit((5, 1000), Priority::Normal).unwrap()); // caller gone: must not run
        let start = Instant::now();
        blocker.await.unwrap();
        p.submit((1, 0), Priority::Normal).unwrap().await.unwrap();
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "the abandoned 1 s job ran"
        );
    }
}
