//! Order inserts into PostgreSQL, side by side in one run: the writer's batched statement
//! (many rows per transaction) against one row per transaction, sequential and concurrent.
//! Each variant writes into the same fresh database, with its own order ids.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use order_core::postgres::persist::{insert_seckill_orders, NewSeckillOrder};
use order_core::runtime::settings::{DatabaseOnly, SettingsSource};
use sqlx::postgres::PgPoolOptions;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rows per variant.
    #[arg(long, default_value_t = 20_000)]
    rows: i64,
    /// Rows per transaction in the batched variant (the writer's batch size).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Connections for the concurrent single-row variant.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

fn order(id: i64, promotion_id: i64) -> NewSeckillOrder {
    NewSeckillOrder {
        order_id: OrderId(id),
        user_id: UserId::parse(id).expect("a positive id"),
        promotion_id: PromotionId::parse(promotion_id).expect("a positive id"),
        sale: order_core::domain::shards::SaleShards::single(promotion_id),
        request_id: RequestId::parse(format!("r{id}")).expect("a request id"),
        sku_id: "bench".into(),
        title: "bench".into(),
        quantity: Quantity::parse(1).expect("one unit"),
        unit_price_cents: 100,
        accepted_at: Utc::now(),
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings: DatabaseOnly = SettingsSource::from_process_env()?.load()?;
    let db = order_core::test_support::fresh_database(&settings.database).await?;
    let pool = PgPoolOptions::new()
        .max_connections(args.concurrency as u32 + 1)
        .connect_with(db.connect_options()?)
        .await?;
    let promotion_id: i64 = sqlx::query_scalar(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('bench', 'bench', 100, 10000000, now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&pool)
    .await?;
    let timeout = Duration::from_secs(900);
    let next_id = Arc::new(AtomicI64::new(1));
    let take = |n: i64| next_id.fetch_add(n, Ordering::Relaxed);

    let mut results = Vec::new();

    let start = take(args.rows);
    let orders: Vec<NewSeckillOrder> = (start..start + args.rows)
        .map(|i| order(i, promotion_id))
        .collect();
    let started = Instant::now();
    for chunk in orders.chunks(args.batch) {
        insert_seckill_orders(&pool, chunk, timeout).await?;
    }
    results.push((
        format!("batched, {} rows per transaction, 1 connection", args.batch),
        args.rows as f64 / started.elapsed().as_secs_f64(),
    ));

    let start = take(args.rows);
    let started = Instant::now();
    for i in start..start + args.rows {
        insert_seckill_orders(&pool, &[order(i, promotion_id)], timeout).await?;
    }
    results.push((
        "one row per transaction, 1 connection".to_owned(),
        args.rows as f64 / started.elapsed().as_secs_f64(),
    ));

    let start = take(args.rows);
    let cursor = Arc::new(AtomicI64::new(start));
    let end = start + args.rows;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (pool, cursor) = (pool.clone(), Arc::clone(&cursor));
        workers.push(tokio::spawn(async move {
            loop {
                let i = cursor.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, order_core::postgres::persist::PersistError>(());
                }
                insert_seckill_orders(&pool, &[order(i, promotion_id)], timeout).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    results.push((
        format!("one row per transaction, {} connections", args.concurrency),
        args.rows as f64 / started.elapsed().as_secs_f64(),
    ));

    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(
        total == 3 * args.rows,
        "expected {} rows, found {total}",
        3 * args.rows
    );
    let baseline = results[1].1;
    println!(
        "{} rows per variant (order + item row each), one fresh database",
        args.rows
    );
    println!("| variant | rows/s | vs one row per transaction |");
    println!("|---|---|---|");
    for (name, rate) in &results {
        println!("| {name} | {rate:.0} | {:.1} |", rate / baseline);
    }
    Ok(())
}
