//! A reservation: one unit count of a sale held for one buyer's order, from the moment the
//! stock decrement accepted it until the order is stored, paid, or released.

use crate::domain::events::SeckillOrderAccepted;
use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::promotion::Promotion;

/// One live reservation as recorded by the reserve step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub quantity: Quantity,
    pub reserved_at_ms: i64,
    pub request_id: RequestId,
}

impl Reservation {
    /// The `seckill-orders` message for this reservation: the gateway's first publish, a
    /// retry's copy and the sweeper's republish carry the same order (the writer compares
    /// order id, buyer, request id and total; `occurred_at` may differ between copies).
    pub fn accepted_event(&self, p: &Promotion) -> SeckillOrderAccepted {
        SeckillOrderAccepted {
            event_id: self.order_id.to_string(),
            event_type: SeckillOrderAccepted::TYPE.to_owned(),
            version: SeckillOrderAccepted::VERSION,
            occurred_at: chrono::DateTime::from_timestamp_millis(self.reserved_at_ms)
                .unwrap_or_else(chrono::Utc::now),
            order_id: self.order_id,
            promotion_id: p.id,
            user_id: self.user_id.get(),
            sku_id: p.sku_id.clone(),
            title: p.title.clone(),
            quantity: self.quantity.get(),
            unit_price_cents: p.price_cents,
            request_id: self.request_id.as_str().to_owned(),
            shards: p.shards,
        }
    }
}
