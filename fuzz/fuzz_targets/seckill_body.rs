//! The seckill request body: any bytes either parse into a request that validates or not,
//! never a panic.
#![no_main]

use gateway::routes::seckill::{parse_request_id, Quantity, SeckillOrderRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<SeckillOrderRequest>(data) {
        let _ = Quantity::parse(request.quantity);
        if let Ok(id) = parse_request_id(request.request_id.clone()) {
            assert_eq!(id, request.request_id);
        }
    }
});
