//! The load bench a team runs before a big sale, and the measurements behind our claims.
//!
//! It drives a deployment only over HTTP, like the apps do (admin API to set a sale up,
//! user JWTs, open-loop load), then checks the design's invariants against PostgreSQL and
//! Redis. Every figure is reported next to a baseline measured in the same run: the old
//! one-transaction-per-order architecture (`baseline`) and the machine's ceiling (`ceiling`).

pub mod baseline;
pub mod cpu;
pub mod db_insert;
pub mod demo;
pub mod faults;
pub mod flash_sale;
pub mod loadgen;
pub mod order_data;
pub mod order_polls;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod redis_conn;
pub mod report;
pub mod sale_tokens;
pub mod scenarios;
pub mod seed_day;
pub mod svg;
pub mod target;
pub mod verify;
