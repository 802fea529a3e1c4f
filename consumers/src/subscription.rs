//! A Shared subscription that outlives a broker outage. The pulsar client retries its
//! connection a bounded number of times; after that the consumer's stream ends, or keeps
//! failing. A worker must not stop then (nothing would write orders while the process still
//! looks healthy), so the subscription is opened again, with backoff, until it works.

use std::time::Duration;

use futures::StreamExt;
use order_core::bus::PulsarClient;
use pulsar::consumer::{Consumer, DeadLetterPolicy, InitialPosition, Message};
use pulsar::{ConsumerOptions, SubType, TokioExecutor};

pub type Msg = Message<Vec<u8>>;

/// How long opening a subscription keeps trying.
const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// A subscription that delivered nothing for this long is opened again.
const IDLE_REOPEN: Duration = Duration::from_secs(20);

/// Failed receives in a row after which the consumer is replaced.
const MAX_FAILED_RECEIVES: u32 = 10;

#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub topic: String,
    pub subscription: String,
    pub batch_size: u32,
    pub dead_letter_topic: String,
    pub max_redeliveries: u32,
}

pub struct Subscription {
    client: PulsarClient,
    spec: SubscriptionSpec,
    consumer: Consumer<Vec<u8>, TokioExecutor>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Subscribe, retrying for up to `OPEN_PATIENCE`: right after a consumer process was
    /// killed, pulsar-lite drops a new subscriber's connection for a moment ("Disconnected").
    pub async fn open(client: &PulsarClient, spec: SubscriptionSpec) -> Result<Self, pulsar::Error> {
        let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
        let consumer = build_with_backoff(client, &spec, Some(deadline)).await?;
        Ok(Self {
            client: client.clone(),
            spec,
            consumer,
        })
    }

    /// The next message. Receive errors are logged (once per streak) and retried; a stream
    /// that ended or keeps failing is replaced by a new subscription.
    pub async fn next(&mut self) -> Msg {
        let mut failed = 0;
        loop {
            let Ok(next) = tokio::time::timeout(IDLE_REOPEN, self.consumer.next()).await else {
                // Silent for a long while: a defence against a consumer left half-connected by
                // a broker restart (nothing is in flight when next() waits, so nothing is
                // orphaned). On an idle topic this costs a resubscribe.
                tracing::debug!(topic = %self.spec.topic, "no message for {IDLE_REOPEN:?}; subscribing afresh");
                self.reopen(Reopen::Idle).await;
                continue;
            };
            match next {
                Some(Ok(msg)) => return msg,
                Some(Err(e)) => {
                    if failed == 0 {
                        tracing::warn!(topic = %self.spec.topic, error = %e, "receive failed; retrying");
                    }
                    failed += 1;
                    if failed >= MAX_FAILED_RECEIVES {
                        self.reopen(Reopen::Failing).await;
                        failed = 0;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                None => {
                    self.reopen(Reopen::Ended).await;
                    failed = 0;
                }
            }
        }
    }

    pub async fn ack(&mut self, msg: &Msg) -> Result<(), pulsar::Error> {
        self.consumer.ack(msg).await.map_err(Into::into)
    }

    pub async fn nack(&mut self, msg: &Msg) -> Result<(), pulsar::Error> {
        self.consumer.nack(msg).await.map_err(Into::into)
    }

    /// Replace the consumer. The routine refresh of an idle subscription is logged at debug
    /// (an idle topic would otherwise log every 20 s); a stream that ended or kept failing is
    /// a broker problem and logged as one.
    async fn reopen(&mut self, why: Reopen) {
        let (topic, subscription) = (&self.spec.topic, &self.spec.subscription);
        match why {
            Reopen::Idle => tracing::debug!(%topic, %subscription, "subscribing afresh"),
            Reopen::Ended => {
                tracing::warn!(%topic, %subscription, "the subscription's stream ended; subscribing again")
            }
            Reopen::Failing => {
                tracing::warn!(%topic, %subscription, "receives keep failing; subscribing again")
            }
        }
        if let Ok(consumer) = build_with_backoff(&self.client, &self.spec, None).await {
            if why == Reopen::Idle {
                tracing::debug!(%topic, "subscribed afresh");
            } else {
                tracing::info!(%topic, "subscribed again");
            }
            self.consumer = consumer;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reopen {
    /// Nothing arrived for `IDLE_REOPEN` (routine).
    Idle,
    /// The consumer's stream ended (the client gave up on the broker).
    Ended,
    Failing,
}

/// Subscribe, retrying with backoff (100 ms doubling to 5 s) until it works or, when given,
/// the deadline would pass; then the last error.
async fn build_with_backoff(
    client: &PulsarClient,
    spec: &SubscriptionSpec,
    deadline: Option<tokio::time::Instant>,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match build(client, spec).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if deadline.is_none_or(|d| tokio::time::Instant::now() + backoff < d) => {
                tracing::warn!(topic = %spec.topic, error = %e, retry_in = ?backoff, "subscribe");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn build(
    client: &PulsarClient,
    spec: &SubscriptionSpec,
) -> Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error> {
    client
        .consumer()
        .with_topic(&spec.topic)
        .with_subscription(&spec.subscription)
        .with_subscription_type(SubType::Shared)
        .with_batch_size(spec.batch_size)
        // A new subscription starts at the oldest retained message: every accepted order
        // must be handled, including those published before this subscription existed.
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .with_dead_letter_policy(DeadLetterPolicy {
            max_redeliver_count: spec.max_redeliveries as usize,
            dead_letter_topic: spec.dead_letter_topic.clone(),
        })
        .build()
        .await
}
