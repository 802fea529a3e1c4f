//! The domain: what an order, a sale, a price and an event are, and the rules between them.
//!
//! Architecture invariant: nothing here does I/O or names a storage, transport or HTTP
//! crate (no sqlx, redis, pulsar, utoipa). Values are parsed once into types that cannot hold
//! an invalid value (`RequestId`, `Quantity`, …); the adapters read rows into them and the
//! gateway maps its request bodies onto them. Events are the one serialised shape here: their
//! JSON is the contract of the event stream.

pub mod accepted_order;
pub mod catalog;
pub mod checkout;
pub mod events;
pub mod ids;
pub mod lifecycle;
pub mod order_months;
pub mod orders;
pub mod pricing;
pub mod promotion;
pub mod reconcile;
pub mod reservation;
pub mod sale_access;
pub mod shards;
