//! When the broker does not confirm an order, the order is still promised: its unit stays
//! reserved, the client gets 503 `order_unconfirmed`, and the same request id (on this or
//! another gateway) gets that same order once the broker answers again.

use std::time::Duration;

use chrono::Duration as Span;
use order_core::test_support::{poll_until, PrivateStack};

use crate::helpers::{error_code, generous_limits, TestApp};
use serde_json::Value;

#[tokio::test]
async fn a_failed_publish_keeps_the_order_and_a_retry_confirms_it() {
    let stack = PrivateStack::start().expect("private stack");
    let app = TestApp::spawn_with(
        generous_limits(stack.source())
            .with_var("APP_SECKILL__PUBLISH_TIMEOUT_MS", "1500")
            .with_var("APP_PULSAR__OPERATION_TIMEOUT_MS", "1000"),
    )
    .await;
    let promotion_id = app.create_promotion(3, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, _) = app.place(promotion_id, 1, "before", 1).await;
    assert_eq!(status, 202);

    stack.stop_part("pulsar").expect("stop the broker");
    let (status, body) = app.place(promotion_id, 2, "during", 1).await;
    assert_eq!((status, error_code(&body)), (503, "order_unconfirmed"), "{body}");

    // Nothing was given back: the order is promised and will be persisted.
    let stock = app.stock_store().await;
    assert_eq!(
        stock
            .reservation_count(order_core::domain::shards::SaleShards::single(promotion_id))
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        stock
            .units_held(
                order_core::domain::shards::SaleShards::single(promotion_id),
                order_core::domain::ids::UserId::parse(2).expect("a user")
            )
            .await
            .expect("held"),
        1
    );
    let live = stock
        .live_stock(&[order_core::domain::shards::SaleShards::single(promotion_id)])
        .await
        .expect("live")[0]
        .expect("loaded");
    assert_eq!(live.remaining, 1);

    stack.start_part("pulsar").expect("restart the broker");
    let order = poll_until(Duration::from_secs(60), "the retry to be confirmed", || async {
        let (status, body) = app.place(promotion_id, 2, "during", 1).await;
        (status == 202).then_some(body)
    })
    .await;
    let order_id: order_core::domain::ids::OrderId =
        order["order_id"].as_str().expect("id").parse().expect("numeric");
    assert_eq!(
        stock
            .reservation_count(order_core::domain::shards::SaleShards::single(promotion_id))
            .await
            .expect("count"),
        2,
        "the retry got the held order, not a second one"
    );

    // A copy of that order is on the topic for the writer.
    app.wait_for_order_on_topic(order_id).await;
}

#[tokio::test]
async fn a_sold_out_sale_is_refused_locally_even_with_redis_down() {
    sold_out_is_refused_locally(1).await;
}

/// The same with the sale's stock spread over three shards (one unit each): the sale is
/// closed only once every shard is, and then refused without Redis like any other.
#[tokio::test]
async fn a_sold_out_sale_on_three_shards_is_refused_locally_even_with_redis_down() {
    sold_out_is_refused_locally(3).await;
}

async fn sold_out_is_refused_locally(shards: i64) {
    let stack = PrivateStack::start().expect("private stack");
    let app = TestApp::spawn_with(generous_limits(stack.source())).await;
    let promotion_id = app.create_sharded_promotion(shards, 1, shards).await["id"]
        .as_i64()
        .expect("id");
    let mut accepted = Value::Null;
    for user in 1..=shards {
        let (status, body) = app.place(promotion_id, user, "winner", 1).await;
        assert_eq!(status, 202, "{body}");
        accepted = body;
    }
    let (status, body) = app.place(promotion_id, 100, "loser", 1).await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"));

    // The rejection of the flood needs no I/O: it still works with Redis gone.
    stack.stop_part("redis").expect("stop Redis");
    for user in 101..108 {
        let (status, body) = app.place(promotion_id, user, "late", 1).await;
        assert_eq!((status, error_code(&body)), (409, "sold_out"), "user {user}");
    }
    stack.start_part("redis").expect("start Redis");
    // A winner's retry still gets the winner's order (it is looked up in Redis).
    let retry = poll_until(Duration::from_secs(30), "Redis to answer again", || async {
        let (status, body) = app.place(promotion_id, shards, "winner", 1).await;
        (status == 202).then_some(body)
    })
    .await;
    assert_eq!(retry["order_id"], accepted["order_id"]);
}
