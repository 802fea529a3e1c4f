//! Invariant 8 through the admin API: no warm-up, edit, add-stock, reconcile or SKU edit
//! creates or loses units, whatever runs beside it.
//!
//! Where a race needs one precise interleaving, the test makes it happen by running the
//! handler's own steps (the database write, then the Redis step) around the other action.

use std::sync::Arc;

use chrono::Duration as Span;
use gateway::test_support::TestApp;
use order_core::domain::ids::OrderIdGenerator;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::stock::{IfStarted, ReserveOutcome, SaleKeys, SyncOutcome};
use order_core::test_support::random_worker_id;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::error_code;

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn id_of(created: &Value) -> i64 {
    created["id"].as_i64().expect("id")
}

async fn remaining(app: &TestApp, id: i64) -> Option<i64> {
    app.stock_store()
        .await
        .live_stock_of(order_core::domain::shards::SaleShards::single(id))
        .await
        .expect("live")
        .map(|l| l.remaining)
}

/// The documented Redis-loss case: a running sale whose keys Redis lost, with orders taken.
/// Loading it afresh would offer its whole stock again beside them.
#[tokio::test]
async fn warming_up_a_started_sale_that_redis_lost_is_refused() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_promotion(5, 1, -Span::seconds(1)).await);
    for user in 1..=3 {
        assert_eq!(app.place(id, user, "r", 1).await.0, 202);
    }
    app.stock_store()
        .await
        .forget_promotion(order_core::domain::shards::SaleShards::single(id))
        .await
        .expect("Redis loses the sale");

    let (status, body) = send(app.admin(Method::POST, &format!("/admin/promotions/{id}/warmup"))).await;
    assert_eq!((status, error_code(&body)), (409, "started_not_loaded"), "{body}");
    assert_eq!(remaining(&app, id).await, None, "still not loaded");
    let (status, body) = app.place(id, 9, "r", 1).await;
    assert_eq!((status, error_code(&body)), (503, "not_loaded"));
}

/// A SKU edit of the title alone while checkouts of that SKU run: every unit is either
/// still in stock or in exactly one order.
#[tokio::test]
async fn a_sku_title_edit_during_checkouts_neither_creates_nor_loses_units() {
    const STOCK: i64 = 200;
    let app = Arc::new(TestApp::spawn().await);
    app.create_sku("sku-racing", 900, STOCK).await;
    let mut checkouts = Vec::new();
    for user in 1..=120 {
        let app = Arc::clone(&app);
        checkouts.push(tokio::spawn(async move {
            let body = TestApp::basket(&[("sku-racing", 1)], None, Some(&format!("co-{user}")));
            app.post_as(user, "/api/checkout", &body).await
        }));
    }
    let mut edits = Vec::new();
    for n in 0..30 {
        let app = Arc::clone(&app);
        edits.push(tokio::spawn(async move {
            send(
                app.admin(Method::PATCH, "/admin/skus/sku-racing")
                    .json(&json!({ "title": format!("Racing title {n}") })),
            )
            .await
        }));
    }
    let mut sold = 0;
    for checkout in checkouts {
        let (status, body) = checkout.await.expect("task");
        assert_eq!(status, 201, "{body}");
        sold += 1;
    }
    for edit in edits {
        let (status, body) = edit.await.expect("task");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["price_cents"], 900, "untouched fields come back as stored");
    }
    let (_, sku) = send(app.admin(Method::GET, "/admin/skus/sku-racing")).await;
    assert_eq!(
        sku["stock"].as_i64().expect("stock") + sold,
        STOCK,
        "stock left + units sold: {sku}"
    );
}

/// An edit judged "not started" on the gateway's clock reaches Redis after Redis' clock
/// started the sale and units were reserved: it must neither reload the full stock nor leave
/// a half-applied edit behind.
#[tokio::test]
async fn an_edit_reaching_redis_after_reservations_keeps_them_and_undoes_a_stock_below_them() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_promotion(10, 1, Span::hours(1)).await);
    let (status, body) = send(app.admin(Method::POST, &format!("/admin/promotions/{id}/warmup"))).await;
    assert_eq!((status, body["remaining"].as_i64()), (200, Some(10)));

    // Redis' clock is past the start (its copy of the window says so), the gateway's is not.
    let stock = app.stock_store().await;
    let mut redis = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("redis");
    let started_ms = chrono::Utc::now().timestamp_millis() - 1_000;
    redis::cmd("HSET")
        .arg(SaleKeys::new(id).meta)
        .arg("starts_at_ms")
        .arg(started_ms)
        .query_async::<()>(&mut redis)
        .await
        .expect("start the sale in Redis");
    let ids = OrderIdGenerator::new(random_worker_id());
    for user in 1..=3 {
        let outcome = order_core::test_support::reserve(&stock, id, user, "r", 1, ids.next_id())
            .await
            .expect("reserve");
        assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "{outcome:?}");
    }

    let path = format!("/admin/promotions/{id}");
    let (status, body) = send(
        app.admin(Method::PATCH, &path)
            .json(&json!({ "stock": 2, "title": "Renamed" })),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "stock_below_reserved"),
        "{body}"
    );
    let (_, view) = send(app.admin(Method::GET, &path)).await;
    assert_eq!(
        (
            view["stock"].as_i64(),
            view["title"].as_str(),
            view["remaining"].as_i64()
        ),
        (Some(10), Some("Phone flash sale"), Some(7)),
        "nothing of the refused edit stays: {view}"
    );

    let (status, body) = send(app.admin(Method::PATCH, &path).json(&json!({ "stock": 12 }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["stock"].as_i64(), body["remaining"].as_i64()),
        (Some(12), Some(9)),
        "12 configured, 3 reserved"
    );
}

/// A reconcile that read the promotion before an add-stock landed repairs after it: the
/// added units stay.
#[tokio::test]
async fn a_repair_racing_add_stock_keeps_the_added_units() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_promotion(10, 1, -Span::seconds(1)).await);
    for user in 1..=3 {
        assert_eq!(app.place(id, user, "r", 1).await.0, 202);
    }
    let pool = app.pool();
    let read_by_reconcile = PromotionRepo::new(pool.clone())
        .get(id)
        .await
        .expect("read")
        .expect("promotion");

    let (status, body) = send(
        app.admin(Method::POST, &format!("/admin/promotions/{id}/stock"))
            .json(&json!({ "units": 4 })),
    )
    .await;
    assert_eq!((status, body["remaining"].as_i64()), (200, Some(11)), "{body}");

    let stock = app.stock_store().await;
    order_core::app::reconcile::reconcile(&pool, &stock, &read_by_reconcile, true)
        .await
        .expect("reconcile");
    assert_eq!(remaining(&app, id).await, Some(11), "14 configured, 3 reserved");
}

/// Add-stock's database write lands, a warm-up loads the new row, then add-stock's Redis
/// step runs: the units count once.
#[tokio::test]
async fn add_stock_racing_the_first_warm_up_counts_the_units_once() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_promotion(10, 1, Span::hours(1)).await);
    assert_eq!(
        remaining(&app, id).await,
        None,
        "not loaded an hour before the start"
    );

    let added = PromotionRepo::new(app.pool())
        .add_stock(id, 5)
        .await
        .expect("add stock")
        .expect("promotion");
    let (status, body) = send(app.admin(Method::POST, &format!("/admin/promotions/{id}/warmup"))).await;
    assert_eq!((status, body["remaining"].as_i64()), (200, Some(15)));
    let outcome = app
        .stock_store()
        .await
        .sync(&added, IfStarted::Refuse)
        .await
        .expect("add stock's Redis step");
    assert_eq!(outcome, SyncOutcome::Current { remaining: 15 });
    assert_eq!(remaining(&app, id).await, Some(15));
}

/// One pass of the payment-timeout canceller that cancels several orders of the same SKU
/// returns every one of their units.
#[tokio::test]
async fn a_cancel_batch_with_several_orders_of_one_sku_returns_all_their_units() {
    const STOCK: i64 = 10;
    let app = TestApp::spawn_with(
        gateway::test_support::generous_limits(order_core::test_support::local_source())
            .with_var("APP_ORDERS__PAYMENT_TIMEOUT_SECS", "1"),
    )
    .await;
    app.create_sku("sku-expiring", 500, STOCK).await;
    for user in 1..=3 {
        let body = TestApp::basket(&[("sku-expiring", 1)], None, Some(&format!("co-{user}")));
        let (status, reply) = app.post_as(user, "/api/checkout", &body).await;
        assert_eq!(status, 201, "{reply}");
    }
    let pool = app.pool();
    order_core::test_support::poll_until(
        std::time::Duration::from_secs(10),
        "all three orders to be past their payment deadline",
        || async {
            let due: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM orders WHERE status = 'pending_payment' AND expires_at <= now()",
            )
            .fetch_one(&pool)
            .await
            .expect("count");
            (due == 3).then_some(())
        },
    )
    .await;
    let cancelled = order_core::postgres::cancellation::cancel_expired(
        &pool,
        100,
        &app.settings.pulsar.order_events_topic,
    )
    .await
    .expect("cancel");
    assert_eq!(cancelled.len(), 3, "one batch");
    let (_, sku) = send(app.admin(Method::GET, "/admin/skus/sku-expiring")).await;
    assert_eq!(sku["stock"].as_i64(), Some(STOCK), "{sku}");
}

/// "Start it now": an edit that moves a scheduled sale's start to the present loads it, since
/// nothing can have been sold before the start it had.
#[tokio::test]
async fn an_edit_starting_a_scheduled_sale_now_loads_and_sells_it() {
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_promotion(4, 1, Span::hours(1)).await);
    assert_eq!(
        remaining(&app, id).await,
        None,
        "not loaded an hour before the start"
    );
    let now = chrono::Utc::now();
    let (status, body) = send(
        app.admin(Method::PATCH, &format!("/admin/promotions/{id}"))
            .json(&json!({ "starts_at": now - Span::seconds(1) })),
    )
    .await;
    assert_eq!((status, body["remaining"].as_i64()), (200, Some(4)), "{body}");
    let (status, body) = app.place(id, 1, "r", 1).await;
    assert_eq!(status, 202, "{body}");
}
