//! The recovery sweeper: closes the gap between "reserved in Redis" and "message on Pulsar".
//!
//! A gateway that dies after `reserve.lua` and before its publish leaves a reservation with
//! no message. Every reservation sits in its promotion's pending set until persisted; the
//! sweeper looks at entries older than `republish_after`, clears those already in the
//! database, and republishes the rest (same order id, same event id). The writer is
//! idempotent, so a republished order that was only slow is harmless. Safe with several
//! instances running.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use order_core::bus::JsonProducer;
use order_core::events::SeckillOrderAccepted;
use order_core::ids::OrderId;
use order_core::persist::existing_order_ids;
use order_core::promotion::{Promotion, PromotionRepo};
use order_core::shutdown::ShutdownListener;
use order_core::stock::StockStore;
use sqlx::PgPool;

use crate::settings::SweeperSettings;
use crate::stats::{Counter, Stats};

#[derive(Debug)]
pub struct RecoverySweeper {
    pub db: PgPool,
    pub stock: StockStore,
    pub promotions: PromotionRepo,
    pub producer: Arc<JsonProducer>,
    pub settings: SweeperSettings,
    pub stats: Arc<Stats>,
}

impl RecoverySweeper {
    pub async fn run(self, shutdown: ShutdownListener) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        crate::periodic::every(interval, shutdown, "recovery sweep", || self.sweep()).await;
    }

    pub async fn sweep(&self) -> anyhow::Result<()> {
        let promotions = self
            .promotions
            .list_current(chrono::Duration::days(1))
            .await
            .context("list current promotions")?;
        let mut queued = 0;
        for promotion in &promotions {
            self.sweep_promotion(promotion).await?;
            queued += self
                .stock
                .pending_count(promotion.id)
                .await
                .context("count queued orders")?;
        }
        // Accepted orders not yet in the database: the backlog waiting in Pulsar.
        metrics::gauge!("seckill_orders_queued").set(queued as f64);
        Ok(())
    }

    async fn sweep_promotion(&self, promotion: &Promotion) -> anyhow::Result<()> {
        let threshold = Utc::now().timestamp_millis() - (self.settings.republish_after_secs * 1000) as i64;
        let stale = self
            .stock
            .stale_pending(promotion.id, threshold, self.settings.batch_size)
            .await
            .context("read stale pending reservations")?;
        if stale.is_empty() {
            return Ok(());
        }
        let persisted = existing_order_ids(&self.db, &stale)
            .await
            .context("look up persisted orders")?;
        let mut done: Vec<(i64, OrderId)> = persisted.iter().map(|id| (promotion.id, *id)).collect();
        let missing: Vec<OrderId> = stale.into_iter().filter(|id| !persisted.contains(id)).collect();
        let reservations = self
            .stock
            .reservations(promotion.id, &missing)
            .await
            .context("read reservations")?;
        let mut republished = Vec::new();
        for (order_id, reservation) in missing.iter().zip(reservations) {
            let Some(r) = reservation else {
                // Released meanwhile: nothing to persist.
                done.push((promotion.id, *order_id));
                continue;
            };
            let event = SeckillOrderAccepted {
                event_id: order_id.to_string(),
                event_type: SeckillOrderAccepted::TYPE.to_owned(),
                version: SeckillOrderAccepted::VERSION,
                occurred_at: chrono::DateTime::from_timestamp_millis(r.reserved_at_ms)
                    .unwrap_or_else(Utc::now),
                order_id: *order_id,
                promotion_id: promotion.id,
                user_id: r.user_id,
                sku_id: promotion.sku_id.clone(),
                title: promotion.title.clone(),
                quantity: r.quantity,
                unit_price_cents: promotion.price_cents,
                request_id: r.request_id,
            };
            self.producer
                .publish(&event)
                .await
                .context("republish a reservation")?;
            tracing::info!(%order_id, promotion_id = promotion.id, "republished a reservation that never reached the writer");
            republished.push(*order_id);
        }
        self.stock
            .touch_pending(promotion.id, &republished, Utc::now().timestamp_millis())
            .await
            .context("mark republished reservations")?;
        self.stock
            .clear_pending(&done)
            .await
            .context("clear persisted reservations")?;
        self.stats
            .count(Counter::SweeperRepublished, republished.len() as u64);
        self.stats.count(Counter::SweeperCleared, done.len() as u64);
        Ok(())
    }
}
