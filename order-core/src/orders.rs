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
