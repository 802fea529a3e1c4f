//! An accepted seckill order as the writer receives it: the `seckill.order_accepted` event,
//! decoded and validated once, by the rules the gateway parsed the buyer's request with.
//! A message that fails them can never become an order (it goes to the dead-letter topic).

use chrono::{DateTime, Utc};

use crate::domain::events::SeckillOrderAccepted;
use crate::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use crate::domain::shards::SaleShards;

/// An accepted order as the writer stores it; built only from a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSeckillOrder {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub promotion_id: PromotionId,
    /// Where its sale lives in Redis (the buyer's shard holds its marker).
    pub sale: SaleShards,
    pub request_id: RequestId,
    pub sku_id: String,
    pub title: String,
    pub quantity: Quantity,
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
        // The rules the gateway parsed the request with: what it could not have accepted is
        // not an order, whoever wrote the message.
        let field = InvalidOrder::Field;
        if e.order_id.0 <= 0 {
            return Err(field("order_id"));
        }
        let user_id = UserId::parse(e.user_id).map_err(|_| field("user_id"))?;
        let promotion_id = PromotionId::parse(e.promotion_id).map_err(|_| field("promotion_id"))?;
        let quantity = Quantity::parse(i64::from(e.quantity)).map_err(|_| field("quantity"))?;
        if e.unit_price_cents < 0 {
            return Err(field("unit_price_cents"));
        }
        let request_id = RequestId::parse(e.request_id).map_err(|_| field("request_id"))?;
        if e.sku_id.is_empty() {
            return Err(field("sku_id"));
        }
        if e.unit_price_cents
            .checked_mul(i64::from(quantity.get()))
            .is_none()
        {
            return Err(field("unit_price_cents"));
        }
        let sale = SaleShards::new(promotion_id.get(), e.shards.into()).map_err(|_| field("shards"))?;
        Ok(Self {
            order_id: e.order_id,
            user_id,
            promotion_id,
            sale,
            request_id,
            sku_id: e.sku_id,
            title: e.title,
            quantity,
            unit_price_cents: e.unit_price_cents,
            accepted_at: e.occurred_at,
        })
    }

    pub fn total_cents(&self) -> i64 {
        self.unit_price_cents * i64::from(self.quantity.get())
    }
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
            shards: 1,
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
        // Past what the gateway accepts: the same rule at both ends.
        let mut e = event();
        e.quantity = 101;
        assert_eq!(
            NewSeckillOrder::from_event(e),
            Err(InvalidOrder::Field("quantity"))
        );
        let mut e = event();
        e.request_id = "has space".into();
        assert_eq!(
            NewSeckillOrder::from_event(e),
            Err(InvalidOrder::Field("request_id"))
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
