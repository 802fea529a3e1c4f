//! Buyers polling their order: answered from Redis while the sale is current (PostgreSQL
//! stopped changes nothing), and long polls that return when the writer persists the order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use order_core::test_support::{poll_until, unique, PrivateStack};
use serde_json::{json, Value};

use crate::helpers::{consumers_source, create_running, order_id_of, spawn_consumers, spawn_gateway};

async fn order_status(
    app: &gateway::test_support::TestApp,
    user: i64,
    order_id: &str,
    wait_ms: Option<u64>,
) -> (u16, Value) {
    let query = wait_ms.map_or(String::new(), |ms| format!("wait_ms={ms}"));
    order_status_with(app, user, order_id, &query).await
}

async fn order_status_with(
    app: &gateway::test_support::TestApp,
    user: i64,
    order_id: &str,
    query: &str,
) -> (u16, Value) {
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let response = app
        .client
        .get(format!("{}/api/orders/{order_id}{query}", app.address))
        .bearer_auth(app.token(user))
        .send()
        .await
        .expect("poll reaches the gateway");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_persisted_order_and_its_payment_are_answered_with_postgres_stopped() {
    let stack = PrivateStack::start().expect("private stack");
    let app = spawn_gateway(stack.source()).await;
    let consumers = spawn_consumers(consumers_source(&app, stack.source())).await;
    let promotion_id = create_running(&app, 10).await;
    let mut orders = Vec::new();
    for user in [1, 2] {
        let (status, body) = app.place(promotion_id, user, &unique("req"), 1).await;
        assert_eq!(status, 202, "{body}");
        orders.push((user, order_id_of(&body).to_string()));
    }
    for (user, id) in &orders {
        poll_until(Duration::from_secs(20), "the order is persisted", || async {
            let (_, body) = order_status(&app, *user, id, None).await;
            (body["status"] == "pending_payment").then_some(())
        })
        .await;
    }
    let (paid_user, paid_id) = &orders[0];
    let (_, before) = order_status(&app, *paid_user, paid_id, None).await;
    let callback = json!({ "payment_id": unique("pay"), "order_id": paid_id, "amount_cents": before["total_cents"],
                           "status": "succeeded", "timestamp": chrono::Utc::now().timestamp() });
    let (status, body) = app.payment_callback(&callback, None).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));

    stack.stop_part("postgres").expect("stop PostgreSQL");
    let (status, paid) = order_status(&app, *paid_user, paid_id, None).await;
    assert_eq!((status, paid["status"].as_str()), (200, Some("paid")), "{paid}");
    assert_eq!(paid["total_cents"], before["total_cents"]);
    let (unpaid_user, unpaid_id) = &orders[1];
    let (status, unpaid) = order_status(&app, *unpaid_user, unpaid_id, None).await;
    assert_eq!(
        (status, unpaid["status"].as_str()),
        (200, Some("pending_payment")),
        "{unpaid}"
    );
    assert!(
        unpaid["expires_at"].is_string(),
        "expiry once persisted: {unpaid}"
    );
    // Another user's order still looks absent.
    let (status, _) = order_status(&app, 99, unpaid_id, None).await;
    assert_eq!(status, 404);
    stack.start_part("postgres").expect("start PostgreSQL");
    consumers.stop().await;
}

#[tokio::test]
async fn a_long_poll_returns_when_the_order_is_persisted_and_at_its_deadline_otherwise() {
    let app = Arc::new(spawn_gateway(order_core::test_support::local_source()).await);
    let promotion_id = create_running(&app, 10).await;
    let (status, body) = app.place(promotion_id, 1, &unique("req"), 1).await;
    assert_eq!(status, 202, "{body}");
    let order_id = order_id_of(&body).to_string();

    // No writer yet: the order stays queued, and the poll answers at its deadline.
    let started = Instant::now();
    let (status, queued) = order_status(&app, 1, &order_id, Some(300)).await;
    assert_eq!(
        (status, queued["status"].as_str()),
        (200, Some("queued")),
        "{queued}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "held until wait_ms"
    );

    // A poll held while the writer starts returns with the persisted status.
    let poll = {
        let (app, order_id) = (Arc::clone(&app), order_id.clone());
        tokio::spawn(async move { order_status(&app, 1, &order_id, Some(10_000)).await })
    };
    poll_until(Duration::from_secs(5), "the poll is held", || async {
        (app.order_watch.held() == 1).then_some(())
    })
    .await;
    let consumers = spawn_consumers(consumers_source(&app, order_core::test_support::local_source())).await;
    let (status, persisted) = poll.await.expect("poll task");
    assert_eq!(
        (status, persisted["status"].as_str()),
        (200, Some("pending_payment")),
        "woken by the change, not by the deadline: {persisted}"
    );
    // Past `queued` already: a long poll answers at once; one that names the status the app
    // knows is held while the order keeps it.
    let (_, at_once) = order_status(&app, 1, &order_id, Some(10_000)).await;
    assert_eq!(at_once["status"], "pending_payment");
    let started = Instant::now();
    let (status, unchanged) =
        order_status_with(&app, 1, &order_id, "wait_ms=300&status=pending_payment").await;
    assert_eq!(
        (status, unchanged["status"].as_str()),
        (200, Some("pending_payment"))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "held while pending_payment"
    );
    // Above the maximum, or a status that is none: a clear 400.
    let (status, refused) = order_status(&app, 1, &order_id, Some(60_000)).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, refused) = order_status_with(&app, 1, &order_id, "wait_ms=300&status=lost").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    consumers.stop().await;
}

#[tokio::test]
async fn a_thousand_long_polls_are_held_on_one_gateway_and_one_more_is_refused() {
    const HELD: usize = 1000;
    let app = Arc::new(
        spawn_gateway(order_core::test_support::local_source())
            .await
            .spawn_beside(|s| {
                s.orders.long_poll_max_waiters = HELD;
                s.rate_limit.per_user.per_second = 1_000_000.0;
                s.rate_limit.per_user.burst = 1_000_000;
            })
            .await,
    );
    let promotion_id = create_running(&app, 10).await;
    let (status, body) = app.place(promotion_id, 1, &unique("req"), 1).await;
    assert_eq!(status, 202, "{body}");
    let order_id = order_id_of(&body).to_string();

    let mut polls = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let (app, order_id) = (Arc::clone(&app), order_id.clone());
        polls.push(tokio::spawn(async move {
            order_status(&app, 1, &order_id, Some(5_000)).await
        }));
    }
    poll_until(Duration::from_secs(20), "every poll is held", || async {
        (app.order_watch.held() == HELD).then_some(())
    })
    .await;
    let (status, refused) = order_status(&app, 1, &order_id, Some(5_000)).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (503, Some("too_many_waiters"))
    );
    for poll in polls {
        let (status, body) = poll.await.expect("poll task");
        assert_eq!((status, body["status"].as_str()), (200, Some("queued")));
    }
    assert_eq!(app.order_watch.held(), 0, "every registration released");
}
