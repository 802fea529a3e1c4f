//! The recovery sweep: closes the gap between "reserved in Redis" and "message on Pulsar".
//!
//! A gateway that dies after `reserve.lua` and before its publish leaves a reservation with
//! no message. Every reservation sits in its promotion's pending set until persisted; the
//! sweep looks at entries older than `republish_after` (on Redis' clock, the one clock of
//! reservation times: a consumer whose own clock is off cannot republish orders in flight),
//! clears those the database holds exactly as reserved, and republishes the rest (same
//! order id, same event id) once Redis confirmed them on the replicas like a gateway's
//! (`redis::durability`): a reservation only the dying master held is never published. The
//! writer is idempotent, so a republished order that was only slow is harmless. An order id
//! the database holds as a *different* order is an alarm (error log), never cleared as if
//! persisted. Safe with several instances running.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::bus::JsonProducer;
use crate::domain::ids::{OrderId, RequestId, UserId};
use crate::domain::promotion::Promotion;
use crate::domain::reservation::Reservation;
use crate::domain::shards::Shard;
use crate::postgres::persist::check_stored;
use crate::postgres::promotions::PromotionRepo;
use crate::postgres::Pool;
use crate::redis::durability::{Claim, Confirmation, Confirmer};
use crate::redis::stock::StockStore;

/// What the sweep of one shard's pending set did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub republished: u64,
    /// Reserved order ids the database holds as different orders (left for an operator).
    pub conflicts: u64,
    /// Pending entries cleared: persisted, or released meanwhile.
    pub cleared: u64,
}

#[derive(Debug)]
pub struct RecoverySweep {
    db: Pool,
    stock: StockStore,
    confirmer: Confirmer,
    promotions: PromotionRepo,
    producer: Arc<JsonProducer>,
    republish_after: Duration,
    batch_size: usize,
}

impl RecoverySweep {
    pub fn new(
        db: Pool,
        stock: StockStore,
        confirmer: Confirmer,
        producer: Arc<JsonProducer>,
        republish_after: Duration,
        batch_size: usize,
    ) -> Self {
        Self {
            promotions: PromotionRepo::new(db.clone()),
            db,
            stock,
            confirmer,
            producer,
            republish_after,
            batch_size,
        }
    }

    /// One pass over every current sale's pending sets; `swept` hears each shard's report
    /// once that shard is done.
    pub async fn sweep(&self, mut swept: impl FnMut(SweepReport)) -> anyhow::Result<()> {
        let promotions = self
            .promotions
            .list_current(chrono::Duration::days(1))
            .await
            .context("list current promotions")?;
        // One reading of Redis' clock per pass: the threshold for every sale.
        let now_ms = self.stock.redis_time_ms().await.context("read Redis' clock")?;
        let mut queued = 0;
        for promotion in &promotions {
            for shard in promotion.sale().shards() {
                swept(self.sweep_shard(promotion, shard, now_ms).await?);
            }
            queued += self
                .stock
                .pending_count(promotion.sale())
                .await
                .context("count queued orders")?;
        }
        // Accepted orders not yet in the database: the backlog waiting in Pulsar.
        metrics::gauge!("seckill_orders_queued").set(queued as f64);
        Ok(())
    }

    /// One shard's pending set (a sale on one shard has one).
    async fn sweep_shard(
        &self,
        promotion: &Promotion,
        shard: Shard,
        now_ms: i64,
    ) -> anyhow::Result<SweepReport> {
        let threshold = now_ms - self.republish_after.as_millis() as i64;
        let stale = self
            .stock
            .stale_pending(shard, threshold, self.batch_size)
            .await
            .context("read stale pending reservations")?;
        if stale.is_empty() {
            return Ok(SweepReport::default());
        }
        let reservations = self
            .stock
            .reservations(shard, &stale)
            .await
            .context("read reservations")?;
        let reserved: Vec<(OrderId, UserId, RequestId)> = reservations
            .iter()
            .flatten()
            .map(|r| (r.order_id, r.user_id, r.request_id.clone()))
            .collect();
        let check = check_stored(&self.db, promotion.id, &reserved)
            .await
            .context("look up persisted orders")?;
        let mut done: Vec<OrderId> = Vec::new();
        let mut alarmed = Vec::new();
        for (order_id, conflict) in &check.mismatched {
            tracing::error!(%order_id, promotion_id = promotion.id, %conflict, "a reserved order id is stored as a different order; left pending for an operator");
            alarmed.push(*order_id);
        }
        let missing: Vec<(OrderId, Option<Reservation>)> = stale
            .iter()
            .zip(reservations)
            .filter(|(id, _)| !check.stored.contains(id) && !alarmed.contains(id))
            .map(|(id, r)| (*id, r))
            .collect();
        done.extend(check.stored.iter().copied());
        let mut republished = Vec::new();
        let confirmations =
            futures::future::join_all(missing.iter().map(|(order_id, reservation)| async move {
                match reservation {
                    Some(_) => Some(self.confirmer.confirm(shard, *order_id, Claim::Held).await),
                    None => None,
                }
            }))
            .await;
        for ((order_id, reservation), confirmed) in missing.into_iter().zip(confirmations) {
            let Some(r) = reservation else {
                // Released meanwhile (its order was cancelled in the database).
                done.push(order_id);
                continue;
            };
            match confirmed
                .transpose()
                .context("confirm a reservation on the replicas")?
            {
                Some(Confirmation::Confirmed) => {}
                Some(Confirmation::Fenced | Confirmation::NotLoaded) => {
                    // The sale's keys are gone: it recovers first (`redis_recovery`), and its
                    // pending set is rebuilt.
                    return Ok(SweepReport::default());
                }
                // Not on the replicas yet, or gone from this node: the next pass looks again.
                _ => continue,
            }
            let event = r.accepted_event(promotion);
            self.producer
                .publish(&event)
                .await
                .context("republish a reservation")?;
            tracing::info!(%order_id, promotion_id = promotion.id, "republished a reservation that never reached the writer");
            republished.push(order_id);
        }
        let (republished_count, conflicts) = (republished.len() as u64, alarmed.len() as u64);
        // Republished ones (and alarms) come up again after another threshold, not every pass.
        republished.extend(alarmed);
        self.stock
            .touch_pending(shard, &republished, now_ms)
            .await
            .context("mark republished reservations")?;
        self.stock
            .clear_pending(shard, &done)
            .await
            .context("clear persisted reservations")?;
        Ok(SweepReport {
            republished: republished_count,
            conflicts,
            cleared: done.len() as u64,
        })
    }
}
