//! Pulsar: the client both binaries use for the `seckill-orders` and `order-events` topics.
//!
//! Retries are bounded so that an operation against a dead broker fails within seconds
//! instead of hanging; the caller decides whether to retry (the client reconnects on the
//! next operation).

use std::time::Duration;

use pulsar::{ConnectionRetryOptions, OperationRetryOptions, Pulsar, TokioExecutor};

use crate::settings::PulsarSettings;

pub type PulsarClient = Pulsar<TokioExecutor>;

pub async fn connect(settings: &PulsarSettings) -> Result<PulsarClient, pulsar::Error> {
    let operation_timeout = Duration::from_millis(settings.operation_timeout_ms);
    Pulsar::builder(settings.url.clone(), TokioExecutor)
        .with_connection_retry_options(ConnectionRetryOptions {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            max_retries: 5,
            connection_timeout: operation_timeout,
            keep_alive: Duration::from_secs(30),
            ..Default::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout,
            retry_delay: Duration::from_millis(200),
            max_retries: Some(5),
        })
        .build()
        .await
}
