//! Normal checkout as the domain sees it: the basket a user submits, why one is refused, the
//! order it places, and the payment notifications that settle it.

use chrono::{DateTime, Utc};

use crate::domain::ids::{OrderId, RequestId};
use crate::domain::lifecycle::{IllegalTransition, OrderStatus};
use crate::domain::pricing::{Breakdown, PricingError, ShippingMethod};
// Defined beside pricing, whose errors are rejections too, so pricing need not import this.
pub use crate::domain::pricing::Rejection;

/// One line of a basket.
#[derive(Debug, Clone)]
pub struct ItemInput {
    pub sku_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub name: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub phone: String,
}

#[derive(Debug, Clone)]
pub struct ShippingInput {
    pub method: ShippingMethod,
    pub address: Address,
}

/// A basket to price or to order.
#[derive(Debug, Clone)]
pub struct CheckoutInput {
    /// Distinct SKUs.
    pub items: Vec<ItemInput>,
    /// A coupon grant the user holds.
    pub coupon_id: Option<i64>,
    pub shipping: ShippingInput,
    /// Required to place an order (the same key gets the same order); ignored by preview.
    pub request_id: Option<RequestId>,
}

/// Why a checkout was refused: what the client sent, or the state of stock or coupon. Each
/// has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutRejection {
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("invalid address: {0}")]
    InvalidAddress(&'static str),
    #[error("unknown SKU {0}")]
    UnknownSku(String),
    #[error("not enough stock of {0}")]
    OutOfStock(String),
    #[error("the coupon is not yours, already used, or unknown")]
    CouponUnavailable,
    #[error("request_id must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidRequestId,
}

impl CheckoutRejection {
    /// The stable code and kind of the rejection.
    pub fn code_and_kind(&self) -> (&'static str, Rejection) {
        match self {
            CheckoutRejection::Pricing(e) => (e.code(), e.rejection()),
            CheckoutRejection::InvalidAddress(_) => ("invalid_address", Rejection::Invalid),
            CheckoutRejection::UnknownSku(_) => ("unknown_sku", Rejection::Invalid),
            CheckoutRejection::OutOfStock(_) => ("out_of_stock", Rejection::Conflict),
            CheckoutRejection::CouponUnavailable => ("coupon_unavailable", Rejection::Conflict),
            CheckoutRejection::InvalidRequestId => ("invalid_request_id", Rejection::Invalid),
        }
    }
}

impl Address {
    pub fn validate(&self) -> Result<(), CheckoutRejection> {
        for (field, value) in [
            ("name", &self.name),
            ("line1", &self.line1),
            ("city", &self.city),
            ("postal_code", &self.postal_code),
            ("phone", &self.phone),
        ] {
            if value.trim().is_empty() || value.chars().count() > 200 {
                return Err(CheckoutRejection::InvalidAddress(field));
            }
        }
        if self.line2.as_ref().is_some_and(|l| l.chars().count() > 200) {
            return Err(CheckoutRejection::InvalidAddress("line2"));
        }
        Ok(())
    }
}

/// A checkout order as placed (or found again by its request id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub breakdown: Breakdown,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Created(PlacedOrder),
    /// The same user already placed an order with this request id.
    Existing(PlacedOrder),
}

/// A provider's payment notification (after the signature was verified).
#[derive(Debug, Clone)]
pub struct PaymentCallback {
    pub payment_id: String,
    pub order_id: OrderId,
    pub amount_cents: i64,
    pub status: String,
    /// Unix seconds when the provider signed it.
    pub timestamp: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// The order is now paid; a seckill order names its sale (and its buyer, whose shard
    /// holds its marker).
    Applied {
        promotion_id: Option<i64>,
        user_id: i64,
    },
    /// This payment id was processed before; nothing changed.
    Duplicate,
    /// Money arrived for an order that cannot take it (cancelled, already paid): refund.
    RefundDue,
    AmountMismatch,
    UnknownOrder,
}

impl CallbackOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Applied { .. } => "applied",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::RefundDue => "refund_due",
            CallbackOutcome::AmountMismatch => "amount_mismatch",
            CallbackOutcome::UnknownOrder => "unknown_order",
        }
    }
}

/// What a lifecycle change by a user or an operator found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The order's new status; a seckill order names its sale (and its buyer, whose shard
    /// holds its marker).
    Done {
        status: OrderStatus,
        promotion_id: Option<i64>,
        user_id: i64,
    },
    NotFound,
    Illegal(IllegalTransition),
}
