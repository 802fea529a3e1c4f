//! Pulsar: the client both binaries use for the `seckill-orders` and `order-events` topics,
//! the producer they publish with, and a reader of what a topic holds (a sale recovering
//! from a Redis failover reads its accepted orders back).
//!
//! Retries are bounded so that an operation against a dead broker fails within seconds
//! instead of hanging; the caller decides whether to retry (the client reconnects on the
//! next operation).

use std::time::Duration;

use pulsar::consumer::InitialPosition;
use pulsar::{
    ConnectionRetryOptions, ConsumerOptions, OperationRetryOptions, Pulsar, SubType, TokioExecutor,
};

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

/// Where a topic ended at one moment (`at_ms` on Redis' clock): reading from there skips
/// what was published before.
#[derive(Debug, Clone, PartialEq)]
pub struct Bookmark {
    pub at_ms: i64,
    pub id: pulsar::proto::MessageIdData,
}

/// Reads a topic outside any subscription's cursor: non-durable, exclusive subscriptions of
/// its own, so reading never moves or holds back what the topic's workers consume, and a
/// reader that dies leaves nothing behind on the broker.
#[derive(Clone)]
pub struct TopicReader {
    client: PulsarClient,
    topic: String,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("topic", &self.topic).finish()
    }
}

type RawConsumer = pulsar::Consumer<Vec<u8>, TokioExecutor>;

/// Whether message `id` is at or past `end` (same partition; batch members of the end's
/// entry count as reached).
fn reached(id: &pulsar::proto::MessageIdData, end: &pulsar::proto::MessageIdData) -> bool {
    (id.ledger_id, id.entry_id) >= (end.ledger_id, end.entry_id)
}

impl TopicReader {
    pub fn new(client: PulsarClient, topic: String) -> Self {
        Self { client, topic }
    }

    async fn open(&self, start: Option<pulsar::proto::MessageIdData>) -> Result<RawConsumer, pulsar::Error> {
        // A large receive queue: a reader goes through the topic as fast as the broker sends.
        let mut options = ConsumerOptions::default()
            .durable(false)
            .with_initial_position(InitialPosition::Earliest)
            .with_receiver_queue_size(10_000);
        if let Some(start) = start {
            options = options.starting_on_message(start);
        }
        self.client
            .consumer()
            .with_topic(&self.topic)
            .with_subscription(format!("seckill-reader-{}", uuid::Uuid::new_v4().simple()))
            .with_subscription_type(SubType::Exclusive)
            .with_options(options)
            .build()
            .await
    }

    /// The topic's last message per partition now; empty while it holds none.
    pub async fn end(&self) -> Result<Vec<pulsar::proto::MessageIdData>, pulsar::Error> {
        let mut consumer = self.open(None).await?;
        match consumer.get_last_message_id().await {
            Ok(ids) => Ok(ids),
            // pulsar-lite answers an empty topic with an error rather than an empty id.
            Err(e) if e.to_string().contains("has no messages") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Where the topic ends now, as a bookmark taken at `at_ms`.
    pub async fn bookmark(&self, at_ms: i64) -> Result<Option<Bookmark>, pulsar::Error> {
        let end = self.end().await?;
        // A bookmark only for a topic of one partition: a start id is one position.
        Ok(match end.as_slice() {
            [id] if id.partition.unwrap_or(-1) < 0 => Some(Bookmark {
                at_ms,
                id: id.clone(),
            }),
            _ => None,
        })
    }

    /// Every message from `from` (its position included; the beginning of what the broker
    /// keeps when `None`) up to `until` (a result of `end`), passed through `keep`. Fails
    /// past `deadline`.
    pub async fn read<T>(
        &self,
        from: Option<&Bookmark>,
        until: &[pulsar::proto::MessageIdData],
        mut keep: impl FnMut(&[u8]) -> Option<T>,
        deadline: Duration,
    ) -> anyhow::Result<Vec<T>> {
        use futures::StreamExt;
        let mut kept = Vec::new();
        if until.is_empty() {
            return Ok(kept);
        }
        let partitioned = until.len() > 1 || until.iter().any(|id| id.partition.unwrap_or(-1) >= 0);
        let start = from.filter(|_| !partitioned).map(|b| b.id.clone());
        let read = async {
            let mut consumer = self.open(start).await?;
            let mut open: Vec<&pulsar::proto::MessageIdData> = until.iter().collect();
            while !open.is_empty() {
                let Some(message) = consumer.next().await else {
                    anyhow::bail!("the topic {} ended while it was read", self.topic);
                };
                let message = message?;
                let id = &message.message_id.id;
                if let Some(value) = keep(&message.payload.data) {
                    kept.push(value);
                }
                open.retain(|end| {
                    end.partition.unwrap_or(-1) != id.partition.unwrap_or(-1) || !reached(id, end)
                });
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| anyhow::anyhow!("reading {} took longer than {deadline:?}", self.topic))??;
        Ok(kept)
    }
}
