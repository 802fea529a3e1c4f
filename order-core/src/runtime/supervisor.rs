//! The long-running tasks of a process, watched: none may die unnoticed.
//!
//! A worker that ends before shutdown (it returned, or it panicked) leaves a process that
//! looks alive and does nothing: an order writer that writes no order, a cache refresher that
//! no longer sees sales close. Every such task runs under a [`Supervisor`]. The first one to
//! end is a failure of the process: it is logged once with its cause, [`Health`] reports it
//! (`/healthz` answers 503 with the worker's name), and the binary's run loop returns it so
//! the process exits and its orchestrator starts a fresh one.
//!
//! Why exit rather than restart in place: a worker owns its subscription, its producer and
//! what it had in flight; a fresh process rebuilds all of it from configuration and the
//! broker redelivers what was not acknowledged, the path the fault suite already proves.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

/// Why a supervised task ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("worker `{worker}` stopped: {cause}")]
pub struct WorkerFailure {
    pub worker: &'static str,
    pub cause: String,
}

/// The first failure of a process, shared with its health endpoint.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<Option<WorkerFailure>>>);

/// What `/healthz` answers: `{"status":"ok"}`, or which worker stopped and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub failure: Option<WorkerFailure>,
}

impl Health {
    pub fn report(&self) -> HealthReport {
        let failure = self.failure();
        HealthReport {
            status: if failure.is_some() { "failing" } else { "ok" },
            failure,
        }
    }

    /// `None` while every worker runs.
    pub fn failure(&self) -> Option<WorkerFailure> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, failure: &WorkerFailure) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| failure.clone());
    }
}

#[derive(Debug, Default)]
pub struct Supervisor {
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    health: Health,
}

impl Supervisor {
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Run `task` as the worker `name`; it should only end when its shutdown signal fires.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.watch(name, tokio::spawn(task));
    }

    /// Watch a task spawned elsewhere.
    pub fn watch(&mut self, name: &'static str, handle: JoinHandle<()>) {
        self.tasks.push((name, handle));
    }

    /// Wait until a worker ends and say why; never resolves while all run (or with none).
    /// Cancel-safe: dropping this future leaves every task running and watched.
    pub async fn first_failure(&mut self) -> WorkerFailure {
        if self.tasks.is_empty() {
            return std::future::pending().await;
        }
        let (ended, index, _) = futures::future::select_all(self.tasks.iter_mut().map(|(_, h)| h)).await;
        let (worker, _) = self.tasks.remove(index);
        let cause = match ended {
            Ok(()) => "it returned before shutdown".to_owned(),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                format!("panicked: {message}")
            }
            Err(e) => format!("cancelled: {e}"),
        };
        let failure = WorkerFailure { worker, cause };
        self.health.record(&failure);
        tracing::error!(worker, cause = %failure.cause, "a worker stopped; the process stops");
        failure
    }

    /// Run a process's server task (`server`, which ends once `stop_server` fires) beside
    /// the supervised workers (which end once `stop_workers` fires) until `shutdown` fires
    /// or a worker fails.
    ///
    /// On shutdown the server drains first, its in-flight requests still served by every
    /// worker (a gateway's lease and cache refresher included), then the workers stop. On a
    /// failure the workers stop while the server still answers, so `/healthz` tells which
    /// worker failed, then the server stops and the failure is returned.
    pub async fn run_with_server(
        mut self,
        mut server: JoinHandle<anyhow::Result<()>>,
        stop_server: &crate::runtime::shutdown::Shutdown,
        stop_workers: &crate::runtime::shutdown::Shutdown,
        mut shutdown: crate::runtime::shutdown::ShutdownListener,
        grace: Duration,
    ) -> anyhow::Result<()> {
        fn joined(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Result<()> {
            result.map_err(|e| anyhow::anyhow!("the server task failed: {e}"))?
        }
        enum End {
            Served(anyhow::Result<()>),
            Shutdown,
            Failed(WorkerFailure),
        }
        let end = tokio::select! {
            served = &mut server => End::Served(joined(served)),
            _ = shutdown.recv() => End::Shutdown,
            failure = self.first_failure() => End::Failed(failure),
        };
        match end {
            End::Served(served) => {
                stop_workers.trigger();
                self.stop(grace).await;
                served
            }
            End::Shutdown => {
                stop_server.trigger();
                let served = joined(server.await);
                stop_workers.trigger();
                self.stop(grace).await;
                served
            }
            End::Failed(failure) => {
                stop_workers.trigger();
                self.stop(grace).await;
                stop_server.trigger();
                if let Err(e) = joined(server.await) {
                    tracing::warn!(error = format!("{e:#}"), "the server failed while stopping");
                }
                Err(failure.into())
            }
        }
    }

    /// After the workers' shutdown signal fired: wait for each (up to `grace` in all),
    /// naming those that do not stop in time.
    pub async fn stop(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (worker, handle) in self.tasks {
            match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(worker, error = %e, "a worker failed while stopping"),
                Err(_) => tracing::warn!(worker, "a worker did not stop within the grace period"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::shutdown::Shutdown;

    async fn until_shutdown(mut listener: crate::runtime::shutdown::ShutdownListener) {
        listener.recv().await;
    }

    #[tokio::test]
    async fn a_panicking_worker_is_named_with_its_panic_and_reported_by_health() {
        let stop = Shutdown::new();
        let mut supervisor = Supervisor::default();
        supervisor.spawn("steady", until_shutdown(stop.subscribe()));
        supervisor.spawn("fragile", async {
            tokio::task::yield_now().await;
            panic!("injected fault");
        });
        let health = supervisor.health();
        assert_eq!(health.failure(), None);

        let failure = supervisor.first_failure().await;
        assert_eq!(
            failure,
            WorkerFailure {
                worker: "fragile",
                cause: "panicked: injected fault".into()
            }
        );
        assert_eq!(health.failure(), Some(failure));
        stop.trigger();
        tokio::time::timeout(Duration::from_secs(5), supervisor.stop(Duration::from_secs(2)))
            .await
            .expect("the steady worker stops on the signal");
    }

    #[tokio::test]
    async fn a_worker_that_returns_early_is_a_failure_too() {
        let mut supervisor = Supervisor::default();
        supervisor.spawn("quitter", async {});
        let failure = supervisor.first_failure().await;
        assert_eq!(failure.worker, "quitter");
        assert_eq!(failure.cause, "it returned before shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_failure_is_cancel_safe_and_pending_while_all_run() {
        let stop = Shutdown::new();
        let mut supervisor = Supervisor::default();
        supervisor.spawn("steady", until_shutdown(stop.subscribe()));
        let waited = tokio::time::timeout(Duration::from_secs(60), supervisor.first_failure()).await;
        assert!(waited.is_err(), "no failure while the worker runs");
        stop.trigger();
        let failure = supervisor.first_failure().await;
        assert_eq!(failure.worker, "steady", "still watched after the cancelled wait");
    }
}
