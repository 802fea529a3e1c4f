//! The seckill gateway: the HTTP front door for shoppers' apps and operations staff.
//!
//! `main.rs` only loads settings and calls [`startup::Application`]; tests build the same
//! application on port 0 and drive it over HTTP.

pub mod auth;
pub mod error;
pub mod error_codes;
pub mod extract;
pub mod openapi;
pub mod order_transitions;
pub mod order_watch;
pub mod promotion_cache;
pub mod rate_limit;
pub mod request_id;
pub mod responses;
pub mod routes;
pub mod sale_counters;
pub mod sale_tokens;
pub mod serve;
pub mod settings;
pub mod shedding;
pub mod startup;
pub mod state;
pub mod wire;

#[cfg(feature = "test-support")]
pub mod test_support;
