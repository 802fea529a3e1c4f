//! Normal checkout: price a basket, place an order synchronously in one transaction (stock
//! decremented by guarded updates, coupon consumed, idempotent by request id), take payment
//! callbacks, and move orders through their lifecycle.

use std::time::Duration;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::domain::catalog::{self, Sku};
use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::{OrderEventKind, OrderStatus};
use crate::domain::pricing::{self, Breakdown, PricingError, ShippingMethod};
use crate::postgres::orders::{return_stock_and_announce, CancelledOrder};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku_id: String,
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub name: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub city: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub postal_code: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub phone: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShippingInput {
    pub method: ShippingMethod,
    pub address: Address,
}

/// The body of `/api/checkout/preview` (and of `/api/checkout`, which adds `request_id`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutInput {
    /// Distinct SKUs.
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<ItemInput>,
    /// A coupon grant the user holds.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub coupon_id: Option<i64>,
    pub shipping: ShippingInput,
    /// Required to place an order (the same key gets the same order); ignored by preview.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub request_id: Option<String>,
}

/// Why a checkout operation did not happen: what the client sent or the state of the
/// catalog (each with a stable code), or a failure of the database or of the code itself.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("invalid address: {0}")]
    InvalidAddress(&'static str),
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    #[error("not enough stock of {0}")]
    OutOfStock(String),
    #[error("the coupon is not yours, already used, or unknown")]
    CouponUnavailable,
    #[error("request_id must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidRequestId,
    /// The database failed (an outage or a bug: see `crate::runtime::transient`).
    #[error("checkout database call")]
    Database(#[from] sqlx::Error),
    /// The database holds what the code cannot have written: a bug.
    #[error("inconsistent order data: {0}")]
    Inconsistent(String),
}

/// How the client should read a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request itself is wrong.
    Invalid,
    /// The request is fine, the state of stock, coupon or order refuses it.
    Conflict,
}

impl CheckoutError {
    /// The stable code and kind of a rejection; `None` for a failure of the database or
    /// the code (not the client's doing).
    pub fn rejection(&self) -> Option<(&'static str, Rejection)> {
        Some(match self {
            CheckoutError::Pricing(e) => (e.code(), e.rejection()),
            CheckoutError::InvalidAddress(_) => ("invalid_address", Rejection::Invalid),
            CheckoutError::UnknownSku(_) => ("unknown_sku", Rejection::Invalid),
            CheckoutError::OutOfStock(_) => ("out_of_stock", Rejection::Conflict),
            CheckoutError::CouponUnavailable => ("coupon_unavailable", Rejection::Conflict),
            CheckoutError::InvalidRequestId => ("invalid_request_id", Rejection::Invalid),
            CheckoutError::Database(_) | CheckoutError::Inconsistent(_) => return None,
        })
    }
}

impl Address {
    fn validate(&self) -> Result<(), CheckoutError> {
        for (field, value) in [
            ("name", &self.name),
            ("line1", &self.line1),
            ("city", &self.city),
            ("postal_code", &self.postal_code),
            ("phone", &self.phone),
        ] {
            if value.trim().is_empty() || value.chars().count() > 200 {
                return Err(CheckoutError::InvalidAddress(field));
            }
        }
        if self.line2.as_ref().is_some_and(|l| l.chars().count() > 200) {
            return Err(CheckoutError::InvalidAddress("line2"));
        }
        Ok(())
    }
}

/// Price the basket as it would be charged now (current prices, stock and coupon).
async fn price_in(
    conn: &mut PgConnection,
    input: &CheckoutInput,
    user_id: i64,
) -> Result<(Breakdown, Vec<Sku>), CheckoutError> {
    input.shipping.address.validate()?;
    let ids: Vec<String> = input.items.iter().map(|i| i.sku_id.clone()).collect();
    let skus = catalog::skus_by_id(&mut *conn, &ids).await?;
    let mut basket = Vec::with_capacity(input.items.len());
    for item in &input.items {
        match skus.iter().find(|s| s.id == item.sku_id) {
            Some(sku) => basket.push((sku.priced(), item.quantity)),
            None => return Err(CheckoutError::UnknownSku(item.sku_id.clone())),
        }
    }
    let coupon = match input.coupon_id {
        None => None,
        Some(grant) => match catalog::usable_coupon(&mut *conn, grant, user_id).await? {
            Some(template) => Some(template.coupon()),
            None => return Err(CheckoutError::CouponUnavailable),
        },
    };
    let breakdown = pricing::price(&basket, coupon.as_ref(), input.shipping.method, Utc::now())?;
    for item in &input.items {
        if skus
            .iter()
            .any(|s| s.id == item.sku_id && s.stock < item.quantity)
        {
            return Err(CheckoutError::OutOfStock(item.sku_id.clone()));
        }
    }
    Ok((breakdown, skus))
}

pub async fn preview(pool: &PgPool, input: &CheckoutInput, user_id: i64) -> Result<Breakdown, CheckoutError> {
    let mut conn = pool.acquire().await?;
    Ok(price_in(&mut conn, input, user_id).await?.0)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct PlacedOrder {
    pub order_id: OrderId,
    pub status: String,
    #[serde(flatten)]
    pub breakdown: Breakdown,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Created(PlacedOrder),
    /// The same user already placed an order with this request id.
    Existing(PlacedOrder),
}

/// Place a checkout order in one transaction. `order_id` is used if the order is new.
pub async fn place(
    pool: &PgPool,
    input: &CheckoutInput,
    user_id: i64,
    order_id: OrderId,
    payment_timeout: Duration,
    order_events_topic: &str,
) -> Result<Placement, CheckoutError> {
    let request_id = input
        .request_id
        .as_deref()
        .and_then(|raw| crate::domain::ids::RequestId::parse(raw).ok())
        .ok_or(CheckoutError::InvalidRequestId)?;
    let request_id = request_id.as_str();
    if let Some(existing) = existing_checkout(pool, user_id, request_id).await? {
        return Ok(Placement::Existing(existing));
    }
    let mut tx = pool.begin().await?;
    let (breakdown, _) = price_in(&mut tx, input, user_id).await?;
    // Guarded decrements in SKU order (no deadlocks between baskets): a line that finds too
    // little stock rolls the whole order back.
    let mut lines = breakdown.lines.clone();
    lines.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
    for line in &lines {
        let updated = sqlx::query(
            "UPDATE skus SET stock = stock - $2, updated_at = now() WHERE id = $1 AND stock >= $2",
        )
        .bind(&line.sku_id)
        .bind(line.quantity)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(CheckoutError::OutOfStock(line.sku_id.clone()));
        }
    }
    if let Some(grant) = input.coupon_id {
        let used = sqlx::query(
            "UPDATE coupon_grants SET status = 'used', used_order_id = $3 WHERE id = $1 AND user_id = $2 AND status = 'available'",
        )
        .bind(grant)
        .bind(user_id)
        .bind(order_id.0)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() == 0 {
            return Err(CheckoutError::CouponUnavailable);
        }
    }
    let method = serde_json::to_value(input.shipping.method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let inserted = sqlx::query_scalar::<_, DateTime<Utc>>(
        "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, discount_cents, shipping_cents,
                             total_cents, expires_at, coupon_grant_id, shipping_method, shipping_address)
         VALUES ($1, $2, 'checkout', $3, 'pending_payment', $4, $5, $6, $7, now() + make_interval(secs => $8), $9, $10, $11)
         RETURNING expires_at",
    )
    .bind(order_id.0)
    .bind(user_id)
    .bind(request_id)
    .bind(breakdown.subtotal_cents)
    .bind(breakdown.discount_cents)
    .bind(breakdown.shipping_cents)
    .bind(breakdown.total_cents)
    .bind(payment_timeout.as_secs_f64())
    .bind(input.coupon_id)
    .bind(method)
    .bind(sqlx::types::Json(&input.shipping.address))
    .fetch_one(&mut *tx)
    .await;
    let expires_at = match inserted {
        Ok(at) => at,
        // A concurrent request with the same id won the race: answer with its order.
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("orders_checkout_request") => {
            drop(tx);
            return match existing_checkout(pool, user_id, request_id).await? {
                Some(existing) => Ok(Placement::Existing(existing)),
                None => Err(CheckoutError::Inconsistent(format!(
                    "request id {request_id} of user {user_id} collided with an order that cannot be read"
                ))),
            };
        }
        Err(e) => return Err(e.into()),
    };
    for (n, line) in breakdown.lines.iter().enumerate() {
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(order_id.0)
        .bind(n as i32 + 1)
        .bind(&line.sku_id)
        .bind(&line.title)
        .bind(line.quantity as i32)
        .bind(line.unit_price_cents)
        .execute(&mut *tx)
        .await?;
    }
    let event = OrderEvent::new(
        OrderEvent::CREATED,
        order_id,
        user_id,
        "checkout",
        None,
        breakdown.total_cents,
        None,
    );
    crate::postgres::outbox::enqueue(&mut tx, order_events_topic, &event.event_id, &event).await?;
    tx.commit().await?;
    Ok(Placement::Created(PlacedOrder {
        order_id,
        status: OrderStatus::PendingPayment.as_str().to_owned(),
        breakdown,
        expires_at: Some(expires_at),
    }))
}

/// A checkout order as stored, for answering a retry of its request.
#[derive(sqlx::FromRow)]
struct StoredCheckout {
    id: i64,
    status: String,
    subtotal_cents: i64,
    discount_cents: i64,
    shipping_cents: i64,
    total_cents: i64,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct StoredLine {
    sku_id: String,
    title: String,
    unit_price_cents: i64,
    quantity: i32,
}

/// The order a lifecycle change or a payment locks (`FOR UPDATE`) and judges.
#[derive(sqlx::FromRow)]
struct LockedOrder {
    status: String,
    user_id: i64,
    total_cents: i64,
    kind: String,
    promotion_id: Option<i64>,
}

async fn existing_checkout(
    pool: &PgPool,
    user_id: i64,
    request_id: &str,
) -> sqlx::Result<Option<PlacedOrder>> {
    let Some(order) = sqlx::query_as::<_, StoredCheckout>(
        "SELECT id, status, subtotal_cents, discount_cents, shipping_cents, total_cents, expires_at
         FROM orders WHERE user_id = $1 AND request_id = $2 AND kind = 'checkout'",
    )
    .bind(user_id)
    .bind(request_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query_as::<_, StoredLine>(
        "SELECT sku_id, title, unit_price_cents, quantity FROM order_items WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order.id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|line| pricing::Line {
        line_total_cents: line.unit_price_cents * i64::from(line.quantity),
        quantity: i64::from(line.quantity),
        sku_id: line.sku_id,
        title: line.title,
        unit_price_cents: line.unit_price_cents,
    })
    .collect();
    Ok(Some(PlacedOrder {
        order_id: OrderId(order.id),
        status: order.status,
        breakdown: Breakdown {
            lines,
            subtotal_cents: order.subtotal_cents,
            discount_cents: order.discount_cents,
            shipping_cents: order.shipping_cents,
            total_cents: order.total_cents,
        },
        expires_at: order.expires_at,
    }))
}

/// A provider's payment notification (after the signature was verified).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentCallback {
    #[schema(min_length = 1, max_length = 128)]
    pub payment_id: String,
    pub order_id: OrderId,
    #[schema(minimum = 1)]
    pub amount_cents: i64,
    pub status: String,
    /// Unix seconds when the provider signed it; required (a callback without it is refused).
    #[serde(default)]
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackOutcome {
    /// The order is now paid.
    Applied,
    /// This payment id was processed before; nothing changed.
    Duplicate,
    /// Money arrived for an order that cannot take it (cancelled, already paid): refund.
    RefundDue,
    AmountMismatch,
    UnknownOrder,
}

/// Apply one callback exactly once (keyed by the provider's payment id).
pub async fn apply_payment(
    pool: &PgPool,
    callback: &PaymentCallback,
    order_events_topic: &str,
) -> sqlx::Result<CallbackOutcome> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO payments (id, order_id, amount_cents, outcome, payload) VALUES ($1, $2, $3, 'applied', $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&callback.payment_id)
    .bind(callback.order_id.0)
    .bind(callback.amount_cents)
    .bind(sqlx::types::Json(callback))
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok(CallbackOutcome::Duplicate);
    }
    let order: Option<LockedOrder> = sqlx::query_as(
        "SELECT status, user_id, total_cents, kind, promotion_id FROM orders WHERE id = $1 FOR UPDATE",
    )
    .bind(callback.order_id.0)
    .fetch_optional(&mut *tx)
    .await?;
    let refund = |reason: &'static str| (CallbackOutcome::RefundDue, Some(reason));
    let (outcome, refund_reason) = match &order {
        None => (CallbackOutcome::UnknownOrder, Some("unknown_order")),
        Some(order) if order.total_cents != callback.amount_cents => {
            (CallbackOutcome::AmountMismatch, Some("amount_mismatch"))
        }
        Some(order) => match order
            .status
            .parse::<OrderStatus>()
            .map(|s| s.apply(OrderEventKind::Pay))
        {
            Ok(Ok(_)) => (CallbackOutcome::Applied, None),
            Ok(Err(e)) if e.from == OrderStatus::Cancelled => refund("late_payment"),
            _ => refund("duplicate_payment"),
        },
    };
    if let (Some(order), CallbackOutcome::Applied) = (&order, outcome) {
        sqlx::query(
            "UPDATE orders SET status = 'paid', paid_at = now(), payment_id = $2, updated_at = now()
             WHERE id = $1 AND status = 'pending_payment'",
        )
        .bind(callback.order_id.0)
        .bind(&callback.payment_id)
        .execute(&mut *tx)
        .await?;
        let event = OrderEvent::new(
            OrderEvent::PAID,
            callback.order_id,
            order.user_id,
            &order.kind,
            order.promotion_id,
            order.total_cents,
            None,
        );
        crate::postgres::outbox::enqueue(&mut tx, order_events_topic, &event.event_id, &event).await?;
    }
    let outcome_name = match outcome {
        CallbackOutcome::Applied => "applied",
        CallbackOutcome::RefundDue => "refund_due",
        CallbackOutcome::AmountMismatch => "amount_mismatch",
        CallbackOutcome::UnknownOrder => "unknown_order",
        CallbackOutcome::Duplicate => unreachable!("returned above"),
    };
    sqlx::query("UPDATE payments SET outcome = $2 WHERE id = $1")
        .bind(&callback.payment_id)
        .bind(outcome_name)
        .execute(&mut *tx)
        .await?;
    if let Some(reason) = refund_reason {
        sqlx::query(
            "INSERT INTO refunds (order_id, payment_id, amount_cents, reason) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(callback.order_id.0)
        .bind(&callback.payment_id)
        .bind(callback.amount_cents)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// What a lifecycle change by a user or an operator found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Done(OrderStatus),
    NotFound,
    Illegal(crate::domain::lifecycle::IllegalTransition),
}

/// Apply `event` to an order (the user's own when `user_id` is given), guarded by its
/// current status, with the side effects the event implies, in one transaction.
pub async fn transition(
    pool: &PgPool,
    order_id: OrderId,
    user_id: Option<i64>,
    event: OrderEventKind,
    order_events_topic: &str,
) -> Result<Transition, CheckoutError> {
    let mut tx = pool.begin().await?;
    let row: Option<LockedOrder> = sqlx::query_as(
        "SELECT status, user_id, total_cents, kind, promotion_id FROM orders
         WHERE id = $1 AND ($2::BIGINT IS NULL OR user_id = $2) FOR UPDATE",
    )
    .bind(order_id.0)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(LockedOrder {
        status,
        user_id: owner,
        total_cents: total,
        kind,
        promotion_id,
    }) = row
    else {
        return Ok(Transition::NotFound);
    };
    let from: OrderStatus = status
        .parse()
        .map_err(|e: String| CheckoutError::Inconsistent(format!("order {order_id}: {e}")))?;
    let to = match from.apply(event) {
        Ok(to) => to,
        Err(illegal) => return Ok(Transition::Illegal(illegal)),
    };
    sqlx::query("UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 AND status = $3")
        .bind(order_id.0)
        .bind(to.as_str())
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
    let order = CancelledOrder {
        id: order_id.0,
        user_id: owner,
        kind: kind.clone(),
        promotion_id,
        total_cents: total,
    };
    match event {
        OrderEventKind::Cancel => {
            return_stock_and_announce(
                &mut tx,
                &[order],
                OrderEvent::CANCELLED,
                Some("user"),
                order_events_topic,
            )
            .await?
        }
        OrderEventKind::Refund => {
            sqlx::query(
                "INSERT INTO refunds (order_id, amount_cents, reason) VALUES ($1, $2, 'user_request') ON CONFLICT DO NOTHING",
            )
            .bind(order_id.0)
            .bind(total)
            .execute(&mut *tx)
            .await?;
            return_stock_and_announce(&mut tx, &[order], OrderEvent::REFUNDED, None, order_events_topic)
                .await?
        }
        OrderEventKind::RequestRefund
        | OrderEventKind::Ship
        | OrderEventKind::Pay
        | OrderEventKind::Complete => {
            let e = OrderEvent::new(
                OrderEvent::type_for(event),
                order_id,
                owner,
                &kind,
                promotion_id,
                total,
                None,
            );
            crate::postgres::outbox::enqueue(&mut tx, order_events_topic, &e.event_id, &e).await?;
        }
    }
    tx.commit().await?;
    Ok(Transition::Done(to))
}
