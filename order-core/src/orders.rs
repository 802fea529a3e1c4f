//! Orders as a user sees them: the `orders` table read by id and owner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::ids::OrderId;

#[derive(Debug, Clone, Serialize)]
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
    Ok(row.map(|r| OrderView {
        order_id: OrderId(r.id),
        status: r.status,
        kind: r.kind,
        promotion_id: r.promotion_id,
        total_cents: r.total_cents,
        expires_at: r.expires_at,
        created_at: r.created_at,
    }))
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
    for order in &cancelled {
        if let Some(promotion_id) = order.promotion_id {
            sqlx::query(
                "INSERT INTO stock_returns (order_id, promotion_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(order.id)
            .bind(promotion_id)
            .execute(&mut *tx)
            .await?;
        }
        let event = crate::events::OrderEvent {
            event_id: format!("{}:{}", crate::events::OrderEvent::CANCELLED, order.id),
            event_type: crate::events::OrderEvent::CANCELLED.to_owned(),
            version: crate::events::OrderEvent::VERSION,
            occurred_at: Utc::now(),
            order_id: OrderId(order.id),
            user_id: order.user_id,
            kind: order.kind.clone(),
            promotion_id: order.promotion_id,
            total_cents: order.total_cents,
            reason: Some("payment_timeout".to_owned()),
        };
        crate::outbox::enqueue(&mut tx, order_events_topic, &event.event_id, &event).await?;
    }
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

/// The guarded `pending_payment → paid` transition; `false` when the order is not (or no
/// longer) awaiting payment, e.g. the canceller got there first.
pub async fn mark_paid(pool: &PgPool, order_id: OrderId) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE orders SET status = 'paid', updated_at = now() WHERE id = $1 AND status = 'pending_payment'",
    )
    .bind(order_id.0)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}
