//! Placing a checkout order: price the basket against current prices, stock and coupon, and
//! place the order in one transaction (stock decremented by guarded updates, coupon consumed,
//! idempotent by request id, `order.created` queued in the outbox).

use std::time::Duration;

use chrono::Utc;
use sqlx::{PgConnection, PgPool};

use crate::domain::checkout::{CheckoutInput, CheckoutRejection, PlacedOrder, Placement, Rejection};
use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::OrderStatus;
use crate::domain::pricing::{self, Breakdown, PricingError};
use crate::postgres::{catalog, stored};

/// Why a checkout operation did not happen: a rejection (the client's request or the state of
/// stock and coupon), or a failure of the database or of the code itself.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error(transparent)]
    Rejected(#[from] CheckoutRejection),
    /// The database failed (an outage or a bug: see `runtime::transient`).
    #[error("checkout database call")]
    Database(#[from] sqlx::Error),
    /// The database holds what the code cannot have written: a bug.
    #[error("inconsistent order data: {0}")]
    Inconsistent(String),
}

impl From<PricingError> for CheckoutError {
    fn from(e: PricingError) -> Self {
        CheckoutError::Rejected(e.into())
    }
}

impl CheckoutError {
    /// The stable code and kind of a rejection; `None` for a failure of the database or
    /// the code (not the client's doing).
    pub fn rejection(&self) -> Option<(&'static str, Rejection)> {
        match self {
            CheckoutError::Rejected(r) => Some(r.code_and_kind()),
            CheckoutError::Database(_) | CheckoutError::Inconsistent(_) => None,
        }
    }
}

/// Price the basket as it would be charged now (current prices, stock and coupon).
async fn price_in(
    conn: &mut PgConnection,
    input: &CheckoutInput,
    user_id: i64,
) -> Result<Breakdown, CheckoutError> {
    input.shipping.address.validate()?;
    let ids: Vec<String> = input.items.iter().map(|i| i.sku_id.clone()).collect();
    let skus = catalog::skus_by_id(&mut *conn, &ids).await?;
    let mut basket = Vec::with_capacity(input.items.len());
    for item in &input.items {
        match skus.iter().find(|s| s.id == item.sku_id) {
            Some(sku) => basket.push((sku.priced(), item.quantity)),
            None => return Err(CheckoutRejection::UnknownSku(item.sku_id.clone()).into()),
        }
    }
    let coupon = match input.coupon_id {
        None => None,
        Some(grant) => match catalog::usable_coupon(&mut *conn, grant, user_id).await? {
            Some(template) => Some(template.coupon()),
            None => return Err(CheckoutRejection::CouponUnavailable.into()),
        },
    };
    let breakdown = pricing::price(&basket, coupon.as_ref(), input.shipping.method, Utc::now())?;
    for item in &input.items {
        if skus
            .iter()
            .any(|s| s.id == item.sku_id && s.stock < item.quantity)
        {
            return Err(CheckoutRejection::OutOfStock(item.sku_id.clone()).into());
        }
    }
    Ok(breakdown)
}

pub async fn preview(pool: &PgPool, input: &CheckoutInput, user_id: i64) -> Result<Breakdown, CheckoutError> {
    let mut conn = pool.acquire().await?;
    price_in(&mut conn, input, user_id).await
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
        .as_ref()
        .ok_or(CheckoutRejection::InvalidRequestId)?
        .as_str();
    if let Some(existing) = existing_checkout(pool, user_id, request_id).await? {
        return Ok(Placement::Existing(existing));
    }
    let mut tx = pool.begin().await?;
    let breakdown = price_in(&mut tx, input, user_id).await?;
    // Guarded decrements in SKU order (no deadlocks between baskets): a line that finds too
    // little stock rolls the whole order back.
    let mut lines = breakdown.lines.clone();
    lines.sort_by(|a, b| a.sku_id.cmp(&b.sku_id));
    for line in &lines {
        let updated = sqlx::query!(
            "UPDATE skus SET stock = stock - $2, updated_at = now() WHERE id = $1 AND stock >= $2",
            line.sku_id,
            line.quantity,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(CheckoutRejection::OutOfStock(line.sku_id.clone()).into());
        }
    }
    if let Some(grant) = input.coupon_id {
        let used = sqlx::query!(
            "UPDATE coupon_grants SET status = 'used', used_order_id = $3
             WHERE id = $1 AND user_id = $2 AND status = 'available'",
            grant,
            user_id,
            order_id.0,
        )
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() == 0 {
            return Err(CheckoutRejection::CouponUnavailable.into());
        }
    }
    let address = &input.shipping.address;
    let address = serde_json::json!({
        "name": address.name,
        "line1": address.line1,
        "line2": address.line2,
        "city": address.city,
        "postal_code": address.postal_code,
        "phone": address.phone,
    });
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, discount_cents, shipping_cents,
                             total_cents, expires_at, coupon_grant_id, shipping_method, shipping_address)
         VALUES ($1, $2, 'checkout', $3, 'pending_payment', $4, $5, $6, $7, now() + make_interval(secs => $8), $9,
                 $10, $11)
         RETURNING expires_at AS "expires_at!""#,
        order_id.0,
        user_id,
        request_id,
        breakdown.subtotal_cents,
        breakdown.discount_cents,
        breakdown.shipping_cents,
        breakdown.total_cents,
        payment_timeout.as_secs_f64(),
        input.coupon_id,
        input.shipping.method.as_str(),
        address,
    )
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
        sqlx::query!(
            "INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents)
             VALUES ($1, $2, $3, $4, $5, $6)",
            order_id.0,
            n as i32 + 1,
            line.sku_id,
            line.title,
            line.quantity as i32,
            line.unit_price_cents,
        )
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
        status: OrderStatus::PendingPayment,
        breakdown,
        expires_at: Some(expires_at),
    }))
}

/// A checkout order as stored, for answering a retry of its request.
struct StoredCheckout {
    id: i64,
    status: String,
    subtotal_cents: i64,
    discount_cents: i64,
    shipping_cents: i64,
    total_cents: i64,
    expires_at: Option<chrono::DateTime<Utc>>,
}

struct StoredLine {
    sku_id: String,
    title: String,
    unit_price_cents: i64,
    quantity: i32,
}

async fn existing_checkout(
    pool: &PgPool,
    user_id: i64,
    request_id: &str,
) -> sqlx::Result<Option<PlacedOrder>> {
    let Some(order) = sqlx::query_as!(
        StoredCheckout,
        "SELECT o.id, o.status, o.subtotal_cents, o.discount_cents, o.shipping_cents, o.total_cents, o.expires_at
         FROM order_request_keys k JOIN orders o ON o.id = k.order_id
         WHERE k.kind = 'checkout' AND k.user_id = $1 AND k.request_id = $2",
        user_id,
        request_id,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query_as!(
        StoredLine,
        "SELECT sku_id, title, unit_price_cents, quantity FROM order_items WHERE order_id = $1 ORDER BY line_no",
        order.id,
    )
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
        status: stored(&order.status)?,
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
