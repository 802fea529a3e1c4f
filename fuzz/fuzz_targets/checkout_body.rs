//! The checkout body and its pricing: any bytes that parse are priced or refused, never a
//! panic, an overflow or a negative total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use order_core::postgres::checkout::CheckoutInput;
use order_core::domain::pricing::{price, PricedSku};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = serde_json::from_slice::<CheckoutInput>(data) else {
        return;
    };
    // Every item at a price derived from its id, so the fuzzer steers prices too.
    let items: Vec<(PricedSku, i64)> = input
        .items
        .iter()
        .map(|item| {
            let unit = item.sku_id.bytes().fold(0i64, |acc, b| acc.wrapping_mul(31).wrapping_add(i64::from(b)));
            (
                PricedSku {
                    sku_id: item.sku_id.clone(),
                    title: String::new(),
                    unit_price_cents: unit.rem_euclid(10_000_000),
                },
                item.quantity,
            )
        })
        .collect();
    if let Ok(breakdown) = price(&items, None, input.shipping.method, chrono::Utc::now()) {
        assert!(breakdown.total_cents >= 0);
        assert!(breakdown.discount_cents <= breakdown.subtotal_cents);
    }
});
