//! Redis keeps only live sales: once a sale has ended, its orders are persisted and the
//! stores agree, its keys leave Redis; buyers' answers about its orders do not change on any
//! gateway, a later cancellation completes without bringing a key back, and nothing reloads
//! the sale. A deployment: three gateways, two consumers processes, two retiring at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use order_core::app::retire::{retire_ended_sales, Retirement};
use order_core::domain::shards::SaleShards;
use order_core::redis::deployment::DeploymentStore;
use order_core::redis::stock::SaleKeys;
use order_core::test_support::{local_source, poll_until};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

const SHARDS: i64 = 3;
const STOCK: i64 = 6;

/// How many of the sale's keys (every shard's, and its counts) Redis still holds.
async fn keys_in_redis(conn: &mut order_core::redis::RedisConnection, promotion_id: i64) -> i64 {
    let sale = SaleShards::new(promotion_id, SHARDS).expect("shards");
    let mut held = 0;
    for shard in sale.shards() {
        let k = SaleKeys::of(shard);
        // One command per shard: its keys share one hash tag.
        let n: i64 = redis::cmd("EXISTS")
            .arg(&[
                k.meta,
                k.buyers,
                k.requests,
                k.reservations,
                k.pending,
                k.released,
                k.orders,
            ])
            .query_async(conn)
            .await
            .expect("EXISTS");
        held += n;
    }
    let counts: i64 = redis::cmd("EXISTS")
        .arg(format!("{{promo:{promotion_id}}}:counters"))
        .query_async(conn)
        .await
        .expect("EXISTS");
    held + counts
}

/// What each buyer's app reads of its order from each gateway, without the fields whose
/// precision differs between Redis' markers (ms) and the database (µs).
async fn answers(gateways: &[&gateway::test_support::TestApp], accepted: &[(String, i64)]) -> Vec<Value> {
    let mut out = Vec::new();
    for ((order_id, user), app) in accepted.iter().flat_map(|a| gateways.iter().map(move |g| (a, g))) {
        let view: Value = app
            .client
            .get(format!("{}/api/orders/{order_id}", app.address))
            .bearer_auth(app.token(*user))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        out.push(json!({
            "order_id": view["order_id"], "status": view["status"], "kind": view["kind"],
            "promotion_id": view["promotion_id"], "total_cents": view["total_cents"],
            "archived": view.get("archived"),
        }));
    }
    out
}

#[tokio::test]
async fn an_ended_reconciled_sale_leaves_redis_and_its_orders_answer_the_same() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let second = app.spawn_beside(|_| {}).await;
    let third = app.spawn_beside(|_| {}).await;
    let gateways = [app.as_ref(), &second, &third];
    let created = app.create_sharded_promotion(STOCK, 1, SHARDS).await;
    let promotion_id = created["id"].as_i64().expect("id");
    // Accepted with no consumers running: the orders wait in the pending sets.
    let accepted: Vec<(String, i64)> = flash_sale(&app, promotion_id, STOCK)
        .await
        .into_iter()
        .map(|(id, user)| (id.to_string(), user))
        .collect();
    assert_eq!(accepted.len() as i64, STOCK);

    // End the sale in two seconds (a running sale's end may move).
    let ends_at = Utc::now() + chrono::Duration::seconds(2);
    let patched = app
        .admin(Method::PATCH, &format!("/admin/promotions/{promotion_id}"))
        .json(&json!({ "ends_at": ends_at }))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status(), 200, "{:?}", patched.text().await);
    poll_until(Duration::from_secs(10), "the sale's end", || async {
        (Utc::now() > ends_at + chrono::Duration::milliseconds(200)).then_some(())
    })
    .await;

    let pool = app.pool();
    let stock = app.stock_store().await;
    let mut conn = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("redis");
    let deployment = DeploymentStore::new(conn.clone(), "retire-test");
    let retire = || {
        retire_ended_sales(
            &pool,
            &stock,
            &deployment,
            Utc::now(),
            Utc::now() - chrono::Duration::days(1),
            100,
        )
    };
    assert_eq!(
        retire().await.expect("retire"),
        vec![(promotion_id, Retirement::OrdersPending(STOCK as u64))],
        "orders not yet persisted keep the sale in Redis"
    );

    let consumers = spawn_consumers(consumers_source(&app, local_source())).await;
    let more_consumers = spawn_consumers(consumers_source(&app, local_source())).await;
    wait_for_rows(&pool, promotion_id, STOCK as usize, Duration::from_secs(30)).await;
    poll_until(Duration::from_secs(30), "pending sets emptied", || async {
        let sale = SaleShards::new(promotion_id, SHARDS).expect("shards");
        (stock.pending_count(sale).await.expect("count") == 0).then_some(())
    })
    .await;
    let before = answers(&gateways, &accepted).await;
    assert!(
        before.iter().all(|a| a["status"] == "pending_payment"),
        "{before:?}"
    );
    assert!(keys_in_redis(&mut conn, promotion_id).await > 0);

    // Two consumers processes' passes at once: both see it retired.
    let (one, other) = tokio::join!(retire(), retire());
    for fates in [one, other] {
        assert_eq!(fates.expect("retire"), vec![(promotion_id, Retirement::Retired)]);
    }
    assert_eq!(
        keys_in_redis(&mut conn, promotion_id).await,
        0,
        "every key of every shard is gone"
    );
    assert_eq!(
        answers(&gateways, &accepted).await,
        before,
        "the database answers the same"
    );

    // A cancellation after retirement: its stock return completes, no key comes back.
    let (cancelled, user) = &accepted[0];
    let response = app
        .client
        .post(format!("{}/api/orders/{cancelled}/cancel", app.address))
        .bearer_auth(app.token(*user))
        .send()
        .await
        .expect("cancel");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    poll_until(Duration::from_secs(20), "the stock return applied", || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM stock_returns")
            .fetch_one(&pool)
            .await
            .expect("count");
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(
        keys_in_redis(&mut conn, promotion_id).await,
        0,
        "no key came back"
    );
    for answer in answers(&gateways, &accepted[..1]).await {
        assert_eq!(answer["status"], "cancelled", "{answer}");
    }

    // Nothing loads a retired sale into Redis again.
    for (method, path) in [
        (Method::POST, format!("/admin/promotions/{promotion_id}/pause")),
        (
            Method::POST,
            format!("/admin/promotions/{promotion_id}/reconcile?repair=true"),
        ),
    ] {
        let response = app.admin(method, &path).send().await.expect("admin call");
        assert_eq!(response.status(), 409, "{path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "sale_retired", "{path}: {body}");
    }
    assert_eq!(keys_in_redis(&mut conn, promotion_id).await, 0);
    // A second pass finds nothing more to do and keeps it retired.
    assert_eq!(
        retire().await.expect("retire"),
        vec![(promotion_id, Retirement::Retired)]
    );
    consumers.stop().await;
    more_consumers.stop().await;
}
