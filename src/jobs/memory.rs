//! The in-process job queue: jobs live in this process's memory and die with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tolk_protocol::rest::JobStatus;

use super::{now_ms, Claimed, JobQueue, JobRecord, QueueError};

struct Entry {
    record: JobRecord,
    /// Input audio, until a worker takes the job.
    input: Option<Vec<u8>>,
    output: Option<Vec<u8>>,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Entry>,
    /// Ids of queued jobs, oldest first.
    queued: VecDeque<String>,
    /// Jobs taken and not finished.
    running: usize,
}

impl State {
    /// Forget records past their expiry; queued and running jobs never expire.
    fn sweep(&mut self, now: u64) {
        self.jobs
            .retain(|_, e| !e.record.status.is_terminal() || e.record.expires_at_ms > now);
    }
}

/// Jobs in a `HashMap`, queued ids in a `VecDeque`; at most `capacity` unfinished.
///
/// Finished records (and their speech) are kept until they expire, and at most
/// `max_finished` of them holding at most `max_bytes` of speech: past either the oldest go
/// first, so memory stays bounded however many jobs a day brings.
pub struct MemoryQueue {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
    max_finished: usize,
    max_bytes: usize,
}

impl MemoryQueue {
    pub fn new(capacity: usize, max_finished: usize, max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
            max_finished: max_finished.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_take(&self) -> Option<Claimed> {
        let mut state = self.lock();
        while let Some(id) = state.queued.pop_front() {
            let Some(entry) = state.jobs.get_mut(&id) else {
                continue;
            };
            let Some(audio) = entry.input.take() else {
                continue;
            };
            entry.record.status = JobStatus::Processing;
            entry.record.updated_at_ms = now_ms();
            let record = entry.record.clone();
            state.running += 1;
            return Some(Claimed { record, audio });
        }
        None
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn submit(&self, record: &JobRecord, audio: Vec<u8>) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            if state.queued.len() + state.running >= self.capacity {
                return Err(QueueError::Full(self.capacity));
            }
            state.sweep(now_ms());
            state.queued.push_back(record.id.clone());
            state.jobs.insert(
                record.id.clone(),
                Entry {
                    record: record.clone(),
                    input: Some(audio),
                    output: None,
                },
            );
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn take(&self, _worker: &str, wait: Duration) -> Result<Option<Claimed>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a submit in between is not missed.
            let notified = self.ready.notified();
            if let Some(claimed) = self.try_take() {
                return Ok(Some(claimed));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn update(&self, _worker: &str, record: &JobRecord) -> Result<(), QueueError> {
        if let Some(entry) = self.lock().jobs.get_mut(&record.id) {
            entry.record = record.clone();
        }
        Ok(())
    }

    async fn release(
        &self,
        _worker: &str,
        record: &JobRecord,
        audio: Vec<u8>,
    ) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            let Some(entry) = state.jobs.get_mut(&record.id) else {
                return Ok(());
            };
            if entry.record.status.is_terminal() {
                return Ok(());
            }
            entry.record = record.clone();
            entry.input = Some(audio);
            state.running = state.running.saturating_sub(1);
            // First in line: it was taken before everything still queued.
            state.queued.push_front(record.id.clone());
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn finish(
        &self,
        _worker: &str,
        record: &JobRecord,
        audio: Option<Vec<u8>>,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let Some(entry) = state.jobs.get_mut(&record.id) else {
            return Ok(());
        };
        let was_running = !entry.record.status.is_terminal();
        entry.record = record.clone();
        entry.input = None;
        entry.output = audio;
        if was_running {
            state.running = state.running.saturating_sub(1);
        }
        let mut finished: Vec<(u64, String, usize)> = state
            .jobs
            .iter()
            .filter(|(_, e)| e.record.status.is_terminal())
            .map(|(id, e)| {
                let bytes = e.output.as_ref().map_or(0, Vec::len);
                (e.record.updated_at_ms, id.clone(), bytes)
            })
            .collect();
        let mut count = finished.len();
        let mut bytes: usize = finished.iter().map(|f| f.2).sum();
        if count > self.max_finished || bytes > self.max_bytes {
            finished.sort_unstable();
            for (_, id, size) in finished {
                if count <= self.max_finished && bytes <= self.max_bytes {
                    break;
                }
                state.jobs.remove(&id);
                count -= 1;
                bytes -= size;
            }
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        let now = now_ms();
        Ok(self
            .lock()
            .jobs
            .get(id)
            .filter(|e| !e.record.status.is_terminal() || e.record.expires_at_ms > now)
            .map(|e| e.record.clone()))
    }

    async fn output_audio(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        let now = now_ms();
        Ok(self
            .lock()
            .jobs
            .get(id)
            .filter(|e| e.record.expires_at_ms > now)
            .and_then(|e| e.output.clone()))
    }

    async fn depth(&self) -> Result<usize, QueueError> {
        let state = self.lock();
        Ok(state.queued.len() + state.running)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobParams;

    fn record(id: &str, ttl: Duration) -> JobRecord {
        let params = JobParams {
            source_lang: Some("en".into()),
            target_lang: None,
            tts: false,
            callback_url: None,
            owner: None,
        };
        JobRecord::new(id.into(), params, 1.0, ttl)
    }

    #[tokio::test]
    async fn job_moves_from_queued_to_completed() {
        let queue = MemoryQueue::new(4, 10, 1 << 20);
        let mut job = record("a", Duration::from_secs(60));
        queue.submit(&job, vec![1, 2, 3]).await.unwrap();
        assert_eq!(
            queue.get("a").await.unwrap().unwrap().status,
            JobStatus::Queued
        );
        assert_eq!(queue.depth().await.unwrap(), 1);

        let claimed = queue.take("w", Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(claimed.audio, vec![1, 2, 3]);
        assert_eq!(claimed.record.status, JobStatus::Processing);
        assert_eq!(
            queue.get("a").await.unwrap().unwrap().status,
            JobStatus::Processing
        );
        assert!(queue.take("w", Duration::ZERO).await.unwrap().is_none());

        job.status = JobStatus::Completed;
        job.progress = 100;
        queue.finish("w", &job, Some(vec![9])).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
        assert_eq!(queue.get("a").await.unwrap().unwrap().progress, 100);
        assert_eq!(queue.output_audio("a").await.unwrap(), Some(vec![9]));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_stores_nothing() {
        let queue = MemoryQueue::new(2, 10, 1 << 20);
        for id in ["a", "b"] {
            queue
                .submit(&record(id, Duration::from_secs(60)), vec![])
                .await
                .unwrap();
        }
        // A running job still counts against the capacity.
        queue.take("w", Duration::ZERO).await.unwrap().unwrap();
        let refused = queue
            .submit(&record("c", Duration::from_secs(60)), vec![])
            .await;
        assert!(matches!(refused, Err(QueueError::Full(2))), "{refused:?}");
        assert!(queue.get("c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_released_job_is_taken_again_first_with_its_audio() {
        let queue = MemoryQueue::new(4, 10, 1 << 20);
        for id in ["a", "b"] {
            queue
                .submit(&record(id, Duration::from_secs(60)), vec![1, 2, 3])
                .await
                .unwrap();
        }
        let taken = queue
            .take("w", Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(taken.record.id, "a");
        let mut back = taken.record.clone();
        back.status = JobStatus::Queued;
        queue.release("w", &back, taken.audio).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 2);
        let again = queue
            .take("w2", Duration::from_millis(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.record.id.as_str(), again.audio),
            ("a", vec![1, 2, 3])
        );
        assert_eq!(again.record.status, JobStatus::Processing);
    }

    #[tokio::test]
    async fn take_wakes_when_a_job_arrives() {
        let queue = std::sync::Arc::new(MemoryQueue::new(2, 10, 1 << 20));
        let taker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.take("w", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        queue
            .submit(&record("a", Duration::from_secs(60)), vec![7])
            .await
            .unwrap();
        let claimed = taker.await.unwrap().unwrap().expect("woken by submit");
        assert_eq!(claimed.record.id, "a");
    }

    #[tokio::test]
    async fn finished_records_expire_and_are_bounded() {
        let queue = MemoryQueue::new(8, 2, 1 << 20);
        for id in ["a", "b", "c"] {
            let mut job = record(id, Duration::from_secs(60));
            queue.submit(&job, vec![]).await.unwrap();
            queue.take("w", Duration::ZERO).await.unwrap().unwrap();
            job.status = JobStatus::Completed;
            job.updated_at_ms += match id {
                "a" => 0,
                "b" => 1,
                _ => 2,
            };
            queue.finish("w", &job, None).await.unwrap();
        }
        // Over max_finished: the oldest is gone.
        assert!(queue.get("a").await.unwrap().is_none());
        assert!(queue.get("c").await.unwrap().is_some());

        let mut short = record("d", Duration::ZERO);
        queue.submit(&short, vec![]).await.unwrap();
        // Queued jobs never expire, however short their TTL.
        assert!(queue.get("d").await.unwrap().is_some());
        queue.take("w", Duration::ZERO).await.unwrap().unwrap();
        short.status = JobStatus::Failed;
        queue.finish("w", &short, None).await.unwrap();
        assert!(queue.get("d").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn finished_speech_is_bounded_in_bytes() {
        // Room for two 400-byte results.
        let queue = MemoryQueue::new(8, 100, 1000);
        for (n, id) in ["a", "b", "c"].into_iter().enumerate() {
            let mut job = record(id, Duration::from_secs(60));
            queue.submit(&job, vec![]).await.unwrap();
            queue.take("w", Duration::ZERO).await.unwrap().unwrap();
            job.status = JobStatus::Completed;
            job.updated_at_ms += n as u64;
            queue.finish("w", &job, Some(vec![0; 400])).await.unwrap();
        }
        assert!(queue.get("a").await.unwrap().is_none(), "oldest evicted");
        assert_eq!(
            queue.output_audio("c").await.unwrap().map(|a| a.len()),
            Some(400)
        );
        assert!(queue.get("b").await.unwrap().is_some());
    }
}
