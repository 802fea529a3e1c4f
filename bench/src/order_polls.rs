//! The flood's second wave: every accepted buyer polls its order until it leaves `queued`,
//! as an app would. Two ways side by side, in one run on one private deployment (one
//! consumers process, the writer paced so orders stay queued for a while):
//!
//! - plain polling once a second against the earlier path (a gateway started with
//!   `orders.status_source = "database"`: PostgreSQL first for every poll);
//! - long polling (`?wait_ms=10000`) against a gateway on the default path (Redis while the
//!   sale is current).
//!
//! Each way gets a sale of its own, sold out to `buyers` distinct users. Reported per way:
//! polls per order until the order leaves `queued`, poll latency p50/p99, how long after its
//! row was written each buyer learned its order was stored, and PostgreSQL
//! transactions per poll: `xact_commit + xact_rollback` of the database over the polling,
//! less the rate measured over an idle window just before (the services' own periodic
//! queries), and then also less the sale's own transactions (the writer's batches), measured
//! by a first sale whose buyers never poll.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use hyper::header::HeaderValue;
use order_core::domain::shards::SaleShards;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::faults::{Binaries, Deployment, FaultSettings};
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct PollSettings {
    pub buyers: u64,
    /// The writer's pace: the orders of a sale stay queued about buyers / pace seconds.
    pub writer_rows_per_sec: f64,
    /// Concurrent apps placing orders, and polling.
    pub concurrency: usize,
    /// The idle window that measures the background transaction rate.
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct PollRow {
    pub way: &'static str,
    pub orders: u64,
    pub polls: u64,
    pub polls_per_order: f64,
    pub max_polls_per_order: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// From the order's row written to the answer that told its buyer (ms).
    pub learned_p50_ms: f64,
    pub learned_p99_ms: f64,
    pub seconds: f64,
    pub transactions: i64,
    pub background: f64,
    pub transactions_per_poll: f64,
    /// Per poll, less the sale's own transactions (the unpolled run's, background removed).
    pub poll_transactions_per_poll: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Buyers who never poll: the sale's own transactions (the writer's batches).
    Unpolled,
    /// Plain polling once a second, PostgreSQL first.
    SecondlyOnDatabase,
    /// Long polls, Redis while the sale is current.
    LongPollOnRedis,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Unpolled => "no polling (the sale's own transactions)",
            Way::SecondlyOnDatabase => "1 s polling, database first (earlier path)",
            Way::LongPollOnRedis => "long poll (wait_ms=10000), Redis first",
        }
    }
}

pub async fn run(bins: Binaries, s: &PollSettings) -> anyhow::Result<Vec<PollRow>> {
    let fault_settings = FaultSettings {
        faults: Vec::new(),
        seeds: Vec::new(),
        users: s.buyers,
        stock: s.buyers as i64,
        rate: 0.0,
        duration: Duration::ZERO,
        fault_at: Duration::ZERO,
        outage: Duration::ZERO,
        writer_rows_per_sec: s.writer_rows_per_sec,
        gateways: 1,
        consumers: 1,
        redis: order_core::test_support::RedisKind::Node,
        shards: 1,
    };
    let (mut deployment, target) = Deployment::start(bins.clone(), &fault_settings).await?;
    let redis_first = target.gateways[0].clone();
    let database_first = deployment
        .add_gateway(&bins.gateway, &[("APP_ORDERS__STATUS_SOURCE", "database")])
        .await?;
    let db = PgPool::connect(&deployment.database_url())
        .await
        .context("connect to the deployment's database")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(s.concurrency)
        .build()
        .context("HTTP client")?;
    let tokens = target.tokens(1..=s.buyers)?;
    let store = order_core::redis::stock::StockStore::new(
        order_core::redis::connect(&target.redis)
            .await
            .context("connect to Redis")?,
    );
    let mut rows: Vec<PollRow> = Vec::new();
    for (way, base) in [
        (Way::Unpolled, &redis_first),
        (Way::SecondlyOnDatabase, &database_first),
        (Way::LongPollOnRedis, &redis_first),
    ] {
        let measuring = Measuring {
            target: &target,
            client: &client,
            tokens: &tokens,
            db: &db,
            store: &store,
        };
        let mut row = measure(way, base, &measuring, s).await?;
        let sale_own = rows.first().map_or(0.0, |unpolled| {
            unpolled.transactions as f64 - unpolled.background * unpolled.seconds
        });
        row.poll_transactions_per_poll =
            (row.transactions as f64 - row.background * row.seconds - sale_own) / row.polls.max(1) as f64;
        rows.push(row);
    }
    Ok(rows)
}

/// Transactions of the database so far. A backend reports its counts when it goes idle at
/// most once a second, and an idle one within 10 s: the read waits that long first, so the
/// count includes everything before the call. The bench's own reads add a few.
async fn transactions(db: &PgPool) -> anyhow::Result<i64> {
    tokio::time::sleep(Duration::from_secs(11)).await;
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(db).await?;
    sqlx::query_scalar::<_, i64>(
        "SELECT (xact_commit + xact_rollback)::BIGINT FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await
    .context("read pg_stat_database")
}

/// What every way is measured with.
struct Measuring<'a> {
    target: &'a Target,
    client: &'a reqwest::Client,
    tokens: &'a [HeaderValue],
    db: &'a PgPool,
    store: &'a order_core::redis::stock::StockStore,
}

async fn measure(way: Way, base: &str, m: &Measuring<'_>, s: &PollSettings) -> anyhow::Result<PollRow> {
    let promotion_id = m.target.create_promotion(s.buyers as i64, 1).await?;
    // The background: the services' periodic queries, with nothing sold.
    let idle_from = (Instant::now(), transactions(m.db).await?);
    tokio::time::sleep(s.idle).await;
    let idle_to = (Instant::now(), transactions(m.db).await?);
    let background = (idle_to.1 - idle_from.1) as f64 / (idle_to.0 - idle_from.0).as_secs_f64();

    let started = (Instant::now(), transactions(m.db).await?);
    let results: Vec<anyhow::Result<Polled>> = futures::stream::iter(m.tokens.iter().cloned().enumerate())
        .map(|(n, token)| {
            let (client, base) = (m.client.clone(), base.to_owned());
            async move { buy_and_poll(way, &client, &base, &token, promotion_id, n).await }
        })
        .buffer_unordered(s.concurrency)
        .collect()
        .await;
    if way == Way::Unpolled {
        // Nobody polls: wait in Redis (no database query) until the writer stored them all.
        let deadline = Instant::now() + Duration::from_secs(300);
        while m.store.pending_count(SaleShards::single(promotion_id)).await? > 0 {
            anyhow::ensure!(Instant::now() < deadline, "orders still queued after 300 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let ended = (Instant::now(), transactions(m.db).await?);

    let (mut orders, mut max_polls, mut latencies) = (0u64, 0u64, Vec::new());
    let mut answered = std::collections::HashMap::new();
    for result in results {
        let mut polled = result?;
        if polled.polls > 0 {
            orders += 1;
            max_polls = max_polls.max(polled.polls);
        }
        latencies.append(&mut polled.latencies_ms);
        answered.extend(polled.answered);
    }
    // How long after its row was written each buyer learned the order was stored (one
    // machine, one clock: the database's clock_timestamp() and the bench's).
    let stored: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT id, extract(epoch FROM updated_at)::FLOAT8 FROM orders WHERE promotion_id = $1",
    )
    .bind(promotion_id)
    .fetch_all(m.db)
    .await
    .context("read when the orders were stored")?;
    let mut learned: Vec<f64> = stored
        .iter()
        .filter_map(|(id, at)| answered.get(id).map(|answer| (answer - at) * 1000.0))
        .collect();
    learned.sort_by(|a, b| a.total_cmp(b));
    let nth = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    latencies.sort_by(|a, b| a.total_cmp(b));
    let polls = latencies.len() as u64;
    let seconds = (ended.0 - started.0).as_secs_f64();
    let transactions = ended.1 - started.1;
    let quantile = |q: f64| {
        latencies
            .get(((polls as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(PollRow {
        way: way.name(),
        orders,
        polls,
        polls_per_order: polls as f64 / orders.max(1) as f64,
        max_polls_per_order: max_polls,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        learned_p50_ms: nth(&learned, 0.50),
        learned_p99_ms: nth(&learned, 0.99),
        seconds,
        transactions,
        background,
        transactions_per_poll: (transactions as f64 - background * seconds) / polls.max(1) as f64,
        poll_transactions_per_poll: f64::NAN,
    })
}

/// What one app saw.
#[derive(Debug, Default)]
struct Polled {
    polls: u64,
    latencies_ms: Vec<f64>,
    /// The order, and when (Unix seconds) the answer past `queued` arrived.
    answered: Option<(i64, f64)>,
}

/// One app: buy once; when accepted, poll until the order leaves `queued`. The number of
/// polls and each poll's latency in ms (none when the order was not accepted).
async fn buy_and_poll(
    way: Way,
    client: &reqwest::Client,
    base: &str,
    token: &HeaderValue,
    promotion_id: i64,
    n: usize,
) -> anyhow::Result<Polled> {
    let auth = token.to_str().context("token header")?;
    let sale_token = crate::target::fetch_sale_token(client, base, token, promotion_id).await?;
    let placed = client
        .post(format!("{base}/api/seckill/{promotion_id}/orders"))
        .header("Authorization", auth)
        .header("X-Sale-Token", sale_token)
        .json(&json!({ "quantity": 1, "request_id": format!("poll-{n}") }))
        .send()
        .await
        .context("place an order")?;
    if placed.status().as_u16() != 202 {
        return Ok(Polled::default());
    }
    let order_id = placed.json::<Value>().await?["order_id"]
        .as_str()
        .context("an order id")?
        .to_owned();
    let url = match way {
        // Accepted; never asks.
        Way::Unpolled => {
            return Ok(Polled {
                polls: 1,
                ..Polled::default()
            })
        }
        Way::SecondlyOnDatabase => format!("{base}/api/orders/{order_id}"),
        Way::LongPollOnRedis => format!("{base}/api/orders/{order_id}?wait_ms=10000"),
    };
    let mut times = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let asked = Instant::now();
        let answer = client.get(&url).header("Authorization", auth).send().await;
        times.push(asked.elapsed().as_secs_f64() * 1000.0);
        let status = match answer {
            Ok(r) if r.status().is_success() => r.json::<Value>().await?["status"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        };
        if status != "queued" && !status.is_empty() {
            let at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
            let id: i64 = order_id.parse().context("a numeric order id")?;
            return Ok(Polled {
                polls: times.len() as u64,
                latencies_ms: times,
                answered: Some((id, at)),
            });
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "order {order_id} still {status:?} after 300 s"
        );
        if matches!(way, Way::SecondlyOnDatabase) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

pub fn table(rows: &[PollRow]) -> String {
    let mut out = String::from(
        "| way | orders | polls | polls per order | most polls of one order | poll p50 ms | poll p99 ms | learned after stored p50 ms | p99 ms | seconds | PostgreSQL transactions | background per s | transactions per poll | less the sale's own |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let per_poll = |v: f64| match r.polls {
            0 => "n/a".to_owned(),
            _ => format!("{v:.4}"),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {} | {} |\n",
            r.way,
            r.orders,
            r.polls,
            r.polls_per_order,
            r.max_polls_per_order,
            r.p50_ms,
            r.p99_ms,
            r.learned_p50_ms,
            r.learned_p99_ms,
            r.seconds,
            r.transactions,
            r.background,
            per_poll(r.transactions_per_poll),
            per_poll(r.poll_transactions_per_poll)
        ));
    }
    out
}
