//! Bodies of the catalog: SKUs, coupon templates and the coupons a user holds.

use chrono::{DateTime, Utc};
use order_core::domain::catalog::{CouponTemplate, CouponTemplateInput, HeldCoupon, Sku, SkuChanges};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A SKU as created and as shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Sku)]
pub struct SkuBody {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub title: String,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: i64,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: i64,
}

impl SkuBody {
    pub fn into_domain(self) -> Sku {
        Sku {
            id: self.id,
            title: self.title,
            price_cents: self.price_cents,
            stock: self.stock,
        }
    }
}

impl From<Sku> for SkuBody {
    fn from(s: Sku) -> Self {
        Self {
            id: s.id,
            title: s.title,
            price_cents: s.price_cents,
            stock: s.stock,
        }
    }
}

/// A SKU edit: only the fields given are written.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(as = SkuChanges)]
#[serde(deny_unknown_fields)]
pub struct SkuChangesBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub title: Option<String>,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: Option<i64>,
    /// Sets the count outright (a stock take), whatever checkouts took meanwhile.
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: Option<i64>,
}

impl SkuChangesBody {
    pub fn into_domain(self) -> SkuChanges {
        SkuChanges {
            title: self.title,
            price_cents: self.price_cents,
            stock: self.stock,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CouponTemplate)]
pub struct CouponTemplateBody {
    pub id: i64,
    pub code: String,
    /// `fixed` or `percent`.
    pub kind: String,
    pub amount_off_cents: Option<i64>,
    pub percent_off: Option<i32>,
    pub max_discount_cents: Option<i64>,
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

impl From<CouponTemplate> for CouponTemplateBody {
    fn from(t: CouponTemplate) -> Self {
        Self {
            id: t.id,
            code: t.code,
            kind: t.kind,
            amount_off_cents: t.amount_off_cents,
            percent_off: t.percent_off,
            max_discount_cents: t.max_discount_cents,
            min_spend_cents: t.min_spend_cents,
            valid_from: t.valid_from,
            valid_until: t.valid_until,
        }
    }
}

/// The create-template body: a fixed amount off, or a percentage off with an optional cap.
/// Each kind takes only its own fields, so the spec states the pairing the server checks.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = CouponTemplateInput)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewCouponTemplateBody {
    /// `amount_off_cents` off the subtotal (never more than the subtotal).
    Fixed {
        #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
        code: String,
        #[schema(minimum = 1)]
        amount_off_cents: i64,
        #[serde(default)]
        #[schema(minimum = 0)]
        min_spend_cents: i64,
        /// Before `valid_until` (else 422 `invalid_field`).
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
    },
    /// `percent_off` of the subtotal, rounded down, at most `max_discount_cents` when given.
    Percent {
        #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
        code: String,
        #[schema(minimum = 1, maximum = 100)]
        percent_off: i32,
        #[serde(default)]
        #[schema(minimum = 1)]
        max_discount_cents: Option<i64>,
        #[serde(default)]
        #[schema(minimum = 0)]
        min_spend_cents: i64,
        /// Before `valid_until` (else 422 `invalid_field`).
        valid_from: DateTime<Utc>,
        valid_until: DateTime<Utc>,
    },
}

impl NewCouponTemplateBody {
    pub fn into_domain(self) -> CouponTemplateInput {
        match self {
            NewCouponTemplateBody::Fixed {
                code,
                amount_off_cents,
                min_spend_cents,
                valid_from,
                valid_until,
            } => CouponTemplateInput {
                code,
                kind: "fixed".to_owned(),
                amount_off_cents: Some(amount_off_cents),
                percent_off: None,
                max_discount_cents: None,
                min_spend_cents,
                valid_from,
                valid_until,
            },
            NewCouponTemplateBody::Percent {
                code,
                percent_off,
                max_discount_cents,
                min_spend_cents,
                valid_from,
                valid_until,
            } => CouponTemplateInput {
                code,
                kind: "percent".to_owned(),
                amount_off_cents: None,
                percent_off: Some(percent_off),
                max_discount_cents,
                min_spend_cents,
                valid_from,
                valid_until,
            },
        }
    }
}

/// A coupon the user holds: the grant with its template's fields.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = HeldCoupon)]
pub struct HeldCouponBody {
    pub grant_id: i64,
    pub status: String,
    #[serde(flatten)]
    pub template: CouponTemplateBody,
}

impl From<HeldCoupon> for HeldCouponBody {
    fn from(c: HeldCoupon) -> Self {
        Self {
            grant_id: c.grant_id,
            status: c.status.as_str().to_owned(),
            template: c.template.into(),
        }
    }
}
