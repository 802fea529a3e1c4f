//! Persisting accepted seckill orders: a whole batch in one transaction, idempotent, so a
//! redelivered message or a republished reservation changes nothing.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::events::SeckillOrderAccepted;
use crate::ids::OrderId;

/// An accepted order as the writer stores it; built only from a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSeckillOrder {
    pub order_id: OrderId,
    pub user_id: i64,
    pub promotion_id: i64,
    pub request_id: String,
    pub sku_id: String,
    pub title: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub accepted_at: DateTime<Utc>,
}

/// Why a message can never become an order (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOrder {
    #[error("not JSON of a seckill order: {0}")]
    Undecodable(String),
    #[error("unsupported event {event_type} version {version}")]
    Unsupported { event_type: String, version: u32 },
    #[error("invalid field {0}")]
    Field(&'static str),
}

impl NewSeckillOrder {
    pub fn decode(payload: &[u8]) -> Result<Self, InvalidOrder> {
        let event: SeckillOrderAccepted =
            serde_json::from_slice(payload).map_err(|e| InvalidOrder::Undecodable(e.to_string()))?;
        Self::from_event(event)
    }

    pub fn from_event(e: SeckillOrderAccepted) -> Result<Self, InvalidOrder> {
        if e.event_type != SeckillOrderAccepted::TYPE || e.version != SeckillOrderAccepted::VERSION {
            return Err(InvalidOrder::Unsupported {
                event_type: e.event_type,
                version: e.version,
            });
        }
        let checks = [
            ("order_id", e.order_id.0 > 0),
            ("user_id", e.user_id > 0),
            ("promotion_id", e.promotion_id > 0),
            ("quantity", (1..=10_000).contains(&e.quantity)),
            ("unit_price_cents", e.unit_price_cents >= 0),
            ("request_id", !e.request_id.is_empty() && e.request_id.len() <= 64),
            ("sku_id", !e.sku_id.is_empty()),
        ];
        if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(InvalidOrder::Field(field));
        }
        let total = e.unit_price_cents.checked_mul(i64::from(e.quantity));
        if total.is_none() {
            return Err(InvalidOrder::Field("unit_price_cents"));
        }
        Ok(Self {
            order_id: e.order_id,
            user_id: e.user_id,
            promotion_id: e.promotion_id,
            request_id: e.request_id,
            sku_id: e.sku_id,
            title: e.title,
            quantity: e.quantity as i32,
            unit_price_cents: e.unit_price_cents,
            accepted_at: e.occurred_at,
        })
    }

    pub fn total_cents(&self) -> i64 {
        self.unit_price_cents * i64::from(self.quantity)
    }
}

/// Insert the orders and their items in one transaction; rows that exist already are left
/// alone. Unpaid orders expire `payment_timeout` after they are persisted (not accepted, so
/// a backlog in Pulsar does not eat the buyer's time to pay). Returns rows inserted.
pub async fn insert_seckill_orders(
    pool: &PgPool,
    orders: &[NewSeckillOrder],
    payment_timeout: Duration,
) -> sqlx::Result<u64> {
    if orders.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = orders.iter().map(|o| o.order_id.0).collect();
    let users: Vec<i64> = orders.iter().map(|o| o.user_id).collect();
    let promotions: Vec<i64> = orders.iter().map(|o| o.promotion_id).collect();
    let requests: Vec<&str> = orders.iter().map(|o| o.request_id.as_str()).collect();
    let totals: Vec<i64> = orders.iter().map(|o| o.total_cents()).collect();
    let accepted: Vec<DateTime<Utc>> = orders.iter().map(|o| o.accepted_at).collect();
    let skus: Vec<&str> = orders.iter().map(|o| o.sku_id.as_str()).collect();
    let titles: Vec<&str> = orders.iter().map(|o| o.title.as_str()).collect();
    let quantities: Vec<i32> = orders.iter().map(|o| o.quantity).collect();
    let prices: Vec<i64> = orders.iter().map(|o| o.unit_price_cents).collect();

    // One statement: items are written only for orders this statement inserted, so an order
    // skipped as a duplicate never gets a second set of items. A batch may hold one order
    // twice (a message and the sweeper's republished copy): DISTINCT ON keeps one.
    let inserted: i64 = sqlx::query_scalar(
        "WITH batch AS (
             SELECT DISTINCT ON (id) * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[],
                                  $6::TIMESTAMPTZ[], $7::TEXT[], $8::TEXT[], $9::INTEGER[], $10::BIGINT[])
                 AS t(id, user_id, promotion_id, request_id, total, accepted_at, sku_id, title, quantity, price)
             ORDER BY id
         ), inserted AS (
             INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents,
                                 total_cents, expires_at, created_at, updated_at)
             SELECT id, user_id, 'seckill', promotion_id, request_id, 'pending_payment', total, total,
                    now() + make_interval(secs => $11), accepted_at, now()
             FROM batch
             ON CONFLICT DO NOTHING
             RETURNING id
         ), items AS (
             INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents)
             SELECT b.id, 1, b.sku_id, b.title, b.quantity, b.price FROM batch b JOIN inserted i ON i.id = b.id
             RETURNING order_id
         )
         SELECT count(*) FROM items",
    )
    .bind(&ids)
    .bind(&users)
    .bind(&promotions)
    .bind(&requests)
    .bind(&totals)
    .bind(&accepted)
    .bind(&skus)
    .bind(&titles)
    .bind(&quantities)
    .bind(&prices)
    .bind(payment_timeout.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(inserted as u64)
}

/// Which of these orders are in the database.
pub async fn existing_order_ids(pool: &PgPool, ids: &[OrderId]) -> sqlx::Result<HashSet<OrderId>> {
    let raw: Vec<i64> = ids.iter().map(|i| i.0).collect();
    let found: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
        .bind(&raw)
        .fetch_all(pool)
        .await?;
    Ok(found.into_iter().map(OrderId).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> SeckillOrderAccepted {
        SeckillOrderAccepted {
            event_id: "1".into(),
            event_type: SeckillOrderAccepted::TYPE.into(),
            version: 1,
            occurred_at: Utc::now(),
            order_id: OrderId(1),
            promotion_id: 2,
            user_id: 3,
            sku_id: "sku".into(),
            title: "t".into(),
            quantity: 2,
            unit_price_cents: 150,
            request_id: "r".into(),
        }
    }

    #[test]
    fn a_valid_event_becomes_an_order() {
        let order = NewSeckillOrder::from_event(event()).expect("valid");
        assert_eq!(order.total_cents(), 300);
    }

    #[test]
    fn invalid_events_are_refused_with_the_reason() {
        assert!(matches!(
            NewSeckillOrder::decode(b"{oops"),
            Err(InvalidOrder::Undecodable(_))
        ));
        let mut e = event();
        e.quantity = 0;
        assert_eq!(
            NewSeckillOrder::from_event(e),
            Err(InvalidOrder::Field("quantity"))
        );
        let mut e = event();
        e.version = 9;
        assert!(matches!(
            NewSeckillOrder::from_event(e),
            Err(InvalidOrder::Unsupported { .. })
        ));
        let mut e = event();
        e.unit_price_cents = i64::MAX;
        assert_eq!(
            NewSeckillOrder::from_event(e),
            Err(InvalidOrder::Field("unit_price_cents"))
        );
    }
}
