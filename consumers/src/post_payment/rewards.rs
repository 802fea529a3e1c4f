//! Reward coupons: one coupon of the configured template per paid order, revoked if still
//! unused when the order is refunded.

use order_core::app::post_payment;
use order_core::domain::events::OrderEvent;
use order_core::postgres::Pool;

use super::{BoxFuture, Handler};

#[derive(Debug)]
pub struct Rewards {
    pub db: Pool,
    /// Empty: no reward coupons.
    pub template_code: String,
}

impl Handler for Rewards {
    fn name(&self) -> &'static str {
        "rewards"
    }

    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            post_payment::apply_reward(&self.db, self.name(), event, &self.template_code).await?;
            Ok(())
        })
    }
}
