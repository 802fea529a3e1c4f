//! Loyalty points: a ledger entry per paid order, reversed when the order is refunded.

use order_core::domain::events::{OrderEvent, OrderEventType};
use order_core::postgres::Pool;
use order_core::postgres::{post_payment, processed};

use super::{BoxFuture, Handler};

#[derive(Debug)]
pub struct Points {
    pub db: Pool,
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
            match event.typed() {
                Some(OrderEventType::Paid) => {
                    let points = event.total_cents / self.cents_per_point;
                    post_payment::credit_points(&mut *tx, event.user_id, event.order_id, points).await?;
                }
                Some(OrderEventType::Refunded) => {
                    post_payment::reverse_points(&mut *tx, event.order_id).await?;
                }
                _ => {}
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
