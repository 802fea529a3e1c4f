//! Reward coupons: one coupon of the configured template per paid order (grant reason
//! `reward:<order id>` is unique), revoked if still unused when the order is refunded.

use order_core::domain::events::{OrderEvent, OrderEventType};
use order_core::postgres::Pool;
use order_core::postgres::{post_payment, processed};

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
            let Some(mut tx) = processed::claim(&self.db, self.name(), &event.event_id).await? else {
                return Ok(());
            };
            let reason = format!("reward:{}", event.order_id);
            match event.typed() {
                Some(OrderEventType::Paid) if !self.template_code.is_empty() => {
                    post_payment::grant_reward(&mut *tx, &self.template_code, event.user_id, &reason).await?;
                }
                Some(OrderEventType::Refunded) => {
                    post_payment::revoke_reward(&mut *tx, &reason).await?;
                }
                _ => {}
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
