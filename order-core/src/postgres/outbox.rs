//! The transactional outbox: events written in the same transaction as the change they
//! announce, published afterwards by a relay, deleted once the broker acknowledged them. A
//! crash between publish and delete publishes again; consumers deduplicate on `event_id`.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    /// Short topic name (`order-events`); the relay qualifies it with tenant and namespace.
    pub topic: String,
    pub event_id: String,
    pub payload: serde_json::Value,
}

pub async fn enqueue(
    conn: &mut PgConnection,
    topic: &str,
    event_id: &str,
    payload: &impl Serialize,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO outbox (topic, event_id, payload) VALUES ($1, $2, $3)",
        topic,
        event_id,
        sqlx::types::Json(payload) as _,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Oldest first.
pub async fn pending(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<OutboxEvent>> {
    sqlx::query_as!(
        OutboxEvent,
        "SELECT id, topic, event_id, payload FROM outbox ORDER BY id LIMIT $1",
        limit,
    )
    .fetch_all(pool)
    .await
}

pub async fn delete(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", ids)
        .execute(pool)
        .await?;
    Ok(())
}
