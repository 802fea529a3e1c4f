//! Orders as a user sees them: the `orders` table read by id and owner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderView {
    pub order_id: OrderId,
    pub status: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    status: String,
    kind: String,
    promotion_id: Option<i64>,
    total_cents: i64,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// The order with this id if `user_id` owns it; another user's order looks absent.
pub async fn find_for_user(
    pool: &PgPool,
    order_id: OrderId,
    user_id: i64,
) -> sqlx::Result<Option<OrderView>> {
    let row: Option<OrderRow> = sqlx::query_as(
        "SELECT id, status, kind, promotion_id, total_cents, expires_at, created_at
         FROM orders WHERE id = $1 AND user_id = $2",
    )
    .bind(order_id.0)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(OrderView::from))
}

/// An order the payment-timeout canceller cancelled.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CancelledOrder {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
}

/// Cancel up to `limit` unpaid orders past `expires_at`, in one transaction with their stock
/// returns and `order.cancelled` events (outbox). The status change is guarded
/// (`pending_payment` only) and rows are claimed with `FOR UPDATE SKIP LOCKED`, so several
/// cancellers never take the same order and a payment that commits first wins.
pub async fn cancel_expired(
    pool: &PgPool,
    limit: i64,
    order_events_topic: &str,
) -> sqlx::Result<Vec<CancelledOrder>> {
    let mut tx = pool.begin().await?;
    let cancelled: Vec<CancelledOrder> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM orders
             WHERE status = 'pending_payment' AND expires_at <= now()
             ORDER BY expires_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE orders o SET status = 'cancelled', updated_at = now()
         FROM due WHERE o.id = due.id AND o.status = 'pending_payment'
         RETURNING o.id, o.user_id, o.kind, o.promotion_id, o.total_cents",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    return_stock_and_announce(
        &mut tx,
        &cancelled,
        OrderEvent::CANCELLED,
        Some("payment_timeout"),
        order_events_topic,
    )
    .await?;
    tx.commit().await?;
    Ok(cancelled)
}

/// Stock returns not yet applied to Redis: `(order id, promotion id)`, oldest first.
pub async fn pending_stock_returns(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as("SELECT order_id, promotion_id FROM stock_returns ORDER BY created_at LIMIT $1")
        .bind(limit)
        .fetch_all(pool)
        .await
}

pub async fn complete_stock_returns(pool: &PgPool, order_ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM stock_returns WHERE order_id = ANY($1)")
        .bind(order_ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// In the transaction that ended `orders` (cancelled or refunded): give their stock back —
/// SKU stock at once, promotion stock through `stock_returns` (applied to Redis afterwards) —
/// free the coupons they used, and queue one event each in the outbox.
pub async fn return_stock_and_announce(
    tx: &mut sqlx::PgConnection,
    orders: &[CancelledOrder],
    event_type: &str,
    reason: Option<&str>,
    order_events_topic: &str,
) -> sqlx::Result<()> {
    let checkout_ids: Vec<i64> = orders
        .iter()
        .filter(|o| o.promotion_id.is_none())
        .map(|o| o.id)
        .collect();
    if !checkout_ids.is_empty() {
        // Summed per SKU first: an UPDATE … FROM with several matching rows updates the
        // target row once, with one of them, so a batch cancelling two orders of a SKU would
        // return one order's units.
        sqlx::query(
            "UPDATE skus s SET stock = s.stock + i.units, updated_at = now()
             FROM (SELECT sku_id, SUM(quantity) AS units FROM order_items
                   WHERE order_id = ANY($1) GROUP BY sku_id) i
             WHERE s.id = i.sku_id",
        )
        .bind(&checkout_ids)
        .execute(&mut *tx)
        .await?;
    }
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    sqlx::query("UPDATE coupon_grants SET status = 'available', used_order_id = NULL WHERE used_order_id = ANY($1) AND status = 'used'")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    for order in orders {
        if let Some(promotion_id) = order.promotion_id {
            sqlx::query(
                "INSERT INTO stock_returns (order_id, promotion_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(order.id)
            .bind(promotion_id)
            .execute(&mut *tx)
            .await?;
        }
        let event = OrderEvent::new(
            event_type,
            OrderId(order.id),
            order.user_id,
            &order.kind,
            order.promotion_id,
            order.total_cents,
            reason,
        );
        crate::postgres::outbox::enqueue(&mut *tx, order_events_topic, &event.event_id, &event).await?;
    }
    Ok(())
}

/// A user's orders, newest first, keyset-paginated by id.
pub async fn list_for_user(
    pool: &PgPool,
    user_id: i64,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<OrderView>> {
    let rows: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, status, kind, promotion_id, total_cents, expires_at, created_at
         FROM orders WHERE user_id = $1 AND ($2::BIGINT IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(OrderView::from).collect())
}

impl From<OrderRow> for OrderView {
    fn from(r: OrderRow) -> Self {
        OrderView {
            order_id: OrderId(r.id),
            status: r.status,
            kind: r.kind,
            promotion_id: r.promotion_id,
            total_cents: r.total_cents,
            expires_at: r.expires_at,
            created_at: r.created_at,
        }
    }
}
