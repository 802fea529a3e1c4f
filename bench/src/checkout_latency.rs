//! Normal checkout latency at a steady, open-loop rate: each request is scheduled on a fixed
//! clock and its latency counted from its scheduled time, so a slow server cannot hide
//! queueing by slowing the generator down. Drives the gateway over HTTP like an app.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:18080")]
    base: String,
    /// Checkouts per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// File of user tokens (bench mint-tokens).
    #[arg(long)]
    tokens: std::path::PathBuf,
    /// SKU to buy (must exist with enough stock).
    #[arg(long, default_value = "bench-sku")]
    sku: String,
    /// Printed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tokens: Vec<String> = std::fs::read_to_string(&args.tokens)
        .context("read tokens")?
        .lines()
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!tokens.is_empty(), "no tokens");
    let client = reqwest::Client::new();
    let url = Arc::new(format!("{}/api/checkout", args.base));
    let total = u64::from(args.rate) * args.seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let (client, url) = (client.clone(), Arc::clone(&url));
        let token = tokens[i as usize % tokens.len()].clone();
        let body = json!({
            "items": [{ "sku_id": args.sku, "quantity": 1 }],
            "shipping": { "method": "standard", "address": {
                "name": "Bench", "line1": "1 Load Road", "city": "Hangzhou", "postal_code": "310000", "phone": "13800000000" } },
            "request_id": format!("{}-{i}-{}", args.label, start.elapsed().as_nanos()),
        });
        tasks.push(tokio::spawn(async move {
            let ok = client
                .post(url.as_str())
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16() == 201)
                .unwrap_or(false);
            (scheduled.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut failures = 0;
    for t in tasks {
        let (latency, ok) = t.await?;
        latencies.push(latency);
        failures += usize::from(!ok);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "{} checkouts={} failed={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.label,
        latencies.len(),
        failures,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}
