//! Publishing accepted orders to `seckill-orders`.
//!
//! One batching producer per gateway shared by all requests: the lock is held only to hand a
//! message to the producer's batch; the broker's receipt is awaited outside it, so many
//! publishes are in flight at once and each request still learns whether its own message was
//! acknowledged.

use std::time::Duration;

use order_core::bus::PulsarClient;
use order_core::events::SeckillOrderAccepted;
use pulsar::producer::{Producer, ProducerOptions};
use pulsar::TokioExecutor;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encode the event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("pulsar: {0}")]
    Pulsar(#[from] pulsar::Error),
    #[error("no broker receipt within {0:?}")]
    Timeout(Duration),
}

pub struct OrderPublisher {
    producer: Mutex<Producer<TokioExecutor>>,
    timeout: Duration,
}

impl std::fmt::Debug for OrderPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderPublisher")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OrderPublisher {
    pub async fn new(
        client: &PulsarClient,
        topic: String,
        batch_size: u32,
        batch_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, pulsar::Error> {
        let producer = client
            .producer()
            .with_topic(topic)
            .with_options(ProducerOptions {
                batch_size: Some(batch_size),
                batch_timeout: Some(batch_timeout),
                ..Default::default()
            })
            .build()
            .await?;
        Ok(Self {
            producer: Mutex::new(producer),
            timeout,
        })
    }

    /// Resolves once the broker has acknowledged the event (or fails within the timeout).
    pub async fn publish(&self, event: &SeckillOrderAccepted) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(event)?;
        let send = async {
            let receipt = {
                let mut producer = self.producer.lock().await;
                producer.send_non_blocking(payload).await?
            };
            receipt.await?;
            Ok::<_, PublishError>(())
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?
    }
}
