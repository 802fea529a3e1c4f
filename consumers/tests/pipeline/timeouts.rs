//! Payment timeouts: unpaid orders are cancelled, their stock returns to Redis, a new buyer
//! can then buy it, and `order.cancelled` is published. A payment racing the cancellation
//! never leaves a paid order whose stock was returned.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use order_core::domain::events::OrderEvent;
use order_core::domain::ids::OrderId;
use order_core::postgres::cancellation::cancel_expired;
use order_core::test_support::{local_source, poll_until};
use pulsar::consumer::Consumer;
use pulsar::{SubType, TokioExecutor};

use crate::helpers::*;

#[tokio::test]
async fn an_unpaid_order_is_cancelled_and_its_stock_sold_again() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let client = order_core::bus::connect(&app.settings.pulsar)
        .await
        .expect("pulsar");
    let mut events: Consumer<Vec<u8>, TokioExecutor> = client
        .consumer()
        .with_topic(app.settings.pulsar.topic(&app.settings.pulsar.order_events_topic))
        .with_subscription("test")
        .with_subscription_type(SubType::Shared)
        .build()
        .await
        .expect("subscribe to order-events");
    let consumers = spawn_consumers(
        consumers_source(&app, local_source()).with_var("APP_ORDERS__PAYMENT_TIMEOUT_SECS", "1"),
    )
    .await;
    let promotion_id = create_running(&app, 1).await;
    let (status, body) = app.place(promotion_id, 1, "first", 1).await;
    assert_eq!(status, 202);
    let order_id: OrderId = body["order_id"].as_str().expect("id").parse().expect("numeric");
    let (status, _) = app.place(promotion_id, 2, "second", 1).await;
    assert_eq!(status, 409, "sold out while the first order waits for payment");

    let pool = app.pool();
    poll_until(
        Duration::from_secs(30),
        "the unpaid order to be cancelled",
        || async {
            let rows = order_rows(&pool, promotion_id).await;
            (rows.len() == 1 && rows[0].status == "cancelled").then_some(())
        },
    )
    .await;
    let stock = app.stock_store().await;
    poll_until(
        Duration::from_secs(10),
        "the stock to return to Redis",
        || async {
            let live = stock
                .live_stock(&[order_core::domain::shards::SaleShards::single(promotion_id)])
                .await
                .expect("live")[0]
                .expect("loaded");
            (live.remaining == 1).then_some(())
        },
    )
    .await;

    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an order.cancelled event")
        .expect("stream")
        .expect("message");
    let event: OrderEvent = serde_json::from_slice(&event.payload.data).expect("event JSON");
    assert_eq!(
        (event.event_type.as_str(), event.order_id),
        ("order.cancelled", order_id)
    );
    assert_eq!(event.reason.as_deref(), Some("payment_timeout"));

    poll_until(
        Duration::from_secs(10),
        "a new buyer to get the returned unit",
        || async {
            let (status, _) = app.place(promotion_id, 2, "again", 1).await;
            (status == 202).then_some(())
        },
    )
    .await;
    let (status, body) = app.place(promotion_id, 1, "first", 1).await;
    assert_eq!(
        (status, body["order_id"].as_str()),
        (202, Some(&*order_id.to_string())),
        "a retry names the cancelled order"
    );
    consumers.stop().await;
}

#[tokio::test]
async fn payment_racing_cancellation_never_yields_a_paid_order_with_returned_stock() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, 100).await;
    let pool = app.pool();
    let ids: Vec<i64> = (1..=60).map(|i| 1_000_000 + i).collect();
    for id in &ids {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents, expires_at)
             VALUES ($1, $1, 'seckill', $2, 'r', 'pending_payment', 1, 1, now() - interval '1 second')",
        )
        .bind(id)
        .bind(promotion_id)
        .execute(&pool)
        .await
        .expect("insert an expired order");
    }
    // Two cancellers and a payment per order, all at once.
    let mut cancellers = Vec::new();
    for _ in 0..2 {
        let pool = pool.clone();
        cancellers.push(tokio::spawn(async move {
            let mut cancelled = Vec::new();
            loop {
                let batch = cancel_expired(&pool, 7, "order-events").await.expect("cancel");
                if batch.is_empty() {
                    break cancelled;
                }
                cancelled.extend(batch.into_iter().map(|o| o.id));
            }
        }));
    }
    // Each paid through the provider's signed callback, the production path.
    let mut payments = Vec::new();
    for id in ids.clone() {
        let app = Arc::clone(&app);
        payments.push(tokio::spawn(async move {
            let callback = serde_json::json!({
                "payment_id": format!("pay-{id}"), "order_id": id.to_string(), "amount_cents": 1,
                "status": "succeeded", "timestamp": chrono::Utc::now().timestamp(),
            });
            (id, app.payment_callback(&callback, None).await)
        }));
    }
    let mut paid = HashSet::new();
    for p in payments {
        let (id, (status, body)) = p.await.expect("task");
        assert_eq!(status, 200, "{body}");
        match body["result"].as_str() {
            Some("applied") => {
                paid.insert(id);
            }
            // Cancelled first: the money is recorded for a refund, the order stays cancelled.
            Some("refund_due") => {}
            other => panic!("order {id}: {other:?} {body}"),
        }
    }
    let mut cancelled = Vec::new();
    for c in cancellers {
        cancelled.extend(c.await.expect("task"));
    }
    let cancelled_set: HashSet<i64> = cancelled.iter().copied().collect();
    assert_eq!(cancelled.len(), cancelled_set.len(), "no order cancelled twice");
    assert!(
        paid.is_disjoint(&cancelled_set),
        "an order both paid and cancelled"
    );
    assert_eq!(
        paid.len() + cancelled_set.len(),
        ids.len(),
        "every order ends paid or cancelled"
    );

    let statuses: Vec<(i64, String)> = sqlx::query_as("SELECT id, status FROM orders WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .expect("statuses");
    for (id, status) in statuses {
        let want = if paid.contains(&id) { "paid" } else { "cancelled" };
        assert_eq!(status, want, "order {id}");
    }
    let returns: Vec<i64> = sqlx::query_scalar("SELECT order_id FROM stock_returns")
        .fetch_all(&pool)
        .await
        .expect("returns");
    assert_eq!(
        returns.into_iter().collect::<HashSet<_>>(),
        cancelled_set,
        "stock returns only for cancelled orders"
    );
    let announced = |event_type: &'static str| {
        let pool = pool.clone();
        async move {
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT event_id FROM outbox WHERE event_id LIKE $1 || ':%'")
                    .bind(event_type)
                    .fetch_all(&pool)
                    .await
                    .expect("outbox");
            ids.into_iter().collect::<HashSet<_>>()
        }
    };
    let expected = |set: &HashSet<i64>, event_type: &str| {
        set.iter()
            .map(|id| format!("{event_type}:{id}"))
            .collect::<HashSet<_>>()
    };
    assert_eq!(
        announced(OrderEvent::CANCELLED).await,
        expected(&cancelled_set, OrderEvent::CANCELLED),
        "one order.cancelled per cancelled order"
    );
    assert_eq!(
        announced(OrderEvent::PAID).await,
        expected(&paid, OrderEvent::PAID),
        "one order.paid per paid order"
    );
}
