//! Hostile clients: slow headers, trickled bodies, oversized headers, and other users'
//! order ids. Each gets a clear 4xx (or a closed connection), never a partial write or a
//! glimpse of someone else's order.

use std::time::Duration;

use chrono::Duration as Span;
use order_core::test_support::local_source;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{error_code, generous_limits, TestApp};

async fn with_short_http_deadlines() -> TestApp {
    TestApp::spawn_with(
        generous_limits(local_source())
            .with_var("APP_HTTP__HEADER_READ_TIMEOUT_MS", "500")
            .with_var("APP_HTTP__BODY_READ_TIMEOUT_MS", "500"),
    )
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes, bounded by `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = with_short_http_deadlines().await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write a partial header");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // The server still serves everyone else.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_and_reserves_nothing() {
    let app = with_short_http_deadlines().await;
    let promotion_id = app.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let body = r#"{"quantity":1,"request_id":"slow"}"#;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /api/seckill/{promotion_id}/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        app.token(41),
        body.len(),
        &body[..10]
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    let stock = app.stock_store().await;
    assert_eq!(
        stock
            .reservation_count(order_core::domain::shards::SaleShards::single(promotion_id))
            .await
            .expect("count"),
        0
    );
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let app = TestApp::spawn().await;
    let huge = "a".repeat(100 * 1024);
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Huge", huge)
        .send()
        .await;
    // The server answers 431 or closes the connection mid-request; it never serves it.
    if let Ok(response) = response {
        assert_eq!(response.status(), 431);
    }
    let mut request = app.client.get(format!("{}/healthz", app.address));
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "v");
    }
    let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(431);
    assert_eq!(status, 431);
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn no_order_endpoint_shows_or_changes_another_users_order() {
    let app = TestApp::spawn().await;
    app.create_sku("mug", 900, 10).await;
    let (owner, stranger) = (31, 32);
    let (status, order) = app
        .post_as(
            owner,
            "/api/checkout",
            &TestApp::basket(&[("mug", 1)], None, Some("mine")),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("id").to_owned();
    let promotion_id = app.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, seckill) = app.place(promotion_id, owner, "flash", 1).await;
    assert_eq!(status, 202, "{seckill}");
    let seckill_id = seckill["order_id"].as_str().expect("id").to_owned();

    for id in [&order_id, &seckill_id] {
        let response = app
            .client
            .get(format!("{}/api/orders/{id}", app.address))
            .bearer_auth(app.token(stranger))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 404, "GET /api/orders/{id} as a stranger");
        for action in ["pay", "cancel", "refund"] {
            let (status, body) = app
                .post_as(stranger, &format!("/api/orders/{id}/{action}"), &json!({}))
                .await;
            assert_eq!(status, 404, "{action} {id} as a stranger: {body}");
        }
    }
    let listed = app
        .client
        .get(format!("{}/api/orders", app.address))
        .bearer_auth(app.token(stranger))
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    assert!(
        !listed.contains(&order_id) && !listed.contains(&seckill_id),
        "{listed}"
    );

    // The owner's orders are untouched.
    let mine = app
        .client
        .get(format!("{}/api/orders/{order_id}", app.address))
        .bearer_auth(app.token(owner))
        .send()
        .await
        .expect("get")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(mine["status"], "pending_payment");

    // A stranger reusing the owner's request id gets an order of their own, not the owner's.
    let (status, theirs) = app.place(promotion_id, stranger, "flash", 1).await;
    assert_eq!(status, 202, "{theirs}");
    assert_ne!(theirs["order_id"], seckill["order_id"]);
    let (status, body) = app.place(promotion_id, stranger, "flash-2", 1).await;
    assert_eq!((status, error_code(&body)), (409, "limit_exceeded"));
}
