//! Request parsing over generated input: the seckill body either parses or is refused, never
//! panics; a request id is accepted exactly when it is 1–64 characters of `A-Z a-z 0-9 . _ -`;
//! a quantity exactly when it is 1–`MAX_QUANTITY`.

use gateway::routes::seckill::SeckillOrderRequest;
use order_core::domain::ids::RequestId;
use order_core::domain::ids::{Quantity, MAX_QUANTITY};
use proptest::prelude::*;

fn allowed(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
}

proptest! {
    #[test]
    fn request_ids_are_accepted_exactly_when_well_formed(id in "\\PC{0,80}|[A-Za-z0-9._-]{0,70}") {
        prop_assert_eq!(RequestId::parse(id.clone()).is_ok(), allowed(&id));
        if let Ok(parsed) = RequestId::parse(id.clone()) {
            prop_assert_eq!(parsed.into_string(), id);
        }
    }

    #[test]
    fn quantities_are_accepted_exactly_in_range(q in any::<i64>()) {
        prop_assert_eq!(Quantity::parse(q).is_ok(), (1..=MAX_QUANTITY).contains(&q));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_body_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<SeckillOrderRequest>(&bytes);
    }

    #[test]
    fn well_formed_bodies_round_trip(q in any::<i64>(), id in "[A-Za-z0-9._-]{1,64}") {
        let body = serde_json::json!({ "quantity": q, "request_id": id }).to_string();
        let parsed: SeckillOrderRequest = serde_json::from_str(&body).expect("a well-formed body parses");
        prop_assert_eq!(parsed.quantity, q);
        prop_assert_eq!(parsed.request_id, id);
    }
}
