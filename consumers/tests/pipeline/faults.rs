//! Crashes between "accepted" and "persisted": each test ends with exactly the accepted
//! orders in the database, once each.

use std::sync::Arc;
use std::time::Duration;

use gateway::test_support::error_code;
use order_core::domain::ids::OrderIdGenerator;
use order_core::redis::stock::ReserveOutcome;
use order_core::test_support::{local_source, poll_until, random_worker_id, PrivateStack};

use crate::helpers::*;

async fn kill9(child: &mut tokio::process::Child) {
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
}

#[tokio::test]
async fn a_consumer_killed_mid_batch_loses_and_duplicates_nothing() {
    const ORDERS: i64 = 60;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let accepted = flash_sale(&app, promotion_id, ORDERS).await;
    let pool = app.pool();

    // A slow writer, so the kill lands while batches are in flight. pulsar-lite does not
    // hand the dead consumer's unacknowledged messages to the new one (not within 60 s in
    // our runs): the sweeper's pending set is what recovers them, so it runs at a short
    // threshold here.
    let env = consumers_env(
        &app,
        &[
            ("APP_WRITER__MIN_ROWS_PER_SEC", "40"),
            ("APP_WRITER__MAX_ROWS_PER_SEC", "40"),
            ("APP_WRITER__INITIAL_ROWS_PER_SEC", "40"),
            ("APP_SWEEPER__REPUBLISH_AFTER_SECS", "3"),
            ("APP_SWEEPER__INTERVAL_MS", "500"),
        ],
    );
    let mut first = spawn_consumers_process(&env);
    poll_until(Duration::from_secs(30), "the first rows", || async {
        (!order_rows(&pool, promotion_id).await.is_empty()).then_some(())
    })
    .await;
    kill9(&mut first).await;
    let after_kill = order_rows(&pool, promotion_id).await.len();
    assert!(
        after_kill < ORDERS as usize,
        "killed before the end ({after_kill} rows)"
    );

    let mut second = spawn_consumers_process(&env);
    let rows = wait_for_rows(&pool, promotion_id, ORDERS as usize, Duration::from_secs(60)).await;
    assert_exactly(&rows, &accepted, 1999);
    kill9(&mut second).await;
}

#[tokio::test]
async fn the_broker_killed_and_restarted_loses_and_duplicates_nothing() {
    const ORDERS: i64 = 40;
    let stack = PrivateStack::start().expect("private stack");
    let app = Arc::new(spawn_gateway(stack.source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let accepted = flash_sale(&app, promotion_id, ORDERS).await;
    let pool = app.pool();
    let consumers = spawn_consumers(
        consumers_source(&app, stack.source())
            .with_var("APP_WRITER__MIN_ROWS_PER_SEC", "40")
            .with_var("APP_WRITER__MAX_ROWS_PER_SEC", "40")
            .with_var("APP_WRITER__INITIAL_ROWS_PER_SEC", "40"),
    )
    .await;
    poll_until(Duration::from_secs(30), "the first rows", || async {
        (!order_rows(&pool, promotion_id).await.is_empty()).then_some(())
    })
    .await;
    stack.kill_part("pulsar").expect("kill -9 the broker");
    stack.start_part("pulsar").expect("restart the broker");
    let rows = wait_for_rows(&pool, promotion_id, ORDERS as usize, Duration::from_secs(90)).await;
    assert_exactly(&rows, &accepted, 1999);
    consumers.stop().await;
}

#[tokio::test]
async fn postgres_down_for_a_while_delays_but_loses_nothing() {
    const ORDERS: i64 = 30;
    let stack = PrivateStack::start().expect("private stack");
    let app = Arc::new(spawn_gateway(stack.source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let consumers = spawn_consumers(
        consumers_source(&app, stack.source())
            .with_var("APP_WRITER__BACKOFF_MAX_MS", "500")
            .with_var("APP_DATABASE__ACQUIRE_TIMEOUT_MS", "500"),
    )
    .await;

    stack.stop_part("postgres").expect("stop PostgreSQL");
    // The hot path does not need the database: the sale goes on.
    let accepted = flash_sale(&app, promotion_id, ORDERS).await;
    assert_eq!(accepted.len() as i64, ORDERS);
    poll_until(
        Duration::from_secs(20),
        "the writer to notice the outage",
        || async { (consumers.stats.report().get("batch_failures") > 0).then_some(()) },
    )
    .await;
    stack.start_part("postgres").expect("start PostgreSQL");

    let pool = app.pool();
    let rows = wait_for_rows(&pool, promotion_id, ORDERS as usize, Duration::from_secs(60)).await;
    assert_exactly(&rows, &accepted, 1999);
    consumers.stop().await;
}

#[tokio::test]
async fn a_reservation_whose_publish_never_happened_is_recovered_by_the_sweeper() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, 5).await;
    // A gateway that died right after reserve.lua: reservations, no messages.
    let stock = app.stock_store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut orphans = std::collections::HashMap::new();
    for user in 1..=3 {
        let order_id = ids.next_id();
        let outcome = order_core::test_support::reserve(
            &stock,
            promotion_id,
            user,
            &format!("crashed-{user}"),
            1,
            order_id,
        )
        .await
        .expect("reserve");
        assert!(matches!(outcome, ReserveOutcome::Reserved { .. }));
        orphans.insert(order_id, user);
    }
    let consumers = spawn_consumers(
        consumers_source(&app, local_source()).with_var("APP_SWEEPER__REPUBLISH_AFTER_SECS", "1"),
    )
    .await;
    let pool = app.pool();
    let rows = wait_for_rows(&pool, promotion_id, 3, Duration::from_secs(30)).await;
    assert_exactly(&rows, &orphans, 1999);
    poll_until(
        Duration::from_secs(10),
        "the pending set to be cleared",
        || async {
            (stock
                .pending_count(order_core::domain::shards::SaleShards::single(promotion_id))
                .await
                .expect("count")
                == 0)
                .then_some(())
        },
    )
    .await;
    assert!(consumers.stats.report().get("sweeper_republished") >= 3);
    consumers.stop().await;
}

/// Redis losing a running sale (a failover to an empty replica, a restart without its data):
/// loading the sale afresh would offer its whole stock again beside the orders already
/// taken. The sale stops (503 `not_loaded`) instead, and the consumers rebuild it by
/// themselves from its accepted orders (the database's, and any still in the broker); it then
/// goes on with exactly the stock that is left. No operator step.
#[tokio::test]
async fn a_sale_that_redis_lost_stops_then_rebuilds_itself_and_never_oversells() {
    const STOCK: i64 = 10;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let consumers = spawn_consumers(consumers_source(&app, local_source())).await;
    let promotion_id = create_running(&app, STOCK).await;
    let first = flash_sale(&app, promotion_id, 4).await;
    assert_eq!(first.len(), 4);
    let pool = app.pool();
    wait_for_rows(&pool, promotion_id, 4, Duration::from_secs(30)).await;

    app.stock_store()
        .await
        .forget_promotion(order_core::domain::shards::SaleShards::single(promotion_id))
        .await
        .expect("drop the sale's keys");
    let (status, body) = app.place(promotion_id, 500, "after-loss", 1).await;
    assert_eq!((status, error_code(&body)), (503, "not_loaded"), "{body}");

    // The consumers find the sale gone and rebuild it from its four orders.
    poll_until(Duration::from_secs(30), "the sale to be rebuilt", || async {
        (consumers.stats.report().get("sales_recovered") >= 1).then_some(())
    })
    .await;
    let report = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/promotions/{promotion_id}/reconcile"),
        )
        .send()
        .await
        .expect("reconcile")
        .json::<serde_json::Value>()
        .await
        .expect("report");
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["remaining"], 6, "{report}");

    // The sale goes on with what is left: 6 more units, then sold out.
    let mut accepted = 0;
    for user in 100..112 {
        let (status, body) = app.place(promotion_id, user, "after-repair", 1).await;
        match status {
            202 => accepted += 1,
            _ => assert_eq!(error_code(&body), "sold_out", "{body}"),
        }
    }
    assert_eq!(accepted, 6);
    let rows = wait_for_rows(&pool, promotion_id, STOCK as usize, Duration::from_secs(30)).await;
    assert_eq!(rows.len() as i64, STOCK);
    consumers.stop().await;
}
