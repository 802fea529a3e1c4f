//! The scenarios besides the flash sale itself: the hardware ceiling (a trivial handler
//! and a Redis `EVALSHA` loop), mixed traffic (normal checkout idle vs during a flood), and
//! the suite that runs everything in one go and compares it with the targets.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde::Serialize;

use crate::flash_sale::{FlashSale, SaleWorkload, System};
use crate::loadgen::{self, LoadSpec, Outcome, Pace, Workload};
use crate::plan::{Plan, PlanSettings};
use crate::report::RunReport;
use crate::target::Target;

/// A server of this binary (`trivial-server`, `baseline-server`) as a child process, like
/// the gateway: its CPU is not the load generator's. Killed on drop.
#[derive(Debug)]
pub struct ChildServer {
    _measured: Option<crate::cpu::ChildMeasured>,
    _child: tokio::process::Child,
    pub base: String,
}

impl ChildServer {
    pub async fn spawn(subcommand: &str) -> anyhow::Result<Self> {
        let port = order_core::test_support::free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new(std::env::current_exe().context("find the bench binary")?)
            .args([subcommand, "--addr", &addr])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start bench {subcommand}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "bench {subcommand} did not listen on {addr} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let name = subcommand
            .strip_suffix("-server")
            .unwrap_or(subcommand)
            .replace('-', " ");
        Ok(Self {
            _measured: child
                .id()
                .map(|pid| crate::cpu::measure_child(&format!("{name} server"), pid)),
            _child: child,
            base: format!("http://{addr}"),
        })
    }
}

/// The seckill request shape against a handler that does nothing: the most this machine
/// and this generator can do over HTTP.
pub async fn http_ceiling(
    target: &Target,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RunReport> {
    let server = ChildServer::spawn("trivial-server").await?;
    let users = 20_000;
    let plan = Plan::build(
        PlanSettings {
            users,
            retry_fraction: 0.0,
            again_fraction: 0.0,
            seed: 1,
        },
        (duration.as_secs_f64() * 400_000.0) as usize,
    );
    let workload = Arc::new(SaleWorkload::new(plan, target.tokens(1..=users)?, None, 1));
    let spec = LoadSpec::new(&server.base, connections, Pace::Max, duration).await?;
    let before = target.processes.sample();
    let recording = loadgen::run(&spec, workload, "ceiling-http").await?;
    let after = target.processes.sample();
    let mut report = RunReport::new("ceiling-http", "trivial handler", &spec, &recording);
    report.cpu = crate::cpu::run_figures(&before, &after, None, recording.total(), 0);
    Ok(report)
}

/// Normal checkout requests (`POST /api/checkout`), each user buying one item.
#[derive(Debug)]
struct CheckoutWorkload {
    tokens: Vec<HeaderValue>,
    sku: String,
    tag: String,
}

impl Workload for CheckoutWorkload {
    fn request(&self, k: u64) -> Option<Request<Full<Bytes>>> {
        let token = self.tokens[(k % self.tokens.len() as u64) as usize].clone();
        let body = crate::seed_day::basket(&self.sku, &format!("{}-{k}", self.tag));
        Request::post("/api/checkout")
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, token)
            .body(Full::new(Bytes::from(body.to_string())))
            .ok()
    }

    fn outcome(&self, _k: u64, status: StatusCode, body: &[u8]) -> Outcome {
        Outcome::of_api_answer(status, body)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MixedResult {
    pub idle: RunReport,
    pub during_flood: RunReport,
    pub flood: RunReport,
    /// p99 during the flood / p99 idle (invariant 6 asks ≤ 2).
    pub p99_ratio: f64,
}

/// Checkout at a steady open-loop rate, idle and then while `flood` runs.
pub async fn mixed(
    target: &Target,
    flood: &FlashSale,
    checkout_rate: f64,
    duration: Duration,
) -> anyhow::Result<MixedResult> {
    let sku = format!(
        "bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    target.create_sku(&sku, 10_000_000).await?;
    // Checkout buyers are not the flash sale's buyers; a few thousand keeps each under the
    // per-user rate limit.
    let tokens = target.tokens(5_000_001..=5_002_000)?;
    let checkout = |label: &str| {
        Arc::new(CheckoutWorkload {
            tokens: tokens.clone(),
            sku: sku.clone(),
            tag: format!("{sku}-{label}"),
        })
    };
    let spec = LoadSpec::new(&target.base, 64, Pace::Fixed(checkout_rate), duration).await?;
    let before = target.processes.sample();
    let idle = loadgen::run(&spec, checkout("idle"), "checkout-idle").await?;
    let after = target.processes.sample();
    let mut idle_report = RunReport::new("checkout-idle", "gateway", &spec, &idle);
    idle_report.cpu =
        crate::cpu::run_figures(&before, &after, None, idle.total(), idle.count(Outcome::Accepted));
    let idle = idle_report;

    let flood_sale = FlashSale {
        duration: duration + Duration::from_secs(4),
        ..flood.clone()
    };
    // The buyers' tokens first, so the checkouts meet the flood itself.
    let ready = flood_sale.prepare(target, &System::Gateway, None).await?;
    let during = async {
        // Let the flood reach full speed first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        loadgen::run(&spec, checkout("flood"), "checkout-flood").await
    };
    let (flood, during) = tokio::join!(
        flood_sale.run_prepared(target, "mixed-flood", &System::Gateway, ready),
        during
    );
    let during = RunReport::new("checkout-during-flood", "gateway", &spec, &during?);
    let flood = flood?;
    let p99_ratio = during.latency_ms.p99 / idle.latency_ms.p99.max(1e-9);
    Ok(MixedResult {
        idle,
        during_flood: during,
        flood,
        p99_ratio,
    })
}

/// A performance target and what this run measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub what: String,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub runs: Vec<RunReport>,
    pub seed_day: crate::seed_day::SeedDayResult,
    /// CPU cores per unit of load, per component (Markdown).
    pub capacity_table: String,
    pub redis_evalsha_per_sec: f64,
    pub mixed_p99_ratio: f64,
    pub targets: Vec<TargetCheck>,
}

#[derive(Debug, Clone)]
pub struct SuiteSettings {
    pub connections: usize,
    pub duration: Duration,
    pub checkout_rate: f64,
    /// Requests per second of the seed-day normal mix.
    pub mix_rate: f64,
    pub drain_timeout: Duration,
    pub seed: u64,
}

/// Every scenario in one run: ceilings, sold-out and reserve paths at full speed, the
/// baseline, our reserve path at half its maximum, a realistic sale, and mixed traffic.
pub async fn suite(target: &Target, s: &SuiteSettings) -> anyhow::Result<SuiteResult> {
    let sale = |users: u64, stock: i64, limit: u32, pace: Pace| FlashSale {
        users,
        stock,
        per_user_limit: limit,
        connections: s.connections,
        pace,
        duration: s.duration,
        retry_fraction: 0.0,
        again_fraction: 0.0,
        seed: s.seed,
        max_requests: (s.duration.as_secs_f64() * 200_000.0) as usize,
        drain_timeout: s.drain_timeout,
        verify: true,
        app_retries: None,
    };
    let mut runs = Vec::new();
    let ceiling = http_ceiling(target, s.connections, s.duration).await?;
    eprintln!("{}", crate::report::table(&[&ceiling]));
    let redis = crate::redis_conn::multiplexed_reserves_per_sec(&target.redis, 200_000, 256).await?;
    eprintln!("Redis EVALSHA reserve loop: {redis:.0}/s");

    let sold_out = sale(20_000, 0, 1, Pace::Max)
        .run(target, "sold-out", &System::Gateway, None)
        .await?;
    let reserve = sale(200_000, 10_000_000, 100, Pace::Max)
        .run(target, "reserve", &System::Gateway, None)
        .await?;
    let baseline_server = ChildServer::spawn("baseline-server").await?;
    let baseline = sale(200_000, 10_000_000, 100, Pace::Max)
        .run(
            target,
            "baseline",
            &System::Baseline(baseline_server.base.clone()),
            None,
        )
        .await?;
    drop(baseline_server);
    let half_rate = (reserve.throughput_rps / 2.0).max(1.0);
    let half = sale(200_000, 10_000_000, 100, Pace::Fixed(half_rate))
        .run(target, "reserve-half-max", &System::Gateway, None)
        .await?;
    let realistic = FlashSale {
        retry_fraction: 0.03,
        again_fraction: 0.05,
        ..sale(
            100_000,
            10_000,
            1,
            Pace::Ramp {
                from: half_rate / 5.0,
                to: half_rate * 2.0,
            },
        )
    }
    .run(target, "flash-sale", &System::Gateway, None)
    .await?;
    let mixed = mixed(
        target,
        &sale(200_000, 10_000_000, 100, Pace::Fixed(half_rate)),
        s.checkout_rate,
        s.duration,
    )
    .await?;

    let seed_day = crate::seed_day::run(
        target,
        &crate::seed_day::SeedDaySettings {
            rate: s.mix_rate,
            duration: s.duration,
            connections: s.connections,
            drain_timeout: s.drain_timeout,
            seed: s.seed,
        },
    )
    .await?;
    eprintln!("{}", seed_day.summary());

    let ratio = |a: f64, b: f64| a / b.max(1e-9);
    let cpu_of = |run: &RunReport, process: &str| run.cpu.iter().find(|c| c.process == process).cloned();
    let per_request =
        |run: &RunReport, process: &str| cpu_of(run, process).map_or(f64::NAN, |c| c.us_per_request);
    let gateway_vs_trivial = ratio(
        per_request(&sold_out, "gateway"),
        per_request(&ceiling, "trivial server"),
    );
    let redis_per_order = cpu_of(&reserve, "redis")
        .and_then(|c| c.us_per_accepted)
        .unwrap_or(f64::NAN);
    let capacity_table = capacity_table(&ceiling, &sold_out, &reserve, &mixed.idle);
    let mut targets = vec![
        TargetCheck {
            what: "sold-out rejections vs trivial handler".into(),
            wanted: "≥ 0.80×".into(),
            measured: format!("{:.2}×", ratio(sold_out.throughput_rps, ceiling.throughput_rps)),
            met: ratio(sold_out.throughput_rps, ceiling.throughput_rps) >= 0.8,
        },
        TargetCheck {
            what: "reserve path vs trivial handler".into(),
            wanted: "≥ 0.50×".into(),
            measured: format!("{:.2}×", ratio(reserve.throughput_rps, ceiling.throughput_rps)),
            met: ratio(reserve.throughput_rps, ceiling.throughput_rps) >= 0.5,
        },
        TargetCheck {
            what: "accepted orders/s vs baseline".into(),
            wanted: "≥ 10×".into(),
            measured: format!(
                "{:.1}× ({:.0} vs {:.0}/s)",
                ratio(reserve.accepted_per_sec, baseline.accepted_per_sec),
                reserve.accepted_per_sec,
                baseline.accepted_per_sec
            ),
            met: ratio(reserve.accepted_per_sec, baseline.accepted_per_sec) >= 10.0,
        },
        TargetCheck {
            what: "seckill p99 at half the maximum rate".into(),
            wanted: "≤ 10 ms".into(),
            measured: format!("{:.2} ms at {half_rate:.0} req/s", half.latency_ms.p99),
            met: half.latency_ms.p99 <= 10.0,
        },
        TargetCheck {
            what: "checkout p99 during the flood vs idle".into(),
            wanted: "≤ 2×".into(),
            measured: format!(
                "{:.2}× ({:.2} vs {:.2} ms)",
                mixed.p99_ratio, mixed.during_flood.latency_ms.p99, mixed.idle.latency_ms.p99
            ),
            met: mixed.p99_ratio <= 2.0,
        },
        TargetCheck {
            what: "seed-day: normal-mix p99 during a 2× flood vs idle".into(),
            wanted: "≤ 2×".into(),
            measured: format!(
                "{:.2}× ({:.2} vs {:.2} ms; flood offered {:.0} req/s = 2 × {:.0})",
                seed_day.p99_ratio(),
                seed_day.flood_p99_ms,
                seed_day.idle_p99_ms,
                seed_day.flood_rate,
                seed_day.capacity_rps
            ),
            met: seed_day.p99_ratio() <= 2.0,
        },
        TargetCheck {
            what: "seed-day: nothing but seckill orders shed".into(),
            wanted: "0 normal requests answered 429, 5xx or not at all".into(),
            measured: format!(
                "{} normal; {} seckill orders shed",
                seed_day.normal_shed(),
                seed_day.flood.outcome(crate::loadgen::Outcome::Shed)
            ),
            met: seed_day.normal_shed() == 0,
        },
        TargetCheck {
            what: "gateway CPU per sold-out rejection vs trivial handler's per request".into(),
            wanted: "≤ 1.3×".into(),
            measured: format!(
                "{gateway_vs_trivial:.2}× ({:.1} vs {:.1} µs)",
                per_request(&sold_out, "gateway"),
                per_request(&ceiling, "trivial server")
            ),
            met: gateway_vs_trivial <= 1.3,
        },
        TargetCheck {
            what: "Redis CPU per accepted order (reserve run)".into(),
            wanted: "≤ 15 µs".into(),
            measured: format!("{redis_per_order:.1} µs"),
            met: redis_per_order <= 15.0,
        },
        TargetCheck {
            what: "accepted orders/s vs baseline (current target)".into(),
            wanted: "≥ 15×".into(),
            measured: format!(
                "{:.1}×",
                ratio(reserve.accepted_per_sec, baseline.accepted_per_sec)
            ),
            met: ratio(reserve.accepted_per_sec, baseline.accepted_per_sec) >= 15.0,
        },
    ];
    runs.extend([ceiling, sold_out, reserve, baseline, half, realistic]);
    runs.extend([
        mixed.idle.clone(),
        mixed.during_flood.clone(),
        mixed.flood.clone(),
        seed_day.capacity.clone(),
        seed_day.flood.clone(),
    ]);
    let busiest = runs
        .iter()
        .filter_map(|r| r.verification.as_ref()?.max_rows_in_one_second)
        .max()
        .unwrap_or(0);
    targets.push(TargetCheck {
        what: "most DB inserts in any one second".into(),
        wanted: format!(
            "≤ {:.0} (pace {:.0} rows/s, one batch of {}, 2% timing slack)",
            crate::verify::pace_allowance(target.writer),
            target.writer.max_rows_per_sec,
            target.writer.batch_size
        ),
        measured: format!("{busiest} rows"),
        met: busiest as f64 <= crate::verify::pace_allowance(target.writer),
    });
    Ok(SuiteResult {
        runs,
        seed_day,
        capacity_table,
        redis_evalsha_per_sec: redis,
        mixed_p99_ratio: mixed.p99_ratio,
        targets,
    })
}

/// CPU cores each component needs per unit of load, from this run's CPU per request:
/// per 100k sold-out rejections/s, per 10k accepted orders/s (pipeline parts until the drain
/// ended), per 1k checkouts/s.
pub fn capacity_table(
    ceiling: &RunReport,
    sold_out: &RunReport,
    reserve: &RunReport,
    checkout: &RunReport,
) -> String {
    let mut processes: Vec<String> = Vec::new();
    for run in [ceiling, sold_out, reserve, checkout] {
        for c in &run.cpu {
            if !processes.contains(&c.process) {
                processes.push(c.process.clone());
            }
        }
    }
    let cores = |run: &RunReport, process: &str, per: f64, accepted: bool| {
        run.cpu
            .iter()
            .find(|c| c.process == process)
            .and_then(|c| {
                if accepted {
                    c.us_per_accepted
                } else {
                    Some(c.us_per_request)
                }
            })
            .map_or_else(|| "–".to_owned(), |us| format!("{:.2}", us * per / 1e6))
    };
    let mut out = String::from(
        "| process | cores per 100k sold-out rejections/s | cores per 10k accepted orders/s | cores per 1k checkouts/s | cores per 100k trivial requests/s |\n|---|---|---|---|---|\n",
    );
    for p in &processes {
        out.push_str(&format!(
            "| {p} | {} | {} | {} | {} |\n",
            cores(sold_out, p, 100_000.0, false),
            cores(reserve, p, 10_000.0, true),
            cores(checkout, p, 1_000.0, false),
            cores(ceiling, p, 100_000.0, false),
        ));
    }
    out
}

pub fn targets_table(targets: &[TargetCheck]) -> String {
    let mut out = String::from("| target | wanted | measured | met |\n|---|---|---|---|\n");
    for t in targets {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            t.what,
            t.wanted,
            t.measured,
            if t.met { "yes" } else { "**no**" }
        ));
    }
    out
}
