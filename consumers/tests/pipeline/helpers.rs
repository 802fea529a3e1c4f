//! Consumers next to a test gateway: the same database and topics, faster intervals.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use consumers::settings::Settings;
use consumers::startup::Application;
use consumers::stats::Stats;
use gateway::test_support::TestApp;
use order_core::domain::ids::OrderId;
use order_core::runtime::settings::SettingsSource;
use order_core::runtime::shutdown::Shutdown;
use order_core::test_support::{poll_until, unique};
use secrecy::ExposeSecret;
use serde_json::Value;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Settings for consumers that serve `app`: its database and topics.
pub fn consumers_source(app: &TestApp, base: SettingsSource) -> SettingsSource {
    base.with_var("APP_DATABASE__URL", app.settings.database.url.expose_secret())
        .with_var(
            "APP_PULSAR__SECKILL_ORDERS_TOPIC",
            &app.settings.pulsar.seckill_orders_topic,
        )
        .with_var(
            "APP_PULSAR__ORDER_EVENTS_TOPIC",
            &app.settings.pulsar.order_events_topic,
        )
        .with_var("APP_WRITER__DEAD_LETTER_TOPIC", unique("dlq"))
        .with_var("APP_WRITER__LINGER_MS", "20")
        .with_var("APP_SWEEPER__INTERVAL_MS", "200")
        .with_var("APP_CANCELLER__INTERVAL_MS", "200")
        .with_var("APP_CONSUMERS__PORT", "0")
        .with_var(
            "APP_POST_PAYMENT__ANALYTICS_DIR",
            std::env::temp_dir()
                .join(unique("analytics"))
                .display()
                .to_string(),
        )
}

/// A gateway whose order-events topic is unique to the test too.
pub async fn spawn_gateway(base: SettingsSource) -> TestApp {
    TestApp::spawn_with(gateway::test_support::generous_limits(
        base.with_var("APP_PULSAR__ORDER_EVENTS_TOPIC", unique("order-events")),
    ))
    .await
}

#[derive(Debug)]
pub struct RunningConsumers {
    pub shutdown: Shutdown,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub stats: Arc<Stats>,
    pub port: u16,
}

impl RunningConsumers {
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("consumers stop within 20 s")
            .expect("task")
            .expect("clean stop");
    }
}

pub async fn spawn_consumers(source: SettingsSource) -> RunningConsumers {
    let settings: Settings = source.load().expect("consumers settings");
    let app = Application::build(settings).await.expect("build consumers");
    let (stats, port) = (app.stats(), app.port());
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.subscribe()));
    RunningConsumers {
        shutdown,
        handle,
        stats,
        port,
    }
}

/// The consumers binary as a separate process (to kill -9), configured by `vars`.
pub fn spawn_consumers_process(vars: &[(String, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumers"));
    cmd.env(
        "APP_CONFIG_DIR",
        format!("{}/../config", env!("CARGO_MANIFEST_DIR")),
    )
    .env("APP_CONSUMERS__PORT", "0")
    .env("APP_LOG__FILTER", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start the consumers binary")
}

/// The variables `consumers_source` sets, for a child process.
pub fn consumers_env(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars = vec![
        (
            "APP_DATABASE__URL".to_owned(),
            app.settings.database.url.expose_secret().to_owned(),
        ),
        (
            "APP_REDIS__URL".to_owned(),
            app.settings.redis.url.expose_secret().to_owned(),
        ),
        ("APP_PULSAR__URL".to_owned(), app.settings.pulsar.url.clone()),
        (
            "APP_PULSAR__SECKILL_ORDERS_TOPIC".to_owned(),
            app.settings.pulsar.seckill_orders_topic.clone(),
        ),
        (
            "APP_PULSAR__ORDER_EVENTS_TOPIC".to_owned(),
            app.settings.pulsar.order_events_topic.clone(),
        ),
        ("APP_WRITER__DEAD_LETTER_TOPIC".to_owned(), unique("dlq")),
        ("APP_WRITER__LINGER_MS".to_owned(), "20".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    vars
}

/// Parse the order id of a 202 body.
pub fn order_id_of(body: &serde_json::Value) -> OrderId {
    body["order_id"]
        .as_str()
        .expect("order id")
        .parse()
        .expect("numeric")
}

/// Accept `buyers` distinct users' orders (one unit each) on a running promotion; returns
/// order id → (user, status code) for the 202s.
pub async fn flash_sale(app: &Arc<TestApp>, promotion_id: i64, buyers: i64) -> HashMap<OrderId, i64> {
    let mut tasks = Vec::new();
    for user in 1..=buyers {
        let app = Arc::clone(app);
        tasks.push(tokio::spawn(async move {
            (
                user,
                app.place_as_app(promotion_id, user, &format!("req-{user}"), 1)
                    .await,
            )
        }));
    }
    let mut accepted = HashMap::new();
    for task in tasks {
        let (user, (status, body)) = task.await.expect("task");
        if status == 202 {
            accepted.insert(order_id_of(&body), user);
        } else {
            assert_eq!(status, 409, "{body}");
        }
    }
    accepted
}

pub async fn create_running(app: &TestApp, stock: i64) -> i64 {
    app.create_promotion(stock, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id")
}

#[derive(Debug, sqlx::FromRow, PartialEq, Eq)]
pub struct OrderRow {
    pub id: i64,
    pub user_id: i64,
    pub status: String,
    pub total_cents: i64,
    pub items: i64,
}

pub async fn order_rows(pool: &PgPool, promotion_id: i64) -> Vec<OrderRow> {
    sqlx::query_as(
        "SELECT o.id, o.user_id, o.status, o.total_cents, count(i.order_id) AS items
         FROM orders o LEFT JOIN order_items i ON i.order_id = o.id
         WHERE o.promotion_id = $1 GROUP BY o.id ORDER BY o.id",
    )
    .bind(promotion_id)
    .fetch_all(pool)
    .await
    .expect("read orders")
}

pub async fn wait_for_rows(pool: &PgPool, promotion_id: i64, n: usize, within: Duration) -> Vec<OrderRow> {
    poll_until(within, &format!("{n} order rows"), || async {
        let rows = order_rows(pool, promotion_id).await;
        assert!(rows.len() <= n, "more rows than accepted orders: {}", rows.len());
        (rows.len() == n).then_some(rows)
    })
    .await
}

/// Every accepted order exactly once, with its buyer, price and one item line.
pub fn assert_exactly(rows: &[OrderRow], accepted: &HashMap<OrderId, i64>, unit_price: i64) {
    assert_eq!(rows.len(), accepted.len());
    for row in rows {
        let user = accepted
            .get(&OrderId(row.id))
            .unwrap_or_else(|| panic!("order {} was never accepted", row.id));
        assert_eq!(row.user_id, *user, "order {}", row.id);
        assert_eq!(row.total_cents, unit_price, "order {}", row.id);
        assert_eq!(row.items, 1, "order {}", row.id);
    }
}

/// Commit times of a promotion's rows, sorted (updated_at is the inserting transaction's).
pub async fn commit_stamps(pool: &PgPool, promotion_id: i64) -> Vec<f64> {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM updated_at)::FLOAT8 FROM orders WHERE promotion_id = $1 ORDER BY updated_at",
    )
    .bind(promotion_id)
    .fetch_all(pool)
    .await
    .expect("stamps")
}

/// The most rows within any one second (the bench's own check of invariant 5).
pub fn busiest_second(stamps: &[f64]) -> u64 {
    bench::verify::max_in_window(stamps, 1.0)
}

/// One app request: sent to `gateways[start]`, and like an app, sent again with the same
/// request id to the next gateway after a 503 (Retry-After: 1) until a definitive answer.
pub async fn place_like_an_app(
    gateways: &[Arc<TestApp>],
    start: usize,
    promotion_id: i64,
    user: i64,
) -> (u16, Value) {
    let request_id = format!("req-{user}");
    for attempt in 0..30 {
        let gateway = &gateways[(start + attempt) % gateways.len()];
        let (status, body) = gateway.place(promotion_id, user, &request_id, 1).await;
        if status != 503 {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("user {user}: still 503 after 30 tries");
}
