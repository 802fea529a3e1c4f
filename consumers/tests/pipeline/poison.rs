//! Poison messages go to the dead-letter topic after the configured redeliveries and never
//! block the orders behind them.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use order_core::test_support::{local_source, poll_until};
use pulsar::consumer::Consumer;
use pulsar::{SubType, TokioExecutor};

use crate::helpers::*;

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_and_valid_orders_still_land() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let source = consumers_source(&app, local_source()).with_var("APP_WRITER__MAX_REDELIVERIES", "2");
    let settings: consumers::settings::Settings = source.load().expect("settings");
    let client = order_core::bus::connect(&settings.pulsar).await.expect("pulsar");
    let mut dead_letters: Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(settings.pulsar.topic(&settings.writer.dead_letter_topic))
        .with_subscription("test")
        .with_subscription_type(SubType::Shared)
        .build()
        .await
        .expect("subscribe to the dead-letter topic");

    let poison = order_core::bus::JsonProducer::new(
        &client,
        settings.pulsar.topic(&settings.pulsar.seckill_orders_topic),
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("producer");
    poison
        .publish_raw(b"{this is not an order".to_vec())
        .await
        .expect("publish poison");

    let consumers = spawn_consumers(source).await;
    let promotion_id = create_running(&app, 5).await;
    let accepted = flash_sale(&app, promotion_id, 5).await;
    let pool = app.pool();
    let rows = wait_for_rows(&pool, promotion_id, 5, Duration::from_secs(30)).await;
    assert_exactly(&rows, &accepted, 1999);

    let dead = tokio::time::timeout(Duration::from_secs(30), dead_letters.next())
        .await
        .expect("the poison message reaches the dead-letter topic")
        .expect("stream")
        .expect("message");
    assert_eq!(dead.payload.data, b"{this is not an order");
    poll_until(Duration::from_secs(5), "the poison counter", || async {
        (consumers.stats.report().get("poison_messages") >= 2).then_some(())
    })
    .await;
    consumers.stop().await;
}
