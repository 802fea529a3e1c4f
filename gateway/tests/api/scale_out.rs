//! Several gateways of one deployment, and gray failures between them: a sale created on one
//! gateway is sold at once by another, a paused broker with the app retrying on another
//! gateway still gives one order per request id, a gateway paused past its worker-id lease
//! never mints an id another gateway minted, a gateway whose clock is off by minutes
//! judges sale windows by Redis' clock, and the stats add up every gateway's counts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use order_core::domain::ids::OrderId;
use order_core::redis::worker_lease::{LeaseSettings, WorkerLease};
use order_core::test_support::{poll_until, skewed_clock_env, unique, PrivateStack};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::binary::Binary;
use crate::helpers::{error_code, generous_limits, TestApp};

fn order_id(body: &Value) -> OrderId {
    body["order_id"]
        .as_str()
        .expect("a string order id")
        .parse()
        .expect("numeric")
}

#[tokio::test]
async fn a_sale_created_on_one_gateway_is_sold_at_once_by_another() {
    let a = TestApp::spawn().await;
    // B's own refresh would take a minute: only the lookup on a miss can find the sale.
    let b = a.spawn_beside(|s| s.seckill.cache_refresh_ms = 60_000).await;
    let promotion_id = a.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, body) = b.place(promotion_id, 1, "first", 1).await;
    assert_eq!(status, 202, "{body}");
    let view = b.get(&format!("/api/promotions/{promotion_id}")).await;
    assert_eq!(view.status(), 200);

    let (status, body) = b.place(promotion_id + 1_000_000, 1, "nothing", 1).await;
    assert_eq!((status, error_code(&body)), (404, "promotion_not_found"));
}

#[tokio::test]
async fn a_paused_broker_with_retries_on_another_gateway_gives_one_order_per_request_id() {
    let stack = PrivateStack::start().expect("private stack");
    let a = Arc::new(
        TestApp::spawn_with(
            generous_limits(stack.source())
                .with_var("APP_SECKILL__PUBLISH_TIMEOUT_MS", "1500")
                .with_var("APP_PULSAR__OPERATION_TIMEOUT_MS", "1000"),
        )
        .await,
    );
    let b = a.spawn_beside(|_| {}).await;
    let promotion_id = a.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let stock = a.stock_store().await;

    stack.pause_part("pulsar").expect("SIGSTOP the broker");
    let first = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.place(promotion_id, 1, "tap", 1).await }
    });
    // The first try holds its unit and waits for the broker; the app gives up on it and
    // retries on another gateway.
    poll_until(Duration::from_secs(10), "the first try to reserve", || async {
        (stock
            .units_held(
                order_core::domain::shards::SaleShards::single(promotion_id),
                order_core::domain::ids::UserId::parse(1).expect("a user"),
            )
            .await
            .ok()?
            == 1)
            .then_some(())
    })
    .await;
    let retry_during = b.place(promotion_id, 1, "tap", 1).await;
    let first = first.await.expect("task");
    stack.resume_part("pulsar").expect("SIGCONT the broker");
    let retry_after = poll_until(Duration::from_secs(60), "a retry to be confirmed", || async {
        let (status, body) = b.place(promotion_id, 1, "tap", 1).await;
        (status == 202).then_some(body)
    })
    .await;

    let kept = order_id(&retry_after);
    for (what, (status, body)) in [("first try", &first), ("retry during the pause", &retry_during)] {
        match status {
            202 => assert_eq!(order_id(body), kept, "{what} was promised another order"),
            503 => assert_eq!(error_code(body), "order_unconfirmed", "{what}: {body}"),
            other => panic!("{what}: unexpected {other} {body}"),
        }
    }
    assert_eq!(
        stock
            .units_held(
                order_core::domain::shards::SaleShards::single(promotion_id),
                order_core::domain::ids::UserId::parse(1).expect("a user")
            )
            .await
            .expect("held"),
        1
    );
    assert_eq!(
        stock
            .reservation_count(order_core::domain::shards::SaleShards::single(promotion_id))
            .await
            .expect("count"),
        1
    );
    a.wait_for_order_on_topic(kept).await;
}

/// A free worker id, found by leasing one briefly (the lease runs out by itself).
async fn a_free_worker_id(app: &TestApp, ttl: Duration) -> u16 {
    let conn = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("redis");
    let settings = LeaseSettings {
        ttl,
        worker_id: None,
        replicas: app.settings.redis.replicas_acked(),
        replica_timeout: Duration::from_millis(app.settings.redis.durability.replica_timeout_ms),
    };
    let lease = WorkerLease::acquire(conn, unique("probe"), settings)
        .await
        .expect("a lease");
    lease.worker_id().expect("held")
}

fn worker_of(id: OrderId) -> u16 {
    ((id.0 >> 12) & 1023) as u16
}

/// Place `users` one-unit orders through `gateway`, all at once; the 202s' order ids.
async fn flood(
    client: &reqwest::Client,
    gateway: &Binary,
    app: &TestApp,
    promotion_id: i64,
    users: std::ops::Range<i64>,
) -> Vec<OrderId> {
    let calls = users.map(|user| {
        let request = client
            .post(gateway.url(&format!("/api/seckill/{promotion_id}/orders")))
            .bearer_auth(app.token(user))
            .header("X-Sale-Token", app.sale_token(promotion_id, user))
            .json(&serde_json::json!({ "quantity": 1, "request_id": format!("r{user}") }));
        async move {
            let response = request.send().await.expect("the gateway answers");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status == 202).then(|| order_id(&body))
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test]
async fn a_gateway_paused_past_its_lease_never_mints_an_id_another_gateway_minted() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(1000, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let ttl = Duration::from_millis(1500);
    let worker = a_free_worker_id(&app, ttl).await.to_string();
    let database = app.settings.database.url.expose_secret().to_owned();
    let env = [
        ("APP_DATABASE__URL", database.as_str()),
        (
            "APP_PULSAR__SECKILL_ORDERS_TOPIC",
            app.settings.pulsar.seckill_orders_topic.as_str(),
        ),
        ("APP_SECKILL__WORKER_ID", worker.as_str()),
        ("APP_SECKILL__WORKER_LEASE_TTL_MS", "1500"),
        ("APP_RATE_LIMIT__PER_IP__PER_SECOND", "1000000"),
        ("APP_RATE_LIMIT__PER_IP__BURST", "1000000"),
    ];
    let client = reqwest::Client::new();
    let paused = Binary::start(&env).await;
    paused.wait_ready(&client).await;
    assert_eq!(flood(&client, &paused, &app, promotion_id, 1..2).await.len(), 1);

    paused.signal("-STOP");
    // Insists on the same worker id: starts once the paused gateway's lease ran out.
    let successor = Binary::start(&env).await;
    successor.wait_ready(&client).await;
    paused.signal("-CONT");

    let (from_paused, from_successor) = tokio::join!(
        flood(&client, &paused, &app, promotion_id, 100..250),
        flood(&client, &successor, &app, promotion_id, 300..450),
    );
    assert!(!from_successor.is_empty(), "the successor sells");
    let all: Vec<OrderId> = from_paused.iter().chain(&from_successor).copied().collect();
    let distinct: HashSet<OrderId> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "two gateways minted the same order id");
    let taken: u16 = worker.parse().expect("worker id");
    assert!(
        from_paused.iter().all(|id| worker_of(*id) != taken),
        "the resumed gateway minted with a worker id it no longer held"
    );
}

#[tokio::test]
async fn a_gateway_whose_clock_is_ten_minutes_behind_judges_the_sale_by_redis_clock() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(10, 1, -Span::seconds(30)).await["id"]
        .as_i64()
        .expect("id");
    let database = app.settings.database.url.expose_secret().to_owned();
    let client = reqwest::Client::new();
    let skew = skewed_clock_env("-10m");
    let mut env: Vec<(&str, &str)> = skew.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("APP_DATABASE__URL", database.as_str()),
        (
            "APP_PULSAR__SECKILL_ORDERS_TOPIC",
            app.settings.pulsar.seckill_orders_topic.as_str(),
        ),
    ]);
    let behind = Binary::start(&env).await;
    behind.wait_ready(&client).await;
    let response = client
        .post(behind.url(&format!("/api/seckill/{promotion_id}/orders")))
        .bearer_auth(app.token(1))
        .header("X-Sale-Token", app.sale_token(promotion_id, 1))
        .json(&serde_json::json!({ "quantity": 1, "request_id": "early-clock" }))
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "a sale running on Redis' clock was refused: {body}");
}

#[tokio::test]
async fn a_retry_long_after_the_sale_ended_still_gets_its_order() {
    let a = TestApp::spawn().await;
    let promotion_id = a.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, first) = a.place(promotion_id, 1, "long-ago", 1).await;
    assert_eq!(status, 202, "{first}");
    // Two days later: the sale is out of every gateway's list of current sales.
    sqlx::query(
        "UPDATE promotions SET starts_at = now() - interval '3 days', ends_at = now() - interval '2 days'
         WHERE id = $1",
    )
    .bind(promotion_id)
    .execute(&a.pool())
    .await
    .expect("age the sale");
    let b = a.spawn_beside(|_| {}).await;
    let (status, retry) = b.place(promotion_id, 1, "long-ago", 1).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(order_id(&retry), order_id(&first));
    let (status, body) = b.place(promotion_id, 2, "too-late", 1).await;
    assert_eq!((status, error_code(&body)), (404, "promotion_not_found"));
}

fn listed(stats: &Value, address: &str) -> Option<Value> {
    let name = address.trim_start_matches("http://");
    stats["instances"]
        .as_array()?
        .iter()
        .find(|i| i["role"] == "gateway" && i["name"] == name)
        .cloned()
}

#[tokio::test]
async fn the_stats_add_up_every_gateway_and_list_the_live_ones() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside(|_| {}).await;
    let c = a.spawn_beside(|_| {}).await;
    let promotion_id = a.create_promotion(6, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    // Two orders on each gateway sell the stock; then three refusals on each.
    for (g, gateway) in [&a, &b, &c].into_iter().enumerate() {
        for k in 0..2 {
            let user = (g * 10 + k) as i64 + 1;
            let (status, body) = gateway.place(promotion_id, user, &format!("buy-{user}"), 1).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    for (g, gateway) in [&a, &b, &c].into_iter().enumerate() {
        for k in 0..3 {
            let user = (g * 10 + k) as i64 + 100;
            let (status, body) = gateway
                .place(promotion_id, user, &format!("late-{user}"), 1)
                .await;
            assert_eq!((status, error_code(&body)), (409, "sold_out"));
        }
    }
    let stats = poll_until(
        Duration::from_secs(10),
        "B to show the deployment's totals",
        || async {
            let stats = b.stats(promotion_id).await?;
            let d = &stats["deployment"];
            (d["accepted"] == 6 && d["rejections"]["sold_out"] == 9).then_some(stats)
        },
    )
    .await;
    assert_eq!(stats["this_gateway"]["accepted"], 2, "B's own share: {stats}");
    assert_eq!(stats["this_gateway"]["rejections"]["sold_out"], 3);
    for gateway in [&a, &b, &c] {
        let listed =
            listed(&stats, &gateway.address).unwrap_or_else(|| panic!("{} listed: {stats}", gateway.address));
        assert_eq!(listed["live"], true, "{listed}");
    }

    // A gateway that stops leaves the list; the totals keep its share.
    let c_address = c.address.clone();
    c.shutdown.trigger();
    let _ = c.handle.await;
    let stats = poll_until(Duration::from_secs(10), "C to leave the list", || async {
        let stats = a.stats(promotion_id).await?;
        listed(&stats, &c_address).is_none().then_some(stats)
    })
    .await;
    assert_eq!(stats["deployment"]["accepted"], 6, "{stats}");
}
