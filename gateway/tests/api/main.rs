//! Gateway integration tests, one binary: each test spawns the application on port 0 against
//! the real stack and drives it over HTTP.

mod abuse;
mod admin;
mod archive;
mod binary;
mod checkout;
mod dashboard;
mod errors;
mod failover;
mod health;
mod helpers;
mod input;
mod metrics;
mod openapi;
mod publish_failure;
mod readiness;
mod sale_tokens;
mod scale_out;
mod seckill;
mod sharding;
mod shedding;
mod stock_conservation;
