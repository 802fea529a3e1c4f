//! The seckill hot path against the real Redis and pulsar-lite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use futures::StreamExt;
use order_core::domain::events::SeckillOrderAccepted;
use order_core::domain::ids::OrderId;
use order_core::domain::shards::SaleShards;
use order_core::redis::stock::ReleaseOutcome;
use order_core::test_support::poll_until;
use pulsar::consumer::Consumer;
use pulsar::TokioExecutor;
use serde_json::Value;

use crate::helpers::{error_code, TestApp};

/// Every message on the topic so far: orders by id, and the number of messages. A marker
/// published last closes the read: the broker confirmed every answered order before it, so
/// they all come first (no waiting "long enough" for stragglers). A retry of an order not
/// yet persisted publishes a copy (same order), so an order may appear more than once; the
/// copies must agree.
async fn take_orders(
    app: &TestApp,
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
) -> (HashMap<OrderId, SeckillOrderAccepted>, usize) {
    let marker = order_core::test_support::unique("end-of-orders");
    let client = order_core::bus::connect(&app.settings.pulsar)
        .await
        .expect("pulsar");
    order_core::bus::JsonProducer::new(
        &client,
        app.settings
            .pulsar
            .topic(&app.settings.pulsar.seckill_orders_topic),
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("producer")
    .publish(&serde_json::json!({ "marker": marker }))
    .await
    .expect("publish the marker");
    let mut orders: HashMap<OrderId, SeckillOrderAccepted> = HashMap::new();
    let mut messages = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .expect("the marker arrives within 30 s")
            .expect("stream open")
            .expect("message");
        consumer.ack(&msg).await.expect("ack");
        let json: Value = serde_json::from_slice(&msg.payload.data).expect("JSON");
        if json["marker"] == marker.as_str() {
            return (orders, messages);
        }
        let event: SeckillOrderAccepted = serde_json::from_value(json).expect("an order event");
        messages += 1;
        if let Some(earlier) = orders.get(&event.order_id) {
            assert_eq!(
                (earlier.user_id, &earlier.request_id, earlier.quantity),
                (event.user_id, &event.request_id, event.quantity),
                "copies of one order disagree"
            );
        }
        orders.insert(event.order_id, event);
    }
}

#[tokio::test]
async fn a_flood_of_buyers_gets_exactly_the_stock_and_retries_get_their_order_ids() {
    flood_of_buyers(1).await;
}

/// The same flood on a sale spread over three shards: buyers of a shard that runs out are
/// served from the others, and still nobody gets a second unit or a second order id.
#[tokio::test]
async fn a_flood_over_three_shards_gets_exactly_the_stock_and_retries_get_their_order_ids() {
    flood_of_buyers(3).await;
}

async fn flood_of_buyers(shards: i64) {
    const STOCK: i64 = 40;
    const BUYERS: i64 = 5 * STOCK;
    let app = Arc::new(TestApp::spawn().await);
    let promo = app.create_sharded_promotion(STOCK, 1, shards).await;
    let promotion_id = promo["id"].as_i64().expect("id");
    let sale = SaleShards::new(promotion_id, shards).expect("shards");
    let mut consumer = app.observe_orders_topic().await;

    // Every buyer sends one request; every fifth also retries it (same request id) and
    // every seventh tries to buy a second unit (new request id), all at once.
    let mut tasks = Vec::new();
    for user in 1..=BUYERS {
        let mut attempts = vec![(format!("req-{user}"), "first")];
        if user % 5 == 0 {
            attempts.push((format!("req-{user}"), "retry"));
        }
        if user % 7 == 0 {
            attempts.push((format!("req-{user}-again"), "second"));
        }
        for (request_id, kind) in attempts {
            let app = Arc::clone(&app);
            tasks.push(tokio::spawn(async move {
                let (status, body) = app.place_as_app(promotion_id, user, &request_id, 1).await;
                (user, kind, status, body)
            }));
        }
    }
    let mut by_user: HashMap<i64, Vec<(&str, u16, Value)>> = HashMap::new();
    for task in tasks {
        let (user, kind, status, body) = task.await.expect("task");
        by_user.entry(user).or_default().push((kind, status, body));
    }

    let mut accepted: HashMap<OrderId, i64> = HashMap::new();
    for (user, results) in &by_user {
        let mut user_orders = HashSet::new();
        for (kind, status, body) in results {
            match status {
                202 => {
                    assert_eq!(body["status"], "queued");
                    let id: OrderId = body["order_id"].as_str().expect("string id").parse().expect("id");
                    user_orders.insert(id);
                    if *kind != "retry" {
                        accepted.insert(id, *user);
                    }
                }
                409 => assert!(
                    ["sold_out", "limit_exceeded"].contains(&error_code(body)),
                    "{kind}: {body}"
                ),
                other => panic!("user {user} {kind}: unexpected {other} {body}"),
            }
        }
        assert!(
            user_orders.len() <= 1,
            "user {user} holds {} orders",
            user_orders.len()
        );
    }
    // A retry answered 202 names the same order as its first attempt (or both were refused).
    for (user, results) in &by_user {
        let first = results.iter().find(|r| r.0 == "first").expect("first attempt");
        if let Some(retry) = results.iter().find(|r| r.0 == "retry") {
            if retry.1 == 202 || first.1 == 202 {
                assert_eq!(retry.2["order_id"], first.2["order_id"], "user {user}");
            }
        }
    }
    assert_eq!(accepted.len() as i64, STOCK, "exactly the stock is accepted");

    let stock = app.stock_store().await;
    assert_eq!(stock.reservation_count(sale).await.expect("hlen"), STOCK as u64);
    for user in accepted.values() {
        assert_eq!(
            stock
                .units_held(
                    sale,
                    order_core::domain::ids::UserId::parse(*user).expect("a user")
                )
                .await
                .expect("held"),
            1
        );
    }
    let live = stock.live_stock_of(sale).await.expect("live").expect("loaded");
    assert_eq!(live.remaining, 0, "nothing left on any shard");

    let (events, messages) = take_orders(&app, &mut consumer).await;
    let published: HashMap<OrderId, i64> = events.values().map(|e| (e.order_id, e.user_id)).collect();
    assert_eq!(
        published, accepted,
        "every accepted order published, with its buyer"
    );
    let retries = by_user.values().flatten().filter(|r| r.0 == "retry").count();
    assert!(
        messages <= STOCK as usize + retries,
        "{messages} messages: copies come only from retries"
    );
    assert!(events
        .values()
        .all(|e| e.promotion_id == promotion_id && e.unit_price_cents == 1999));

    // Sold out now: rejected locally, and the public view says so.
    let (status, body) = app.place(promotion_id, BUYERS + 1, "late", 1).await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"));
    let view: Value = app
        .get(&format!("/api/promotions/{promotion_id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(view["state"], "sold_out");
}

#[tokio::test]
async fn released_stock_is_sold_again_once_gateways_notice() {
    let app = TestApp::spawn().await;
    let created = app.create_promotion(1, 1, -Span::seconds(1)).await;
    let promotion_id = created["id"].as_i64().expect("id");
    let (status, body) = app.place(promotion_id, 1, "a", 1).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = app.place(promotion_id, 2, "b", 1).await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"));

    // An order is cancelled elsewhere (the timeout canceller, another gateway…).
    let order_id: OrderId = app.place(promotion_id, 1, "a", 1).await.1["order_id"]
        .as_str()
        .expect("same order")
        .parse()
        .expect("id");
    let stock = app.stock_store().await;
    assert_eq!(
        stock
            .release(
                order_core::domain::shards::SaleShards::single(promotion_id),
                order_core::domain::ids::UserId::parse(1).expect("a user"),
                order_id
            )
            .await
            .expect("release"),
        ReleaseOutcome::Released { remaining: 1 }
    );
    assert_eq!(
        stock
            .release(
                order_core::domain::shards::SaleShards::single(promotion_id),
                order_core::domain::ids::UserId::parse(1).expect("a user"),
                order_id
            )
            .await
            .expect("release"),
        ReleaseOutcome::NothingToRelease,
        "a reservation is released once"
    );

    poll_until(
        Duration::from_secs(5),
        "the gateway to sell the released unit",
        || async {
            let (status, _) = app.place(promotion_id, 2, "b2", 1).await;
            (status == 202).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_queued_order_is_visible_to_its_buyer_only() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (_, body) = app.place(promotion_id, 10, "mine", 1).await;
    let order_id = body["order_id"].as_str().expect("order id").to_owned();

    let mine = app
        .client
        .get(format!("{}/api/orders/{order_id}", app.address))
        .bearer_auth(app.token(10))
        .send()
        .await
        .expect("get");
    assert_eq!(mine.status(), 200);
    let view: Value = mine.json().await.expect("json");
    assert_eq!(
        (view["status"].as_str(), view["order_id"].as_str()),
        (Some("queued"), Some(&*order_id))
    );
    assert_eq!(view["total_cents"], 1999);

    let theirs = app
        .client
        .get(format!("{}/api/orders/{order_id}", app.address))
        .bearer_auth(app.token(11))
        .send()
        .await
        .expect("get");
    assert_eq!(theirs.status(), 404);
    let unknown = app
        .client
        .get(format!("{}/api/orders/123456789", app.address))
        .bearer_auth(app.token(10))
        .send()
        .await
        .expect("get");
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_sale_window_and_pause_are_enforced() {
    let app = TestApp::spawn().await;
    let later = app.create_promotion(5, 1, Span::hours(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, body) = app.place(later, 1, "early", 1).await;
    assert_eq!((status, error_code(&body)), (403, "not_started"));

    let running = app.create_promotion(5, 2, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let paused = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/promotions/{running}/pause"),
        )
        .send()
        .await
        .expect("pause");
    assert_eq!(paused.status(), 200);
    let (status, body) = app.place(running, 1, "while-paused", 1).await;
    assert_eq!((status, error_code(&body)), (403, "paused"));
    app.admin(
        reqwest::Method::POST,
        &format!("/admin/promotions/{running}/resume"),
    )
    .send()
    .await
    .expect("resume");
    let (status, _) = app.place(running, 1, "resumed", 1).await;
    assert_eq!(status, 202);
    let (status, body) = app.place(running, 1, "too-many", 2).await;
    assert_eq!(
        (status, error_code(&body)),
        (409, "limit_exceeded"),
        "1 held + 2 > limit 2"
    );

    // A sale that ended a moment ago: the Lua script checks Redis' clock too.
    let start = chrono::Utc::now() - Span::seconds(3);
    let ending = app
        .create_promotion_at(5, 1, start, chrono::Utc::now() + Span::milliseconds(1500))
        .await["id"]
        .as_i64()
        .expect("id");
    let attempt = std::sync::atomic::AtomicU32::new(0);
    poll_until(Duration::from_secs(10), "the sale to end", || async {
        let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, body) = app.place(ending, 100 + i64::from(n), "late", 1).await;
        (status == 403 && error_code(&body) == "ended").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_persisted_order_shows_its_database_state() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(5, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (_, body) = app.place(promotion_id, 21, "persist-me", 1).await;
    let order_id: i64 = body["order_id"].as_str().expect("id").parse().expect("numeric");

    // What the order writer does once the message is consumed.
    let pool = order_core::postgres::lazy_pool(&app.settings.database).expect("pool");
    sqlx::query(
        "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents, expires_at)
         VALUES ($1, 21, 'seckill', $2, 'persist-me', 'pending_payment', 1999, 1999, now() + interval '15 minutes')",
    )
    .bind(order_id)
    .bind(promotion_id)
    .execute(&pool)
    .await
    .expect("insert the order row");

    let view = || async {
        app.client
            .get(format!("{}/api/orders/{order_id}", app.address))
            .bearer_auth(app.token(21))
            .send()
            .await
            .expect("get")
            .json::<Value>()
            .await
            .expect("json")
    };
    // A writer that died between its commit and its Redis step left the order pending in
    // Redis: polls answered from Redis say `queued` until the sweeper finds it stored.
    assert_eq!(view().await["status"], "queued");
    app.stock_store()
        .await
        .clear_pending(
            order_core::domain::shards::SaleShards::single(promotion_id).shard(0),
            &[OrderId(order_id)],
        )
        .await
        .expect("what the sweeper does for a stored order");
    let view = view().await;
    assert_eq!(view["status"], "pending_payment");
    assert_eq!(view["order_id"], order_id.to_string());
    assert!(view["expires_at"].is_string());
}

#[tokio::test]
async fn an_accepted_order_writes_only_its_sale_keys_and_a_poll_still_finds_it() {
    // No consumers: the orders stay queued, so only Redis can answer for them.
    let app = TestApp::spawn().await;
    let first = app.create_promotion(10, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    // A second sale running at the same time: a poll must find the order in the right one.
    let second = app.create_promotion(10, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let mut orders = Vec::new();
    for (promotion_id, user) in [(first, 31), (second, 32)] {
        let (status, body) = app.place(promotion_id, user, "one-call", 1).await;
        assert_eq!(status, 202, "{body}");
        let order_id: OrderId = body["order_id"].as_str().expect("id").parse().expect("numeric");
        orders.push((promotion_id, user, order_id));
    }

    let mut conn = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("connect to Redis");
    for (promotion_id, user, order_id) in &orders {
        // Nothing per order outside the sale's hash tag (the reserve script is the one call).
        let indexed: i64 = redis::cmd("EXISTS")
            .arg(format!("seckill:order:{order_id}"))
            .query_async(&mut conn)
            .await
            .expect("EXISTS");
        assert_eq!(indexed, 0, "no order index key");
        let poll = app.get_as(*user, &format!("/api/orders/{order_id}")).await;
        assert_eq!(poll.status().as_u16(), 200);
        let view: Value = poll.json().await.expect("json");
        assert_eq!(view["status"], "queued", "{view}");
        assert_eq!(view["promotion_id"], *promotion_id, "{view}");
        // Another buyer's poll of it is a 404 like any missing order.
        let stranger = app.get_as(99, &format!("/api/orders/{order_id}")).await;
        assert_eq!(stranger.status().as_u16(), 404);
    }
}

/// Once a sale is sold out and this gateway holds its final buyers, everyone else's order is
/// refused from the cache before anything else runs: the body is not parsed (a malformed one
/// gets the same 409) and the per-user limit is not charged (more than its burst, all 409).
/// A buyer on the list still gets their order back on a retry.
#[tokio::test]
async fn a_sold_out_sale_refuses_everyone_else_first_and_its_buyer_still_gets_their_order() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(1, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, first) = app.place(promotion_id, 1, "a", 1).await;
    assert_eq!(status, 202, "{first}");
    // Redis tells this gateway the sale sold out; it then reads the final buyers.
    let (status, body) = app.place(promotion_id, 2, "late", 1).await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"));
    poll_until(
        Duration::from_secs(10),
        "a malformed order refused as sold out, its body unread",
        || async {
            let (status, body) = app.place(promotion_id, 2, "late-2", 0).await;
            (status == 409 && error_code(&body) == "sold_out").then_some(())
        },
    )
    .await;
    for attempt in 0..15 {
        let (status, body) = app.place(promotion_id, 3, &format!("try-{attempt}"), 1).await;
        assert_eq!(
            (status, error_code(&body)),
            (409, "sold_out"),
            "attempt {attempt}: {body}"
        );
    }
    let (status, again) = app.place(promotion_id, 1, "a", 1).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["order_id"], first["order_id"], "the same order");
}
