//! The payment-timeout canceller, and the relays that finish its work after each commit.
//!
//! Driven by the database (`expires_at`, `FOR UPDATE SKIP LOCKED`), not by broker-delayed
//! delivery, so it survives restarts and several instances can run. Each cancellation
//! commits together with its stock return and its `order.cancelled` event (outbox); the
//! relays then apply returns to Redis (`release.lua`, at most once per order) and publish
//! events, deleting each row only after it took effect. A crash anywhere repeats the step,
//! never skips it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use order_core::bus::{JsonProducer, PublishError};
use order_core::domain::ids::OrderId;
use order_core::domain::shards::SaleShards;
use order_core::postgres::cancellation::{cancel_expired, complete_stock_returns, pending_stock_returns};
use order_core::postgres::outbox;
use order_core::postgres::Pool;
use order_core::redis::stock::StockStore;
use order_core::runtime::shutdown::ShutdownListener;

use crate::settings::CancellerSettings;
use crate::stats::{Counter, Stats};

#[derive(Debug)]
pub struct PaymentTimeoutCanceller {
    pub db: Pool,
    pub stock: StockStore,
    pub order_events: Arc<JsonProducer>,
    /// Short name stored in the outbox (`order-events`).
    pub order_events_topic: String,
    pub settings: CancellerSettings,
    pub stats: Arc<Stats>,
}

impl PaymentTimeoutCanceller {
    pub async fn run(self, shutdown: ShutdownListener) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        crate::periodic::every(interval, shutdown, "payment-timeout pass", || self.run_once()).await;
    }

    pub async fn run_once(&self) -> anyhow::Result<()> {
        loop {
            let cancelled = cancel_expired(&self.db, self.settings.batch_size, &self.order_events_topic)
                .await
                .context("cancel expired orders")?;
            self.stats.count(Counter::OrdersCancelled, cancelled.len() as u64);
            if !cancelled.is_empty() {
                tracing::info!(
                    count = cancelled.len(),
                    "cancelled unpaid orders past their deadline"
                );
            }
            if (cancelled.len() as i64) < self.settings.batch_size {
                break;
            }
        }
        self.return_stock().await?;
        self.relay_outbox().await
    }

    async fn return_stock(&self) -> anyhow::Result<()> {
        loop {
            let pending = pending_stock_returns(&self.db, self.settings.batch_size)
                .await
                .context("read stock returns")?;
            if pending.is_empty() {
                return Ok(());
            }
            let mut done = Vec::with_capacity(pending.len());
            for r in &pending {
                if r.retired {
                    // An ended sale that left Redis: its stock no longer sells.
                    done.push(r.order_id);
                    continue;
                }
                let sale =
                    SaleShards::new(r.promotion_id, r.shards.into()).context("a promotion's shard count")?;
                self.stock
                    .release(sale, r.user_id, OrderId(r.order_id))
                    .await
                    .context("return stock to Redis")?;
                done.push(r.order_id);
            }
            complete_stock_returns(&self.db, &done)
                .await
                .context("complete stock returns")?;
            self.stats.count(Counter::StockReturned, done.len() as u64);
            if (pending.len() as i64) < self.settings.batch_size {
                return Ok(());
            }
        }
    }

    async fn relay_outbox(&self) -> anyhow::Result<()> {
        loop {
            let events = outbox::pending(&self.db, self.settings.batch_size)
                .await
                .context("read the outbox")?;
            if events.is_empty() {
                return Ok(());
            }
            let mut published = Vec::with_capacity(events.len());
            for event in &events {
                if event.topic != self.order_events_topic {
                    tracing::warn!(topic = %event.topic, event_id = %event.event_id, "outbox event for an unknown topic left in place");
                    continue;
                }
                let payload = serde_json::to_vec(&event.payload).map_err(PublishError::from)?;
                self.order_events
                    .publish_raw(payload)
                    .await
                    .context("publish an outbox event")?;
                published.push(event.id);
            }
            outbox::delete(&self.db, &published)
                .await
                .context("delete published outbox events")?;
            self.stats.count(Counter::OutboxPublished, published.len() as u64);
            if published.len() < events.len() || (events.len() as i64) < self.settings.batch_size {
                return Ok(());
            }
        }
    }
}
