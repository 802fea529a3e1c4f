//! Bodies of normal checkout: the basket, the priced breakdown, the placed order, a user's
//! order view, and the payment provider's callback.

use chrono::{DateTime, Utc};
use order_core::domain::checkout::{
    Address, CheckoutInput, CheckoutRejection, ItemInput, PaymentCallback, PlacedOrder, ShippingInput,
};
use order_core::domain::ids::{OrderId, RequestId};
use order_core::domain::orders::OrderView;
use order_core::domain::pricing::{Breakdown, Line, ShippingMethod};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire::OrderIdSchema;

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = ItemInput)]
#[serde(deny_unknown_fields)]
pub struct ItemBody {
    /// A SKU of the catalog (else 422 `unknown_sku`).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku_id: String,
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = Address)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub name: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub line1: String,
    #[serde(default)]
    #[schema(max_length = 200, pattern = "^[^\\u0000]*$")]
    pub line2: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub city: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub postal_code: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub phone: String,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[schema(as = ShippingMethod)]
#[serde(rename_all = "snake_case")]
pub enum ShippingMethodBody {
    Standard,
    Express,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = ShippingInput)]
#[serde(deny_unknown_fields)]
pub struct ShippingBody {
    pub method: ShippingMethodBody,
    pub address: AddressBody,
}

/// The body of `/api/checkout/preview` (and of `/api/checkout`, which adds `request_id`).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = CheckoutInput)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// Distinct SKUs.
    #[schema(min_items = 1, max_items = 20)]
    pub items: Vec<ItemBody>,
    /// A coupon grant the user holds.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub coupon_id: Option<i64>,
    pub shipping: ShippingBody,
    /// Required to place an order (the same key gets the same order); ignored by preview.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub request_id: Option<String>,
}

impl CheckoutBody {
    /// The basket; a `request_id` given is parsed here, once.
    pub fn into_domain(self) -> Result<CheckoutInput, CheckoutRejection> {
        let request_id = self
            .request_id
            .map(RequestId::parse)
            .transpose()
            .map_err(|_| CheckoutRejection::InvalidRequestId)?;
        let a = self.shipping.address;
        Ok(CheckoutInput {
            items: self
                .items
                .into_iter()
                .map(|i| ItemInput {
                    sku_id: i.sku_id,
                    quantity: i.quantity,
                })
                .collect(),
            coupon_id: self.coupon_id,
            shipping: ShippingInput {
                method: match self.shipping.method {
                    ShippingMethodBody::Standard => ShippingMethod::Standard,
                    ShippingMethodBody::Express => ShippingMethod::Express,
                },
                address: Address {
                    name: a.name,
                    line1: a.line1,
                    line2: a.line2,
                    city: a.city,
                    postal_code: a.postal_code,
                    phone: a.phone,
                },
            },
            request_id,
        })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Line)]
pub struct LineBody {
    pub sku_id: String,
    pub title: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Breakdown)]
pub struct BreakdownBody {
    pub lines: Vec<LineBody>,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub shipping_cents: i64,
    pub total_cents: i64,
}

impl From<Line> for LineBody {
    fn from(l: Line) -> Self {
        Self {
            sku_id: l.sku_id,
            title: l.title,
            unit_price_cents: l.unit_price_cents,
            quantity: l.quantity,
            line_total_cents: l.line_total_cents,
        }
    }
}

impl From<Breakdown> for BreakdownBody {
    fn from(b: Breakdown) -> Self {
        Self {
            lines: b.lines.into_iter().map(LineBody::from).collect(),
            subtotal_cents: b.subtotal_cents,
            discount_cents: b.discount_cents,
            shipping_cents: b.shipping_cents,
            total_cents: b.total_cents,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = PlacedOrder)]
pub struct PlacedOrderBody {
    #[schema(value_type = OrderIdSchema)]
    pub order_id: OrderId,
    pub status: String,
    #[serde(flatten)]
    pub breakdown: BreakdownBody,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<PlacedOrder> for PlacedOrderBody {
    fn from(o: PlacedOrder) -> Self {
        Self {
            order_id: o.order_id,
            status: o.status.as_str().to_owned(),
            breakdown: o.breakdown.into(),
            expires_at: o.expires_at,
        }
    }
}

/// An order as its owner sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = OrderView)]
pub struct OrderViewBody {
    #[schema(value_type = OrderIdSchema)]
    pub order_id: OrderId,
    pub status: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_id: Option<i64>,
    pub total_cents: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Present (true) when the order was read from its month's archive: older than the
    /// retention, so its status is final and it is no longer in the order list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
}

impl From<OrderView> for OrderViewBody {
    fn from(o: OrderView) -> Self {
        Self {
            order_id: o.order_id,
            status: o.status.as_str().to_owned(),
            kind: o.kind,
            promotion_id: o.promotion_id,
            total_cents: o.total_cents,
            expires_at: o.expires_at,
            created_at: o.created_at,
            archived: o.archived,
        }
    }
}

/// A provider's payment notification, signed over its raw bytes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = PaymentCallback)]
#[serde(deny_unknown_fields)]
pub struct PaymentCallbackBody {
    #[schema(min_length = 1, max_length = 128)]
    pub payment_id: String,
    #[schema(value_type = OrderIdSchema)]
    pub order_id: OrderId,
    #[schema(minimum = 1)]
    pub amount_cents: i64,
    pub status: String,
    /// Unix seconds when the provider signed it; required (a callback without it is refused).
    #[serde(default)]
    pub timestamp: Option<i64>,
}

impl PaymentCallbackBody {
    pub fn into_domain(self) -> PaymentCallback {
        PaymentCallback {
            payment_id: self.payment_id,
            order_id: self.order_id,
            amount_cents: self.amount_cents,
            status: self.status,
            timestamp: self.timestamp,
        }
    }
}
