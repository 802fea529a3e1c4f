//! The seckill gateway: the HTTP front door for shoppers' apps and operations staff.
//!
//! `main.rs` only loads settings and calls [`startup::Application`]; tests build the same
//! application on port 0 and drive it over HTTP.

pub mod routes;
pub mod settings;
pub mod startup;
