//! Following the order status channel: every status marker change (`order_persisted.lua`,
//! `order_status.lua`) is published with the order id as message. A gateway holds one
//! subscription for all its long polls.

use std::time::Duration;

use futures::StreamExt;

use crate::domain::ids::OrderId;
use crate::redis::stock::ORDER_STATUS_CHANNEL;
use crate::runtime::settings::RedisSettings;
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
            let client = redis::Client::open(url.as_str())?;
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
