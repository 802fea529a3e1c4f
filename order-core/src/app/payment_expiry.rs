//! Unpaid orders past their payment deadline: cancelled, their stock returned to Redis,
//! their `order.cancelled` events published.
//!
//! Driven by the database (`expires_at`, `FOR UPDATE SKIP LOCKED`), not by broker-delayed
//! delivery, so it survives restarts and several instances can run. Each cancellation
//! commits together with its stock return and its event (outbox); the relays then apply
//! returns to Redis (`release.lua`, at most once per order) and publish events, deleting each
//! row only after it took effect. A crash anywhere repeats the step, never skips it.

use std::sync::Arc;

use anyhow::Context;

use crate::bus::{JsonProducer, PublishError};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::shards::SaleShards;
use crate::postgres::cancellation::{cancel_expired, complete_stock_returns, pending_stock_returns};
use crate::postgres::{outbox, Pool};
use crate::redis::stock::StockStore;

#[derive(Debug)]
pub struct PaymentExpiry {
    db: Pool,
    stock: StockStore,
    order_events: Arc<JsonProducer>,
    /// Short name stored in the outbox (`order-events`).
    order_events_topic: String,
    /// Rows per step of each loop.
    batch_size: i64,
}

impl PaymentExpiry {
    pub fn new(
        db: Pool,
        stock: StockStore,
        order_events: Arc<JsonProducer>,
        order_events_topic: String,
        batch_size: i64,
    ) -> Self {
        Self {
            db,
            stock,
            order_events,
            order_events_topic,
            batch_size,
        }
    }

    /// Cancel every unpaid order past its deadline; `done` hears each batch's count once it
    /// is committed.
    pub async fn cancel_expired(&self, mut done: impl FnMut(u64)) -> anyhow::Result<()> {
        loop {
            let cancelled = cancel_expired(&self.db, self.batch_size, &self.order_events_topic)
                .await
                .context("cancel expired orders")?;
            done(cancelled.len() as u64);
            if !cancelled.is_empty() {
                tracing::info!(
                    count = cancelled.len(),
                    "cancelled unpaid orders past their deadline"
                );
            }
            if (cancelled.len() as i64) < self.batch_size {
                return Ok(());
            }
        }
    }

    /// Apply the pending stock returns to Redis; `done` hears each batch's count.
    pub async fn return_stock(&self, mut done: impl FnMut(u64)) -> anyhow::Result<()> {
        loop {
            let pending = pending_stock_returns(&self.db, self.batch_size)
                .await
                .context("read stock returns")?;
            if pending.is_empty() {
                return Ok(());
            }
            let mut returned = Vec::with_capacity(pending.len());
            for r in &pending {
                if r.retired {
                    // An ended sale that left Redis: its stock no longer sells.
                    returned.push(r.order_id);
                    continue;
                }
                let sale =
                    SaleShards::new(r.promotion_id, r.shards.into()).context("a promotion's shard count")?;
                let Ok(user) = UserId::parse(r.user_id) else {
                    // Stays queued (not completed): an operator sees it every pass.
                    tracing::error!(
                        order_id = r.order_id,
                        user_id = r.user_id,
                        "a stock return names no valid buyer"
                    );
                    continue;
                };
                self.stock
                    .release(sale, user, OrderId(r.order_id))
                    .await
                    .context("return stock to Redis")?;
                returned.push(r.order_id);
            }
            complete_stock_returns(&self.db, &returned)
                .await
                .context("complete stock returns")?;
            done(returned.len() as u64);
            if (pending.len() as i64) < self.batch_size {
                return Ok(());
            }
        }
    }

    /// Publish the outbox's events and delete them; `done` hears each batch's count.
    pub async fn relay_outbox(&self, mut done: impl FnMut(u64)) -> anyhow::Result<()> {
        loop {
            let events = outbox::pending(&self.db, self.batch_size)
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
            done(published.len() as u64);
            if published.len() < events.len() || (events.len() as i64) < self.batch_size {
                return Ok(());
            }
        }
    }
}
