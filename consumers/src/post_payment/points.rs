//! Loyalty points: a ledger entry per paid order, reversed when the order is refunded.

use order_core::app::post_payment;
use order_core::domain::events::OrderEvent;
use order_core::postgres::Pool;

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
            post_payment::apply_points(&self.db, self.name(), event, self.cents_per_point).await?;
            Ok(())
        })
    }
}
