//! `bench`: the command line of the load bench (see BENCHMARKS.md and `bench --help`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bench::flash_sale::{FlashSale, System};
use bench::loadgen::Pace;
use bench::report::{self, RunReport};
use bench::scenarios::{self, ChildServer, SuiteSettings};
use bench::target::Target;
use clap::{Args, Parser, Subcommand};

/// The allocator the gateway uses, so the trivial handler it is compared with pays the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "seckill load bench: drives a deployment over HTTP, checks the invariants after")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A flash sale: N buyers, open loop (or closed loop with --rate max), retries and repeat
    /// tries; waits until every accepted order is persisted, then checks invariants 1–5.
    FlashSale(SaleArgs),
    /// The same flash sale against the baseline server (one DB transaction per request).
    Baseline(SaleArgs),
    /// Normal checkout at a steady rate, idle and during a flash-sale flood.
    Mixed {
        #[command(flatten)]
        sale: SaleArgs,
        /// Checkouts per second.
        #[arg(long, default_value_t = 100.0)]
        checkout_rate: f64,
    },
    /// The seed's day: the normal mix (checkout, order queries, payments, refunds) at a steady
    /// rate, idle and then while a flash sale offers twice what the gateway can serve; p50/p99
    /// per endpoint, what the sale accepted and shed, and the invariant checks.
    SeedDay {
        #[command(flatten)]
        common: Common,
        /// Requests per second of the normal mix.
        #[arg(long, default_value_t = 200.0)]
        mix_rate: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The ceiling: a trivial HTTP handler and a Redis EVALSHA loop on this machine.
    Ceiling(Common),
    /// Everything in one run, compared with the targets; the figures for BENCHMARKS.md.
    Suite {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100.0)]
        checkout_rate: f64,
        /// Requests per second of the seed-day normal mix.
        #[arg(long, default_value_t = 200.0)]
        mix_rate: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Flash sales under injected faults (kill -9, restarts, outages) on a private stack,
    /// with the gateway and consumers binaries next to this one; a table of what survived.
    Faults(FaultArgs),
    /// Buyers polling their order until it leaves `queued`: 1 s polling on the earlier
    /// (database-first) path against long polls on the Redis path, on a private stack;
    /// polls per order, poll latency and PostgreSQL transactions per poll.
    OrderPolls(PollArgs),
    /// EVALSHA of lua/reserve.lua: multiplexed connection vs deadpool-redis pool.
    RedisConn(bench::redis_conn::Args),
    /// Order inserts: the writer's batched statement vs one row per transaction.
    DbInsert(bench::db_insert::Args),
    /// Years of orders: query p50/p99 and writer rows/s at growing sizes (COPY-loaded), on
    /// partitioned tables and an unpartitioned copy side by side.
    OrderData(bench::order_data::Args),
    /// The anti-bot checks' CPU cost (sale token, puzzle solution) and solving puzzles.
    SaleTokens(bench::sale_tokens::Args),
    /// Serve a handler that does nothing but answer like the seckill endpoint.
    TrivialServer {
        #[arg(long, default_value = "127.0.0.1:18090")]
        addr: SocketAddr,
    },
    /// Serve the baseline: seckill as one DB transaction per request.
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:18091")]
        addr: SocketAddr,
    },
    /// A small flash sale to watch on the dashboard (`make demo`): a sale that starts in a few
    /// seconds, buyers who fetch sale tokens and buy at the start, then the outcome.
    Demo {
        /// The gateway's base URL (`make run` serves on :8080).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        gateway: String,
        #[arg(long, default_value_t = 1_000)]
        buyers: u64,
        #[arg(long, default_value_t = 200)]
        stock: i64,
        /// Seconds until the sale starts.
        #[arg(long, default_value_t = 8)]
        starts_in: u64,
    },
    /// One process' `perf script` output as folded stacks, a flame graph (SVG) and tables of
    /// µs per request by area and function (`bench/run.sh profile` runs it).
    Profile(bench::profile::Args),
    /// Write `count` user tokens (sub = 1..=count), one per line, for other load generators.
    MintTokens {
        #[arg(long)]
        count: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The gateway's base URL.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    gateway: String,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Length of each load phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Where the JSON report and SVG charts go (default bench/results/<scenario>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long to wait for accepted orders to reach the database.
    #[arg(long, default_value_t = 180)]
    drain_timeout_secs: u64,
}

#[derive(Args, Debug, Clone)]
struct SaleArgs {
    #[command(flatten)]
    common: Common,
    /// Distinct buyers.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 10_000)]
    stock: i64,
    #[arg(long, default_value_t = 1)]
    per_user_limit: u32,
    /// `max` (closed loop), a rate in requests/s, or a ramp `FROM:TO`.
    #[arg(long, default_value = "5000", value_parser = parse_pace)]
    rate: Pace,
    /// Share of requests that retry an earlier request id.
    #[arg(long, default_value_t = 0.03)]
    retry_fraction: f64,
    /// Share of requests by a buyer who already tried, with a new request id.
    #[arg(long, default_value_t = 0.05)]
    again_fraction: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip waiting for the database and checking the invariants.
    #[arg(long)]
    no_verify: bool,
    /// Redis shards of the sale (a Redis Cluster spreads them over its nodes).
    #[arg(long, default_value_t = 1)]
    shards: i64,
}

#[derive(Args, Debug, Clone)]
struct FaultArgs {
    /// Faults to inject, one sale each (default: every one but `none`).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<bench::faults::Fault>,
    /// One pass over the faults per seed.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    seeds: Vec<u64>,
    #[arg(long, default_value_t = 5_000)]
    users: u64,
    #[arg(long, default_value_t = 1_500)]
    stock: i64,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 600.0)]
    rate: f64,
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// When in each sale the fault hits (ms).
    #[arg(long, default_value_t = 2_000)]
    fault_at_ms: u64,
    /// How long a stopped part stays down (ms).
    #[arg(long, default_value_t = 3_000)]
    outage_ms: u64,
    /// The writer's pace (rows/s): below the accept rate, so a backlog exists mid-sale.
    #[arg(long, default_value_t = 300.0)]
    pace: f64,
    /// Deployments to run every fault on, as GATEWAYSxCONSUMERS (e.g. `1x1,3x2`).
    #[arg(long, value_delimiter = ',', value_parser = parse_deployment, default_value = "1x1,3x2")]
    deployments: Vec<(usize, usize)>,
    /// Run the deployments on a Redis Cluster of three masters with a replica each (needed by
    /// `redis-node-restart`; the default faults then include the failovers).
    #[arg(long, conflicts_with = "redis_sentinel")]
    redis_cluster: bool,
    /// Run the deployments on one primary and one replica under three Sentinels (the default
    /// faults then include the failovers).
    #[arg(long)]
    redis_sentinel: bool,
    /// Redis shards of each sale.
    #[arg(long, default_value_t = 1)]
    shards: i64,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct PollArgs {
    /// Buyers, each buying one unit of a sale of this size (each way gets its own sale).
    #[arg(long, default_value_t = 1_000)]
    buyers: u64,
    /// The writer's pace (rows/s): the orders stay queued about buyers / pace seconds.
    #[arg(long, default_value_t = 200.0)]
    pace: f64,
    /// Apps placing and polling at once.
    #[arg(long, default_value_t = 1_000)]
    concurrency: usize,
    /// The idle window that measures the background transaction rate (s).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_deployment(s: &str) -> Result<(usize, usize), String> {
    let (g, c) = s
        .split_once('x')
        .ok_or_else(|| format!("{s:?}: expected GATEWAYSxCONSUMERS, e.g. 3x2"))?;
    let parse = |n: &str| n.parse::<usize>().ok().filter(|n| *n >= 1);
    match (parse(g), parse(c)) {
        (Some(g), Some(c)) => Ok((g, c)),
        _ => Err(format!("{s:?}: both counts must be at least 1")),
    }
}

fn parse_pace(s: &str) -> Result<Pace, String> {
    let rate = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|r| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| format!("not a rate: {v}"))
    };
    match s.split_once(':') {
        _ if s == "max" => Ok(Pace::Max),
        Some((from, to)) => Ok(Pace::Ramp {
            from: rate(from)?,
            to: rate(to)?,
        }),
        None => rate(s).and_then(|r| {
            if r > 0.0 {
                Ok(Pace::Fixed(r))
            } else {
                Err("rate must be > 0".into())
            }
        }),
    }
}

/// `--out`, or `bench/results/<scenario>-<time>`.
fn out_dir(out: Option<&PathBuf>, scenario: &str) -> PathBuf {
    out.cloned().unwrap_or_else(|| {
        PathBuf::from("bench/results").join(format!(
            "{scenario}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    })
}

impl Common {
    fn out_dir(&self, scenario: &str) -> PathBuf {
        out_dir(self.out.as_ref(), scenario)
    }
}

impl SaleArgs {
    fn sale(&self) -> FlashSale {
        FlashSale {
            users: self.users,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            connections: self.common.connections,
            pace: self.rate,
            duration: Duration::from_secs(self.common.seconds),
            retry_fraction: self.retry_fraction,
            again_fraction: self.again_fraction,
            seed: self.seed,
            max_requests: self.common.seconds as usize * 200_000,
            drain_timeout: Duration::from_secs(self.common.drain_timeout_secs),
            verify: !self.no_verify,
            app_retries: None,
        }
    }
}

/// Print, write, and fail loudly if an invariant broke.
fn finish(out: &std::path::Path, runs: &[&RunReport], extra: &str) -> anyhow::Result<()> {
    println!("{}", report::table(runs));
    for r in runs {
        print!("{}", report::pipeline_lines(r));
    }
    let cpu: Vec<(&str, &[bench::cpu::ProcessCpu])> = runs
        .iter()
        .filter(|r| !r.cpu.is_empty())
        .map(|r| (r.name.as_str(), r.cpu.as_slice()))
        .collect();
    if !cpu.is_empty() {
        println!("CPU time per process (front over the load; consumers and postgres until the drain ended):");
        println!("{}", bench::cpu::table(&cpu));
    }
    print!("{extra}");
    report::write(out, runs)?;
    println!("report and charts: {}", out.display());
    let broken: Vec<&str> = runs
        .iter()
        .filter(|r| r.verification.as_ref().is_some_and(|v| !v.ok()))
        .map(|r| r.name.as_str())
        .collect();
    anyhow::ensure!(broken.is_empty(), "invariants broken in: {}", broken.join(", "));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::FlashSale(args) => {
            let target = Target::from_env(&args.common.gateway)?.with_shards(args.shards);
            let run = args
                .sale()
                .run(&target, "flash-sale", &System::Gateway, None)
                .await?;
            finish(&args.common.out_dir("flash-sale"), &[&run], "")
        }
        Command::Baseline(args) => {
            let target = Target::from_env(&args.common.gateway)?;
            let server = ChildServer::spawn("baseline-server").await?;
            let run = args
                .sale()
                .run(&target, "baseline", &System::Baseline(server.base.clone()), None)
                .await?;
            finish(&args.common.out_dir("baseline"), &[&run], "")
        }
        Command::Mixed { sale, checkout_rate } => {
            let target = Target::from_env(&sale.common.gateway)?;
            let duration = Duration::from_secs(sale.common.seconds);
            let m = scenarios::mixed(&target, &sale.sale(), checkout_rate, duration).await?;
            let extra = format!("checkout p99 during the flood / idle: {:.2}\n", m.p99_ratio);
            finish(
                &sale.common.out_dir("mixed"),
                &[&m.idle, &m.during_flood, &m.flood],
                &extra,
            )
        }
        Command::Ceiling(common) => {
            let target = Target::from_env(&common.gateway)?;
            let duration = Duration::from_secs(common.seconds);
            let http = scenarios::http_ceiling(&target, common.connections, duration).await?;
            let redis = bench::redis_conn::multiplexed_reserves_per_sec(&target.redis, 200_000, 256).await?;
            finish(
                &common.out_dir("ceiling"),
                &[&http],
                &format!("Redis EVALSHA reserve loop (256 in flight): {redis:.0}/s\n"),
            )
        }
        Command::SeedDay {
            common,
            mix_rate,
            seed,
        } => {
            let target = Target::from_env(&common.gateway)?;
            let settings = bench::seed_day::SeedDaySettings {
                rate: mix_rate,
                duration: Duration::from_secs(common.seconds),
                connections: common.connections,
                drain_timeout: Duration::from_secs(common.drain_timeout_secs),
                seed,
            };
            let result = bench::seed_day::run(&target, &settings).await?;
            let out = common.out_dir("seed-day");
            std::fs::create_dir_all(&out).context("create the output directory")?;
            std::fs::write(out.join("seed-day.json"), serde_json::to_vec_pretty(&result)?)
                .context("write seed-day.json")?;
            let extra = format!("{}\n{}", result.table(), result.summary());
            finish(&out, &[&result.capacity, &result.flood], &extra)
        }
        Command::Suite {
            common,
            checkout_rate,
            mix_rate,
            seed,
        } => {
            let target = Target::from_env(&common.gateway)?;
            let settings = SuiteSettings {
                connections: common.connections,
                duration: Duration::from_secs(common.seconds),
                checkout_rate,
                mix_rate,
                drain_timeout: Duration::from_secs(common.drain_timeout_secs),
                seed,
            };
            let result = scenarios::suite(&target, &settings).await?;
            let out = common.out_dir("suite");
            std::fs::create_dir_all(&out).context("create the output directory")?;
            let targets = scenarios::targets_table(&result.targets);
            let extra = format!(
                "Redis EVALSHA reserve loop: {:.0}/s\n\n{}\n{}\nCapacity (CPU cores per unit of load):\n{}\n{targets}",
                result.redis_evalsha_per_sec,
                result.seed_day.table(),
                result.seed_day.summary(),
                result.capacity_table,
            );
            std::fs::write(out.join("capacity.md"), &result.capacity_table).context("write capacity.md")?;
            let runs: Vec<&RunReport> = result.runs.iter().collect();
            std::fs::create_dir_all(&out).context("create the output directory")?;
            std::fs::write(out.join("targets.md"), &targets).context("write targets.md")?;
            std::fs::write(out.join("suite.json"), serde_json::to_vec_pretty(&result)?)
                .context("write suite.json")?;
            finish(&out, &runs, &extra)
        }
        Command::OrderPolls(args) => {
            use bench::order_polls::{self, PollSettings};
            let settings = PollSettings {
                buyers: args.buyers,
                writer_rows_per_sec: args.pace,
                concurrency: args.concurrency,
                idle: Duration::from_secs(args.idle_secs),
            };
            let rows = order_polls::run(bench::faults::Binaries::beside_current_exe()?, &settings).await?;
            let table = order_polls::table(&rows);
            println!("{table}");
            let out = out_dir(args.out.as_ref(), "order-polls");
            std::fs::create_dir_all(&out).context("create the output directory")?;
            std::fs::write(out.join("order-polls.md"), &table).context("write order-polls.md")?;
            println!("table: {}", out.display());
            Ok(())
        }
        Command::Faults(args) => {
            use bench::faults::{self, FaultSettings, ALL_FAULTS, REPLICA_FAULTS};
            use order_core::test_support::RedisKind;
            let redis = match (args.redis_cluster, args.redis_sentinel) {
                (true, _) => RedisKind::Cluster,
                (_, true) => RedisKind::Sentinel,
                _ => RedisKind::Node,
            };
            let mut rows = Vec::new();
            for &(gateways, consumers) in &args.deployments {
                let settings = FaultSettings {
                    faults: match (args.faults.is_empty(), redis) {
                        (false, _) => args.faults.clone(),
                        (true, RedisKind::Node) => ALL_FAULTS.to_vec(),
                        (true, _) => ALL_FAULTS.iter().chain(&REPLICA_FAULTS).copied().collect(),
                    },
                    seeds: args.seeds.clone(),
                    users: args.users,
                    stock: args.stock,
                    rate: args.rate,
                    duration: Duration::from_secs(args.seconds),
                    fault_at: Duration::from_millis(args.fault_at_ms),
                    outage: Duration::from_millis(args.outage_ms),
                    writer_rows_per_sec: args.pace,
                    gateways,
                    consumers,
                    redis,
                    shards: args.shards,
                };
                rows.extend(faults::run(faults::Binaries::beside_current_exe()?, &settings).await?);
            }
            let table = faults::table(&rows);
            println!("{table}");
            let out = out_dir(args.out.as_ref(), "faults");
            std::fs::create_dir_all(&out).context("create the output directory")?;
            std::fs::write(out.join("faults.md"), &table).context("write faults.md")?;
            std::fs::write(out.join("faults.json"), serde_json::to_vec_pretty(&rows)?)
                .context("write faults.json")?;
            println!("table and JSON: {}", out.display());
            let broken: Vec<String> = rows
                .iter()
                .filter(|r| !r.failures.is_empty())
                .map(|r| format!("{} #{}: {}", r.fault, r.seed, r.failures.join("; ")))
                .collect();
            anyhow::ensure!(broken.is_empty(), "invariants broken: {}", broken.join(" | "));
            Ok(())
        }
        Command::RedisConn(args) => bench::redis_conn::run(args).await,
        Command::DbInsert(args) => bench::db_insert::run(args).await,
        Command::OrderData(args) => bench::order_data::run(args).await,
        Command::SaleTokens(args) => bench::sale_tokens::run(args),
        Command::TrivialServer { addr } => trivial_server(addr).await,
        Command::BaselineServer { addr } => {
            let target = Target::from_env("http://unused")?;
            let db = order_core::postgres::lazy_pool(&target.database)?;
            bench::baseline::serve(addr, db, target.jwt_secret()).await
        }
        Command::MintTokens { count, out } => mint_tokens(count, &out),
        Command::Profile(args) => bench::profile::run(&args),
        Command::Demo {
            gateway,
            buyers,
            stock,
            starts_in,
        } => {
            let target = Target::from_env(&gateway)?;
            let demo = bench::demo::Demo {
                buyers,
                stock,
                starts_in: Duration::from_secs(starts_in),
            };
            anyhow::ensure!(demo.run(&target).await?, "the demo sale broke an invariant");
            Ok(())
        }
    }
}

async fn trivial_server(addr: SocketAddr) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::any;
    let app = axum::Router::new().fallback(any(|| async {
        (StatusCode::ACCEPTED, r#"{"order_id":"1","status":"queued"}"#)
    }));
    let listener = tokio::net::TcpListener::bind(addr).await.context("bind")?;
    axum::serve(listener, app).await.context("serve")
}

fn mint_tokens(count: u64, out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let target = Target::from_env("http://unused")?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).context("create the token file")?);
    for token in target.tokens(1..=count)? {
        let token = token.to_str().context("token text")?;
        writeln!(file, "{}", token.trim_start_matches("Bearer "))?;
    }
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_max_fixed_or_ramp() {
        assert_eq!(parse_pace("max"), Ok(Pace::Max));
        assert_eq!(parse_pace("2500"), Ok(Pace::Fixed(2500.0)));
        assert_eq!(
            parse_pace("0:8000"),
            Ok(Pace::Ramp {
                from: 0.0,
                to: 8000.0
            })
        );
        assert!(parse_pace("0").is_err());
        assert!(parse_pace("fast").is_err());
        assert!(parse_pace("1:x").is_err());
    }
}
