//! Normal checkout for app users: price a basket, place it in one transaction, page through
//! one's orders, ask to pay, cancel or refund, list one's coupons.
//!
//! Checkout runs on its own database pool (the caller builds it with its own size), so a
//! seckill flood, which never touches these, cannot starve it.

use std::time::Duration;

use crate::app::lifecycle::{Actor, OrderLifecycle};
use crate::app::order_status::CurrentSales;
use crate::domain::catalog::HeldCoupon;
use crate::domain::checkout::{CallbackOutcome, CheckoutInput, PaymentCallback, Placement, Transition};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::lifecycle::{OrderEventKind, OrderStatus};
use crate::domain::orders::{OrderView, SeenStatus};
use crate::domain::pricing::Breakdown;
use crate::postgres::checkout::{self, CheckoutError};
use crate::postgres::{catalog, orders, Error, Pool};
use crate::redis::stock::StockStore;

/// One page of a user's orders, newest first.
#[derive(Debug)]
pub struct OrderPage {
    pub items: Vec<OrderView>,
    /// Where the next page starts; `None` on the last page.
    pub next_before: Option<OrderId>,
}

/// What asking to pay an order found.
#[derive(Debug)]
pub enum Payable {
    /// Awaiting payment: the amount and expiry to hand to the payment provider.
    Order(OrderView),
    NotFound,
    /// In another status than `pending_payment`.
    NotPayable(SeenStatus),
}

#[derive(Debug, Clone)]
pub struct Checkout {
    db: Pool,
    lifecycle: OrderLifecycle,
    payment_timeout: Duration,
    order_events_topic: String,
}

impl Checkout {
    pub fn new(db: Pool, stock: StockStore, payment_timeout: Duration, order_events_topic: String) -> Self {
        Self {
            lifecycle: OrderLifecycle::new(db.clone(), stock, order_events_topic.clone()),
            db,
            payment_timeout,
            order_events_topic,
        }
    }

    /// The basket priced as it would be placed now (stock, coupon, shipping), nothing held.
    pub async fn preview(&self, input: &CheckoutInput, user: UserId) -> Result<Breakdown, CheckoutError> {
        checkout::preview(&self.db, input, user.get()).await
    }

    /// Place the basket in one transaction under `order_id`; the same request id of the
    /// same user gets the order it placed before.
    pub async fn place(
        &self,
        input: &CheckoutInput,
        user: UserId,
        order_id: OrderId,
    ) -> Result<Placement, CheckoutError> {
        crate::runtime::metrics::timed(
            "postgres",
            "checkout",
            checkout::place(
                &self.db,
                input,
                user.get(),
                order_id,
                self.payment_timeout,
                &self.order_events_topic,
            ),
        )
        .await
    }

    /// The user's orders older than `before` (all when `None`), at most `limit` (1 to 100).
    pub async fn orders_page(
        &self,
        user: UserId,
        before: Option<OrderId>,
        limit: i64,
    ) -> Result<OrderPage, Error> {
        let items = orders::list_for_user(&self.db, user.get(), before.map(|id| id.0), limit).await?;
        let next_before = (items.len() as i64 == limit)
            .then(|| items.last().map(|o| o.order_id))
            .flatten();
        Ok(OrderPage { items, next_before })
    }

    /// The user's order, if it awaits payment.
    pub async fn payable(&self, order_id: OrderId, user: UserId) -> Result<Payable, Error> {
        Ok(
            match orders::find_for_user(&self.db, order_id, user.get()).await? {
                None => Payable::NotFound,
                Some(order) if order.status == SeenStatus::Stored(OrderStatus::PendingPayment) => {
                    Payable::Order(order)
                }
                Some(order) => Payable::NotPayable(order.status),
            },
        )
    }

    /// Cancel an unpaid order or ask for a refund of a paid one, as its owner.
    pub async fn change_by_owner(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        user: UserId,
        event: OrderEventKind,
    ) -> Result<Transition, CheckoutError> {
        self.lifecycle
            .apply(sales, order_id, Actor::Owner(user), event)
            .await
    }

    /// Apply a payment provider's (verified) callback.
    pub async fn apply_payment(
        &self,
        sales: &impl CurrentSales,
        callback: &PaymentCallback,
    ) -> Result<CallbackOutcome, Error> {
        self.lifecycle.apply_payment(sales, callback).await
    }

    /// The coupons the user holds, used or not.
    pub async fn coupons(&self, user: UserId) -> Result<Vec<HeldCoupon>, Error> {
        catalog::coupons_of(&self.db, user.get()).await
    }
}
