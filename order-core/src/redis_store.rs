//! Redis: the connection every request shares.
//!
//! One multiplexed `ConnectionManager` per process: concurrent commands are pipelined on one
//! socket, and it reconnects by itself after Redis restarts.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::settings::RedisSettings;

pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .set_number_of_retries(2);
    client.get_connection_manager_with_config(config).await
}
