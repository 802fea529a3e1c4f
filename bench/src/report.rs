//! What a run reports once it is over: a summary table for people, JSON for machines and SVG charts (throughput and latency over time, DB inserts vs inbound).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::loadgen::{Outcome, Recording, OUTCOMES};
use crate::svg::{line_chart, Series};
use crate::verify::Verification;

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondReport {
    pub t: u64,
    pub requests: u64,
    pub accepted: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// After the load: how the order pipeline caught up.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    /// Distinct order ids answered 202.
    pub accepted_orders: u64,
    /// From the end of the load until every accepted order was in the database.
    pub drain_secs: f64,
    /// (seconds since the load started, rows inserted in that second).
    pub db_rows_per_sec: Vec<(f64, f64)>,
    /// The configured writer pace (rows/s).
    pub pace_limit: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub name: String,
    pub target: String,
    pub pace: String,
    pub connections: usize,
    pub seconds: f64,
    pub requests: u64,
    pub throughput_rps: f64,
    pub accepted_per_sec: f64,
    pub latency_ms: Latency,
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Why the `error` answers failed (see `Recording::error_causes`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub error_causes: BTreeMap<String, u64>,
    pub timeline: Vec<SecondReport>,
    /// Requests the apps sent again after the load (same request id, next gateway).
    pub app_retries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// CPU time of each process over the run (see `cpu`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cpu: Vec<crate::cpu::ProcessCpu>,
}

impl RunReport {
    pub fn new(name: &str, target: &str, spec: &crate::loadgen::LoadSpec, r: &Recording) -> Self {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        Self {
            name: name.to_owned(),
            target: target.to_owned(),
            pace: spec.pace.describe(),
            connections: spec.connections,
            seconds: secs,
            requests: r.total(),
            throughput_rps: r.throughput(),
            accepted_per_sec: r.count(Outcome::Accepted) as f64 / secs,
            latency_ms: Latency {
                p50: r.latency_ms(0.50),
                p90: r.latency_ms(0.90),
                p99: r.latency_ms(0.99),
                p999: r.latency_ms(0.999),
                max: r.latency_us.max() as f64 / 1000.0,
            },
            outcomes: OUTCOMES.iter().map(|o| (o.name(), r.count(*o))).collect(),
            error_causes: r.error_causes.clone(),
            timeline: r
                .seconds
                .iter()
                .enumerate()
                .map(|(t, s)| SecondReport {
                    t: t as u64,
                    requests: s.counts.iter().sum(),
                    accepted: s.counts[Outcome::Accepted as usize],
                    p50_ms: s.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: s.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
                })
                .collect(),
            app_retries: 0,
            pipeline: None,
            verification: None,
            cpu: Vec::new(),
        }
    }

    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.name()).copied().unwrap_or(0)
    }
}

/// The summary table (Markdown, so it pastes into BENCHMARKS.md).
pub fn table(reports: &[&RunReport]) -> String {
    let mut out = String::from(
        "| run | target | pace | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | accepted | sold out | limit | 429 | closed | other 4xx | shed | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.target,
            r.pace,
            r.throughput_rps,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.outcome(Outcome::Accepted),
            r.outcome(Outcome::SoldOut),
            r.outcome(Outcome::LimitExceeded),
            r.outcome(Outcome::RateLimited),
            r.outcome(Outcome::Closed),
            r.outcome(Outcome::Rejected),
            r.outcome(Outcome::Shed),
            r.outcome(Outcome::Error),
        ));
    }
    out
}

/// The pipeline and invariant lines under a flash-sale run.
pub fn pipeline_lines(r: &RunReport) -> String {
    let mut out = String::new();
    if let Some(p) = &r.pipeline {
        let peak = p.db_rows_per_sec.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        out.push_str(&format!(
            "{}: {} orders accepted; all in the database {:.1} s after the load ended; \
             DB inserts peaked at {:.0} rows/s (pace {:.0} rows/s)\n",
            r.name, p.accepted_orders, p.drain_secs, peak, p.pace_limit
        ));
    }
    if let Some(v) = &r.verification {
        out.push_str(&format!("{}: {}\n", r.name, v.summary()));
    }
    out
}

/// JSON and charts of `runs` into `dir`.
pub fn write(dir: &Path, runs: &[&RunReport]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(runs).context("serialize the report")?,
    )
    .context("write report.json")?;
    for r in runs {
        write_charts(dir, r)?;
    }
    Ok(())
}

/// One line over the run's seconds (plotted at each second's middle).
fn per_second(
    r: &RunReport,
    name: &str,
    color: &'static str,
    value: impl Fn(&SecondReport) -> f64,
) -> Series {
    Series {
        name: name.into(),
        color,
        points: r.timeline.iter().map(|s| (s.t as f64 + 0.5, value(s))).collect(),
    }
}

fn write_charts(dir: &Path, r: &RunReport) -> anyhow::Result<()> {
    let write = |kind: &str, svg: String| {
        std::fs::write(dir.join(format!("{}-{kind}.svg", r.name)), svg).context("write a chart")
    };
    write(
        "throughput",
        line_chart(
            &format!("{}: throughput", r.name),
            "seconds",
            "requests / s",
            &[
                per_second(r, "answered", "#1f77b4", |s| s.requests as f64),
                per_second(r, "accepted", "#2ca02c", |s| s.accepted as f64),
            ],
        ),
    )?;
    write(
        "latency",
        line_chart(
            &format!("{}: latency", r.name),
            "seconds",
            "milliseconds",
            &[
                per_second(r, "p50", "#1f77b4", |s| s.p50_ms),
                per_second(r, "p99", "#d62728", |s| s.p99_ms),
            ],
        ),
    )?;
    if let Some(p) = &r.pipeline {
        let last = p
            .db_rows_per_sec
            .last()
            .map_or(0.0, |(t, _)| *t)
            .max(r.timeline.len() as f64);
        write(
            "db",
            line_chart(
                &format!("{}: database inserts vs inbound orders", r.name),
                "seconds",
                "orders / s",
                &[
                    per_second(r, "accepted (inbound)", "#2ca02c", |s| s.accepted as f64),
                    Series {
                        name: "DB inserts".into(),
                        color: "#9467bd",
                        points: p.db_rows_per_sec.clone(),
                    },
                    Series {
                        name: "pace limit".into(),
                        color: "#7f7f7f",
                        points: vec![(0.0, p.pace_limit), (last, p.pace_limit)],
                    },
                ],
            ),
        )?;
    }
    Ok(())
}
