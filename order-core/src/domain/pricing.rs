//! Checkout pricing in integer cents: item subtotal, coupon discount, shipping, total.
//!
//! Rules, in order:
//! 1. Subtotal = Σ unit price × quantity.
//! 2. A coupon applies only inside its validity window and when the subtotal reaches its
//!    minimum spend. Fixed: its amount, at most the subtotal. Percent: subtotal × percent /
//!    100 rounded down to a whole cent (never more than the stated percent), then capped by
//!    the coupon's maximum discount.
//! 3. Shipping: standard 8.00, free when subtotal − discount ≥ 99.00; express 20.00.
//! 4. Total = subtotal − discount + shipping (never negative).

use chrono::{DateTime, Utc};

pub const STANDARD_SHIPPING_CENTS: i64 = 800;
pub const FREE_SHIPPING_FROM_CENTS: i64 = 9_900;
pub const EXPRESS_SHIPPING_CENTS: i64 = 2_000;
pub const MAX_LINES: usize = 20;
pub const MAX_QUANTITY: i64 = 99;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShippingMethod {
    Standard,
    Express,
}

impl ShippingMethod {
    /// The name stored with an order.
    pub fn as_str(self) -> &'static str {
        match self {
            ShippingMethod::Standard => "standard",
            ShippingMethod::Express => "express",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedSku {
    pub sku_id: String,
    pub title: String,
    pub unit_price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponRule {
    Fixed {
        amount_off_cents: i64,
    },
    Percent {
        percent_off: i64,
        max_discount_cents: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupon {
    pub rule: CouponRule,
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku_id: String,
    pub title: String,
    pub unit_price_cents: i64,
    pub quantity: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    pub lines: Vec<Line>,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub shipping_cents: i64,
    pub total_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("an order has 1 to {MAX_LINES} lines")]
    InvalidLines,
    #[error("quantity must be between 1 and {MAX_QUANTITY}")]
    InvalidQuantity,
    #[error("the same SKU appears twice")]
    DuplicateItem,
    #[error("the coupon is not valid yet")]
    CouponNotYetValid,
    #[error("the coupon has expired")]
    CouponExpired,
    #[error("the order does not reach the coupon's minimum spend of {0} cents")]
    CouponMinSpendNotMet(i64),
    #[error("amount too large")]
    Overflow,
}

/// How the client should read a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request itself is wrong.
    Invalid,
    /// The request is fine, the state of stock, coupon or order refuses it.
    Conflict,
}

impl PricingError {
    /// Coupon rules the basket or the date does not meet are a conflict with the coupon's
    /// state; the rest are a malformed basket.
    pub fn rejection(&self) -> Rejection {
        match self {
            PricingError::CouponNotYetValid
            | PricingError::CouponExpired
            | PricingError::CouponMinSpendNotMet(_) => Rejection::Conflict,
            PricingError::InvalidLines
            | PricingError::InvalidQuantity
            | PricingError::DuplicateItem
            | PricingError::Overflow => Rejection::Invalid,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            PricingError::InvalidLines => "invalid_items",
            PricingError::InvalidQuantity => "invalid_quantity",
            PricingError::DuplicateItem => "duplicate_item",
            PricingError::CouponNotYetValid => "coupon_not_yet_valid",
            PricingError::CouponExpired => "coupon_expired",
            PricingError::CouponMinSpendNotMet(_) => "coupon_min_spend_not_met",
            PricingError::Overflow => "invalid_items",
        }
    }
}

/// Price `items` (SKU with quantity) with an optional coupon and a shipping method.
pub fn price(
    items: &[(PricedSku, i64)],
    coupon: Option<&Coupon>,
    shipping: ShippingMethod,
    now: DateTime<Utc>,
) -> Result<Breakdown, PricingError> {
    if items.is_empty() || items.len() > MAX_LINES {
        return Err(PricingError::InvalidLines);
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut subtotal: i64 = 0;
    for (sku, quantity) in items {
        if !(1..=MAX_QUANTITY).contains(quantity) {
            return Err(PricingError::InvalidQuantity);
        }
        if lines.iter().any(|l: &Line| l.sku_id == sku.sku_id) {
            return Err(PricingError::DuplicateItem);
        }
        let line_total = sku
            .unit_price_cents
            .checked_mul(*quantity)
            .ok_or(PricingError::Overflow)?;
        subtotal = subtotal.checked_add(line_total).ok_or(PricingError::Overflow)?;
        lines.push(Line {
            sku_id: sku.sku_id.clone(),
            title: sku.title.clone(),
            unit_price_cents: sku.unit_price_cents,
            quantity: *quantity,
            line_total_cents: line_total,
        });
    }
    let discount = match coupon {
        None => 0,
        Some(c) => discount(c, subtotal, now)?,
    };
    let after_discount = subtotal - discount;
    let shipping_cents = match shipping {
        ShippingMethod::Standard if after_discount >= FREE_SHIPPING_FROM_CENTS => 0,
        ShippingMethod::Standard => STANDARD_SHIPPING_CENTS,
        ShippingMethod::Express => EXPRESS_SHIPPING_CENTS,
    };
    Ok(Breakdown {
        lines,
        subtotal_cents: subtotal,
        discount_cents: discount,
        shipping_cents,
        total_cents: (after_discount + shipping_cents).max(0),
    })
}

fn discount(coupon: &Coupon, subtotal: i64, now: DateTime<Utc>) -> Result<i64, PricingError> {
    if now < coupon.valid_from {
        return Err(PricingError::CouponNotYetValid);
    }
    if now >= coupon.valid_until {
        return Err(PricingError::CouponExpired);
    }
    if subtotal < coupon.min_spend_cents {
        return Err(PricingError::CouponMinSpendNotMet(coupon.min_spend_cents));
    }
    Ok(match coupon.rule {
        CouponRule::Fixed { amount_off_cents } => amount_off_cents.min(subtotal),
        CouponRule::Percent {
            percent_off,
            max_discount_cents,
        } => {
            let raw = (i128::from(subtotal) * i128::from(percent_off) / 100) as i64;
            max_discount_cents.map_or(raw, |cap| raw.min(cap)).min(subtotal)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn sku(id: &str, price: i64) -> PricedSku {
        PricedSku {
            sku_id: id.into(),
            title: id.into(),
            unit_price_cents: price,
        }
    }

    fn coupon(rule: CouponRule, min_spend: i64) -> Coupon {
        let now = Utc::now();
        Coupon {
            rule,
            min_spend_cents: min_spend,
            valid_from: now - Duration::days(1),
            valid_until: now + Duration::days(1),
        }
    }

    fn total(items: &[(PricedSku, i64)], c: Option<&Coupon>, s: ShippingMethod) -> Breakdown {
        price(items, c, s, Utc::now()).expect("priced")
    }

    #[test]
    fn subtotal_and_standard_shipping_below_the_free_threshold() {
        let b = total(
            &[(sku("a", 1999), 2), (sku("b", 500), 1)],
            None,
            ShippingMethod::Standard,
        );
        assert_eq!(
            (
                b.subtotal_cents,
                b.discount_cents,
                b.shipping_cents,
                b.total_cents
            ),
            (4498, 0, 800, 5298)
        );
        assert_eq!(b.lines[0].line_total_cents, 3998);
    }

    #[test]
    fn free_standard_shipping_is_judged_after_the_discount() {
        let at_threshold = total(&[(sku("a", 9900), 1)], None, ShippingMethod::Standard);
        assert_eq!(at_threshold.shipping_cents, 0);
        let fixed = coupon(CouponRule::Fixed { amount_off_cents: 1 }, 0);
        let below = total(&[(sku("a", 9900), 1)], Some(&fixed), ShippingMethod::Standard);
        assert_eq!(
            (below.discount_cents, below.shipping_cents, below.total_cents),
            (1, 800, 10_699)
        );
        let express = total(&[(sku("a", 20_000), 1)], None, ShippingMethod::Express);
        assert_eq!(
            express.shipping_cents, EXPRESS_SHIPPING_CENTS,
            "express is never free"
        );
    }

    #[test]
    fn a_fixed_coupon_never_discounts_more_than_the_subtotal() {
        let c = coupon(
            CouponRule::Fixed {
                amount_off_cents: 5000,
            },
            0,
        );
        let b = total(&[(sku("a", 3000), 1)], Some(&c), ShippingMethod::Standard);
        assert_eq!((b.discount_cents, b.total_cents), (3000, 800));
    }

    #[test]
    fn percent_discounts_round_down_to_whole_cents() {
        let c = coupon(
            CouponRule::Percent {
                percent_off: 15,
                max_discount_cents: None,
            },
            0,
        );
        // 15% of 1999 = 299.85 → 299
        let b = total(&[(sku("a", 1999), 1)], Some(&c), ShippingMethod::Standard);
        assert_eq!(b.discount_cents, 299);
        // 33% of 1 = 0.33 → 0
        let tiny = total(&[(sku("a", 1), 1)], Some(&c), ShippingMethod::Standard);
        assert_eq!(tiny.discount_cents, 0);
        let all = coupon(
            CouponRule::Percent {
                percent_off: 100,
                max_discount_cents: None,
            },
            0,
        );
        assert_eq!(
            total(&[(sku("a", 1234), 1)], Some(&all), ShippingMethod::Standard).discount_cents,
            1234
        );
    }

    #[test]
    fn percent_discounts_are_capped() {
        let c = coupon(
            CouponRule::Percent {
                percent_off: 50,
                max_discount_cents: Some(2000),
            },
            0,
        );
        assert_eq!(
            total(&[(sku("a", 10_000), 1)], Some(&c), ShippingMethod::Standard).discount_cents,
            2000
        );
        assert_eq!(
            total(&[(sku("a", 3000), 1)], Some(&c), ShippingMethod::Standard).discount_cents,
            1500
        );
    }

    #[test]
    fn minimum_spend_and_validity_window_are_enforced() {
        let c = coupon(
            CouponRule::Fixed {
                amount_off_cents: 100,
            },
            5000,
        );
        assert_eq!(
            price(
                &[(sku("a", 4999), 1)],
                Some(&c),
                ShippingMethod::Standard,
                Utc::now()
            ),
            Err(PricingError::CouponMinSpendNotMet(5000))
        );
        assert!(price(
            &[(sku("a", 5000), 1)],
            Some(&c),
            ShippingMethod::Standard,
            Utc::now()
        )
        .is_ok());
        assert_eq!(
            price(
                &[(sku("a", 5000), 1)],
                Some(&c),
                ShippingMethod::Standard,
                c.valid_until
            ),
            Err(PricingError::CouponExpired),
            "the end is exclusive"
        );
        assert_eq!(
            price(
                &[(sku("a", 5000), 1)],
                Some(&c),
                ShippingMethod::Standard,
                c.valid_from - Duration::seconds(1)
            ),
            Err(PricingError::CouponNotYetValid)
        );
    }

    #[test]
    fn malformed_baskets_are_refused() {
        let s = ShippingMethod::Standard;
        assert_eq!(price(&[], None, s, Utc::now()), Err(PricingError::InvalidLines));
        assert_eq!(
            price(&[(sku("a", 1), 0)], None, s, Utc::now()),
            Err(PricingError::InvalidQuantity)
        );
        assert_eq!(
            price(&[(sku("a", 1), 100)], None, s, Utc::now()),
            Err(PricingError::InvalidQuantity)
        );
        assert_eq!(
            price(&[(sku("a", 1), 1), (sku("a", 1), 2)], None, s, Utc::now()),
            Err(PricingError::DuplicateItem)
        );
        assert_eq!(
            price(&[(sku("a", i64::MAX), 2)], None, s, Utc::now()),
            Err(PricingError::Overflow)
        );
        let many: Vec<_> = (0..=MAX_LINES).map(|i| (sku(&i.to_string(), 1), 1)).collect();
        assert_eq!(price(&many, None, s, Utc::now()), Err(PricingError::InvalidLines));
    }
}
