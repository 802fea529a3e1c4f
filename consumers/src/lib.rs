//! seckill consumers: the background side of the system.
//!
//! They take work off Pulsar and the database at the pace the database sustains: the order
//! writer, the recovery sweeper, the Redis recovery (sales rebuilt after their Redis node lost
//! writes), the payment-timeout canceller (with its stock-return and outbox relays), and the
//! order-data task (partitions ahead, archival, retention). The process also serves
//! `/healthz`, `/readyz` and `/status`.

pub mod broker_backlog;
pub mod canceller;
pub mod order_data;
pub mod order_writer;
pub mod periodic;
pub mod post_payment;
pub mod redis_recovery;
pub mod settings;
pub mod startup;
pub mod stats;
pub mod subscription;
pub mod sweeper;
