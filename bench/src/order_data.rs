//! `bench order-data`: the order query paths and the writer as order data grows, on
//! monthly-partitioned tables side by side with an unpartitioned copy of the same rows.
//!
//! Two fresh databases get the same generated orders (COPY, spread evenly over `--months`
//! months from the id epoch, January 2026), grown to each of `--sizes` million orders in
//! turn. At each size, each database serves an open-loop mix of the production query
//! functions at `--rate` per second (order by id, a user's list and its next page, a sale's
//! stats, the canceller's scan), then a few reconciliations of one sale and a flash sale's
//! writer batches. Latency counts from each query's scheduled start, so a database that
//! falls behind shows it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use hdrhistogram::Histogram;
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use order_core::domain::order_months::OrderMonth;
use order_core::postgres::persist::{insert_seckill_orders, NewSeckillOrder};
use order_core::runtime::settings::{DatabaseOnly, DatabaseSettings, SettingsSource};
use sqlx::postgres::{PgPoolCopyExt, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::plan::SplitMix64;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Millions of orders at each measured size, ascending; rows are added between sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,10,30")]
    sizes: Vec<f64>,
    /// Months the orders spread over, from January 2026 (the id epoch).
    #[arg(long, default_value_t = 24)]
    months: i32,
    /// Distinct buyers.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Mixed order queries per second.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Seconds of the query mix per database and size.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Rows the writer inserts per database and size (batches of `--batch`).
    #[arg(long, default_value_t = 20_000)]
    writer_rows: usize,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Leave the two databases in place afterwards (for EXPLAIN); their names are printed.
    #[arg(long)]
    keep: bool,
}

/// Seckill orders are this share of all orders; two sales a month.
const SECKILL_SHARE: f64 = 0.3;
const SALES_PER_MONTH: i32 = 2;
const MAX_IN_FLIGHT: usize = 64;
/// The unrecorded mix before each measured one.
const WARM_UP: Duration = Duration::from_secs(5);
/// One (id, owner) pair is kept per this many generated orders, for the lookups.
const SAMPLE_EVERY: u64 = 97;

struct Variant {
    name: &'static str,
    pool: PgPool,
    database: String,
}

struct GeneratedOrder {
    id: i64,
    user_id: i64,
    promotion_id: Option<i64>,
    status: &'static str,
    total_cents: i64,
    created_ms: i64,
}

#[derive(Default)]
struct Sample {
    orders: Vec<(i64, i64)>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=48).contains(&args.months),
        "--months is 1 to 48 (ids start in January 2026)"
    );
    anyhow::ensure!(
        args.sizes.windows(2).all(|w| w[0] < w[1]) && args.sizes.first().is_some_and(|s| *s > 0.0),
        "--sizes ascend from above zero"
    );
    let settings: DatabaseOnly = SettingsSource::from_process_env()?.load()?;
    report_free_disk();
    let partitioned = variant("partitioned", &settings.database, false, args.months).await?;
    let flat = variant("unpartitioned", &settings.database, true, args.months).await?;
    let variants = [partitioned, flat];
    let mut rng = SplitMix64::new(args.seed);
    let mut sample = Sample::default();
    let mut loaded: u64 = 0;
    let mut rows_out = Vec::new();
    for (step, size) in args.sizes.iter().enumerate() {
        let target = (size * 1_000_000.0) as u64;
        let adding = target - loaded;
        for v in &variants {
            sqlx::query("ALTER TABLE orders DISABLE TRIGGER orders_request_key")
                .execute(&v.pool)
                .await?;
        }
        let mut load_time = [Duration::ZERO; 2];
        let per_month = adding / args.months as u64;
        for m in 0..args.months {
            let month = OrderMonth::new(2026, 1).expect("January 2026").plus(m);
            let extra = if m == args.months - 1 {
                adding - per_month * args.months as u64
            } else {
                0
            };
            let orders = generate(
                &mut rng,
                month,
                m,
                args.months,
                per_month + extra,
                step as i64,
                args.users,
            );
            for o in orders.iter().step_by(SAMPLE_EVERY as usize) {
                sample.orders.push((o.id, o.user_id));
            }
            for (i, v) in variants.iter().enumerate() {
                let started = Instant::now();
                copy_orders(&v.pool, &orders).await?;
                load_time[i] += started.elapsed();
            }
        }
        loaded = target;
        for (i, v) in variants.iter().enumerate() {
            sqlx::query("ALTER TABLE orders ENABLE TRIGGER orders_request_key")
                .execute(&v.pool)
                .await?;
            let started = Instant::now();
            for table in ["orders", "order_items", "order_request_keys"] {
                sqlx::query(&format!("VACUUM (ANALYZE) {table}"))
                    .execute(&v.pool)
                    .await?;
            }
            load_time[i] += started.elapsed();
        }
        println!(
            "\n== {:.0} M orders ({} added; load + vacuum: partitioned {:.0} s, unpartitioned {:.0} s)",
            target as f64 / 1e6,
            adding,
            load_time[0].as_secs_f64(),
            load_time[1].as_secs_f64()
        );
        for v in &variants {
            let size = database_size(&v.pool).await?;
            // Warm up: every pooled connection opened and its catalog caches filled (the
            // first query on a connection plans against every partition afresh).
            query_mix(v, &args, &sample, step as u64 + 100, WARM_UP).await?;
            let mix = query_mix(v, &args, &sample, step as u64, Duration::from_secs(args.seconds)).await?;
            let reconcile = reconcile_times(v, args.months).await?;
            let writer = writer_rate(v, &args, step as i64, args.months).await?;
            rows_out.push(Row {
                orders: target,
                variant: v.name,
                size_gb: size,
                mix,
                reconcile_ms: reconcile,
                writer_rows_per_sec: writer,
            });
            print_row(rows_out.last().expect("pushed"));
        }
    }
    println!("\n{}", markdown(&rows_out));
    for v in &variants {
        if args.keep {
            println!("kept database {} ({})", v.database, v.name);
        } else {
            v.pool.close().await;
            drop_database(&settings.database, &v.database).await?;
        }
    }
    Ok(())
}

fn report_free_disk() {
    let out = std::process::Command::new("df").args(["-h", "."]).output();
    if let Ok(out) = out {
        println!(
            "free disk before loading:\n{}",
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
    }
}

/// A fresh migrated database with partitions for the bench's months; `flat` turns `orders`
/// and `order_items` into plain tables with the same columns, indexes and triggers.
async fn variant(
    name: &'static str,
    base: &DatabaseSettings,
    flat: bool,
    months: i32,
) -> anyhow::Result<Variant> {
    let db = order_core::test_support::fresh_database(base).await?;
    let database = db
        .connect_options()?
        .get_database()
        .unwrap_or_default()
        .to_owned();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(db.connect_options()?)
        .await?;
    let last = OrderMonth::new(2026, 1).expect("January 2026").plus(months - 1);
    sqlx::query("SELECT order_partitions_through('2026-01-01', $1)")
        .bind(last.first_day())
        .execute(&pool)
        .await?;
    if flat {
        for statement in [
            "ALTER TABLE order_items RENAME TO order_items_partitioned",
            "ALTER TABLE orders RENAME TO orders_partitioned",
            "CREATE TABLE orders (LIKE orders_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
            "CREATE TABLE order_items (LIKE order_items_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
            "DROP TABLE order_items_partitioned",
            "DROP TABLE orders_partitioned",
            "ALTER TABLE orders ADD FOREIGN KEY (promotion_id) REFERENCES promotions (id)",
            "CREATE TRIGGER orders_request_key AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION orders_claim_request_key()",
            "CREATE TRIGGER orders_release_request_key AFTER DELETE ON orders FOR EACH ROW EXECUTE FUNCTION orders_release_request_key()",
        ] {
            sqlx::query(statement).execute(&pool).await?;
        }
    }
    // The sales: two a month, each open the whole month.
    sqlx::query(
        "INSERT INTO promotions (id, sku_id, title, price_cents, stock, starts_at, ends_at, created_at, updated_at)
         OVERRIDING SYSTEM VALUE
         SELECT n, 'sku-' || n, 'Sale ' || n, 1999, 1000000000, m, m + INTERVAL '1 month', m, m
         FROM (SELECT n, TIMESTAMPTZ '2026-01-01 00:00:00+00' + ((n - 1) / $1) * INTERVAL '1 month' AS m
               FROM generate_series(1, $2) n) s",
    )
    .bind(SALES_PER_MONTH)
    .bind(months * SALES_PER_MONTH)
    .execute(&pool)
    .await?;
    Ok(Variant { name, pool, database })
}

async fn drop_database(base: &DatabaseSettings, name: &str) -> anyhow::Result<()> {
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.connect_options()?)
        .await?;
    sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}""#))
        .execute(&admin)
        .await?;
    Ok(())
}

/// `count` orders of `month` (index `m` of `months`), ids increasing, step `step` in the
/// worker bits so rows added at a later size never repeat an id.
fn generate(
    rng: &mut SplitMix64,
    month: OrderMonth,
    m: i32,
    months: i32,
    count: u64,
    step: i64,
    users: u64,
) -> Vec<GeneratedOrder> {
    let start_ms = month.starts_at().timestamp_millis();
    let len_ms = month.plus(1).starts_at().timestamp_millis() - start_ms;
    let slot = (len_ms / count.max(1) as i64).max(1);
    let last_month = m == months - 1;
    (0..count as i64)
        .map(|i| {
            let ms = start_ms + i * slot + rng.below(slot as u64) as i64;
            let id = OrderId::first_minted_at_ms(ms) | (step << 12) | rng.below(4096) as i64;
            let promotion_id = (rng.next_f64() < SECKILL_SHARE)
                .then(|| i64::from(m * SALES_PER_MONTH) + 1 + rng.below(SALES_PER_MONTH as u64) as i64);
            let r = rng.next_f64();
            let status = if last_month && r < 0.02 {
                "pending_payment"
            } else if r < 0.80 {
                "completed"
            } else if r < 0.90 {
                "cancelled"
            } else if r < 0.94 {
                "refunded"
            } else if r < 0.97 {
                "paid"
            } else {
                "shipped"
            };
            GeneratedOrder {
                id,
                user_id: 1 + rng.below(users) as i64,
                promotion_id,
                status,
                total_cents: 100 + rng.below(100_000) as i64,
                created_ms: ms,
            }
        })
        .collect()
}

fn timestamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string())
        .unwrap_or_default()
}

/// COPY the orders, their items and their request keys.
async fn copy_orders(pool: &PgPool, orders: &[GeneratedOrder]) -> anyhow::Result<()> {
    const FLUSH: usize = 4 << 20;
    let tables = [
        "COPY orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents, expires_at, created_at, updated_at) FROM STDIN",
        "COPY order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents) FROM STDIN",
        "COPY order_request_keys (order_id, kind, promotion_id, user_id, request_id) FROM STDIN",
    ];
    for (t, statement) in tables.iter().enumerate() {
        let mut copy = pool.copy_in_raw(statement).await?;
        let mut buf = String::with_capacity(FLUSH + 512);
        for o in orders {
            let (kind, promo, request) = match o.promotion_id {
                Some(p) => ("seckill", p.to_string(), format!("s{}", o.id)),
                None => ("checkout", "\\N".to_owned(), format!("c{}", o.id)),
            };
            let line = match t {
                0 => {
                    let created = timestamp(o.created_ms);
                    let expires = if o.status == "pending_payment" {
                        "2099-01-01 00:00:00+00".to_owned()
                    } else {
                        "\\N".to_owned()
                    };
                    format!(
                        "{}\t{}\t{kind}\t{promo}\t{request}\t{}\t{}\t{}\t{expires}\t{created}\t{created}\n",
                        o.id, o.user_id, o.status, o.total_cents, o.total_cents
                    )
                }
                1 => format!("{}\t1\tsku-1\tItem\t1\t{}\n", o.id, o.total_cents),
                _ => format!("{}\t{kind}\t{promo}\t{}\t{request}\n", o.id, o.user_id),
            };
            buf.push_str(&line);
            if buf.len() >= FLUSH {
                copy.send(std::mem::take(&mut buf).into_bytes()).await?;
                buf.reserve(FLUSH + 512);
            }
        }
        if !buf.is_empty() {
            copy.send(buf.into_bytes()).await?;
        }
        copy.finish().await?;
    }
    Ok(())
}

async fn database_size(pool: &PgPool) -> anyhow::Result<f64> {
    let bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await?;
    Ok(bytes as f64 / 1e9)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    ById,
    List,
    NextPage,
    SaleStats,
    CancellerScan,
}

/// The mix: buyers' reads dominate; a sale's stats (the admin page, every few seconds per
/// operator) and the canceller's scan (every interval, per consumers process) are rare.
const QUERIES: [(Query, &str, f64); 5] = [
    (Query::ById, "order by id", 0.50),
    (Query::List, "user's list", 0.40),
    (Query::NextPage, "list, next page", 0.09),
    (Query::SaleStats, "sale stats", 0.005),
    (Query::CancellerScan, "canceller scan", 0.005),
];

struct Mix {
    /// p50 and p99 per query kind, in ms (QUERIES order).
    quantiles: Vec<(f64, f64)>,
    achieved_per_sec: f64,
}

async fn query_mix(
    v: &Variant,
    args: &Args,
    sample: &Sample,
    salt: u64,
    duration: Duration,
) -> anyhow::Result<Mix> {
    let histograms: Arc<Vec<std::sync::Mutex<Histogram<u64>>>> = Arc::new(
        QUERIES
            .iter()
            .map(|_| std::sync::Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")))
            .collect(),
    );
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut rng = SplitMix64::new(args.seed ^ ((salt + 1) * 0x51ED));
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let total = (args.rate * duration.as_secs_f64()) as u64;
    let sales = (args.months * SALES_PER_MONTH) as u64;
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled).await;
        let r = rng.next_f64();
        let mut acc = 0.0;
        let kind = QUERIES
            .iter()
            .position(|(_, _, share)| {
                acc += share;
                r < acc
            })
            .unwrap_or(0);
        let (id, user) = sample.orders[rng.below(sample.orders.len() as u64) as usize];
        let list_user = 1 + rng.below(args.users) as i64;
        let sale = 1 + rng.below(sales) as i64;
        let permit = Arc::clone(&slots).acquire_owned().await?;
        let (pool, histograms) = (v.pool.clone(), Arc::clone(&histograms));
        tasks.spawn(async move {
            let _permit = permit;
            let outcome: sqlx::Result<()> = match QUERIES[kind].0 {
                Query::ById => order_core::postgres::orders::find_for_user(&pool, OrderId(id), user)
                    .await
                    .map(|_| ()),
                Query::List => order_core::postgres::orders::list_for_user(&pool, list_user, None, 20)
                    .await
                    .map(|_| ()),
                Query::NextPage => order_core::postgres::orders::list_for_user(&pool, user, Some(id), 20)
                    .await
                    .map(|_| ()),
                Query::SaleStats => order_core::postgres::orders::order_counts(&pool, sale)
                    .await
                    .map(|_| ()),
                Query::CancellerScan => {
                    order_core::postgres::cancellation::cancel_expired(&pool, 100, "order-events")
                        .await
                        .map(|_| ())
                }
            };
            let micros = scheduled.elapsed().as_micros() as u64;
            histograms[kind]
                .lock()
                .expect("histogram lock")
                .record(micros.max(1))
                .ok();
            outcome
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let quantiles = histograms
        .iter()
        .map(|h| {
            let h = h.lock().expect("histogram lock");
            (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            )
        })
        .collect();
    Ok(Mix {
        quantiles,
        achieved_per_sec: total as f64 / elapsed,
    })
}

/// Median of three reconciliation reads (`orders_of_sale`) of a sale in the middle month.
async fn reconcile_times(v: &Variant, months: i32) -> anyhow::Result<f64> {
    let sale = i64::from((months / 2) * SALES_PER_MONTH + 1);
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        order_core::postgres::orders::orders_of_sale(&v.pool, sale).await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[1])
}

/// A flash sale's writer: `writer_rows` new orders of the last month's sale, in batches, on
/// one connection (what one writer does), as rows per second.
async fn writer_rate(v: &Variant, args: &Args, step: i64, months: i32) -> anyhow::Result<f64> {
    let month = OrderMonth::new(2026, 1).expect("January 2026").plus(months - 1);
    let sale = i64::from(months * SALES_PER_MONTH);
    // Worker bits 512 + step: no generated order uses them.
    let base = month.first_id() + ((512 + step) << 12);
    let orders: Vec<NewSeckillOrder> = (0..args.writer_rows as i64)
        .map(|i| {
            let id = base + (i / 4096) * (1 << 22) + (i % 4096);
            NewSeckillOrder {
                order_id: OrderId(id),
                user_id: UserId::parse(5_000_000_000 + step * 10_000_000 + i).expect("a positive id"),
                promotion_id: PromotionId::parse(sale).expect("a positive id"),
                sale: order_core::domain::shards::SaleShards::single(sale),
                request_id: RequestId::parse(format!("w{id}")).expect("a request id"),
                sku_id: "sku-w".into(),
                title: "Writer".into(),
                quantity: Quantity::parse(1).expect("one unit"),
                unit_price_cents: 1999,
                accepted_at: Utc::now(),
            }
        })
        .collect();
    let started = Instant::now();
    for batch in orders.chunks(args.batch) {
        insert_seckill_orders(&v.pool, batch, Duration::from_secs(900)).await?;
    }
    Ok(args.writer_rows as f64 / started.elapsed().as_secs_f64())
}

struct Row {
    orders: u64,
    variant: &'static str,
    size_gb: f64,
    mix: Mix,
    reconcile_ms: f64,
    writer_rows_per_sec: f64,
}

fn print_row(r: &Row) {
    let cells: Vec<String> = QUERIES
        .iter()
        .zip(&r.mix.quantiles)
        .map(|((_, name, _), (p50, p99))| format!("{name} {p50:.2}/{p99:.2}"))
        .collect();
    println!(
        "{:>13}: {:.1} GB, mix {:.0}/s (p50/p99 ms) {}; reconcile {:.0} ms; writer {:.0} rows/s",
        r.variant,
        r.size_gb,
        r.mix.achieved_per_sec,
        cells.join(", "),
        r.reconcile_ms,
        r.writer_rows_per_sec
    );
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from("| orders | tables | DB size | mix req/s |");
    for (_, name, _) in QUERIES {
        out.push_str(&format!(" {name} p50 / p99 ms |"));
    }
    out.push_str(" reconcile one sale ms | writer rows/s |\n|---|---|---|---|");
    for _ in QUERIES {
        out.push_str("---|");
    }
    out.push_str("---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {:.0} M | {} | {:.1} GB | {:.0} |",
            r.orders as f64 / 1e6,
            r.variant,
            r.size_gb,
            r.mix.achieved_per_sec
        ));
        for (p50, p99) in &r.mix.quantiles {
            out.push_str(&format!(" {p50:.2} / {p99:.2} |"));
        }
        out.push_str(&format!(
            " {:.0} | {:.0} |\n",
            r.reconcile_ms, r.writer_rows_per_sec
        ));
    }
    out
}
