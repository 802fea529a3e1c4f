//! seckill consumers: the background side of the system.
//!
//! They take work off Pulsar and the database at the pace the database sustains: the order
//! writer, the recovery sweeper, the payment-timeout canceller and the post-payment workers.
//! The process also serves `/healthz` and `/readyz` for the orchestrator.

pub mod settings;
pub mod startup;
