//! Normal checkout, payments and the order lifecycle against the real database.

use std::sync::Arc;

use chrono::{Duration, Utc};
use gateway::test_support::TestApp;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::error_code;

#[tokio::test]
async fn n_buyers_on_stock_k_get_exactly_k_orders_and_retries_get_the_same_order() {
    const STOCK: i64 = 7;
    let app = Arc::new(TestApp::spawn().await);
    app.create_sku("phone", 2500, STOCK).await;
    let mut tasks = Vec::new();
    for user in 1..=20 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            let body = TestApp::basket(&[("phone", 1)], None, Some(&format!("co-{user}")));
            (user, app.post_as(user, "/api/checkout", &body).await)
        }));
    }
    let mut created = Vec::new();
    for t in tasks {
        let (user, (status, body)) = t.await.expect("task");
        match status {
            201 => created.push((user, body)),
            409 => assert_eq!(error_code(&body), "out_of_stock"),
            other => panic!("unexpected {other} {body}"),
        }
    }
    assert_eq!(created.len() as i64, STOCK);
    let sku: Value = app
        .admin(Method::GET, "/admin/skus/phone")
        .send()
        .await
        .expect("sku")
        .json()
        .await
        .expect("json");
    assert_eq!(sku["stock"], 0);

    let (user, first) = &created[0];
    assert_eq!(first["status"], "pending_payment");
    assert_eq!(
        (
            first["subtotal_cents"].as_i64(),
            first["shipping_cents"].as_i64(),
            first["total_cents"].as_i64()
        ),
        (Some(2500), Some(800), Some(3300))
    );
    let (status, again) = app
        .post_as(
            *user,
            "/api/checkout",
            &TestApp::basket(&[("phone", 1)], None, Some(&format!("co-{user}"))),
        )
        .await;
    assert_eq!(
        (status, &again["order_id"]),
        (200, &first["order_id"]),
        "a retry returns the same order"
    );
}

#[tokio::test]
async fn preview_prices_with_a_coupon_and_refuses_bad_baskets_with_codes() {
    let app = TestApp::spawn().await;
    app.create_sku("tea", 1999, 100).await;
    app.create_sku("cup", 500, 0).await;
    let now = Utc::now();
    let template: Value = app
        .admin(Method::POST, "/admin/coupons")
        .json(&json!({ "code": "TEN", "kind": "percent", "percent_off": 15, "max_discount_cents": 1000,
                       "min_spend_cents": 3000, "valid_from": now - Duration::hours(1), "valid_until": now + Duration::hours(1) }))
        .send()
        .await
        .expect("coupon")
        .json()
        .await
        .expect("json");
    let grants: Value = app
        .admin(Method::POST, &format!("/admin/coupons/{}/grants", template["id"]))
        .json(&json!({ "user_ids": [5] }))
        .send()
        .await
        .expect("grant")
        .json()
        .await
        .expect("json");
    let grant = grants["grant_ids"][0].as_i64().expect("grant id");

    let (status, b) = app
        .post_as(
            5,
            "/api/checkout/preview",
            &TestApp::basket(&[("tea", 2)], Some(grant), None),
        )
        .await;
    assert_eq!(status, 200, "{b}");
    // 3998 subtotal, 15% = 599.7 → 599, standard shipping 800 (3399 < 9900)
    assert_eq!(
        (
            b["subtotal_cents"].as_i64(),
            b["discount_cents"].as_i64(),
            b["shipping_cents"].as_i64(),
            b["total_cents"].as_i64()
        ),
        (Some(3998), Some(599), Some(800), Some(4199))
    );

    let cases = [
        (
            TestApp::basket(&[("tea", 1)], Some(grant), None),
            5,
            409,
            "coupon_min_spend_not_met",
        ),
        (
            TestApp::basket(&[("tea", 2)], Some(grant), None),
            6,
            409,
            "coupon_unavailable",
        ),
        (TestApp::basket(&[("nope", 1)], None, None), 5, 422, "unknown_sku"),
        (TestApp::basket(&[("cup", 1)], None, None), 5, 409, "out_of_stock"),
        (
            TestApp::basket(&[("tea", 0)], None, None),
            5,
            422,
            "invalid_quantity",
        ),
        (
            TestApp::basket(&[("tea", 1), ("tea", 1)], None, None),
            5,
            422,
            "duplicate_item",
        ),
        (
            json!({ "items": [], "shipping": { "method": "standard", "address": {} } }),
            5,
            422,
            "invalid_body",
        ),
    ];
    for (body, user, want_status, want_code) in cases {
        let (status, reply) = app.post_as(user, "/api/checkout/preview", &body).await;
        assert_eq!((status, error_code(&reply)), (want_status, want_code), "{body}");
    }
    let mut no_city = TestApp::basket(&[("tea", 1)], None, None);
    no_city["shipping"]["address"]["city"] = json!(" ");
    let (status, reply) = app.post_as(5, "/api/checkout/preview", &no_city).await;
    assert_eq!((status, error_code(&reply)), (422, "invalid_address"));
    let (status, reply) = app
        .post_as(5, "/api/checkout", &TestApp::basket(&[("tea", 1)], None, None))
        .await;
    assert_eq!(
        (status, error_code(&reply)),
        (422, "invalid_request_id"),
        "checkout needs a request id"
    );
}

async fn placed_order(app: &TestApp, user: i64, sku: &str) -> (String, i64) {
    let (status, order) = app
        .post_as(
            user,
            "/api/checkout",
            &TestApp::basket(&[(sku, 1)], None, Some(&order_core::test_support::unique("co"))),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    (
        order["order_id"].as_str().expect("id").to_owned(),
        order["total_cents"].as_i64().expect("total"),
    )
}

#[tokio::test]
async fn payment_callbacks_are_verified_applied_once_and_never_dropped() {
    let app = TestApp::spawn().await;
    app.create_sku("book", 4200, 10).await;
    let (order_id, total) = placed_order(&app, 3, "book").await;

    let (status, pay) = app
        .post_as(3, &format!("/api/orders/{order_id}/pay"), &json!({}))
        .await;
    assert_eq!((status, pay["amount_cents"].as_i64()), (200, Some(total)));
    let (status, _) = app
        .post_as(4, &format!("/api/orders/{order_id}/pay"), &json!({}))
        .await;
    assert_eq!(status, 404, "another user's order is not found");

    let callback = json!({ "payment_id": "pay-1", "order_id": order_id, "amount_cents": total, "status": "succeeded",
                           "timestamp": Utc::now().timestamp() });
    let (status, body) = app.payment_callback(&callback, Some("00".repeat(32))).await;
    assert_eq!((status, error_code(&body)), (401, "invalid_signature"));
    let mut tampered = callback.clone();
    let good_signature = gateway::routes::payments::sign(
        secrecy::ExposeSecret::expose_secret(&app.settings.payments.callback_secret).as_bytes(),
        &serde_json::to_vec(&callback).expect("json"),
    );
    tampered["amount_cents"] = json!(1);
    let (status, _) = app.payment_callback(&tampered, Some(good_signature)).await;
    assert_eq!(status, 401, "a signature covers the exact body");

    let mut wrong = callback.clone();
    wrong["payment_id"] = json!("pay-wrong");
    wrong["amount_cents"] = json!(total - 1);
    let (status, body) = app.payment_callback(&wrong, None).await;
    assert_eq!((status, error_code(&body)), (422, "amount_mismatch"));

    let (status, body) = app.payment_callback(&callback, None).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    let (status, body) = app.payment_callback(&callback, None).await;
    assert_eq!(
        (status, body["result"].as_str()),
        (200, Some("duplicate")),
        "a replay changes nothing"
    );

    let pool = app.pool();
    let paid_events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_id = $1")
        .bind(format!("order.paid:{order_id}"))
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(paid_events, 1);
    let status_now: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::BIGINT")
        .bind(&order_id)
        .fetch_one(&pool)
        .await
        .expect("status");
    assert_eq!(status_now, "paid");

    let mut stale = callback.clone();
    stale["payment_id"] = json!("pay-stale");
    stale["timestamp"] = json!(Utc::now().timestamp() - 3600);
    let (status, body) = app.payment_callback(&stale, None).await;
    assert_eq!((status, error_code(&body)), (401, "stale_callback"));
    // Without a timestamp a captured callback could be replayed forever: refused.
    let mut undated = callback.clone();
    undated["payment_id"] = json!("pay-undated");
    undated.as_object_mut().expect("object").remove("timestamp");
    let (status, body) = app.payment_callback(&undated, None).await;
    assert_eq!((status, error_code(&body)), (401, "missing_timestamp"));
    let undated_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE id = 'pay-undated'")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(undated_rows, 0);

    // A late payment for a cancelled order is recorded and refunded, not dropped.
    let (late_order, late_total) = placed_order(&app, 3, "book").await;
    let (status, body) = app
        .post_as(3, &format!("/api/orders/{late_order}/cancel"), &json!({}))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")));
    let late = json!({ "payment_id": "pay-late", "order_id": late_order, "amount_cents": late_total, "status": "succeeded",
                       "timestamp": Utc::now().timestamp() });
    let (status, body) = app.payment_callback(&late, None).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("refund_due")));
    let refund: (String, i64) =
        sqlx::query_as("SELECT reason, amount_cents FROM refunds WHERE payment_id = 'pay-late'")
            .fetch_one(&pool)
            .await
            .expect("a refund row");
    assert_eq!(refund, ("late_payment".to_owned(), late_total));
    let late_status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1::BIGINT")
        .bind(&late_order)
        .fetch_one(&pool)
        .await
        .expect("status");
    assert_eq!(late_status, "cancelled", "never paid-and-cancelled");
}

#[tokio::test]
async fn cancel_and_refund_return_stock_and_illegal_moves_are_refused() {
    let app = TestApp::spawn().await;
    app.create_sku("lamp", 3000, 2).await;
    let (cancelled, _) = placed_order(&app, 8, "lamp").await;
    let (status, body) = app
        .post_as(9, &format!("/api/orders/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "order_not_found"),
        "only the owner may cancel"
    );
    let (status, _) = app
        .post_as(8, &format!("/api/orders/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = app
        .post_as(8, &format!("/api/orders/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "illegal_transition"),
        "cancelled is final"
    );
    let sku: Value = app
        .admin(Method::GET, "/admin/skus/lamp")
        .send()
        .await
        .expect("sku")
        .json()
        .await
        .expect("json");
    assert_eq!(sku["stock"], 2, "the cancelled unit is back");

    let (paid, total) = placed_order(&app, 10, "lamp").await;
    let (status, body) = app
        .post_as(10, &format!("/api/orders/{paid}/refund"), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "illegal_transition"),
        "unpaid orders are cancelled, not refunded"
    );
    let cb = json!({ "payment_id": "p-lamp", "order_id": paid, "amount_cents": total, "status": "succeeded",
                "timestamp": Utc::now().timestamp() });
    assert_eq!(app.payment_callback(&cb, None).await.0, 200);
    let (status, body) = app
        .post_as(10, &format!("/api/orders/{paid}/cancel"), &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "illegal_transition"),
        "paid orders are refunded, not cancelled"
    );
    let (status, body) = app
        .post_as(10, &format!("/api/orders/{paid}/refund"), &json!({}))
        .await;
    assert_eq!((status, body["status"].as_str()), (200, Some("refund_requested")));
    let approved: Value = app
        .admin(Method::POST, &format!("/admin/orders/{paid}/refund"))
        .send()
        .await
        .expect("approve")
        .json()
        .await
        .expect("json");
    assert_eq!(approved["status"], "refunded");
    let sku: Value = app
        .admin(Method::GET, "/admin/skus/lamp")
        .send()
        .await
        .expect("sku")
        .json()
        .await
        .expect("json");
    assert_eq!(sku["stock"], 2, "the refunded unit is back");

    // The caller's orders only, newest first, paginated.
    let page: Value = app
        .client
        .get(format!("{}/api/orders?limit=1", app.address))
        .bearer_auth(app.token(8))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    assert_eq!(page["items"][0]["order_id"], json!(cancelled));
    let theirs: Value = app
        .client
        .get(format!("{}/api/orders", app.address))
        .bearer_auth(app.token(99))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["items"].as_array().expect("items").len(), 0);
}
