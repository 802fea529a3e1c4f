//! Use cases that span stores: each module takes parsed domain types, drives the adapters
//! (`postgres`, `redis`, `bus`) and returns a typed outcome. The binaries call these; they do
//! not compose the adapters themselves for the same work.
//!
//! - [`reconcile`]: a sale's Redis compared with its orders in the database, and repaired.
//! - [`recovery`]: a sale whose Redis node lost writes, rebuilt from the broker and the
//!   database without an operator.
//! - [`retire`]: an ended sale's keys leaving Redis once nothing of it is in flight.

pub mod reconcile;
pub mod recovery;
pub mod retire;
