//! Ending orders and giving their stock back: the payment-timeout canceller's transaction,
//! the stock returns it leaves for Redis, and the shared step every cancellation or refund
//! runs in its own transaction.

use sqlx::PgPool;

use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;
use crate::domain::orders::CancelledOrder;

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
    let cancelled = sqlx::query_as!(
        CancelledOrder,
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
        limit,
    )
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

/// A promotion stock return not yet applied to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockReturn {
    pub order_id: i64,
    pub promotion_id: i64,
    /// The buyer and the sale's shard count: where the reservation is in Redis.
    pub user_id: i64,
    pub shards: i16,
    /// The sale's keys were retired from Redis: nothing there to give back to.
    pub retired: bool,
}

/// Stock returns not yet applied to Redis, oldest first.
pub async fn pending_stock_returns(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<StockReturn>> {
    sqlx::query_as!(
        StockReturn,
        r#"SELECT r.order_id, r.promotion_id, o.user_id, p.shards, p.keys_retired_at IS NOT NULL AS "retired!"
         FROM stock_returns r
         JOIN orders o ON o.id = r.order_id
         JOIN promotions p ON p.id = r.promotion_id
         ORDER BY r.created_at LIMIT $1"#,
        limit,
    )
    .fetch_all(pool)
    .await
}

pub async fn complete_stock_returns(pool: &PgPool, order_ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM stock_returns WHERE order_id = ANY($1)", order_ids)
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
        sqlx::query!(
            "UPDATE skus s SET stock = s.stock + i.units, updated_at = now()
             FROM (SELECT sku_id, SUM(quantity) AS units FROM order_items
                   WHERE order_id = ANY($1) GROUP BY sku_id) i
             WHERE s.id = i.sku_id",
            &checkout_ids,
        )
        .execute(&mut *tx)
        .await?;
    }
    let ids: Vec<i64> = orders.iter().map(|o| o.id).collect();
    sqlx::query!(
        "UPDATE coupon_grants SET status = 'available', used_order_id = NULL
         WHERE used_order_id = ANY($1) AND status = 'used'",
        &ids,
    )
    .execute(&mut *tx)
    .await?;
    for order in orders {
        if let Some(promotion_id) = order.promotion_id {
            sqlx::query!(
                "INSERT INTO stock_returns (order_id, promotion_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                order.id,
                promotion_id,
            )
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
