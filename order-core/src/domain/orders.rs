//! Orders as their owner sees them, and the facts a cancellation or refund acts on.

use chrono::{DateTime, Utc};

use crate::domain::ids::OrderId;

/// An order as its owner sees it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub order_id: OrderId,
    pub status: String,
    pub kind: String,
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Read from the archive of its month: the status it had when archived, final.
    pub archived: bool,
}

/// An order that a cancellation or a refund ended: what giving its stock back and
/// announcing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelledOrder {
    pub id: i64,
    pub user_id: i64,
    pub kind: String,
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
}
