//! Use cases that span stores: each module takes parsed domain types, drives the adapters
//! (`postgres`, `redis`, `bus`) and returns a typed outcome. The binaries call these; they do
//! not compose the adapters themselves for the same work.
//!
//! - [`catalog`]: SKUs and coupon templates for operations staff.
//! - [`checkout`]: normal checkout (price, place, page, pay, cancel, refund, coupons).
//! - [`lifecycle`]: an order's lifecycle change committed, then its status marker moved.
//! - [`order_status`]: an order's status as its owner sees it, from Redis, the database or
//!   the archive.
//! - [`payment_expiry`]: unpaid orders past their deadline cancelled, their stock returned,
//!   their events published.
//! - [`persist`]: accepted seckill orders inserted once each, then their status markers.
//! - [`post_payment`]: what each post-payment job does with one order event, at most once.
//! - [`reconcile`]: a sale's Redis compared with its orders in the database, and repaired.
//! - [`recovery`]: a sale whose Redis node lost writes, rebuilt from the broker and the
//!   database without an operator.
//! - [`sale_admin`]: operators create, edit, pause, restock, warm up, delete and repair sales.
//! - [`seckill`]: placing a seckill order (reserve, confirm, publish) and a retry's way back
//!   to its order.
//! - [`sweep`]: reservations that never reached the writer republished, persisted ones
//!   cleared from the pending sets.
//! - [`retire`]: an ended sale's keys leaving Redis once nothing of it is in flight.

pub mod catalog;
pub mod checkout;
pub mod lifecycle;
pub mod order_status;
pub mod payment_expiry;
pub mod persist;
pub mod post_payment;
pub mod reconcile;
pub mod recovery;
pub mod retire;
pub mod sale_admin;
pub mod seckill;
pub mod sweep;
