//! Persisting accepted seckill orders: a batch inserted in one transaction, each order once
//! (paced by the caller's gate), then the status markers buyers' polls read.
//!
//! The order writer (consumers) runs the subscription, the pacing, the acks and the
//! dead-lettering around this; what a batch writes and what it tells Redis afterwards is here.

use std::collections::HashMap;
use std::time::Duration;

use crate::domain::accepted_order::NewSeckillOrder;
use crate::domain::ids::OrderId;
use crate::postgres::persist::{insert_seckill_orders_when, OrderFate, Paced, PersistError, StoredState};
use crate::postgres::Pool;
use crate::redis::stock::{PersistedOrder, StockStore};

#[derive(Debug, Clone)]
pub struct AcceptedOrderStore {
    db: Pool,
    stock: StockStore,
    payment_timeout: Duration,
}

impl AcceptedOrderStore {
    pub fn new(db: Pool, stock: StockStore, payment_timeout: Duration) -> Self {
        Self {
            db,
            stock,
            payment_timeout,
        }
    }

    /// Insert a batch once `go` allows (the caller's tokens, taken inside the open
    /// transaction once the database answered); a redelivered or republished order changes
    /// nothing.
    pub async fn insert_when(
        &self,
        orders: &[NewSeckillOrder],
        go: impl std::future::Future<Output = bool>,
    ) -> Result<Paced, PersistError> {
        let paced = crate::runtime::metrics::timed(
            "postgres",
            "insert_order_batch",
            insert_seckill_orders_when(&self.db, orders, self.payment_timeout, go),
        )
        .await?;
        metrics::histogram!("seckill_writer_batch_rows").record(orders.len() as f64);
        Ok(paced)
    }

    /// After a committed batch: the status markers of the orders it stored (inserted or
    /// found identical), with what the database holds (a redelivered copy may find its
    /// order paid already). A failure costs polls a database query, not an answer: a poll
    /// whose marker is missing asks the database, and the sweeper clears the pending set.
    pub async fn mark_persisted(
        &self,
        orders: &[NewSeckillOrder],
        fates: &[OrderFate],
        stored: &HashMap<OrderId, StoredState>,
    ) {
        let persisted: Vec<PersistedOrder> = orders
            .iter()
            .zip(fates)
            .filter(|(_, fate)| matches!(fate, OrderFate::Inserted | OrderFate::AlreadyStored))
            .filter_map(|(order, _)| {
                let state = stored.get(&order.order_id)?;
                Some(PersistedOrder {
                    sale: order.sale,
                    order_id: order.order_id,
                    status: state.status,
                    user_id: order.user_id,
                    total_cents: order.total_cents(),
                    expires_at_ms: state.expires_at.map(|at| at.timestamp_millis()),
                    created_at_ms: state.created_at.timestamp_millis(),
                })
            })
            .collect();
        if let Err(e) = self.stock.mark_persisted(&persisted).await {
            tracing::debug!(error = %e, "mark persisted orders; the sweeper clears them from pending");
        }
    }
}
