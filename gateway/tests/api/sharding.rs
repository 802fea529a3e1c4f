//! A hot sale spread over shards: buyers who all belong to one shard still buy every unit
//! (stock moves to the shard that runs out), the per-user limit holds across the moves, and
//! the admin view and reconciliation show each shard.

use std::sync::Arc;

use order_core::domain::shards::SaleShards;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn buyers_crowding_one_shard_still_buy_every_unit() {
    const STOCK: i64 = 30;
    let app = Arc::new(TestApp::spawn().await);
    let promo = app.create_sharded_promotion(STOCK, 2, 3).await;
    let promotion_id = promo["id"].as_i64().expect("id");
    assert_eq!(promo["shards"], 3, "{promo}");
    let sale = SaleShards::new(promotion_id, 3).expect("shards");
    // 40 buyers who all belong to shard 0 (which holds a third of the stock), one unit each,
    // at once; then each tries a second unit (within the limit of 2) and a third (over it).
    let crowd: Vec<i64> = (1..).filter(|u| sale.shard_of(*u).index == 0).take(40).collect();
    let mut tasks = Vec::new();
    for &user in &crowd {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            app.place_as_app(promotion_id, user, &format!("first-{user}"), 1)
                .await
        }));
    }
    let mut sold = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            202 => sold += 1,
            409 => assert_eq!(error_code(&body), "sold_out", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(sold, STOCK, "every unit sold to the crowd of one shard");

    // Nothing left anywhere: a buyer of another shard is refused too, and so is an
    // over-limit try (whatever stock there is, the limit counts across moves).
    let other = (1..)
        .find(|u| sale.shard_of(*u).index == 2)
        .expect("a buyer of shard 2");
    let (status, body) = app.place(promotion_id, other, "late", 1).await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"), "{body}");
    let (status, body) = app.place(promotion_id, crowd[0], "three", 3).await;
    assert_eq!((status, error_code(&body)), (409, "limit_exceeded"), "{body}");

    // The admin view shows where the stock went: shard 0 took in what the others lent.
    let view: Value = app
        .admin(Method::GET, &format!("/admin/promotions/{promotion_id}"))
        .send()
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    let shards = view["shard_stock"].as_array().expect("per shard");
    assert_eq!(shards.len(), 3, "{view}");
    assert!(shards.iter().all(|s| s["remaining"] == 0), "{view}");
    let lent: i64 = shards.iter().map(|s| s["lent"].as_i64().expect("lent")).sum();
    assert_eq!(shards[0]["taken_in"].as_i64(), Some(lent), "{view}");
    assert_eq!(
        shards[0]["taken_in"], 20,
        "both other shards emptied into shard 0: {view}"
    );
    assert_eq!(shards[0]["stock"], 30, "{view}");

    // Reconciliation holds per shard: each shard's stock = remaining + its buyers' units.
    let report: Value = app
        .admin(
            Method::POST,
            &format!("/admin/promotions/{promotion_id}/reconcile"),
        )
        .send()
        .await
        .expect("reconcile")
        .json()
        .await
        .expect("json");
    assert_eq!(report["units_in_transit"], 0, "{report}");
    let per_shard = report["shards"].as_array().expect("per shard");
    assert_eq!(per_shard.len(), 3, "{report}");
    assert!(per_shard.iter().all(|s| s["drift"] == 0), "{report}");
    assert_eq!(per_shard[0]["reserved_units"], 30, "{report}");
}

#[tokio::test]
async fn a_shard_count_outside_the_bounds_is_refused() {
    let app = TestApp::spawn().await;
    for shards in [0, 17, -1] {
        let response = app
            .admin(Method::POST, "/admin/promotions")
            .json(&serde_json::json!({
                "sku_id": "sku", "title": "t", "price_cents": 1, "stock": 1, "shards": shards,
                "starts_at": chrono::Utc::now(), "ends_at": chrono::Utc::now() + chrono::Duration::hours(1),
            }))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 422, "shards {shards}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(error_code(&body), "invalid_shards", "{body}");
    }
}
