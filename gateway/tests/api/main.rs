//! Gateway integration tests, one binary: each test spawns the application on port 0 against
//! the real stack and drives it over HTTP.

mod binary;
mod health;
mod helpers;
mod readiness;
mod seckill;
