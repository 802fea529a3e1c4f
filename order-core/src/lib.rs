//! order-core: the domain of seckill and the adapters both binaries share.
//!
//! The gateway (HTTP hot path) and the consumers (order writer, sweepers, post-payment workers)
//! both depend on this crate and never on each other. It holds the layered configuration, the
//! connections to PostgreSQL, Redis and Pulsar with their readiness probes, the graceful
//! shutdown signal, and the database schema (`MIGRATOR`).
//!
//! Architecture invariant: nothing here knows about HTTP; request parsing and status codes
//! belong to the gateway.

pub mod bus;
pub mod catalog;
pub mod checkout;
pub mod db;
pub mod events;
pub mod global_pace;
pub mod ids;
pub mod lifecycle;
pub mod metrics;
pub mod orders;
pub mod outbox;
pub mod pacing;
pub mod persist;
pub mod pricing;
pub mod processed;
pub mod promotion;
pub mod readiness;
pub mod reconcile;
pub mod redis_clock;
pub mod redis_store;
pub mod settings;
pub mod shutdown;
pub mod stock;
pub mod supervisor;
pub mod telemetry;
pub mod transient;
pub mod worker_lease;

#[cfg(feature = "test-support")]
pub mod test_support;
