//! The order writer: accepted seckill orders from Pulsar into PostgreSQL, at the pace the
//! database sustains, exactly once.
//!
//! - A Shared subscription on `seckill-orders`: several writer instances split the stream.
//! - Batches of up to `batch_size` messages, closed after `linger` from the first one.
//! - A token bucket in rows/s (AIMD on commit latency) before each insert: the backlog
//!   waits in Pulsar, not here. The consumer's receive queue is one batch long, so no more
//!   than about one batch is held unacknowledged in memory.
//! - One transaction per batch, `ON CONFLICT DO NOTHING`; acks only after the commit. A
//!   redelivered or republished order changes nothing.
//! - Orders whose reservation was released (the gateway answered 503) are skipped.
//! - While the database (or Redis) is down, the same batch is retried with bounded
//!   exponential backoff; nothing is acked, nothing more is pulled.
//! - A message that can never become an order is nacked; after `max_redeliveries` the
//!   client moves it to the dead-letter topic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use order_core::ids::OrderId;
use order_core::pacing::{AimdRate, RowPacer};
use order_core::persist::{insert_seckill_orders, NewSeckillOrder};
use order_core::shutdown::ShutdownListener;
use order_core::stock::StockStore;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::settings::{OrderSettings, WriterSettings};
use crate::stats::{Counter, Stats};
use crate::subscription::{Msg, Subscription, SubscriptionSpec};

pub struct OrderWriter {
    consumer: Subscription,
    db: PgPool,
    stock: StockStore,
    settings: WriterSettings,
    payment_timeout: Duration,
    stats: Arc<Stats>,
    aimd: AimdRate,
    pacer: RowPacer,
    batch_limit: u32,
}

impl std::fmt::Debug for OrderWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderWriter")
            .field("rate", &self.aimd.rate())
            .finish_non_exhaustive()
    }
}

/// The longest one attempt to persist a batch may take before it is retried.
const PERSIST_TIMEOUT: Duration = Duration::from_secs(30);

/// A batch is at most a quarter second of the current rate, so pacing stays smooth at low
/// rates (and never more than `batch_size`).
fn batch_limit(rate: f64, batch_size: u32) -> u32 {
    ((rate / 4.0) as u32).clamp(1, batch_size)
}

impl OrderWriter {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        client: &order_core::bus::PulsarClient,
        topic: String,
        dead_letter_topic: String,
        db: PgPool,
        stock: StockStore,
        settings: WriterSettings,
        orders: &OrderSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, pulsar::Error> {
        let consumer = Subscription::open(
            client,
            SubscriptionSpec {
                topic,
                subscription: settings.subscription.clone(),
                batch_size: settings.batch_size,
                dead_letter_topic,
                max_redeliveries: settings.max_redeliveries,
            },
        )
        .await?;
        let aimd = AimdRate::new(settings.aimd());
        let limit = batch_limit(aimd.rate(), settings.batch_size);
        stats.set_writer_rate(aimd.rate());
        Ok(Self {
            consumer,
            db,
            stock,
            payment_timeout: Duration::from_secs(orders.payment_timeout_secs),
            pacer: RowPacer::new(aimd.rate(), limit),
            batch_limit: limit,
            aimd,
            settings,
            stats,
        })
    }

    pub async fn run(mut self, mut shutdown: ShutdownListener) {
        loop {
            let batch = tokio::select! {
                batch = self.next_batch() => batch,
                _ = shutdown.recv() => break,
            };
            if !self.process(batch, &mut shutdown).await {
                break;
            }
        }
        tracing::info!("order writer stopped");
    }

    /// Up to `batch_limit` messages; waits for the first, then at most `linger` more.
    async fn next_batch(&mut self) -> Vec<Msg> {
        let mut batch = Vec::with_capacity(self.batch_limit as usize);
        batch.push(self.consumer.next().await);
        let deadline = Instant::now() + Duration::from_millis(self.settings.linger_ms);
        while batch.len() < self.batch_limit as usize {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        batch
    }

    /// Persist one batch; `false` when shutdown interrupted it (nothing acked).
    async fn process(&mut self, batch: Vec<Msg>, shutdown: &mut ShutdownListener) -> bool {
        let mut orders = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        for msg in batch {
            match NewSeckillOrder::decode(&msg.payload.data) {
                Ok(order) => {
                    orders.push(order);
                    valid.push(msg);
                }
                Err(reason) => {
                    self.stats.count(Counter::PoisonMessages, 1);
                    tracing::warn!(%reason, topic = %msg.topic, "poison message on seckill-orders; nacked (dead-lettered after {} redeliveries)", self.settings.max_redeliveries);
                    if let Err(e) = self.consumer.nack(&msg).await {
                        tracing::warn!(error = %e, "nack a poison message");
                    }
                }
            }
        }
        if orders.is_empty() {
            return true;
        }

        self.pacer.acquire(orders.len() as u32).await;
        let mut backoff = Duration::from_millis(self.settings.backoff_min_ms);
        let outcome = loop {
            let started = Instant::now();
            // An attempt stuck on a connection that never answers is abandoned and retried.
            let attempt = tokio::time::timeout(PERSIST_TIMEOUT, self.persist(&orders))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "persisting the batch took over {PERSIST_TIMEOUT:?}"
                    ))
                });
            match attempt {
                Ok(outcome) => {
                    self.observe(Some(started.elapsed()));
                    break outcome;
                }
                Err(e) => {
                    self.stats.count(Counter::BatchFailures, 1);
                    self.observe(None);
                    tracing::warn!(error = format!("{e:#}"), rows = orders.len(), retry_in = ?backoff, "persist order batch; will retry");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.recv() => return false,
                    }
                    backoff = (backoff * 2).min(Duration::from_millis(self.settings.backoff_max_ms));
                }
            }
        };

        for msg in &valid {
            if let Err(e) = self.consumer.ack(msg).await {
                // The message comes back and is skipped as a duplicate.
                tracing::warn!(error = %e, "ack a persisted order");
            }
        }
        self.stats.count(Counter::RowsInserted, outcome.inserted);
        self.stats.count(Counter::ReleasedSkipped, outcome.released);
        self.stats.count(Counter::BatchesCommitted, 1);
        let persisted: Vec<(i64, OrderId)> = orders.iter().map(|o| (o.promotion_id, o.order_id)).collect();
        if let Err(e) = self.stock.clear_pending(&persisted).await {
            tracing::debug!(error = %e, "clear pending orders; the sweeper will");
        }
        true
    }

    async fn persist(&self, orders: &[NewSeckillOrder]) -> anyhow::Result<BatchOutcome> {
        let keys: Vec<(i64, OrderId)> = orders.iter().map(|o| (o.promotion_id, o.order_id)).collect();
        let released = self
            .stock
            .released_among(&keys)
            .await
            .context("check for released reservations")?;
        let live: Vec<NewSeckillOrder> = orders
            .iter()
            .zip(&released)
            .filter(|(_, released)| !**released)
            .map(|(o, _)| o.clone())
            .collect();
        let inserted = order_core::metrics::timed(
            "postgres",
            "insert_order_batch",
            insert_seckill_orders(&self.db, &live, self.payment_timeout),
        )
        .await
        .context("insert order batch")?;
        metrics::histogram!("seckill_writer_batch_rows").record(live.len() as f64);
        Ok(BatchOutcome {
            inserted,
            released: (orders.len() - live.len()) as u64,
        })
    }

    fn observe(&mut self, commit_latency: Option<Duration>) {
        if let Some(rate) = self.aimd.observe(Instant::now(), commit_latency) {
            self.batch_limit = batch_limit(rate, self.settings.batch_size);
            self.pacer = RowPacer::new(rate, self.batch_limit);
            self.stats.set_writer_rate(rate);
            tracing::info!(rows_per_sec = rate, "writer pace changed");
        }
    }
}

struct BatchOutcome {
    inserted: u64,
    released: u64,
}

#[cfg(test)]
mod tests {
    use super::batch_limit;

    #[test]
    fn a_batch_is_at_most_a_quarter_second_of_the_rate() {
        assert_eq!(batch_limit(100.0, 500), 25);
        assert_eq!(batch_limit(100_000.0, 500), 500);
        assert_eq!(batch_limit(1.0, 500), 1);
    }
}
