//! The order writer: accepted seckill orders from Pulsar into PostgreSQL, at the pace the
//! database sustains, exactly once.
//!
//! - A Shared subscription on `seckill-orders`: several writer instances split the stream.
//! - Batches of up to `batch_size` messages, closed after `linger` from the first one.
//! - Two token buckets before each insert: this writer's own, in rows/s adapted to commit
//!   latency (AIMD), and the deployment's shared one in Redis (`global_pace`), so any number
//!   of writers together stay under `max_rows_per_sec`. Tokens are taken per attempt, inside
//!   the transaction, once the database answers: after an outage no writer inserts on
//!   tokens it took before it. The backlog waits in Pulsar, not here. The consumer's
//!   receive queue is one batch long, so no more than about one batch is held
//!   unacknowledged in memory.
//! - One transaction per batch; acks only after the commit. A redelivered or republished
//!   order changes nothing. An order whose id or request id the database holds as a
//!   *different* order is never dropped silently: error log, `seckill_writer_order_conflicts_total`,
//!   the message goes to the dead-letter topic, and its pending entry stays in Redis (so
//!   reconciliation and the sweeper keep reporting it). Pending entries are cleared only for
//!   orders inserted or found identical.
//! - While the database (or Redis) is down, the same batch is retried with bounded
//!   exponential backoff; nothing is acked, nothing more is pulled.
//! - A message that can never become an order is nacked; after `max_redeliveries` the
//!   client moves it to the dead-letter topic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use order_core::app::persist::AcceptedOrderStore;
use order_core::bus::JsonProducer;
use order_core::domain::accepted_order::NewSeckillOrder;
use order_core::postgres::persist::{OrderFate, Paced};
use order_core::postgres::Pool;
use order_core::redis::global_pace::GlobalPace;
use order_core::redis::stock::StockStore;
use order_core::runtime::pacing::{batch_limit, AimdRate, RowPacer};
use order_core::runtime::shutdown::ShutdownListener;
use tokio::time::Instant;

use crate::settings::{OrderSettings, WriterSettings};
use crate::stats::{Counter, Stats};
use crate::subscription::{Msg, Subscription, SubscriptionSpec};

pub struct OrderWriter {
    consumer: Subscription,
    store: AcceptedOrderStore,
    settings: WriterSettings,
    stats: Arc<Stats>,
    aimd: AimdRate,
    pacer: RowPacer,
    global_pace: GlobalPace,
    dead_letters: Arc<JsonProducer>,
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

impl OrderWriter {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        client: &order_core::bus::PulsarClient,
        topic: String,
        dead_letter_topic: String,
        db: Pool,
        stock: StockStore,
        global_pace: GlobalPace,
        dead_letters: Arc<JsonProducer>,
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
            store: AcceptedOrderStore::new(db, stock, Duration::from_secs(orders.payment_timeout_secs)),
            pacer: RowPacer::new(aimd.rate(), limit),
            batch_limit: limit,
            global_pace,
            dead_letters,
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

        let mut backoff = Duration::from_millis(self.settings.backoff_min_ms);
        let (outcome, stored) = loop {
            // An attempt stuck on a connection that never answers is abandoned and retried.
            let attempt = tokio::time::timeout(PERSIST_TIMEOUT, self.persist(&orders, shutdown))
                .await
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "persisting the batch took over {PERSIST_TIMEOUT:?}"
                    ))
                });
            match attempt {
                Ok(Paced::Written {
                    fates,
                    stored,
                    db_time,
                }) => {
                    self.observe(Some(db_time));
                    break (fates, stored);
                }
                // The database stalled between the grant and the insert: nothing written;
                // new tokens, at once (not a failure of the database's pace).
                Ok(Paced::Late) => {
                    self.stats.count(Counter::LateInserts, 1);
                    tracing::debug!(
                        rows = orders.len(),
                        "insert ran late after its grant; retrying with new tokens"
                    );
                    continue;
                }
                // Stopping while waiting for tokens: nothing written, nothing acked.
                Ok(Paced::Stopped) => return false,
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

        let (mut inserted, mut conflicts) = (0, 0);
        for ((msg, order), fate) in valid.iter().zip(&orders).zip(&outcome) {
            match fate {
                OrderFate::Inserted | OrderFate::AlreadyStored => {
                    inserted += u64::from(*fate == OrderFate::Inserted);
                    if let Err(e) = self.consumer.ack(msg).await {
                        // The message comes back and is found identical.
                        tracing::warn!(error = %e, "ack a persisted order");
                    }
                }
                OrderFate::Conflict(conflict) => {
                    conflicts += 1;
                    self.dead_letter_conflict(msg, order, conflict).await;
                }
            }
        }
        self.stats.count(Counter::RowsInserted, inserted);
        self.stats.count(Counter::OrderConflicts, conflicts);
        self.stats.count(Counter::BatchesCommitted, 1);
        // Buyers' polls are answered from these markers.
        self.store.mark_persisted(&orders, &outcome, &stored).await;
        true
    }

    /// Tokens from the deployment's shared bucket; `false` when shutdown came first. While
    /// Redis cannot be reached, nothing is granted and the batch waits.
    async fn acquire_global(&self, rows: u32, shutdown: &mut ShutdownListener) -> bool {
        let mut failing = false;
        loop {
            let wait = match self.global_pace.try_acquire(rows).await {
                Ok(None) => return true,
                Ok(Some(wait)) => wait,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "the shared writer pace is unreachable; waiting");
                        failing = true;
                    }
                    Duration::from_millis(self.settings.backoff_min_ms)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.recv() => return false,
            }
        }
    }

    /// An order the database holds differently: alarm, and park the message on the
    /// dead-letter topic (acked only once it is there; otherwise it comes back).
    async fn dead_letter_conflict(
        &mut self,
        msg: &Msg,
        order: &NewSeckillOrder,
        conflict: &order_core::postgres::persist::Conflict,
    ) {
        tracing::error!(
            order_id = %order.order_id,
            promotion_id = %order.promotion_id,
            user_id = %order.user_id,
            %conflict,
            "an accepted order conflicts with a stored one; not written, sent to the dead-letter topic"
        );
        match self.dead_letters.publish_raw(msg.payload.data.clone()).await {
            Ok(()) => {
                if let Err(e) = self.consumer.ack(msg).await {
                    tracing::warn!(error = %e, "ack a dead-lettered order");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "dead-letter a conflicting order; nacked for redelivery");
                if let Err(e) = self.consumer.nack(msg).await {
                    tracing::warn!(error = %e, "nack a conflicting order");
                }
            }
        }
    }

    /// One attempt. The tokens (this writer's, then the deployment's) are taken inside the
    /// open transaction, once the database has answered: each attempt pays anew, and a batch
    /// that waited out a stalled database does not insert on tokens taken before the stall.
    async fn persist(
        &self,
        orders: &[NewSeckillOrder],
        shutdown: &mut ShutdownListener,
    ) -> anyhow::Result<Paced> {
        let rows = orders.len() as u32;
        let go = async {
            self.pacer.acquire(rows).await;
            self.acquire_global(rows, shutdown).await
        };
        self.store
            .insert_when(orders, go)
            .await
            .context("insert order batch")
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
