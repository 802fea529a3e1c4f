//! The order lifecycle as a state machine: which event moves an order from which status to
//! which. Anything else is an illegal transition. The database applies the same table as
//! guarded updates (`UPDATE … WHERE status = <from>`), so concurrent events cannot both win.
//!
//! ```text
//! pending_payment ─pay─> paid ─ship─> shipped ─complete─> completed
//!        │                 └─request_refund─> refund_requested ─refund─> refunded
//!        └─cancel (user, timeout)─> cancelled
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Shipped,
    Completed,
    Cancelled,
    RefundRequested,
    Refunded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEventKind {
    Pay,
    Ship,
    Complete,
    Cancel,
    RequestRefund,
    Refund,
}

pub const ALL_STATUSES: [OrderStatus; 7] = [
    OrderStatus::PendingPayment,
    OrderStatus::Paid,
    OrderStatus::Shipped,
    OrderStatus::Completed,
    OrderStatus::Cancelled,
    OrderStatus::RefundRequested,
    OrderStatus::Refunded,
];

pub const ALL_EVENTS: [OrderEventKind; 6] = [
    OrderEventKind::Pay,
    OrderEventKind::Ship,
    OrderEventKind::Complete,
    OrderEventKind::Cancel,
    OrderEventKind::RequestRefund,
    OrderEventKind::Refund,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order that is {from} cannot be {event:?}")]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub event: OrderEventKind,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::RefundRequested => "refund_requested",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// The status after `event`, or why it cannot happen.
    /// How far along its lifecycle an order is. Every transition moves to a higher rank, so
    /// of two copies of an order's status the one with the lower rank is the older.
    pub fn rank(self) -> u8 {
        match self {
            OrderStatus::PendingPayment => 1,
            OrderStatus::Paid | OrderStatus::Cancelled => 2,
            OrderStatus::Shipped | OrderStatus::RefundRequested => 3,
            OrderStatus::Completed | OrderStatus::Refunded => 4,
        }
    }

    pub fn apply(self, event: OrderEventKind) -> Result<OrderStatus, IllegalTransition> {
        use OrderEventKind::*;
        use OrderStatus::*;
        match (self, event) {
            (PendingPayment, Pay) => Ok(Paid),
            (PendingPayment, Cancel) => Ok(Cancelled),
            (Paid, Ship) => Ok(Shipped),
            (Paid, RequestRefund) => Ok(RefundRequested),
            (Shipped, Complete) => Ok(Completed),
            (RefundRequested, Refund) => Ok(Refunded),
            (from, event) => Err(IllegalTransition { from, event }),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown order status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderEventKind::*;
    use super::OrderStatus::*;
    use super::*;

    const LEGAL: [(OrderStatus, OrderEventKind, OrderStatus); 6] = [
        (PendingPayment, Pay, Paid),
        (PendingPayment, Cancel, Cancelled),
        (Paid, Ship, Shipped),
        (Paid, RequestRefund, RefundRequested),
        (Shipped, Complete, Completed),
        (RefundRequested, Refund, Refunded),
    ];

    #[test]
    fn every_transition_moves_to_a_higher_rank() {
        for from in ALL_STATUSES {
            for event in ALL_EVENTS {
                if let Ok(to) = from.apply(event) {
                    assert!(to.rank() > from.rank(), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn every_legal_transition_lands_where_the_diagram_says() {
        for (from, event, to) in LEGAL {
            assert_eq!(from.apply(event), Ok(to), "{from} --{event:?}->");
        }
    }

    #[test]
    fn every_other_pair_is_illegal() {
        let mut illegal = 0;
        for from in ALL_STATUSES {
            for event in ALL_EVENTS {
                if LEGAL.iter().any(|(f, e, _)| *f == from && *e == event) {
                    continue;
                }
                assert_eq!(from.apply(event), Err(IllegalTransition { from, event }));
                illegal += 1;
            }
        }
        assert_eq!(illegal, ALL_STATUSES.len() * ALL_EVENTS.len() - LEGAL.len());
    }

    #[test]
    fn terminal_states_accept_nothing() {
        for from in [Completed, Cancelled, Refunded] {
            assert!(ALL_EVENTS.iter().all(|e| from.apply(*e).is_err()), "{from}");
        }
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<OrderStatus>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).expect("json"),
                format!("\"{}\"", s.as_str())
            );
        }
        assert!("shipping".parse::<OrderStatus>().is_err());
    }
}
