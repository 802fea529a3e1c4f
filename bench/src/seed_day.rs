//! `seed-day`: the order system's normal evening traffic, idle and then while a flash sale
//! offers twice what the gateway can serve. The promise under test: the flood never slows
//! normal checkout (its p99 at most 2× idle), and nothing but seckill orders is shed.
//!
//! The normal mix, by share of its requests (bench/README.md): checkout preview 20 %,
//! checkout 10 %, order list 30 %, one order 25 %, pay 6 %, the provider's signed payment
//! callback 6 %, refund request 3 %. Each endpoint is its own open-loop stream at its share
//! of the rate, so each gets its own latency figures. Pay, callbacks and refunds need orders
//! in the right state: they are placed (and paid) before the measurement, one per request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::flash_sale::{FlashSale, System};
use crate::loadgen::{self, LoadSpec, Outcome, Pace, Recording, Workload};
use crate::report::RunReport;
use crate::target::Target;

#[derive(Debug, Clone)]
pub struct SeedDaySettings {
    /// Requests per second of the normal mix (all endpoints together).
    pub rate: f64,
    pub duration: Duration,
    /// Connections of the capacity run and the flood.
    pub connections: usize,
    pub drain_timeout: Duration,
    pub seed: u64,
}

/// The endpoints of the normal mix and their shares.
const MIX: [(Endpoint, f64); 7] = [
    (Endpoint::Preview, 0.20),
    (Endpoint::Checkout, 0.10),
    (Endpoint::ListOrders, 0.30),
    (Endpoint::GetOrder, 0.25),
    (Endpoint::Pay, 0.06),
    (Endpoint::PaymentCallback, 0.06),
    (Endpoint::Refund, 0.03),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Endpoint {
    Preview,
    Checkout,
    ListOrders,
    GetOrder,
    Pay,
    PaymentCallback,
    Refund,
}

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Preview => "POST /api/checkout/preview",
            Endpoint::Checkout => "POST /api/checkout",
            Endpoint::ListOrders => "GET /api/orders",
            Endpoint::GetOrder => "GET /api/orders/{id}",
            Endpoint::Pay => "POST /api/orders/{id}/pay",
            Endpoint::PaymentCallback => "POST /api/payments/callback",
            Endpoint::Refund => "POST /api/orders/{id}/refund",
        }
    }
}

/// One endpoint's figures in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointFigures {
    pub endpoint: Endpoint,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 2xx.
    pub not_ok: u64,
    /// Of them, 429s, 5xx and failures: normal traffic turned away.
    pub shed_or_limited: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeedDayResult {
    /// Orders/s the gateway accepted on the seckill path, closed loop, before the day.
    pub capacity_rps: f64,
    pub flood_rate: f64,
    pub mix_rate: f64,
    pub idle: Vec<EndpointFigures>,
    pub during_flood: Vec<EndpointFigures>,
    pub idle_p50_ms: f64,
    pub idle_p99_ms: f64,
    pub flood_p50_ms: f64,
    pub flood_p99_ms: f64,
    pub capacity: RunReport,
    pub flood: RunReport,
}

impl SeedDayResult {
    pub fn p99_ratio(&self) -> f64 {
        self.flood_p99_ms / self.idle_p99_ms.max(1e-9)
    }

    /// Normal requests answered 429, 5xx or not at all, idle and during the flood.
    pub fn normal_shed(&self) -> u64 {
        self.idle
            .iter()
            .chain(&self.during_flood)
            .map(|f| f.shed_or_limited)
            .sum()
    }

    /// The per-endpoint table (Markdown).
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| endpoint | share | idle p50 ms | idle p99 ms | flood p50 ms | flood p99 ms | p99 flood/idle | requests idle/flood | not 2xx idle/flood |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for ((endpoint, share), (idle, flood)) in MIX.iter().zip(self.idle.iter().zip(&self.during_flood)) {
            out.push_str(&format!(
                "| {} | {:.0} % | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}× | {}/{} | {}/{} |\n",
                endpoint.label(),
                share * 100.0,
                idle.p50_ms,
                idle.p99_ms,
                flood.p50_ms,
                flood.p99_ms,
                flood.p99_ms / idle.p99_ms.max(1e-9),
                idle.requests,
                flood.requests,
                idle.not_ok,
                flood.not_ok,
            ));
        }
        out.push_str(&format!(
            "| **the whole mix** | 100 % | {:.2} | {:.2} | {:.2} | {:.2} | **{:.2}×** | | |\n",
            self.idle_p50_ms,
            self.idle_p99_ms,
            self.flood_p50_ms,
            self.flood_p99_ms,
            self.p99_ratio()
        ));
        out
    }

    pub fn summary(&self) -> String {
        let sale = &self.flood;
        format!(
            "seed-day: normal mix {:.0} req/s; seckill capacity {:.0} accepted orders/s (closed loop), flood offered {:.0} req/s; \
             the sale: {} accepted, {} shed (overloaded), {} sold out, {} errors; \
             normal requests shed or rate limited: {}; normal-mix p99 {:.2} ms idle, {:.2} ms during the flood ({:.2}×)\n",
            self.mix_rate,
            self.capacity_rps,
            self.flood_rate,
            sale.outcome(Outcome::Accepted),
            sale.outcome(Outcome::Shed),
            sale.outcome(Outcome::SoldOut),
            sale.outcome(Outcome::Error),
            self.normal_shed(),
            self.idle_p99_ms,
            self.flood_p99_ms,
            self.p99_ratio(),
        )
    }
}

/// Orders prepared for one phase: pending ones for pay, others for callbacks, paid ones
/// for refunds; each `(user index, order id, total)`.
#[derive(Debug, Default, Clone)]
struct Pools {
    pay: Vec<(usize, i64, i64)>,
    callback: Vec<(usize, i64, i64)>,
    refund: Vec<(usize, i64, i64)>,
}

pub async fn run(target: &Target, s: &SeedDaySettings) -> anyhow::Result<SeedDayResult> {
    let secret = target
        .callback_secret()
        .context("seed-day signs payment callbacks: set payments.callback_secret")?
        .expose_secret()
        .as_bytes()
        .to_vec();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let sku = format!("seed-{stamp}");
    target.create_sku(&sku, 10_000_000).await?;
    // The normal mix's buyers are not the sale's.
    let users = target.tokens(6_000_001..=6_002_000)?;

    let per_phase = |share: f64| (s.rate * share * s.duration.as_secs_f64() * 1.2).ceil() as usize + 8;
    let share = |e: Endpoint| MIX.iter().find(|(m, _)| *m == e).map_or(0.0, |(_, v)| *v);
    eprintln!("seed-day: placing the orders that pay, callbacks and refunds need");
    let mut phases = Vec::new();
    for phase in ["idle", "flood"] {
        let place = |endpoint: Endpoint, what: &'static str| {
            place_orders(target, &users, &sku, per_phase(share(endpoint)), phase, what)
        };
        let pay = place(Endpoint::Pay, "pay").await?;
        let callback = place(Endpoint::PaymentCallback, "cb").await?;
        let refund = place(Endpoint::Refund, "rf").await?;
        for (_, order_id, total) in &refund {
            let (status, body) = send_callback(target, &secret, *order_id, *total).await?;
            anyhow::ensure!(
                status.is_success(),
                "pay an order for the refunds: {status} {body}"
            );
        }
        phases.push(Pools {
            pay,
            callback,
            refund,
        });
    }
    let lookups: Vec<(usize, i64)> = phases
        .iter()
        .flat_map(|p| p.pay.iter().chain(&p.refund))
        .map(|(u, id, _)| (*u, *id))
        .collect();

    // What the gateway serves on the seckill path (closed loop, big stock), before the day.
    eprintln!("seed-day: measuring the seckill capacity");
    let capacity = FlashSale {
        users: 200_000,
        stock: 10_000_000,
        per_user_limit: 100,
        connections: s.connections,
        pace: Pace::Max,
        duration: Duration::from_secs(5),
        retry_fraction: 0.0,
        again_fraction: 0.0,
        seed: s.seed,
        max_requests: 5 * 200_000,
        drain_timeout: s.drain_timeout,
        verify: true,
        app_retries: None,
    }
    .run(target, "seed-day-capacity", &System::Gateway, None)
    .await?;
    // What it serves: accepted orders/s (shed answers are not service).
    let capacity_rps = capacity.accepted_per_sec;
    let flood_rate = 2.0 * capacity_rps;

    let mix = |pools: &Pools, label: &'static str| {
        let streams = MIX.map(|(endpoint, share)| {
            let workload = Arc::new(MixWorkload {
                endpoint,
                users: users.clone(),
                sku: sku.clone(),
                tag: format!("{sku}-{label}"),
                secret: secret.clone(),
                pools: pools.clone(),
                lookups: lookups.clone(),
            });
            (endpoint, share, workload)
        });
        async move {
            let runs = streams.into_iter().map(|(endpoint, share, workload)| async move {
                let spec = LoadSpec::new(&target.base, 16, Pace::Fixed(s.rate * share), s.duration).await?;
                let recording = loadgen::run(&spec, workload, endpoint.label()).await?;
                anyhow::Ok((endpoint, recording))
            });
            futures::future::try_join_all(runs).await
        }
    };

    eprintln!("seed-day: the normal mix, idle");
    let idle = mix(&phases[0], "idle").await?;
    eprintln!("seed-day: the normal mix while a sale offers {flood_rate:.0} req/s");
    // A sale that sells out about halfway through (2× offered, at most 1× accepted): the
    // flood meets both paths.
    let flood_secs = s.duration + Duration::from_secs(4);
    let sale = FlashSale {
        users: 1_000_000,
        stock: (capacity_rps * flood_secs.as_secs_f64() / 2.0).max(1.0) as i64,
        per_user_limit: 1,
        connections: s.connections.max(256),
        pace: Pace::Fixed(flood_rate),
        duration: flood_secs,
        retry_fraction: 0.03,
        again_fraction: 0.05,
        seed: s.seed,
        max_requests: (flood_secs.as_secs_f64() * flood_rate * 1.1) as usize + 1,
        drain_timeout: s.drain_timeout,
        verify: true,
        app_retries: None,
    };
    // The buyers' tokens first (apps fetch them during the countdown), so the mix meets the
    // flood itself.
    let ready = sale.prepare(target, &System::Gateway, None).await?;
    let during = async {
        // The normal mix starts once the flood runs at full rate.
        tokio::time::sleep(Duration::from_secs(2)).await;
        mix(&phases[1], "flood").await
    };
    let (flood, during) = tokio::join!(
        sale.run_prepared(target, "seed-day-flood", &System::Gateway, ready),
        during
    );
    let (flood, during) = (flood?, during?);

    let (idle_p50, idle_p99) = merged(&idle);
    let (flood_p50, flood_p99) = merged(&during);
    Ok(SeedDayResult {
        capacity_rps,
        flood_rate,
        mix_rate: s.rate,
        idle: idle.iter().map(figures).collect(),
        during_flood: during.iter().map(figures).collect(),
        idle_p50_ms: idle_p50,
        idle_p99_ms: idle_p99,
        flood_p50_ms: flood_p50,
        flood_p99_ms: flood_p99,
        capacity,
        flood,
    })
}

fn figures((endpoint, r): &(Endpoint, Recording)) -> EndpointFigures {
    EndpointFigures {
        endpoint: *endpoint,
        requests: r.total(),
        p50_ms: r.latency_ms(0.5),
        p99_ms: r.latency_ms(0.99),
        not_ok: r.total() - r.count(Outcome::Accepted),
        // 429, 503 `overloaded`, and any other 5xx or failure (checkout's own 503 `busy`).
        shed_or_limited: r.count(Outcome::RateLimited) + r.count(Outcome::Shed) + r.count(Outcome::Error),
    }
}

/// p50 and p99 (ms) of every request of the mix together.
fn merged(runs: &[(Endpoint, Recording)]) -> (f64, f64) {
    let mut all: Option<Histogram<u64>> = None;
    for (_, r) in runs {
        match &mut all {
            None => all = Some(r.latency_us.clone()),
            Some(h) => {
                let _ = h.add(&r.latency_us);
            }
        }
    }
    all.map_or((f64::NAN, f64::NAN), |h| {
        (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        )
    })
}

/// A checkout body: one unit of `sku`, shipped to the bench's address.
pub(crate) fn basket(sku: &str, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "items": [{ "sku_id": sku, "quantity": 1 }],
        "shipping": { "method": "standard", "address": {
            "name": "Bench", "line1": "1 Load Road", "city": "Hangzhou", "postal_code": "310000",
            "phone": "13800000000" } },
        "request_id": request_id,
    })
}

/// Place `n` checkout orders (32 at a time) for the mix's users; `(user index, id, total)`.
async fn place_orders(
    target: &Target,
    users: &[HeaderValue],
    sku: &str,
    n: usize,
    phase: &str,
    what: &str,
) -> anyhow::Result<Vec<(usize, i64, i64)>> {
    use futures::StreamExt;
    let client = reqwest::Client::new();
    let calls = (0..n).map(|i| {
        let user = (i * 7919 + what.len() * 31) % users.len();
        let request = client
            .post(format!("{}/api/checkout", target.base))
            .header(AUTHORIZATION, users[user].clone())
            .json(&basket(sku, &format!("{sku}-{phase}-{what}-{i}")));
        async move {
            let response = request.send().await.context("place a checkout order")?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            anyhow::ensure!(
                status == StatusCode::CREATED,
                "place a checkout order: {status} {body}"
            );
            let id = body["order_id"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .context("order id of a checkout order")?;
            let total = body["total_cents"]
                .as_i64()
                .context("total of a checkout order")?;
            anyhow::Ok((user, id, total))
        }
    });
    futures::stream::iter(calls)
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The payment provider's callback body and its signature header value.
fn signed_callback(secret: &[u8], order_id: i64, total: i64, payment_id: &str) -> (String, String) {
    use hmac::Mac;
    let body = serde_json::json!({
        "payment_id": payment_id,
        "order_id": order_id.to_string(),
        "amount_cents": total,
        "status": "succeeded",
        "timestamp": chrono::Utc::now().timestamp(),
    })
    .to_string();
    let signature = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    (body, signature)
}

async fn send_callback(
    target: &Target,
    secret: &[u8],
    order_id: i64,
    total: i64,
) -> anyhow::Result<(StatusCode, String)> {
    let (body, signature) = signed_callback(secret, order_id, total, &format!("prep-{order_id}"));
    let response = reqwest::Client::new()
        .post(format!("{}/api/payments/callback", target.base))
        .header(CONTENT_TYPE, "application/json")
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .context("send a payment callback")?;
    let status = response.status();
    Ok((status, response.text().await.unwrap_or_default()))
}

/// One endpoint of the normal mix.
#[derive(Debug)]
struct MixWorkload {
    endpoint: Endpoint,
    users: Vec<HeaderValue>,
    sku: String,
    tag: String,
    secret: Vec<u8>,
    pools: Pools,
    /// Orders to look up: `(user index, order id)`.
    lookups: Vec<(usize, i64)>,
}

impl MixWorkload {
    fn user(&self, k: u64) -> HeaderValue {
        self.users[(k as usize * 104_729) % self.users.len()].clone()
    }
}

fn json_request(
    method: Method,
    path: String,
    auth: HeaderValue,
    body: Option<String>,
) -> Option<Request<Full<Bytes>>> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(AUTHORIZATION, auth);
    match body {
        Some(body) => builder
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .ok(),
        None => builder.body(Full::new(Bytes::new())).ok(),
    }
}

impl Workload for MixWorkload {
    fn request(&self, k: u64) -> Option<Request<Full<Bytes>>> {
        let i = k as usize;
        match self.endpoint {
            Endpoint::Preview => json_request(
                Method::POST,
                "/api/checkout/preview".into(),
                self.user(k),
                Some(basket(&self.sku, &format!("{}-preview-{k}", self.tag)).to_string()),
            ),
            Endpoint::Checkout => json_request(
                Method::POST,
                "/api/checkout".into(),
                self.user(k),
                Some(basket(&self.sku, &format!("{}-place-{k}", self.tag)).to_string()),
            ),
            Endpoint::ListOrders => {
                json_request(Method::GET, "/api/orders?limit=20".into(), self.user(k), None)
            }
            Endpoint::GetOrder => {
                let (user, id) = self.lookups.get(i % self.lookups.len().max(1))?;
                json_request(
                    Method::GET,
                    format!("/api/orders/{id}"),
                    self.users[*user].clone(),
                    None,
                )
            }
            Endpoint::Pay => {
                let (user, id, _) = self.pools.pay.get(i)?;
                json_request(
                    Method::POST,
                    format!("/api/orders/{id}/pay"),
                    self.users[*user].clone(),
                    None,
                )
            }
            Endpoint::PaymentCallback => {
                let (_, id, total) = self.pools.callback.get(i)?;
                let (body, signature) =
                    signed_callback(&self.secret, *id, *total, &format!("{}-{id}", self.tag));
                Request::post("/api/payments/callback")
                    .header(CONTENT_TYPE, "application/json")
                    .header("x-signature", signature)
                    .body(Full::new(Bytes::from(body)))
                    .ok()
            }
            Endpoint::Refund => {
                let (user, id, _) = self.pools.refund.get(i)?;
                json_request(
                    Method::POST,
                    format!("/api/orders/{id}/refund"),
                    self.users[*user].clone(),
                    None,
                )
            }
        }
    }

    fn outcome(&self, _k: u64, status: StatusCode, body: &[u8]) -> Outcome {
        Outcome::of_api_answer(status, body)
    }
}
