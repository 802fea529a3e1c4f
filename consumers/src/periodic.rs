//! Running a job every interval until shutdown; a failed run is logged and the next
//! interval tries again.

use std::future::Future;
use std::time::Duration;

use order_core::runtime::shutdown::ShutdownListener;

/// The longest one pass may take.
pub const PASS_TIMEOUT: Duration = Duration::from_secs(30);

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
        // A pass stuck on a dependency (a connection that never answers) must not stop
        // every later pass: it is abandoned and the next interval starts afresh.
        match tokio::time::timeout(PASS_TIMEOUT, job()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "{what} failed; next interval retries"),
            Err(_) => tracing::warn!(timeout = ?PASS_TIMEOUT, "{what} timed out; next interval retries"),
        }
    }
}
