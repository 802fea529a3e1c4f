//! The order pipeline end to end: a real gateway and real consumers against the real Redis,
//! PostgreSQL and pulsar-lite, including crashes of each part.

mod admin_actions;
mod bench;
mod e2e;
mod faults;
mod helpers;
mod order_polls;
mod pacing;
mod poison;
mod post_payment;
mod retire;
mod scale_out;
mod timeouts;
