//! The promotions admin API: auth, validation, edits, stock, warm-up, deletion.

use std::time::Duration;

use chrono::{Duration as Span, Utc};
use order_core::test_support::{local_source, poll_until};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{error_code, generous_limits, TestApp};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn promotion_body(stock: i64, starts_in: Span, lasts: Span) -> Value {
    let starts_at = Utc::now() + starts_in;
    json!({
        "sku_id": "sku-1", "title": "Sale", "price_cents": 500, "stock": stock, "per_user_limit": 1,
        "starts_at": starts_at, "ends_at": starts_at + lasts,
    })
}

#[tokio::test]
async fn admin_endpoints_require_the_admin_key() {
    let app = TestApp::spawn().await;
    let url = format!("{}/admin/promotions", app.address);
    let (status, body) = send(app.client.get(&url)).await;
    assert_eq!((status, error_code(&body)), (401, "missing_token"));
    let (status, body) = send(app.client.get(&url).bearer_auth("not-the-admin-key-at-all")).await;
    assert_eq!((status, error_code(&body)), (401, "invalid_admin_key"));
    let (status, body) = send(app.client.get(&url).bearer_auth(app.token(1))).await;
    assert_eq!(
        (status, error_code(&body)),
        (401, "invalid_admin_key"),
        "a user token is not an admin key"
    );
    let (status, _) = send(app.admin(Method::GET, "/admin/promotions")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invalid_promotions_are_rejected_with_codes_and_not_stored() {
    let app = TestApp::spawn().await;
    let mut cases = vec![
        (
            promotion_body(10, Span::hours(1), -Span::minutes(5)),
            422,
            "invalid_window",
        ),
        (
            promotion_body(-1, Span::hours(1), Span::hours(1)),
            422,
            "invalid_stock",
        ),
        (
            promotion_body(10, -Span::hours(3), Span::hours(1)),
            422,
            "invalid_window",
        ),
    ];
    let mut bad_limit = promotion_body(10, Span::hours(1), Span::hours(1));
    bad_limit["per_user_limit"] = json!(0);
    cases.push((bad_limit, 422, "invalid_limit"));
    let mut bad_type = promotion_body(10, Span::hours(1), Span::hours(1));
    bad_type["price_cents"] = json!("cheap");
    cases.push((bad_type, 422, "invalid_body"));
    let mut bad_time = promotion_body(10, Span::hours(1), Span::hours(1));
    bad_time["starts_at"] = json!("tomorrow");
    cases.push((bad_time, 422, "invalid_body"));
    for (body, want_status, want_code) in cases {
        let (status, reply) = send(app.admin(Method::POST, "/admin/promotions").json(&body)).await;
        assert_eq!((status, error_code(&reply)), (want_status, want_code), "{body}");
    }
    let (_, list) = send(app.admin(Method::GET, "/admin/promotions")).await;
    assert_eq!(list["items"].as_array().expect("items").len(), 0);
}

#[tokio::test]
async fn a_running_sale_changes_stock_only_by_adding_and_cannot_be_deleted() {
    let app = TestApp::spawn().await;
    let id = app.create_promotion(2, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let path = format!("/admin/promotions/{id}");

    let (status, body) = send(app.admin(Method::PATCH, &path).json(&json!({ "stock": 50 }))).await;
    assert_eq!((status, error_code(&body)), (409, "promotion_running"));
    let (status, body) = send(
        app.admin(Method::PATCH, &path)
            .json(&json!({ "title": "Renamed" })),
    )
    .await;
    assert_eq!((status, body["title"].as_str()), (200, Some("Renamed")));

    for user in 1..=2 {
        assert_eq!(app.place(id, user, "r", 1).await.0, 202);
    }
    assert_eq!(error_code(&app.place(id, 3, "r", 1).await.1), "sold_out");

    let (status, body) = send(
        app.admin(Method::POST, &format!("{path}/stock"))
            .json(&json!({ "units": 0 })),
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_stock"));
    let (status, body) = send(
        app.admin(Method::POST, &format!("{path}/stock"))
            .json(&json!({ "units": 3 })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["stock"].as_i64(), body["remaining"].as_i64()),
        (Some(5), Some(3))
    );
    assert_eq!(
        app.place(id, 3, "r", 1).await.0,
        202,
        "sells again at once on this gateway"
    );

    let (status, body) = send(app.admin(Method::DELETE, &path)).await;
    assert_eq!((status, error_code(&body)), (409, "promotion_running"));
    let (status, body) = send(app.admin(Method::GET, &path)).await;
    assert_eq!(
        (status, body["remaining"].as_i64(), body["state"].as_str()),
        (200, Some(2), Some("active"))
    );
}

#[tokio::test]
async fn a_scheduled_sale_can_be_edited_deleted_and_is_loaded_before_it_starts() {
    let app =
        TestApp::spawn_with(generous_limits(local_source()).with_var("APP_SECKILL__WARMUP_LEAD_SECS", "2"))
            .await;
    let (status, created) = send(app.admin(Method::POST, "/admin/promotions").json(&promotion_body(
        10,
        Span::seconds(4),
        Span::hours(1),
    )))
    .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["state"], "scheduled");
    assert!(
        created["remaining"].is_null(),
        "not loaded 4 s before start with a 2 s lead"
    );

    let (status, body) = send(
        app.admin(Method::PATCH, &format!("/admin/promotions/{id}"))
            .json(&json!({ "stock": 7 })),
    )
    .await;
    assert_eq!((status, body["stock"].as_i64()), (200, Some(7)));

    // The refresher loads it once it is within the lead time, with the edited stock.
    let stock = app.stock_store().await;
    let live = poll_until(Duration::from_secs(15), "the promotion to be loaded", || async {
        stock
            .live_stock(&[order_core::domain::shards::SaleShards::single(id)])
            .await
            .expect("live")[0]
    })
    .await;
    assert_eq!(live.remaining, 7);

    let other = app.create_promotion(3, 1, Span::hours(2)).await["id"]
        .as_i64()
        .expect("id");
    let (status, _) = send(app.admin(Method::DELETE, &format!("/admin/promotions/{other}"))).await;
    assert_eq!(status, 204);
    let (status, body) = send(app.admin(Method::GET, &format!("/admin/promotions/{other}"))).await;
    assert_eq!((status, error_code(&body)), (404, "promotion_not_found"));
    let (status, body) = app.place(other, 1, "r", 1).await;
    assert_eq!((status, error_code(&body)), (404, "promotion_not_found"));
}

#[tokio::test]
async fn promotions_list_pages_newest_first() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            app.create_promotion(1, 1, Span::hours(1)).await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let (_, first) = send(app.admin(Method::GET, "/admin/promotions?limit=3")).await;
    let page: Vec<i64> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(page, [ids[4], ids[3], ids[2]]);
    let next = first["next_before_id"].as_i64().expect("more pages");
    let (_, second) = send(app.admin(
        Method::GET,
        &format!("/admin/promotions?limit=3&before_id={next}"),
    ))
    .await;
    let page: Vec<i64> = second["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| p["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(page, [ids[1], ids[0]]);
    assert!(second["next_before_id"].is_null());
    let (status, body) = send(app.admin(Method::GET, "/admin/promotions?limit=0")).await;
    assert_eq!((status, error_code(&body)), (400, "invalid_query"));

    let public: Value = app
        .get(&format!("/api/promotions/{}", ids[0]))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (public["state"].as_str(), public["price_cents"].as_i64()),
        (Some("scheduled"), Some(1999))
    );
}
