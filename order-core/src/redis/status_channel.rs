//! Following the order status channel: every status marker change (`order_persisted.lua`,
//! `order_status.lua`) is published with the order id as message. A gateway holds one
//! subscription for all its long polls.
//!
//! Where: on a single node, that node; on a cluster, any node (a cluster forwards every
//! publish to all of them), another one after a failure; under Sentinel, the primary the
//! Sentinels name at each (re)subscription (a primary's publishes also reach its replicas,
//! so a subscription that outlives a failover on a demoted node still hears them until it
//! breaks).

use std::time::Duration;

use futures::StreamExt;

use crate::domain::ids::OrderId;
use crate::redis::stock::ORDER_STATUS_CHANNEL;
use crate::runtime::settings::{RedisSettings, RedisShape};
use crate::runtime::shutdown::ShutdownListener;

/// Call `changed` with each order id published until shutdown, and `subscribed` after each
/// (re)subscription (changes published while unsubscribed were missed). Reconnects with
/// backoff; never ends on its own.
pub async fn follow(
    settings: &RedisSettings,
    mut changed: impl FnMut(OrderId),
    mut subscribed: impl FnMut(),
    mut shutdown: ShutdownListener,
) {
    let mut delay = Duration::from_millis(100);
    let urls = settings.subscription_urls();
    for attempt in 0usize.. {
        let url = &urls[attempt % urls.len()];
        let connect = async {
            let client = match settings.shape() {
                RedisShape::Sentinel => primary_of(settings).await?,
                _ => redis::Client::open(url.as_str())?,
            };
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(ORDER_STATUS_CHANNEL).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let connected = tokio::select! {
            _ = shutdown.recv() => return,
            connected = connect => connected,
        };
        match connected {
            Ok(pubsub) => {
                delay = Duration::from_millis(100);
                subscribed();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.recv() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                let id = message.get_payload::<String>().ok().and_then(|raw| raw.parse().ok());
                                if let Some(id) = id {
                                    changed(id);
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::warn!("order status subscription lost; resubscribing");
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "order status subscription failed"),
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// A client of the primary the Sentinels name now.
async fn primary_of(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    use secrecy::ExposeSecret;
    let data = settings.url.expose_secret().into_connection_info()?;
    let node = redis::sentinel::SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(data.redis_settings().clone());
    let mut sentinel = redis::sentinel::SentinelClient::build(
        settings.sentinel_urls(),
        settings.sentinel_master.clone(),
        Some(node),
        redis::sentinel::SentinelServerType::Master,
    )?;
    let deadline = Duration::from_millis(settings.connect_timeout_ms + settings.response_timeout_ms);
    tokio::time::timeout(deadline, sentinel.async_get_client())
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no primary from the Sentinels in time",
            )))
        })
}
