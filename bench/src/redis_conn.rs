//! The reserve script under concurrency through two connection strategies, interleaved in
//! one run: the redis crate's multiplexed `ConnectionManager` (what the gateway uses:
//! concurrent commands pipelined on one socket) and a deadpool-redis pool (one command per
//! pooled connection at a time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use order_core::domain::ids::{OrderIdGenerator, Quantity, RequestId, UserId};
use order_core::domain::promotion::Promotion;
use order_core::redis::stock::{IfStarted, SaleKeys, StockStore};
use order_core::runtime::settings::{RedisOnly, SettingsSource};
use secrecy::ExposeSecret;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reserve calls per measurement.
    #[arg(long, default_value_t = 200_000)]
    ops: u64,
    /// Requests in flight at once (like concurrent HTTP requests).
    #[arg(long, default_value_t = 256)]
    concurrency: u64,
    /// Connections in the deadpool pool.
    #[arg(long, default_value_t = 32)]
    pool_size: usize,
    /// Alternating rounds of each strategy.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

fn promotion(stock: i64) -> Promotion {
    order_core::test_support::running_promotion(stock, 1, 1)
}

/// Run `ops` calls of `call(i)` with `concurrency` in flight; returns calls per second.
async fn drive<F, Fut>(ops: u64, concurrency: u64, call: F) -> anyhow::Result<f64>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    return Ok::<_, anyhow::Error>(());
                }
                call(i).await?;
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(ops as f64 / started.elapsed().as_secs_f64())
}

/// One round of `ops` reserves (distinct buyers) through the multiplexed connection, on a
/// promotion of its own; reserves per second.
async fn multiplexed_round(
    store: &StockStore,
    ids: &Arc<OrderIdGenerator>,
    ops: u64,
    concurrency: u64,
) -> anyhow::Result<f64> {
    let p = promotion(ops as i64);
    store.sync(&p, IfStarted::LoadJustCreated).await?;
    let (s, gen) = (store.clone(), Arc::clone(ids));
    let promotion = p.sale();
    let (request, one) = (RequestId::parse("r")?, Quantity::parse(1)?);
    let rate = drive(ops, concurrency, move |i| {
        let (store, gen, request) = (s.clone(), Arc::clone(&gen), request.clone());
        async move {
            let user = UserId::parse(i as i64 + 1)?;
            store
                .reserve(promotion, user, &request, one, gen.next_id())
                .await?;
            Ok(())
        }
    })
    .await?;
    store.forget_promotion(p.sale()).await?;
    Ok(rate)
}

/// The Redis ceiling: reserve-script `EVALSHA`s per second, as the gateway sends them.
pub async fn multiplexed_reserves_per_sec(
    settings: &order_core::runtime::settings::RedisSettings,
    ops: u64,
    concurrency: u64,
) -> anyhow::Result<f64> {
    let store = StockStore::new(order_core::redis::connect(settings).await?);
    multiplexed_round(&store, &Arc::new(OrderIdGenerator::new(1023)), ops, concurrency).await
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let settings: RedisOnly = SettingsSource::from_process_env()?.load()?;
    let multiplexed = StockStore::new(order_core::redis::connect(&settings.redis).await?);
    let pool = deadpool_redis::Config::from_url(settings.redis.url.expose_secret())
        .builder()
        .context("pool config")?
        .max_size(args.pool_size)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .context("build the pool")?;
    let script = deadpool_redis::redis::Script::new(include_str!("../../lua/reserve.lua"));
    let ids = Arc::new(OrderIdGenerator::new(1023));

    let mut results: Vec<(&str, f64)> = Vec::new();
    for round in 1..=args.rounds {
        let rate = multiplexed_round(&multiplexed, &ids, args.ops, args.concurrency).await?;
        results.push(("multiplexed", rate));
        eprintln!("round {round}: multiplexed {rate:.0} reserves/s");

        let p = promotion(args.ops as i64);
        multiplexed.sync(&p, IfStarted::LoadJustCreated).await?;
        let (pool2, script2, gen) = (pool.clone(), script.clone(), Arc::clone(&ids));
        let rate = drive(args.ops, args.concurrency, move |i| {
            let (pool, script, gen) = (pool2.clone(), script2.clone(), Arc::clone(&gen));
            async move {
                let k = SaleKeys::new(p.id);
                let mut conn = pool.get().await?;
                let _: (i64, String, i64) = script
                    .key(&k.meta)
                    .key(&k.buyers)
                    .key(&k.requests)
                    .key(&k.reservations)
                    .key(&k.pending)
                    .arg(i + 1)
                    .arg("r")
                    .arg(1)
                    .arg(gen.next_id().0)
                    .invoke_async(&mut *conn)
                    .await?;
                Ok(())
            }
        })
        .await?;
        multiplexed.forget_promotion(p.sale()).await?;
        results.push(("deadpool", rate));
        eprintln!("round {round}: deadpool({}) {rate:.0} reserves/s", args.pool_size);
    }

    let median = |name: &str| {
        let mut rates: Vec<f64> = results
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (m, d) = (median("multiplexed"), median("deadpool"));
    println!(
        "reserve.lua, {} ops x {} rounds, {} in flight",
        args.ops, args.rounds, args.concurrency
    );
    println!("| strategy | median reserves/s | ratio |");
    println!("|---|---|---|");
    println!(
        "| multiplexed ConnectionManager (1 socket) | {m:.0} | {:.2} |",
        m / d
    );
    println!(
        "| deadpool-redis pool ({} connections) | {d:.0} | 1.00 |",
        args.pool_size
    );
    Ok(())
}
