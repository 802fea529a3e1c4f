//! Priority load shedding: when seckill orders pile up in the gateway (here: Redis paused, so
//! none completes), orders past the adaptive limit get 503 `overloaded` at once, before any
//! work, while checkout, order queries and admin keep answering; the shed order's request id
//! gets its order once the sale can serve again. Uses a private stack so Redis can be paused.

use std::time::Duration;

use chrono::Duration as Span;
use order_core::test_support::{poll_until, PrivateStack};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, generous_limits, TestApp};

#[tokio::test]
async fn seckill_orders_past_the_limit_are_shed_and_nothing_else_is() {
    let stack = PrivateStack::start().expect("private stack");
    let app = TestApp::spawn_with(
        generous_limits(stack.source())
            // Requests stay in flight while Redis is paused, rather than time out.
            .with_var("APP_REDIS__RESPONSE_TIMEOUT_MS", "60000")
            .with_var("APP_SHEDDING__MIN_LIMIT", "2")
            .with_var("APP_SHEDDING__INITIAL_LIMIT", "3")
            .with_var("APP_SHEDDING__MAX_LIMIT", "3"),
    )
    .await;
    app.create_sku("tea", 1999, 100).await;
    let promotion_id = app.create_promotion(100, 5, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, body) = app.place(promotion_id, 1, "warm", 1).await;
    assert_eq!(status, 202, "{body}");

    stack.pause_part("redis").expect("pause Redis");
    // Three orders that cannot finish while Redis hangs fill the limit.
    let held: Vec<_> = (0..3)
        .map(|i| {
            let request = app.place_request(promotion_id, 10 + i, &format!("held-{i}"), 1);
            tokio::spawn(async move {
                let response = request.send().await.expect("the gateway answers");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    poll_until(Duration::from_secs(30), "three orders in flight", || async {
        (app.seckill_limiter.in_flight() == 3).then_some(())
    })
    .await;
    let (status, shed) = app.place(promotion_id, 20, "shed", 1).await;
    assert_eq!((status, error_code(&shed)), (503, "overloaded"), "{shed}");

    // Nothing else is shed meanwhile (these need PostgreSQL only).
    let (status, preview) = app
        .post_as(
            5,
            "/api/checkout/preview",
            &TestApp::basket(&[("tea", 1)], None, None),
        )
        .await;
    assert_eq!(status, 200, "checkout is not shed: {preview}");
    let (status, list) = app
        .post_as(
            5,
            "/api/checkout",
            &TestApp::basket(&[("tea", 1)], None, Some("calm")),
        )
        .await;
    assert_eq!(status, 201, "checkout is not shed: {list}");
    let orders = app.get_as(5, "/api/orders").await;
    assert_eq!(orders.status().as_u16(), 200, "order queries are not shed");
    let admin = app
        .admin(Method::GET, "/admin/promotions")
        .send()
        .await
        .expect("admin answers");
    assert_eq!(admin.status().as_u16(), 200, "admin is not shed");

    stack.resume_part("redis").expect("resume Redis");
    for h in held {
        let (status, body) = h.await.expect("held order task");
        assert_eq!(status, 202, "a held order completes once Redis answers: {body}");
    }
    // The shed request reserved nothing; its retry, same request id, is an order like any other.
    let (status, body) = app.place(promotion_id, 20, "shed", 1).await;
    assert_eq!(status, 202, "{body}");

    let stats = poll_until(Duration::from_secs(10), "the shed order in the stats", || async {
        let stats = app.stats(promotion_id).await?;
        (stats["this_gateway"]["overloaded"].as_u64() >= Some(1)).then_some(stats)
    })
    .await;
    assert_eq!(stats["this_gateway"]["accepted"], json!(5), "{stats}");
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("seckill_orders_total{outcome=\"overloaded\"}")),
        "the metric counts shed orders"
    );
}
