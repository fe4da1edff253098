//! Graceful shutdown, as a protocol (mini-redis's `shutdown.rs` is the model): one signal,
//! every party told at once, each finishing its own work within one deadline.
//!
//! On SIGTERM or SIGINT the server stops accepting connections and `/readyz` answers 503;
//! each WebSocket session finalizes its open stream (committed segments, `final_result`,
//! `session_complete`) and closes with 1001 (going away); each job worker stops taking
//! jobs and finishes the one it runs, or gives it back to the queue when the deadline
//! nears. Whatever is still open at the deadline is dropped and the process exits.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long before the deadline a running job is given back rather than finished: time
/// for the queue write.
const RELEASE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Shutdown {
    started: watch::Sender<Option<Instant>>,
    /// Time from the signal to the forced exit.
    pub grace: Duration,
    deadline: OnceLock<Instant>,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            started: watch::channel(None).0,
            grace,
            deadline: OnceLock::new(),
        }
    }

    /// Begin: everyone subscribed is told. Later calls change nothing.
    pub fn begin(&self) {
        let now = Instant::now();
        if self.deadline.set(now + self.grace).is_ok() {
            self.started.send_replace(Some(now));
        }
    }

    pub fn is_started(&self) -> bool {
        self.started.borrow().is_some()
    }

    /// Resolves once shutdown has begun (at once if it has).
    pub fn started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.started.subscribe();
        async move {
            // An error means the sender is gone: the server is ending anyway.
            let _ = rx.wait_for(|s| s.is_some()).await;
        }
    }

    /// Resolves when running work should be given up (the deadline less a margin).
    pub fn expiring(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let started = self.started();
        let grace = self.grace.saturating_sub(RELEASE_MARGIN);
        async move {
            started.await;
            tokio::time::sleep(grace).await;
        }
    }

    /// Time left before the deadline; the whole grace before shutdown begins.
    pub fn remaining(&self) -> Duration {
        self.deadline
            .get()
            .map_or(self.grace, |d| d.saturating_duration_since(Instant::now()))
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_hear_the_start_and_the_expiry_comes_before_the_deadline() {
        let s = Shutdown::new(RELEASE_MARGIN + Duration::from_millis(300));
        let started = s.started();
        let expiring = s.expiring();
        assert!(!s.is_started());
        assert_eq!(s.remaining(), s.grace);
        s.begin();
        s.begin(); // a second signal changes nothing
        started.await;
        let t0 = tokio::time::Instant::now();
        expiring.await;
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(290) && waited < Duration::from_millis(600),
            "{waited:?}"
        );
        assert!(s.remaining() < RELEASE_MARGIN);
        // A late subscriber resolves at once.
        s.started().await;
    }
}
