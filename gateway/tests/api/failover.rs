//! On a replicated Redis (a Cluster with a replica per master, or a primary and a replica
//! under Sentinel; a private one, whatever the run): no 202 rests on a write that only one
//! node had. A master paused past the failover timeout comes back holding requests queued for
//! it (a split brain): whatever it runs before it learns it was replaced is never answered 202.
//! A sale whose node changed history answers 503 `recovering` and takes no new unit, while a
//! retry of an order it held still gets it.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Duration as Span;
use order_core::domain::shards::SaleShards;
use order_core::redis::stock::SaleKeys;
use order_core::test_support::{poll_until, redis_run, PrivateStack, RedisKind};

use crate::helpers::{error_code, generous_limits, TestApp};

/// The run's replicated shape; on the single-node pass, Sentinel.
fn replicated() -> RedisKind {
    match redis_run() {
        RedisKind::Node => RedisKind::Sentinel,
        kind => kind,
    }
}

async fn replicated_stack() -> PrivateStack {
    tokio::task::spawn_blocking(|| PrivateStack::start_on(replicated()))
        .await
        .expect("join")
        .expect("private replicated stack")
}

/// The reservations' order ids the data node `part` holds for a sale on one shard.
fn reservations_on(stack: &PrivateStack, part: &str, promotion_id: i64) -> HashSet<i64> {
    let port = stack.part_port(part).expect("a data node");
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("connect to the node");
    let ids: Vec<i64> = redis::cmd("HKEYS")
        .arg(SaleKeys::new(promotion_id).reservations)
        .query(&mut conn)
        .expect("HKEYS");
    ids.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_paused_past_its_failover_gives_no_202_for_what_it_ran_after_being_replaced() {
    let stack = replicated_stack().await;
    let app = TestApp::spawn_with(generous_limits(stack.source())).await;
    let promotion_id = app.create_promotion(100, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let mut accepted: Vec<i64> = Vec::new();
    for user in 1..=3 {
        let (status, body) = app.place(promotion_id, user, "before", 1).await;
        assert_eq!(status, 202, "{body}");
        accepted.push(
            body["order_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("id"),
        );
    }

    let key = SaleKeys::new(promotion_id).meta;
    let master = stack.master_part(&key).expect("the sale's master");
    stack.pause_part(&master).expect("pause the master");
    poll_until(Duration::from_secs(30), "its replica to be promoted", || async {
        let now = tokio::task::block_in_place(|| stack.master_part(&key)).unwrap_or_default();
        (!now.is_empty() && now != master).then_some(())
    })
    .await;
    // Buyers keep coming; the gateway still sends the sale's commands to the paused master,
    // which runs them when it comes back, before it learns it was replaced.
    let app = std::sync::Arc::new(app);
    let during: Vec<_> = (10..30)
        .map(|user| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move { app.place(promotion_id, user, "during", 1).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.resume_part(&master).expect("resume the old master");
    for answer in during {
        let (status, body) = answer.await.expect("join");
        if status == 202 {
            accepted.push(
                body["order_id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .expect("id"),
            );
        } else {
            assert!(
                matches!(
                    error_code(&body),
                    "order_unconfirmed" | "recovering" | "unavailable"
                ),
                "{status} {body}"
            );
        }
    }

    // Once the old master is a replica again, the node that survived holds every order that
    // was answered 202.
    tokio::task::block_in_place(|| stack.wait_part("redis")).expect("the stack heals");
    let survivor = stack.master_part(&key).expect("the master now");
    let held = reservations_on(&stack, &survivor, promotion_id);
    let lost: Vec<&i64> = accepted.iter().filter(|id| !held.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "202s the surviving master does not hold: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_whose_redis_history_changed_takes_no_new_buyer_but_a_retry_gets_its_order() {
    let stack = replicated_stack().await;
    let app = TestApp::spawn_with(generous_limits(stack.source())).await;
    let promotion_id = app.create_promotion(10, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (status, before) = app.place(promotion_id, 1, "before", 1).await;
    assert_eq!(status, 202, "{before}");

    // The master dies; its replica (holding every confirmed reservation) takes over, under a
    // new replication id, and the old master comes back as its replica (a write needs one).
    // Nothing but a recovery (the consumers') reopens the sale.
    let key = SaleKeys::new(promotion_id).meta;
    let master = stack.master_part(&key).expect("the sale's master");
    stack.kill_part(&master).expect("kill the master");
    poll_until(Duration::from_secs(30), "its replica to be promoted", || async {
        let now = tokio::task::block_in_place(|| stack.master_part(&key)).unwrap_or_default();
        (!now.is_empty() && now != master).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| {
        stack.start_part(&master)?;
        stack.wait_part("redis")
    })
    .expect("the old master rejoins as a replica");
    let (status, body) = poll_until(
        Duration::from_secs(30),
        "the promoted replica to answer",
        || async {
            let answer = app.place(promotion_id, 2, "after", 1).await;
            (error_code(&answer.1) == "recovering").then_some(answer)
        },
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let stock = app.stock_store().await;
    let remaining = |stock: &order_core::redis::stock::StockStore| {
        let stock = stock.clone();
        async move {
            stock
                .live_stock(&[SaleShards::single(promotion_id)])
                .await
                .expect("live")[0]
                .expect("loaded")
                .remaining
        }
    };
    let fenced_at = remaining(&stock).await;
    // Further buyers are refused without taking stock: the node's remaining count may
    // include units it lost, until the sale is rebuilt from its accepted orders.
    for user in 3..6 {
        let (status, body) = app.place(promotion_id, user, "after", 1).await;
        assert_eq!((status, error_code(&body)), (503, "recovering"), "{body}");
    }
    assert_eq!(remaining(&stock).await, fenced_at, "a fenced sale takes no stock");
    // A retry of an order reserved before takes no unit: it gets its order.
    let (status, body) = app.place(promotion_id, 1, "before", 1).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["order_id"], before["order_id"]);
}
