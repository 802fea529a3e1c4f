//! One paid order produces exactly one reward coupon, one points entry, one notification,
//! one shipment (handed to a real HTTP logistics endpoint) and one analytics line: also when
//! its event is delivered twice and when the consumers are killed and restarted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use gateway::test_support::TestApp;
use order_core::test_support::{local_source, poll_until, unique};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::helpers::*;

/// A logistics API that records the idempotency key of every POST.
async fn logistics_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/shipments",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                let key = headers
                    .get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                record.lock().expect("lock").push(key);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/shipments", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn pay_new_order(app: &TestApp) -> String {
    let (status, order) = app
        .post_as(
            1,
            "/api/checkout",
            &TestApp::basket(&[("gift", 1)], None, Some(&unique("co"))),
        )
        .await;
    assert_eq!(status, 201, "{order}");
    let id = order["order_id"].as_str().expect("id").to_owned();
    let callback = json!({ "payment_id": unique("pay"), "order_id": id, "amount_cents": order["total_cents"], "status": "succeeded",
                           "timestamp": chrono::Utc::now().timestamp() });
    let (status, body) = app.payment_callback(&callback, None).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    id
}

async fn count(pool: &PgPool, sql: &str, order_id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(order_id.parse::<i64>().expect("id"))
        .fetch_one(pool)
        .await
        .expect("count")
}

fn analytics_lines(dir: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let event: Value = serde_json::from_str(line).expect("a JSON line");
            *counts
                .entry(event["event_id"].as_str().expect("event id").to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Wait until every job has handled the order's payment, then check each effect exists once.
async fn assert_effects_once(app: &TestApp, pool: &PgPool, analytics: &str, order_id: &str) {
    poll_until(Duration::from_secs(30), "every post-payment effect", || async {
        let shipped: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(order_id.parse::<i64>().expect("id"))
            .fetch_one(pool)
            .await
            .expect("status");
        let done = shipped == "shipped"
            && count(
                pool,
                "SELECT count(*) FROM coupon_grants WHERE reason = 'reward:' || $1::TEXT",
                order_id,
            )
            .await
                == 1
            && count(
                pool,
                "SELECT count(*) FROM loyalty_ledger WHERE order_id = $1",
                order_id,
            )
            .await
                == 1
            && count(
                pool,
                "SELECT count(*) FROM notifications WHERE order_id = $1 AND template = 'payment_received'",
                order_id,
            )
            .await
                == 1
            && analytics_lines(analytics).get(&format!("order.paid:{order_id}")) == Some(&1);
        done.then_some(())
    })
    .await;
    let _ = app;
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM shipments WHERE order_id = $1",
            order_id
        )
        .await,
        1
    );
    let points: i64 = sqlx::query_scalar("SELECT points FROM loyalty_ledger WHERE order_id = $1")
        .bind(order_id.parse::<i64>().expect("id"))
        .fetch_one(pool)
        .await
        .expect("points");
    assert_eq!(points, 18, "one point per 100 cents of 1000 + 800 shipping");
}

async fn redeliver_paid_event(app: &TestApp, order_id: &str) {
    let pool = app.pool();
    let client = order_core::bus::connect(&app.settings.pulsar)
        .await
        .expect("pulsar");
    let producer = order_core::bus::JsonProducer::new(
        &client,
        app.settings.pulsar.topic(&app.settings.pulsar.order_events_topic),
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("producer");
    // The outbox row is deleted once published, so rebuild the event from the order.
    let (user_id, total): (i64, i64) =
        sqlx::query_as("SELECT user_id, total_cents FROM orders WHERE id = $1")
            .bind(order_id.parse::<i64>().expect("id"))
            .fetch_one(&pool)
            .await
            .expect("order");
    let event = order_core::domain::events::OrderEvent::new(
        order_core::domain::events::OrderEvent::PAID,
        order_id.parse().expect("id"),
        user_id,
        "checkout",
        None,
        total,
        None,
    );
    producer.publish(&event).await.expect("publish a duplicate");
}

#[tokio::test]
async fn each_paid_order_has_each_effect_exactly_once_across_duplicates_and_crashes() {
    let app = spawn_gateway(local_source()).await;
    app.create_sku("gift", 1000, 100).await;
    let now = Utc::now();
    let reward = app
        .admin(Method::POST, "/admin/coupons")
        .json(
            &json!({ "code": "THANKS", "kind": "fixed", "amount_off_cents": 300,
                       "valid_from": now, "valid_until": now + chrono::Duration::days(30) }),
        )
        .send()
        .await
        .expect("reward template");
    assert_eq!(reward.status(), 201);
    let (logistics_url, handed_over) = logistics_endpoint().await;
    let analytics = std::env::temp_dir()
        .join(unique("analytics"))
        .display()
        .to_string();
    let extra = [
        ("APP_POST_PAYMENT__REWARD_COUPON_CODE", "THANKS"),
        ("APP_POST_PAYMENT__LOGISTICS_ENDPOINT", logistics_url.as_str()),
        ("APP_POST_PAYMENT__ANALYTICS_DIR", analytics.as_str()),
        ("APP_CANCELLER__INTERVAL_MS", "100"),
        ("APP_POST_PAYMENT__SHIPMENT_INTERVAL_MS", "100"),
    ];
    let pool = app.pool();

    // 1. In-process consumers handle the first order; then its event arrives again.
    let mut source = consumers_source(&app, local_source());
    for (k, v) in extra {
        source = source.with_var(k, v);
    }
    let consumers = spawn_consumers(source).await;
    let first = pay_new_order(&app).await;
    assert_effects_once(&app, &pool, &analytics, &first).await;
    redeliver_paid_event(&app, &first).await;
    consumers.stop().await;

    // 2. The binary takes over (the duplicate waits for it), handles a second order, and is
    //    killed with SIGKILL; another one takes over after a further duplicate.
    let env = consumers_env(&app, &extra);
    let mut process = spawn_consumers_process(&env);
    let second = pay_new_order(&app).await;
    assert_effects_once(&app, &pool, &analytics, &second).await;
    process.start_kill().expect("SIGKILL");
    process.wait().await.expect("reaped");
    redeliver_paid_event(&app, &second).await;
    let mut process = spawn_consumers_process(&env);
    let third = pay_new_order(&app).await;
    assert_effects_once(&app, &pool, &analytics, &third).await;

    for order in [&first, &second, &third] {
        assert_effects_once(&app, &pool, &analytics, order).await;
        let keys = handed_over
            .lock()
            .expect("lock")
            .iter()
            .filter(|k| k == &order)
            .count();
        assert!(keys >= 1, "order {order} handed to logistics");
    }

    process.start_kill().expect("SIGKILL");
    process.wait().await.expect("reaped");
}

#[tokio::test]
async fn a_refund_reverses_points_and_revokes_the_unused_reward_coupon() {
    use consumers::post_payment::points::Points;
    use consumers::post_payment::rewards::Rewards;
    use consumers::post_payment::Handler;
    use order_core::domain::events::OrderEvent;

    let app = spawn_gateway(local_source()).await;
    let pool = app.pool();
    let now = Utc::now();
    let reward = app
        .admin(Method::POST, "/admin/coupons")
        .json(&json!({ "code": "BACK", "kind": "percent", "percent_off": 10,
                       "valid_from": now, "valid_until": now + chrono::Duration::days(30) }))
        .send()
        .await
        .expect("reward template");
    assert_eq!(reward.status(), 201);
    let rewards = Rewards {
        db: pool.clone(),
        template_code: "BACK".into(),
    };
    let points = Points {
        db: pool.clone(),
        cents_per_point: 100,
    };
    let order = order_core::domain::ids::OrderId(4242);
    let paid = OrderEvent::new(OrderEvent::PAID, order, 7, "checkout", None, 2550, None);
    let refunded = OrderEvent::new(OrderEvent::REFUNDED, order, 7, "checkout", None, 2550, None);
    for event in [&paid, &paid, &refunded, &refunded] {
        rewards.handle(event).await.expect("rewards");
        points.handle(event).await.expect("points");
    }
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, points FROM loyalty_ledger WHERE order_id = 4242 ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("ledger");
    assert_eq!(
        ledger,
        [("order_paid".to_owned(), 25), ("order_refunded".to_owned(), -25)]
    );
    let grants: Vec<String> =
        sqlx::query_scalar("SELECT status FROM coupon_grants WHERE reason = 'reward:4242'")
            .fetch_all(&pool)
            .await
            .expect("grants");
    assert_eq!(grants, ["revoked"]);
}

#[tokio::test]
async fn the_webhook_notifier_retries_failures_and_gives_up_on_a_hung_endpoint() {
    use consumers::post_payment::notifications::{Notification, Notifier, WebhookNotifier};
    use std::sync::atomic::{AtomicU32, Ordering};

    // Fails twice, then accepts; a second route never answers in time.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let app = axum::Router::new()
        .route(
            "/flaky",
            axum::routing::post(move || {
                let counter = Arc::clone(&counter);
                async move {
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        axum::http::StatusCode::BAD_GATEWAY
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/hung",
            axum::routing::post(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                axum::http::StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let n = Notification {
        user_id: 1,
        order_id: "9".into(),
        template: "payment_received",
        total_cents: 100,
    };
    let flaky = WebhookNotifier {
        client: client.clone(),
        url: format!("{base}/flaky"),
        attempts: 3,
    };
    flaky.notify(&n).await.expect("the third attempt succeeds");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let hung = WebhookNotifier {
        client,
        url: format!("{base}/hung"),
        attempts: 2,
    };
    let started = std::time::Instant::now();
    assert!(
        hung.notify(&n).await.is_err(),
        "a hung endpoint is an error, not a hang"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A handler that always fails on one event, and panics on another: each delivery is given
/// up after its attempts, both events reach the dead-letter topic after the redeliveries,
/// the event between them is handled, and the worker keeps running. (Before, the worker
/// retried a failing event in place forever and its subscription stalled; a panic would
/// have ended the worker.)
#[tokio::test]
async fn an_event_its_handler_keeps_failing_is_dead_lettered_and_the_next_is_handled() {
    use consumers::post_payment::{BoxFuture, EventWorker, Handler};
    use futures::StreamExt;
    use order_core::domain::events::OrderEvent;
    use order_core::domain::ids::OrderId;

    struct RefusesOrderOne(Arc<Mutex<Vec<String>>>);
    impl Handler for RefusesOrderOne {
        fn name(&self) -> &'static str {
            "refuses-order-one"
        }
        fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
            Box::pin(async move {
                anyhow::ensure!(event.order_id != OrderId(1), "order 1 cannot be handled");
                assert_ne!(event.order_id, OrderId(3), "order 3 is a bug in the handler");
                self.0.lock().expect("lock").push(event.event_id.clone());
                Ok(())
            })
        }
    }

    let settings: order_core::runtime::settings::PulsarSettings = {
        let s: consumers::settings::Settings = local_source().load().expect("settings");
        s.pulsar
    };
    let client = order_core::bus::connect(&settings).await.expect("pulsar");
    let (topic, dlq) = (
        settings.topic(&unique("order-events")),
        settings.topic(&unique("events-dlq")),
    );
    let mut dead_letters: pulsar::consumer::Consumer<Vec<u8>, pulsar::TokioExecutor> = client
        .consumer()
        .with_topic(&dlq)
        .with_subscription("test")
        .build()
        .await
        .expect("subscribe to the dead-letter topic");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let worker = EventWorker::subscribe(
        &client,
        topic.clone(),
        dlq,
        1,
        2,
        Box::new(RefusesOrderOne(Arc::clone(&handled))),
    )
    .await
    .expect("subscribe the worker");
    let stop = order_core::runtime::shutdown::Shutdown::new();
    let running = tokio::spawn(worker.run(stop.subscribe()));

    let producer = order_core::bus::JsonProducer::new(&client, topic, None, Duration::from_secs(5))
        .await
        .expect("producer");
    for order in [1, 2, 3] {
        let event = OrderEvent::new(OrderEvent::PAID, OrderId(order), 7, "seckill", Some(1), 100, None);
        producer.publish(&event).await.expect("publish");
    }
    let mut dead = Vec::new();
    for _ in 0..2 {
        let msg = tokio::time::timeout(Duration::from_secs(30), dead_letters.next())
            .await
            .expect("the refused events reach the dead-letter topic")
            .expect("a message")
            .expect("readable");
        let event: OrderEvent = serde_json::from_slice(&msg.payload.data).expect("the event as sent");
        dead.push(event.order_id);
    }
    dead.sort();
    assert_eq!(dead, vec![OrderId(1), OrderId(3)]);
    poll_until(
        Duration::from_secs(10),
        "the next event to be handled",
        || async {
            let seen = handled.lock().expect("lock").clone();
            seen.contains(&"order.paid:2".to_owned()).then_some(())
        },
    )
    .await;
    assert!(
        !running.is_finished(),
        "the worker survived the panicking handler"
    );
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("stops")
        .expect("task");
}

#[tokio::test]
async fn a_paid_order_waits_for_its_handover_and_can_be_refunded_meanwhile() {
    let app = spawn_gateway(local_source()).await;
    app.create_sku("gift", 1000, 100).await;
    let source = consumers_source(&app, local_source())
        .with_var("APP_POST_PAYMENT__SHIPMENT_INTERVAL_MS", "100")
        .with_var("APP_POST_PAYMENT__HANDOVER_AFTER_SECS", "5");
    let consumers = spawn_consumers(source).await;
    let pool = app.pool();
    let refunded = pay_new_order(&app).await;
    let shipped = pay_new_order(&app).await;
    poll_until(Duration::from_secs(30), "both shipments recorded", || async {
        let recorded = count(
            &pool,
            "SELECT count(*) FROM shipments WHERE order_id = $1",
            &refunded,
        )
        .await
            + count(
                &pool,
                "SELECT count(*) FROM shipments WHERE order_id = $1",
                &shipped,
            )
            .await;
        (recorded == 2).then_some(())
    })
    .await;
    // Within the hand-over delay the buyer may still ask for a refund.
    let (status, body) = app
        .post_as(1, &format!("/api/orders/{refunded}/refund"), &json!({}))
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("refund_requested")),
        "{body}"
    );
    // The other one ships, but not before the delay. The relay commits the order's move to
    // `shipped`, then records the hand-over: wait for both.
    let waited: f64 = poll_until(Duration::from_secs(30), "the paid order shipped and handed over", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
            .bind(shipped.parse::<i64>().expect("id"))
            .fetch_one(&pool)
            .await
            .expect("status");
        let waited: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM handed_over_at - created_at)::float8 FROM shipments WHERE order_id = $1",
        )
        .bind(shipped.parse::<i64>().expect("id"))
        .fetch_one(&pool)
        .await
        .expect("hand-over time");
        waited.filter(|_| status == "shipped")
    })
    .await;
    assert!(waited >= 5.0, "handed over {waited} s after payment");
    consumers.stop().await;
}
