//! Post-payment work off the `order-events` stream: the 1–2 s of follow-up steps the old
//! system ran synchronously after payment.
//!
//! Each job is a [`Handler`] with its own Shared subscription (its name), so one slow or
//! failing job never holds up another. Handlers are idempotent: database effects commit
//! together with a `processed_events` row; effects outside the database (webhooks, the
//! logistics API, files) carry the event's natural key so a repeat is recognisable.
//! An undecodable event is dead-lettered after N redeliveries. A failing handler is retried
//! in place with backoff. A dependency that is down or slow (a transient failure) is waited
//! out however long it takes: an outage must not send good events to the DLQ. Any other
//! failure, a panic included, counts: after `handler_attempts` of them the delivery is given
//! up (nacked), so after the subscription's redeliveries the event reaches its dead-letter
//! topic, where it stays for inspection, and stops blocking the events behind it.

pub mod analytics;
pub mod logistics;
pub mod notifications;
pub mod points;
pub mod rewards;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use order_core::domain::events::OrderEvent;
use order_core::runtime::shutdown::ShutdownListener;
use order_core::runtime::transient::Transient;

use crate::subscription::{Subscription, SubscriptionSpec};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Handler: Send + Sync + 'static {
    /// The subscription name, and the consumer name in `processed_events`.
    fn name(&self) -> &'static str;
    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>>;
}

pub struct EventWorker {
    consumer: Subscription,
    handler: Box<dyn Handler>,
    /// Tries of the handler per delivery before the delivery is given up.
    attempts: u32,
}

impl std::fmt::Debug for EventWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWorker")
            .field("handler", &self.handler.name())
            .finish()
    }
}

impl EventWorker {
    /// The handler's name: its subscription and its worker name.
    pub fn name(&self) -> &'static str {
        self.handler.name()
    }

    pub async fn subscribe(
        client: &order_core::bus::PulsarClient,
        topic: String,
        dead_letter_topic: String,
        max_redeliveries: u32,
        attempts: u32,
        handler: Box<dyn Handler>,
    ) -> Result<Self, pulsar::Error> {
        let consumer = Subscription::open(
            client,
            SubscriptionSpec {
                topic,
                subscription: handler.name().to_owned(),
                batch_size: 100,
                dead_letter_topic,
                max_redeliveries,
            },
        )
        .await?;
        Ok(Self {
            consumer,
            handler,
            attempts: attempts.max(1),
        })
    }

    pub async fn run(mut self, mut shutdown: ShutdownListener) {
        let name = self.handler.name();
        loop {
            let msg = tokio::select! {
                msg = self.consumer.next() => msg,
                _ = shutdown.recv() => break,
            };
            let event: OrderEvent = match serde_json::from_slice(&msg.payload.data) {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(worker = name, error = %e, "poison message on order-events; nacked");
                    let _ = self.consumer.nack(&msg).await;
                    continue;
                }
            };
            let mut backoff = Duration::from_millis(100);
            let mut attempt = 1;
            let handled = loop {
                // A panic in a handler is its failure on this event, not the process's.
                let tried = std::panic::AssertUnwindSafe(self.handler.handle(&event))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| {
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default();
                        Err(anyhow::anyhow!("the handler panicked: {message}"))
                    });
                match tried {
                    Ok(()) => break true,
                    Err(e) if attempt >= self.attempts && !transient(&e) => {
                        tracing::error!(worker = name, event_id = %event.event_id, attempts = attempt, error = format!("{e:#}"),
                            "handle an order event: giving this delivery up (dead-lettered after the redeliveries)");
                        break false;
                    }
                    Err(e) => {
                        tracing::warn!(worker = name, event_id = %event.event_id, error = format!("{e:#}"), retry_in = ?backoff, "handle an order event; will retry");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.recv() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        if !transient(&e) {
                            attempt += 1;
                        }
                    }
                }
            };
            let settled = if handled {
                self.consumer.ack(&msg).await
            } else {
                self.consumer.nack(&msg).await
            };
            if let Err(e) = settled {
                tracing::warn!(worker = name, error = %e, "ack or nack an order event");
            }
        }
    }
}

/// A failure worth waiting out: a dependency (the database, Redis) down or slow, or an HTTP
/// endpoint unreachable or timing out.
fn transient(e: &anyhow::Error) -> bool {
    e.is_transient()
        || e.chain().any(|cause| {
            cause
                .downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_timeout() || r.is_connect())
        })
}

/// POST `body` as JSON with an idempotency key, up to `attempts` times with backoff; each
/// attempt bounded by the client's timeout. Success is any 2xx.
pub async fn post_with_retries(
    client: &reqwest::Client,
    url: &str,
    idempotency_key: &str,
    body: &serde_json::Value,
    attempts: u32,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    let mut last_error = None;
    for attempt in 1..=attempts {
        match client
            .post(url)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last_error = Some(anyhow::anyhow!("{url} answered {}", response.status())),
            Err(e) => last_error = Some(anyhow::anyhow!("{url}: {e}")),
        }
        if attempt < attempts {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}
