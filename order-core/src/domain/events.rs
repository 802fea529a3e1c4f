//! Messages on the event stream (JSON). Every event carries `event_id`, `type`, `version` and
//! `occurred_at`; consumers deduplicate on `event_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ids::OrderId;

/// An accepted flash-sale reservation on `seckill-orders`, for the order writer.
/// `event_id` is the order id, so a republished copy is recognisably the same event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeckillOrderAccepted {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub order_id: OrderId,
    pub promotion_id: i64,
    pub user_id: i64,
    pub sku_id: String,
    pub title: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub request_id: String,
    /// The sale's shard count: the buyer's shard holds the reservation and, once stored, the
    /// order's status marker. Absent in events from before sharding (one shard).
    #[serde(default = "one_shard")]
    pub shards: u16,
}

fn one_shard() -> u16 {
    1
}

impl SeckillOrderAccepted {
    pub const TYPE: &'static str = "seckill.order_accepted";
    pub const VERSION: u32 = 1;
}

/// What an `order-events` message announces, as its `type` names it. Consumers dispatch on
/// this, never on the string; a type this version does not know (a newer producer's) is
/// `None` from `OrderEvent::typed`, and the handlers leave it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEventType {
    Created,
    Paid,
    Cancelled,
    RefundRequested,
    Refunded,
    Shipped,
    Completed,
}

impl OrderEventType {
    pub const ALL: [OrderEventType; 7] = [
        OrderEventType::Created,
        OrderEventType::Paid,
        OrderEventType::Cancelled,
        OrderEventType::RefundRequested,
        OrderEventType::Refunded,
        OrderEventType::Shipped,
        OrderEventType::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderEventType::Created => OrderEvent::CREATED,
            OrderEventType::Paid => OrderEvent::PAID,
            OrderEventType::Cancelled => OrderEvent::CANCELLED,
            OrderEventType::RefundRequested => OrderEvent::REFUND_REQUESTED,
            OrderEventType::Refunded => OrderEvent::REFUNDED,
            OrderEventType::Shipped => OrderEvent::SHIPPED,
            OrderEventType::Completed => OrderEvent::COMPLETED,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A change of an order's lifecycle on `order-events` (`order.cancelled`, `order.paid`, …).
/// `event_id` is `<type>:<order id>`: one such event per order, so a republished copy is
/// recognisably the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub occurred_at: DateTime<Utc>,
    pub order_id: OrderId,
    pub user_id: i64,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

impl OrderEvent {
    pub const CREATED: &'static str = "order.created";
    pub const PAID: &'static str = "order.paid";
    pub const CANCELLED: &'static str = "order.cancelled";
    pub const REFUND_REQUESTED: &'static str = "order.refund_requested";
    pub const REFUNDED: &'static str = "order.refunded";
    pub const SHIPPED: &'static str = "order.shipped";
    pub const COMPLETED: &'static str = "order.completed";
    pub const VERSION: u32 = 1;

    /// What the event announces (`None`: a type this version does not know).
    pub fn typed(&self) -> Option<OrderEventType> {
        OrderEventType::parse(&self.event_type)
    }

    /// The event announcing a transition. Exhaustive on purpose: a new kind of transition
    /// must name its event here, not inherit another's.
    pub fn type_for(kind: crate::domain::lifecycle::OrderEventKind) -> &'static str {
        use crate::domain::lifecycle::OrderEventKind;
        match kind {
            OrderEventKind::Pay => Self::PAID,
            OrderEventKind::Ship => Self::SHIPPED,
            OrderEventKind::Complete => Self::COMPLETED,
            OrderEventKind::Cancel => Self::CANCELLED,
            OrderEventKind::RequestRefund => Self::REFUND_REQUESTED,
            OrderEventKind::Refund => Self::REFUNDED,
        }
    }

    /// The event of type `event_type` for an order; its id is `<type>:<order id>`.
    pub fn new(
        event_type: &str,
        order_id: OrderId,
        user_id: i64,
        kind: &str,
        promotion_id: Option<i64>,
        total_cents: i64,
        reason: Option<&str>,
    ) -> Self {
        Self {
            event_id: format!("{event_type}:{order_id}"),
            event_type: event_type.to_owned(),
            version: Self::VERSION,
            occurred_at: Utc::now(),
            order_id,
            user_id,
            kind: kind.to_owned(),
            promotion_id,
            total_cents,
            reason: reason.map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::{OrderStatus, ALL_STATUSES};

    #[test]
    fn each_event_type_reads_back_from_its_name_and_an_unknown_one_is_none() {
        for t in OrderEventType::ALL {
            assert_eq!(OrderEventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(OrderEventType::parse("order.teleported"), None);
    }

    /// Every transition is announced as `order.<the status it leads to>`.
    #[test]
    fn each_transition_is_announced_by_the_event_of_its_new_status() {
        for from in ALL_STATUSES {
            for kind in [
                crate::domain::lifecycle::OrderEventKind::Pay,
                crate::domain::lifecycle::OrderEventKind::Ship,
                crate::domain::lifecycle::OrderEventKind::Complete,
                crate::domain::lifecycle::OrderEventKind::Cancel,
                crate::domain::lifecycle::OrderEventKind::RequestRefund,
                crate::domain::lifecycle::OrderEventKind::Refund,
            ] {
                if let Ok(to) = OrderStatus::apply(from, kind) {
                    assert_eq!(
                        OrderEvent::type_for(kind),
                        format!("order.{to}"),
                        "{from} --{kind:?}-->"
                    );
                }
            }
        }
    }
}
