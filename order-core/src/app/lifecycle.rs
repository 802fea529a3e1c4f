//! An order moving through its lifecycle at a user's or an operator's word (cancel, refund,
//! complete) or a payment provider's (paid): the change committed in PostgreSQL, then the
//! order's status marker moved in Redis, so polls answered from Redis see it.
//!
//! The marker move is best effort: a marker left behind ages out (the status lookup trusts a
//! marker only for its max age), so a Redis failure here never fails a committed change.

use crate::app::order_status::CurrentSales;
use crate::domain::checkout::{CallbackOutcome, PaymentCallback, Transition};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::lifecycle::{OrderEventKind, OrderStatus};
use crate::postgres::checkout::CheckoutError;
use crate::postgres::promotions::PromotionRepo;
use crate::postgres::{payments, transitions, Pool};
use crate::redis::stock::StockStore;

/// Who asks for a lifecycle change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The order's owner: another user's order is not found.
    Owner(UserId),
    Operator,
}

/// Applies lifecycle changes on one database pool (checkout's own, or the main one).
#[derive(Debug, Clone)]
pub struct OrderLifecycle {
    db: Pool,
    stock: StockStore,
    promotions: PromotionRepo,
    order_events_topic: String,
}

impl OrderLifecycle {
    pub fn new(db: Pool, stock: StockStore, order_events_topic: String) -> Self {
        Self {
            promotions: PromotionRepo::new(db.clone()),
            db,
            stock,
            order_events_topic,
        }
    }

    /// Apply `event` to an order, guarded by its current status, with the side effects the
    /// event implies; then move its marker.
    pub async fn apply(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        actor: Actor,
        event: OrderEventKind,
    ) -> Result<Transition, CheckoutError> {
        let owner = match actor {
            Actor::Owner(user) => Some(user.get()),
            Actor::Operator => None,
        };
        let result =
            transitions::transition(&self.db, order_id, owner, event, &self.order_events_topic).await?;
        if let Transition::Done {
            status,
            promotion_id,
            user_id,
        } = result
        {
            self.status_changed(sales, order_id, user_id, promotion_id, status)
                .await;
        }
        Ok(result)
    }

    /// Apply a payment provider's (verified) callback; a payment that made the order paid
    /// moves its marker.
    pub async fn apply_payment(
        &self,
        sales: &impl CurrentSales,
        callback: &PaymentCallback,
    ) -> Result<CallbackOutcome, crate::postgres::Error> {
        let outcome = payments::apply_payment(&self.db, callback, &self.order_events_topic).await?;
        if let CallbackOutcome::Applied {
            promotion_id,
            user_id,
        } = outcome
        {
            self.status_changed(sales, callback.order_id, user_id, promotion_id, OrderStatus::Paid)
                .await;
        }
        Ok(outcome)
    }

    /// After a committed status change: move the order's marker. Only a seckill order
    /// (`promotion_id`, from its row) has one, on its buyer's shard.
    async fn status_changed(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        user_id: i64,
        promotion_id: Option<i64>,
        status: OrderStatus,
    ) {
        let Some(promotion_id) = promotion_id else {
            return;
        };
        let sale = match sales.get(promotion_id) {
            Some(current) => Some(current.sale),
            None => self
                .promotions
                .sale_shards(promotion_id)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(%order_id, error = %e, "the order's sale unreadable; its marker ages out");
                    None
                }),
        };
        let Some(sale) = sale else {
            return;
        };
        if let Err(e) = self
            .stock
            .mark_status(sale.shard_of(user_id), order_id, status)
            .await
        {
            tracing::warn!(%order_id, %status, error = %e, "order status marker not moved; it ages out");
        }
    }
}
