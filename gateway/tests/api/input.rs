//! Bad input, missing or forged credentials, and rate limits: always a 4xx with a code,
//! never a 5xx, never a reservation.

use chrono::Duration as Span;
use serde_json::{json, Value};

use crate::helpers::{error_code, now_secs, token_with, TestApp};

async fn post_raw(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_bodies_get_4xx_codes_and_reserve_nothing() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(10, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let path = format!("/api/seckill/{promotion_id}/orders");
    let token = app.token(1);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("application/json", b"{not json".to_vec(), 400, "malformed_json"),
        (
            "application/json",
            br#"{"quantity":"two","request_id":"r"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"quantity":1}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"quantity":1,"request_id":"r","extra":1}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"quantity":0,"request_id":"r"}"#.to_vec(),
            422,
            "invalid_quantity",
        ),
        (
            "application/json",
            br#"{"quantity":1000000,"request_id":"r"}"#.to_vec(),
            422,
            "invalid_quantity",
        ),
        (
            "application/json",
            br#"{"quantity":99999999999999999999999,"request_id":"r"}"#.to_vec(),
            422,
            "invalid_body",
        ),
        (
            "application/json",
            br#"{"quantity":-3,"request_id":"r"}"#.to_vec(),
            422,
            "invalid_quantity",
        ),
        (
            "application/json",
            br#"{"quantity":1,"request_id":"has spaces"}"#.to_vec(),
            422,
            "invalid_request_id",
        ),
        (
            "text/plain",
            br#"{"quantity":1,"request_id":"r"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        ("application/json", vec![b' '; 64 * 1024], 413, "body_too_large"),
    ];
    for (content_type, body, want_status, want_code) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, reply) = post_raw(&app, &path, Some(&token), content_type, body).await;
        assert_eq!(
            (status, error_code(&reply)),
            (want_status, want_code),
            "body {preview}"
        );
    }
    let (status, reply) = post_raw(
        &app,
        "/api/seckill/not-a-number/orders",
        Some(&token),
        "application/json",
        br#"{"request_id":"r"}"#.to_vec(),
    )
    .await;
    assert_eq!((status, error_code(&reply)), (400, "invalid_id"));
    let (status, reply) = app.place(987_654_321_000, 1, "r", 1).await;
    assert_eq!((status, error_code(&reply)), (404, "promotion_not_found"));

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
async fn missing_forged_expired_and_wrong_algorithm_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(10, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let path = format!("/api/seckill/{promotion_id}/orders");
    let body = br#"{"quantity":1,"request_id":"r"}"#.to_vec();

    let (status, reply) = post_raw(&app, &path, None, "application/json", body.clone()).await;
    assert_eq!((status, error_code(&reply)), (401, "missing_token"));

    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": "1", "exp": now_secs() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(b"someone-elses-secret-of-sufficient-length"),
    )
    .expect("sign");
    let expired = token_with(&app.settings, &json!({ "sub": "1", "exp": now_secs() - 600 }));
    let not_a_user = token_with(&app.settings, &json!({ "sub": "alice", "exp": now_secs() + 600 }));
    let no_exp = token_with(&app.settings, &json!({ "sub": "1" }));
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &json!({ "sub": "1", "exp": now_secs() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(
            secrecy::ExposeSecret::expose_secret(&app.settings.auth.jwt_secret).as_bytes(),
        ),
    )
    .expect("sign");
    for (name, token, code) in [
        ("forged", forged.as_str(), "invalid_token"),
        ("expired", &expired, "token_expired"),
        ("non-numeric sub", &not_a_user, "invalid_token"),
        ("no exp", &no_exp, "invalid_token"),
        ("HS512", &hs512, "invalid_token"),
        ("garbage", "abc.def.ghi", "invalid_token"),
    ] {
        let (status, reply) = post_raw(&app, &path, Some(token), "application/json", body.clone()).await;
        assert_eq!((status, error_code(&reply)), (401, code), "{name}");
    }
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
async fn per_user_limits_answer_429_with_retry_after_and_rotating_request_ids_do_not_help() {
    let app = TestApp::spawn_with(
        order_core::test_support::local_source()
            .with_var("APP_RATE_LIMIT__PER_USER__PER_SECOND", "0.01")
            .with_var("APP_RATE_LIMIT__PER_USER__BURST", "3"),
    )
    .await;
    let promotion_id = app.create_promotion(100, 5, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = app
            .client
            .post(format!("{}/api/seckill/{promotion_id}/orders", app.address))
            .bearer_auth(app.token(7))
            .header("X-Sale-Token", app.sale_token(promotion_id, 7))
            .json(&json!({ "quantity": 1, "request_id": format!("rotating-{i}") }))
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        if status == 429 {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!(retry_after >= 1);
            let body: Value = response.json().await.expect("json");
            assert_eq!(error_code(&body), "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429]);
    // Another user is not affected.
    let (status, _) = app.place(promotion_id, 8, "other", 1).await;
    assert_eq!(status, 202);
}

/// Long polls count against the per-user limit: a script holding many of them does not get
/// around it, and ordinary polls stay free of it.
#[tokio::test]
async fn long_polls_count_against_the_per_user_limit() {
    let app = TestApp::spawn_with(
        order_core::test_support::local_source()
            .with_var("APP_RATE_LIMIT__PER_USER__PER_SECOND", "0.01")
            .with_var("APP_RATE_LIMIT__PER_USER__BURST", "2"),
    )
    .await;
    let promotion_id = app.create_promotion(100, 5, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, body) = app.place(promotion_id, 7, "mine", 1).await;
    assert_eq!(status, 202, "{body}");
    let order_id = body["order_id"].as_str().expect("id").to_owned();
    let poll = |query: &'static str| {
        let url = format!("{}/api/orders/{order_id}{query}", app.address);
        let request = app.client.get(url).bearer_auth(app.token(7));
        async move { request.send().await.expect("poll").status().as_u16() }
    };
    // The order took one token of two; one long poll more, then 429.
    assert_eq!(poll("?wait_ms=50").await, 200);
    assert_eq!(poll("?wait_ms=50").await, 429);
    assert_eq!(poll("").await, 200, "a plain poll is not limited per user");
}

#[tokio::test]
async fn per_ip_limit_applies_across_users() {
    let app = TestApp::spawn_with(
        order_core::test_support::local_source()
            .with_var("APP_RATE_LIMIT__PER_IP__PER_SECOND", "0.01")
            .with_var("APP_RATE_LIMIT__PER_IP__BURST", "2"),
    )
    .await;
    let promotion_id = app.create_promotion(100, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let mut statuses = Vec::new();
    for user in 1..=4 {
        statuses.push(app.place(promotion_id, user, "r", 1).await.0);
    }
    assert_eq!(statuses, [202, 202, 429, 429]);
}

/// PostgreSQL text cannot hold NUL: a body or a SKU id that carries one is refused with a
/// 4xx before any query (schemathesis found a checkout that answered 500).
#[tokio::test]
async fn a_nul_character_in_a_body_or_an_id_is_a_4xx_not_a_failed_query() {
    let app = TestApp::spawn().await;
    app.create_sku("kettle", 900, 5).await;
    let mut basket = TestApp::basket(&[("kettle", 1)], None, Some("co-nul"));
    basket["shipping"]["address"]["city"] = json!("Hang\u{0}zhou");
    let (status, body) = app.post_as(7, "/api/checkout", &basket).await;
    assert_eq!((status, error_code(&body)), (422, "invalid_body"), "{body}");

    let response = app
        .admin(reqwest::Method::GET, "/admin/skus/kettle%00")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let (_, sku) = {
        let response = app
            .admin(reqwest::Method::GET, "/admin/skus/kettle")
            .send()
            .await
            .expect("request");
        (response.status(), response.json::<Value>().await.expect("json"))
    };
    assert_eq!(sku["stock"], 5, "nothing was written");
}

/// A signed callback with a negative amount or a NUL in its payment id is refused with a
/// 422 before anything is stored (the refund row's CHECK, a text column without NUL).
#[tokio::test]
async fn a_signed_callback_that_cannot_be_stored_is_a_422() {
    let app = TestApp::spawn().await;
    for (payment_id, amount) in [("pay-negative", -5), ("pay\u{0}nul", 100)] {
        let callback = json!({
            "payment_id": payment_id, "order_id": "123", "amount_cents": amount,
            "status": "succeeded", "timestamp": chrono::Utc::now().timestamp(),
        });
        let (status, body) = app.payment_callback(&callback, None).await;
        assert_eq!(
            (status, error_code(&body)),
            (422, "invalid_body"),
            "{payment_id}: {body}"
        );
    }
}
