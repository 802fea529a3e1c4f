//! Graceful shutdown: one trigger, any number of listeners.
//!
//! A `watch` channel rather than `broadcast`: a task that subscribes after the signal fired
//! still sees it, so no task can miss shutdown by starting late.

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

#[derive(Debug, Clone)]
pub struct ShutdownListener {
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Self { tx }
    }

    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn subscribe(&self) -> ShutdownListener {
        ShutdownListener {
            rx: self.tx.subscribe(),
        }
    }

    /// Trigger on SIGTERM or Ctrl-C.
    pub fn trigger_on_os_signal(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_os_signal().await;
            tracing::info!("shutdown signal received");
            this.trigger();
        });
    }
}

impl ShutdownListener {
    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means every `Shutdown` handle is gone: nobody can trigger any more, so
        // treat it as a shutdown too.
        let _ = self.rx.wait_for(|stop| *stop).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }
}

async fn wait_for_os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn late_subscriber_sees_an_earlier_trigger() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let mut listener = shutdown.subscribe();
        assert!(listener.is_triggered());
        tokio::time::timeout(Duration::from_secs(1), listener.recv())
            .await
            .expect("recv returns once triggered");
    }

    #[tokio::test(start_paused = true)]
    async fn listener_waits_until_triggered() {
        let shutdown = Shutdown::new();
        let mut listener = shutdown.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(60), listener.recv()).await;
        assert!(waited.is_err(), "recv must not return before the trigger");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(1), listener.recv())
            .await
            .expect("recv returns after the trigger");
    }
}
