//! Running a job every interval until shutdown; a failed run is logged and the next
//! interval tries again.

use std::future::Future;
use std::time::Duration;

use order_core::shutdown::ShutdownListener;

pub async fn every<F, Fut>(interval: Duration, mut shutdown: ShutdownListener, what: &str, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        if let Err(e) = job().await {
            tracing::warn!(error = format!("{e:#}"), "{what} failed; next interval retries");
        }
    }
}
