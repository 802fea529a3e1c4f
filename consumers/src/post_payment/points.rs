//! Loyalty points: a ledger entry per paid order, reversed when the order is refunded.

use order_core::domain::events::OrderEvent;
use order_core::postgres::processed;
use sqlx::PgPool;

use super::{BoxFuture, Handler};

#[derive(Debug)]
pub struct Points {
    pub db: PgPool,
    pub cents_per_point: i64,
}

impl Handler for Points {
    fn name(&self) -> &'static str {
        "points"
    }

    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(mut tx) = processed::claim(&self.db, self.name(), &event.event_id).await? else {
                return Ok(());
            };
            match event.event_type.as_str() {
                OrderEvent::PAID => {
                    sqlx::query!(
                        "INSERT INTO loyalty_ledger (user_id, order_id, points, reason) VALUES ($1, $2, $3, 'order_paid')
                         ON CONFLICT DO NOTHING",
                        event.user_id,
                        event.order_id.0,
                        event.total_cents / self.cents_per_point,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::REFUNDED => {
                    sqlx::query!(
                        "INSERT INTO loyalty_ledger (user_id, order_id, points, reason)
                         SELECT user_id, order_id, -points, 'order_refunded' FROM loyalty_ledger
                         WHERE order_id = $1 AND reason = 'order_paid'
                         ON CONFLICT DO NOTHING",
                        event.order_id.0,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {}
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
