//! Orders as their owner sees them, and the facts a cancellation or refund acts on.

use chrono::{DateTime, Utc};

use crate::domain::ids::OrderId;
use crate::domain::lifecycle::OrderStatus;

/// An order's status as its owner sees it: `queued` while the writer has not stored it yet
/// (only Redis knows it then), else where its lifecycle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenStatus {
    Queued,
    Stored(OrderStatus),
}

impl SeenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SeenStatus::Queued => "queued",
            SeenStatus::Stored(status) => status.as_str(),
        }
    }

    /// `queued` or an order status; anything else is not a status an order can show.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(SeenStatus::Queued),
            other => other.parse().ok().map(SeenStatus::Stored),
        }
    }
}

impl std::fmt::Display for SeenStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order as its owner sees it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub order_id: OrderId,
    pub status: SeenStatus,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::ALL_STATUSES;

    #[test]
    fn every_status_an_order_can_show_reads_back_and_nothing_else_does() {
        assert_eq!(SeenStatus::parse("queued"), Some(SeenStatus::Queued));
        for status in ALL_STATUSES {
            let seen = SeenStatus::Stored(status);
            assert_eq!(SeenStatus::parse(seen.as_str()), Some(seen));
        }
        assert_eq!(SeenStatus::parse("teleported"), None);
    }
}
