//! Redis adapter: the connection every request shares, the sale's stock (Lua scripts), the
//! shared clock, the writers' shared pace and the gateways' worker-id leases.
//!
//! One multiplexed `ConnectionManager` per process: concurrent commands are pipelined on one
//! socket, and it reconnects by itself after Redis restarts.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::runtime::settings::RedisSettings;

pub mod clock;
pub mod deployment;
pub mod global_pace;
pub mod status_channel;
pub mod stock;
pub mod worker_lease;

pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)))
        .set_response_timeout(Some(Duration::from_millis(settings.response_timeout_ms)))
        .set_number_of_retries(2);
    client.get_connection_manager_with_config(config).await
}
