//! The deployment, not the process: three gateways and two consumers processes on one sale
//! with each app retry landing on another gateway; K writers against one pace; a writer
//! that meets an order id stored as a different order; a consumer whose clock is ten
//! minutes ahead; retries across gateways at sell-out while PostgreSQL is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use gateway::test_support::{error_code, TestApp};
use order_core::domain::events::SeckillOrderAccepted;
use order_core::domain::ids::{OrderId, OrderIdGenerator, PromotionId, Quantity, RequestId, UserId};
use order_core::postgres::persist::{insert_seckill_orders, NewSeckillOrder};
use order_core::runtime::settings::SettingsSource;
use order_core::test_support::{
    local_source, poll_until, random_worker_id, skewed_clock_env, unique, PrivateStack,
};
use serde_json::Value;

use crate::helpers::*;

/// Every buyer's first try on gateway `u % n`, the same request id again on the next
/// gateway at the same moment; per user, every definitive answer.
async fn sale_with_retries_elsewhere(
    gateways: &[Arc<TestApp>],
    promotion_id: i64,
    buyers: i64,
) -> HashMap<i64, Vec<(u16, Value)>> {
    let n = gateways.len() as i64;
    let mut tasks = Vec::new();
    for user in 1..=buyers {
        for hop in 0..2 {
            let gateways = gateways.to_vec();
            tasks.push(tokio::spawn(async move {
                let start = ((user + hop) % n) as usize;
                (
                    user,
                    place_like_an_app(&gateways, start, promotion_id, user).await,
                )
            }));
        }
    }
    let mut answers: HashMap<i64, Vec<(u16, Value)>> = HashMap::new();
    for task in tasks {
        let (user, answer) = task.await.expect("task");
        answers.entry(user).or_default().push(answer);
    }
    answers
}

/// The one order each user holds (all their 202s must name it), or `None`.
fn held_orders(answers: &HashMap<i64, Vec<(u16, Value)>>) -> HashMap<OrderId, i64> {
    let mut held = HashMap::new();
    for (user, results) in answers {
        let mut ids: Vec<OrderId> = results
            .iter()
            .filter(|(status, _)| *status == 202)
            .map(|(_, body)| order_id_of(body))
            .collect();
        ids.dedup();
        assert!(ids.len() <= 1, "user {user}'s request got two order ids: {ids:?}");
        for (status, body) in results {
            assert!(
                *status == 202 || (*status == 409 && error_code(body) == "sold_out"),
                "user {user}: {status} {body}"
            );
        }
        if let Some(id) = ids.first() {
            assert!(
                held.insert(*id, *user).is_none(),
                "order {id} answered to two users"
            );
        }
    }
    held
}

#[tokio::test]
async fn three_gateways_and_two_consumers_sell_exactly_the_stock_with_retries_on_other_gateways() {
    const STOCK: i64 = 300;
    let first = Arc::new(spawn_gateway(local_source()).await);
    let gateways = vec![
        Arc::clone(&first),
        Arc::new(first.spawn_beside(|_| {}).await),
        Arc::new(first.spawn_beside(|_| {}).await),
    ];
    let writers = [
        spawn_consumers(consumers_source(&first, local_source())).await,
        spawn_consumers(consumers_source(&first, local_source())).await,
    ];
    let promotion_id = create_running(&first, STOCK).await;

    let answers = sale_with_retries_elsewhere(&gateways, promotion_id, 5 * STOCK).await;
    let accepted = held_orders(&answers);
    assert_eq!(accepted.len() as i64, STOCK, "exactly the stock is accepted");

    let pool = first.pool();
    let rows = wait_for_rows(&pool, promotion_id, STOCK as usize, Duration::from_secs(60)).await;
    assert_exactly(&rows, &accepted, 1999);
    let promotion = order_core::postgres::promotions::PromotionRepo::new(pool.clone())
        .get(promotion_id)
        .await
        .expect("read")
        .expect("promotion");
    let report = order_core::app::reconcile::reconcile(&pool, &first.stock_store().await, &promotion, false)
        .await
        .expect("reconcile");
    assert!(report.consistent, "{report:?}");
    for writer in writers {
        assert_eq!(writer.stats.report().get("order_conflicts"), 0);
        writer.stop().await;
    }
}

/// Consumers writing at a fixed `rate`, each with a receive queue of one small batch (10),
/// so several writers all get messages.
fn paced_writers(app: &TestApp, base: SettingsSource, rate: i64) -> SettingsSource {
    let rate = rate.to_string();
    consumers_source(app, base)
        .with_var("APP_WRITER__MIN_ROWS_PER_SEC", &rate)
        .with_var("APP_WRITER__MAX_ROWS_PER_SEC", &rate)
        .with_var("APP_WRITER__INITIAL_ROWS_PER_SEC", &rate)
        .with_var("APP_WRITER__BATCH_SIZE", "10")
}

/// `n` buyers' orders placed one at a time, faster than any pace here: each is its own
/// message on the topic, so a Shared subscription hands them to every writer.
async fn one_at_a_time(app: &TestApp, promotion_id: i64, n: i64) -> HashMap<OrderId, i64> {
    let mut accepted = HashMap::new();
    for user in 1..=n {
        let (status, body) = app.place(promotion_id, user, &format!("req-{user}"), 1).await;
        assert_eq!(status, 202, "{body}");
        accepted.insert(order_id_of(&body), user);
    }
    accepted
}

/// Every accepted order written once, and no second with more than `rate` rows plus one
/// batch (10) of burst.
async fn assert_all_written_within_the_pace(
    pool: &sqlx::PgPool,
    promotion_id: i64,
    accepted: &HashMap<OrderId, i64>,
    rate: i64,
    when: &str,
) {
    let rows = wait_for_rows(pool, promotion_id, accepted.len(), Duration::from_secs(90)).await;
    assert_exactly(&rows, accepted, 1999);
    let batch = 10;
    let worst = busiest_second(&commit_stamps(pool, promotion_id).await) as i64;
    assert!(
        worst <= rate + batch,
        "{worst} rows in one second {when}; the deployment's cap is {rate}/s (+{batch})"
    );
}

#[tokio::test]
async fn three_writers_together_keep_the_deployment_pace() {
    const RATE: i64 = 40;
    const ORDERS: i64 = 240;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let source = || paced_writers(&app, local_source(), RATE);
    let writers = [
        spawn_consumers(source()).await,
        spawn_consumers(source()).await,
        spawn_consumers(source()).await,
    ];
    let accepted = one_at_a_time(&app, promotion_id, ORDERS).await;
    let pool = app.pool();
    assert_all_written_within_the_pace(&pool, promotion_id, &accepted, RATE, "from three writers").await;
    let busy: Vec<u64> = writers
        .iter()
        .map(|w| w.stats.report().get("rows_inserted"))
        .collect();
    assert!(
        busy.iter().filter(|n| **n > 0).count() >= 2,
        "the writers shared the work: {busy:?}"
    );
    // The operator's stats list the three writers live, and their rows add up to the sale.
    poll_until(
        Duration::from_secs(10),
        "the stats to add up the writers",
        || async {
            let stats = app.stats(promotion_id).await?;
            let writers: Vec<&serde_json::Value> = stats["instances"]
                .as_array()?
                .iter()
                .filter(|i| i["role"] == "writer" && i["live"] == true)
                .collect();
            let rows: u64 = writers.iter().filter_map(|w| w["rows_inserted"].as_u64()).sum();
            (writers.len() == 3 && rows == ORDERS as u64).then_some(())
        },
    )
    .await;
    for writer in writers {
        writer.stop().await;
    }
}

/// Writers stuck on a stalled database must not insert, once it answers, on tokens they took
/// before the stall: the deployment's pace holds in the second after the stall too.
#[tokio::test]
async fn two_writers_keep_the_deployment_pace_across_a_database_stall() {
    const RATE: i64 = 40;
    const ORDERS: i64 = 200;
    let stack = PrivateStack::start().expect("private stack");
    let app = Arc::new(spawn_gateway(stack.source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let source = || paced_writers(&app, stack.source(), RATE).with_var("APP_WRITER__BACKOFF_MAX_MS", "300");
    let writers = [spawn_consumers(source()).await, spawn_consumers(source()).await];
    let accepted = one_at_a_time(&app, promotion_id, ORDERS).await;
    let pool = app.pool();
    poll_until(Duration::from_secs(30), "the writers under way", || async {
        (order_rows(&pool, promotion_id).await.len() >= 40).then_some(())
    })
    .await;
    stack.pause_part("postgres").expect("SIGSTOP PostgreSQL");
    // The stall itself: both writers hang on it with a batch in hand.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.resume_part("postgres").expect("SIGCONT PostgreSQL");

    assert_all_written_within_the_pace(&pool, promotion_id, &accepted, RATE, "around a database stall").await;
    for writer in writers {
        writer.stop().await;
    }
}

#[tokio::test]
async fn an_order_id_stored_as_another_order_is_dead_lettered_not_dropped() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, 5).await;
    let pool = app.pool();
    let taken = OrderIdGenerator::new(random_worker_id()).next_id();
    let stored = NewSeckillOrder {
        order_id: taken,
        user_id: UserId::parse(1).expect("a user"),
        promotion_id: PromotionId::parse(promotion_id).expect("a sale"),
        sale: order_core::domain::shards::SaleShards::single(promotion_id),
        request_id: RequestId::parse("a").expect("a request id"),
        sku_id: "sku-phone".into(),
        title: "Phone flash sale".into(),
        quantity: Quantity::parse(1).expect("one unit"),
        unit_price_cents: 1999,
        accepted_at: chrono::Utc::now(),
    };
    insert_seckill_orders(&pool, std::slice::from_ref(&stored), Duration::from_secs(900))
        .await
        .expect("the first order");
    // A second gateway minted the same id for another buyer (what a shared worker id did).
    let stock = app.stock_store().await;
    order_core::test_support::reserve(&stock, promotion_id, 2, "b", 1, taken)
        .await
        .expect("reserve");
    let reservation = stock
        .reservation(
            order_core::domain::shards::SaleShards::single(promotion_id).shard(0),
            taken,
        )
        .await
        .expect("read")
        .expect("reserved");
    let promotion = order_core::postgres::promotions::PromotionRepo::new(pool.clone())
        .get(promotion_id)
        .await
        .expect("read")
        .expect("promotion");
    let client = order_core::bus::connect(&app.settings.pulsar)
        .await
        .expect("pulsar");
    let topic = app
        .settings
        .pulsar
        .topic(&app.settings.pulsar.seckill_orders_topic);
    order_core::bus::JsonProducer::new(&client, topic, None, Duration::from_secs(5))
        .await
        .expect("producer")
        .publish(&reservation.accepted_event(&promotion))
        .await
        .expect("publish");

    let dead_letters = unique("dlq");
    let mut parked = client
        .consumer()
        .with_topic(app.settings.pulsar.topic(&dead_letters))
        .with_subscription("test-observer")
        .build::<Vec<u8>>()
        .await
        .expect("subscribe to the dead-letter topic");
    let consumers = spawn_consumers(
        consumers_source(&app, local_source()).with_var("APP_WRITER__DEAD_LETTER_TOPIC", &dead_letters),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(30), parked.next())
        .await
        .expect("the conflicting order reaches the dead-letter topic")
        .expect("stream open")
        .expect("message");
    let event: SeckillOrderAccepted = serde_json::from_slice(&msg.payload.data).expect("event");
    assert_eq!((event.order_id, event.user_id), (taken, 2));
    assert_eq!(consumers.stats.report().get("order_conflicts"), 1);
    let owner: i64 = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(taken.0)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(owner, 1, "the stored order is untouched");
    let pending = stock
        .stale_pending(
            order_core::domain::shards::SaleShards::single(promotion_id).shard(0),
            i64::MAX,
            10,
        )
        .await
        .expect("pending");
    assert_eq!(
        pending,
        vec![taken],
        "left pending: reconciliation keeps reporting it"
    );
    consumers.stop().await;
}

#[tokio::test]
async fn a_consumer_whose_clock_is_ten_minutes_ahead_does_not_republish_orders_in_flight() {
    const ORDERS: i64 = 20;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    let accepted = flash_sale(&app, promotion_id, ORDERS).await;
    assert_eq!(accepted.len() as i64, ORDERS);

    let mut observer = app.observe_orders_topic().await;
    // A slow writer keeps orders pending for seconds while the sweeper passes every 200 ms;
    // the default threshold (120 s) is well inside the clock's ten-minute lead.
    let mut env = consumers_env(
        &app,
        &[
            ("APP_WRITER__MIN_ROWS_PER_SEC", "4"),
            ("APP_WRITER__MAX_ROWS_PER_SEC", "4"),
            ("APP_WRITER__INITIAL_ROWS_PER_SEC", "4"),
            ("APP_SWEEPER__INTERVAL_MS", "200"),
        ],
    );
    env.extend(skewed_clock_env("+10m"));
    let mut ahead = spawn_consumers_process(&env);
    let pool = app.pool();
    poll_until(Duration::from_secs(30), "a few rows (many sweeps)", || async {
        (order_rows(&pool, promotion_id).await.len() >= 6).then_some(())
    })
    .await;
    let mut messages = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(1), observer.next()).await {
        observer.ack(&msg).await.expect("ack");
        messages += 1;
    }
    assert_eq!(
        messages, ORDERS,
        "orders in flight were republished by a consumer that trusted its own clock"
    );
    ahead.start_kill().expect("kill");
    ahead.wait().await.expect("reaped");
}

#[tokio::test]
async fn a_retry_on_another_gateway_at_sell_out_gets_its_order_even_with_postgres_down() {
    const STOCK: i64 = 30;
    let stack = PrivateStack::start().expect("private stack");
    let first = Arc::new(spawn_gateway(stack.source()).await);
    let promotion_id = create_running(&first, STOCK).await;
    // The other gateways load the sale at start; their periodic refresh is a minute away,
    // so only what they learn while serving requests counts.
    let gateways = [
        Arc::clone(&first),
        Arc::new(first.spawn_beside(|s| s.seckill.cache_refresh_ms = 60_000).await),
        Arc::new(first.spawn_beside(|s| s.seckill.cache_refresh_ms = 60_000).await),
    ];
    let buyers = 3 * STOCK;
    let mut tasks = Vec::new();
    for user in 1..=buyers {
        let gateway = Arc::clone(&gateways[(user % 3) as usize]);
        tasks.push(tokio::spawn(async move {
            (
                user,
                gateway
                    .place_as_app(promotion_id, user, &format!("req-{user}"), 1)
                    .await,
            )
        }));
    }
    let mut answers: HashMap<i64, Vec<(u16, Value)>> = HashMap::new();
    for task in tasks {
        let (user, answer) = task.await.expect("task");
        answers.entry(user).or_default().push(answer);
    }
    let firsts = held_orders(&answers);
    assert_eq!(firsts.len() as i64, STOCK);

    stack.stop_part("postgres").expect("stop PostgreSQL");
    // The apps did not get their answers and retry, each on the next gateway.
    for (order_id, user) in &firsts {
        let gateway = &gateways[((user + 1) % 3) as usize];
        let (status, body) = gateway
            .place(promotion_id, *user, &format!("req-{user}"), 1)
            .await;
        assert_eq!(status, 202, "user {user}'s retry on another gateway: {body}");
        assert_eq!(order_id_of(&body), *order_id, "user {user}");
    }
    stack.start_part("postgres").expect("start PostgreSQL");
}
