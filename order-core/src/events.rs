//! Messages on the event stream (JSON). Every event carries `event_id`, `type`, `version` and
//! `occurred_at`; consumers deduplicate on `event_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::OrderId;

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
}

impl SeckillOrderAccepted {
    pub const TYPE: &'static str = "seckill.order_accepted";
    pub const VERSION: u32 = 1;
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
    pub const CANCELLED: &'static str = "order.cancelled";
    pub const VERSION: u32 = 1;
}
