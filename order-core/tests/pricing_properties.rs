//! Pricing properties over generated baskets and coupons: money never appears or vanishes,
//! a discount never exceeds what the coupon states or the subtotal, totals are never
//! negative, and invalid quantities are refused.

use chrono::{Duration, Utc};
use order_core::domain::pricing::{
    price, Coupon, CouponRule, PricedSku, PricingError, ShippingMethod, EXPRESS_SHIPPING_CENTS,
    FREE_SHIPPING_FROM_CENTS, MAX_LINES, MAX_QUANTITY, STANDARD_SHIPPING_CENTS,
};
use proptest::prelude::*;

fn basket() -> impl Strategy<Value = Vec<(PricedSku, i64)>> {
    prop::collection::vec((0i64..=1_000_000, 1..=MAX_QUANTITY), 1..=MAX_LINES).prop_map(|lines| {
        lines
            .into_iter()
            .enumerate()
            .map(|(i, (unit, quantity))| {
                let sku = PricedSku {
                    sku_id: format!("sku-{i}"),
                    title: format!("item {i}"),
                    unit_price_cents: unit,
                };
                (sku, quantity)
            })
            .collect()
    })
}

fn rule() -> impl Strategy<Value = CouponRule> {
    prop_oneof![
        (0i64..=5_000_000).prop_map(|amount_off_cents| CouponRule::Fixed { amount_off_cents }),
        (1i64..=100, prop::option::of(0i64..=1_000_000)).prop_map(|(percent_off, max_discount_cents)| {
            CouponRule::Percent {
                percent_off,
                max_discount_cents,
            }
        }),
    ]
}

fn shipping() -> impl Strategy<Value = ShippingMethod> {
    prop_oneof![Just(ShippingMethod::Standard), Just(ShippingMethod::Express)]
}

proptest! {
    #[test]
    fn totals_add_up_and_discounts_stay_within_what_the_coupon_states(
        items in basket(),
        rule in rule(),
        min_spend in 0i64..=200_000,
        method in shipping(),
    ) {
        let now = Utc::now();
        let coupon = Coupon {
            rule: rule.clone(),
            min_spend_cents: min_spend,
            valid_from: now - Duration::hours(1),
            valid_until: now + Duration::hours(1),
        };
        let subtotal: i64 = items.iter().map(|(s, q)| s.unit_price_cents * q).sum();
        match price(&items, Some(&coupon), method, now) {
            Err(PricingError::CouponMinSpendNotMet(m)) => prop_assert!(subtotal < m),
            Err(e) => prop_assert!(false, "unexpected {e:?}"),
            Ok(b) => {
                prop_assert!(subtotal >= min_spend);
                prop_assert_eq!(b.subtotal_cents, subtotal);
                prop_assert_eq!(b.lines.iter().map(|l| l.line_total_cents).sum::<i64>(), subtotal);
                prop_assert!(0 <= b.discount_cents && b.discount_cents <= subtotal);
                match rule {
                    CouponRule::Fixed { amount_off_cents } => {
                        prop_assert_eq!(b.discount_cents, amount_off_cents.min(subtotal));
                    }
                    CouponRule::Percent { percent_off, max_discount_cents } => {
                        // Rounded down: never more than the stated percent, less by under a cent.
                        let exact = i128::from(subtotal) * i128::from(percent_off);
                        prop_assert!(i128::from(b.discount_cents) * 100 <= exact);
                        if max_discount_cents.is_none_or(|cap| cap >= subtotal) {
                            prop_assert!(exact - i128::from(b.discount_cents) * 100 < 100);
                        } else if let Some(cap) = max_discount_cents {
                            prop_assert!(b.discount_cents <= cap);
                        }
                    }
                }
                let expected_shipping = match method {
                    ShippingMethod::Standard if subtotal - b.discount_cents >= FREE_SHIPPING_FROM_CENTS => 0,
                    ShippingMethod::Standard => STANDARD_SHIPPING_CENTS,
                    ShippingMethod::Express => EXPRESS_SHIPPING_CENTS,
                };
                prop_assert_eq!(b.shipping_cents, expected_shipping);
                prop_assert_eq!(b.total_cents, subtotal - b.discount_cents + b.shipping_cents);
                prop_assert!(b.total_cents >= 0);
            }
        }
    }

    #[test]
    fn quantities_outside_the_allowed_range_are_refused(
        mut items in basket(),
        bad in prop_oneof![i64::MIN..=0, (MAX_QUANTITY + 1)..=i64::MAX],
        at in any::<prop::sample::Index>(),
    ) {
        let i = at.index(items.len());
        items[i].1 = bad;
        prop_assert_eq!(
            price(&items, None, ShippingMethod::Standard, Utc::now()).map(|b| b.total_cents),
            Err(PricingError::InvalidQuantity)
        );
    }
}
