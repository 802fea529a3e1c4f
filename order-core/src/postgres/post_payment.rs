//! The post-payment jobs' tables: the loyalty ledger, reward coupons, notifications and
//! shipments. The jobs (consumers' `post_payment`) apply each order event once: a write that
//! belongs to an event runs inside the job's claim transaction (`processed::claim`).

use std::time::Duration;

use sqlx::PgExecutor;

use crate::domain::ids::OrderId;

/// Credit `points` for a paid order (once per order).
pub async fn credit_points<'e>(
    db: impl PgExecutor<'e>,
    user_id: i64,
    order_id: OrderId,
    points: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO loyalty_ledger (user_id, order_id, points, reason) VALUES ($1, $2, $3, 'order_paid')
         ON CONFLICT DO NOTHING",
        user_id,
        order_id.0,
        points,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Take back what a refunded order was credited (once per order).
pub async fn reverse_points<'e>(db: impl PgExecutor<'e>, order_id: OrderId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO loyalty_ledger (user_id, order_id, points, reason)
         SELECT user_id, order_id, -points, 'order_refunded' FROM loyalty_ledger
         WHERE order_id = $1 AND reason = 'order_paid'
         ON CONFLICT DO NOTHING",
        order_id.0,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Grant a coupon of the template `template_code` for `reason` (unique: once per reason).
pub async fn grant_reward<'e>(
    db: impl PgExecutor<'e>,
    template_code: &str,
    user_id: i64,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO coupon_grants (template_id, user_id, reason)
         SELECT id, $2, $3 FROM coupon_templates WHERE code = $1
         ON CONFLICT (reason) DO NOTHING",
        template_code,
        user_id,
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Revoke the coupon granted for `reason`, if it is still unused.
pub async fn revoke_reward<'e>(db: impl PgExecutor<'e>, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE coupon_grants SET status = 'revoked' WHERE reason = $1 AND status = 'available'",
        reason,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Queue a notification for the delivery service (once per order and template).
pub async fn queue_notification<'e>(
    db: impl PgExecutor<'e>,
    user_id: i64,
    order_id: i64,
    template: &str,
    payload: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO notifications (user_id, order_id, template, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (order_id, template) DO NOTHING",
        user_id,
        order_id,
        template,
        payload,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Create the shipment of a paid order (once; an order this database does not hold ships
/// nothing).
pub async fn create_shipment<'e>(db: impl PgExecutor<'e>, order_id: OrderId) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO shipments (order_id) SELECT id FROM orders WHERE id = $1 ON CONFLICT DO NOTHING",
        order_id.0,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A shipment due for hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueShipment {
    pub order_id: i64,
    pub user_id: i64,
}

/// Up to 100 shipments created at least `after` ago and not handed over, oldest first.
pub async fn due_shipments<'e>(
    db: impl PgExecutor<'e>,
    after: Duration,
) -> Result<Vec<DueShipment>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT s.order_id, o.user_id FROM shipments s JOIN orders o ON o.id = s.order_id
         WHERE s.status = 'created' AND s.created_at <= now() - make_interval(secs => $1)
         ORDER BY s.created_at LIMIT 100",
        after.as_secs_f64(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueShipment {
            order_id: r.order_id,
            user_id: r.user_id,
        })
        .collect())
}

/// Count a failed hand-over attempt.
pub async fn count_handover_attempt<'e>(db: impl PgExecutor<'e>, order_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE shipments SET attempts = attempts + 1 WHERE order_id = $1",
        order_id
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Record the hand-over.
pub async fn mark_handed_over<'e>(db: impl PgExecutor<'e>, order_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE shipments SET status = 'handed_over', handed_over_at = now(), attempts = attempts + 1
         WHERE order_id = $1",
        order_id,
    )
    .execute(db)
    .await?;
    Ok(())
}
