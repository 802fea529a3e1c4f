//! Reward coupons: one coupon of the configured template per paid order (grant reason
//! `reward:<order id>` is unique), revoked if still unused when the order is refunded.

use order_core::domain::events::OrderEvent;
use order_core::postgres::processed;
use sqlx::PgPool;

use super::{BoxFuture, Handler};

#[derive(Debug)]
pub struct Rewards {
    pub db: PgPool,
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
            match event.event_type.as_str() {
                OrderEvent::PAID if !self.template_code.is_empty() => {
                    sqlx::query!(
                        "INSERT INTO coupon_grants (template_id, user_id, reason)
                         SELECT id, $2, $3 FROM coupon_templates WHERE code = $1
                         ON CONFLICT (reason) DO NOTHING",
                        self.template_code,
                        event.user_id,
                        reason,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                OrderEvent::REFUNDED => {
                    sqlx::query!(
                        "UPDATE coupon_grants SET status = 'revoked' WHERE reason = $1 AND status = 'available'",
                        reason,
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
