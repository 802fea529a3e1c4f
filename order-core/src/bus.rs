//! Pulsar: the client both binaries use for the `seckill-orders` and `order-events` topics.
//!
//! Retries are bounded so that an operation against a dead broker fails within seconds
//! instead of hanging; the caller decides whether to retry (the client reconnects on the
//! next operation).

use std::time::Duration;

use pulsar::{ConnectionRetryOptions, OperationRetryOptions, Pulsar, TokioExecutor};

use crate::runtime::settings::PulsarSettings;

pub type PulsarClient = Pulsar<TokioExecutor>;

pub async fn connect(settings: &PulsarSettings) -> Result<PulsarClient, pulsar::Error> {
    let operation_timeout = Duration::from_millis(settings.operation_timeout_ms);
    Pulsar::builder(settings.url.clone(), TokioExecutor)
        .with_connection_retry_options(ConnectionRetryOptions {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_retries: 5,
            connection_timeout: operation_timeout,
            keep_alive: Duration::from_secs(30),
            ..Default::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout,
            retry_delay: Duration::from_millis(200),
            max_retries: Some(5),
        })
        .build()
        .await
}

/// A producer of JSON events shared by many tasks: the lock is held only to hand a message
/// to the producer's batch; the broker's receipt is awaited outside it, so many publishes
/// are in flight at once and each caller learns whether its own message was acknowledged.
pub struct JsonProducer {
    producer: tokio::sync::Mutex<pulsar::producer::Producer<TokioExecutor>>,
    timeout: Duration,
}

impl std::fmt::Debug for JsonProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonProducer")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("encode the event: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("pulsar: {0}")]
    Pulsar(#[from] pulsar::Error),
    #[error("no broker receipt within {0:?}")]
    Timeout(Duration),
}

impl JsonProducer {
    /// `batch`: `Some((size, linger))` to batch messages, `None` to send each at once.
    pub async fn new(
        client: &PulsarClient,
        topic: String,
        batch: Option<(u32, Duration)>,
        timeout: Duration,
    ) -> Result<Self, pulsar::Error> {
        let options = match batch {
            Some((size, linger)) => pulsar::producer::ProducerOptions {
                batch_size: Some(size),
                batch_timeout: Some(linger),
                ..Default::default()
            },
            None => Default::default(),
        };
        let producer = client
            .producer()
            .with_topic(topic)
            .with_options(options)
            .build()
            .await?;
        Ok(Self {
            producer: tokio::sync::Mutex::new(producer),
            timeout,
        })
    }

    /// Resolves once the broker has acknowledged the event (or fails within the timeout).
    pub async fn publish(&self, event: &impl serde::Serialize) -> Result<(), PublishError> {
        self.publish_raw(serde_json::to_vec(event)?).await
    }

    pub async fn publish_raw(&self, payload: Vec<u8>) -> Result<(), PublishError> {
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
