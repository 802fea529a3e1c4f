//! order-core: the domain of seckill and the adapters both binaries share.
//!
//! The gateway (HTTP hot path) and the consumers (order writer, sweepers, post-payment workers)
//! both depend on this crate and never on each other. Its layers, lowest first:
//!
//! - [`domain`]: pure types and rules (ids, lifecycle, pricing, promotions, catalog, events);
//!   no I/O.
//! - adapters: [`postgres`] (schema and every query), [`redis`] (stock scripts, clock, pace,
//!   worker leases) and [`bus`] (Pulsar); each speaks the domain's types.
//! - [`app`]: the use cases that span stores (reconcile and repair, recovery after Redis
//!   lost writes, retiring ended sales).
//! - [`runtime`]: settings, telemetry, metrics, readiness, shutdown, supervision.
//!
//! Architecture invariant: nothing here knows about HTTP or JSON request bodies; request
//! parsing, response shapes, OpenAPI schemas and status codes belong to the gateway.

pub mod app;
pub mod bus;
pub mod domain;
pub mod postgres;
pub mod redis;
pub mod runtime;

#[cfg(feature = "test-support")]
pub mod test_support;
