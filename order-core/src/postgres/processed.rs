//! Exactly-once effects for event consumers: a row in `processed_events` (consumer, event
//! id) committed in the same transaction as the effect. A redelivered event finds the row
//! and changes nothing.

use sqlx::{PgPool, Postgres, Transaction};

/// A transaction that has claimed `event_id` for `consumer`, or `None` when that consumer
/// already processed the event.
pub async fn claim(
    pool: &PgPool,
    consumer: &str,
    event_id: &str,
) -> sqlx::Result<Option<Transaction<'static, Postgres>>> {
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query!(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        consumer,
        event_id,
    )
    .execute(&mut *tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(Some(tx))
}

pub async fn is_processed(pool: &PgPool, consumer: &str, event_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2) AS "processed!""#,
        consumer,
        event_id,
    )
    .fetch_one(pool)
    .await
}

/// Record an event as processed outside a transaction (effects that live outside the
/// database and are idempotent on their own).
pub async fn mark(pool: &PgPool, consumer: &str, event_id: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        consumer,
        event_id,
    )
    .execute(pool)
    .await?;
    Ok(())
}
