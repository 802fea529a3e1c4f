//! The flash-sale scenario: N distinct buyers hit one promotion the way apps do (a JWT each,
//! a request id per try, some retries of the same request id, some repeat tries), then the
//! bench waits until every accepted order is in the database and checks the invariants.
//!
//! The same requests can go to the baseline server (the architecture we replace), so both
//! are measured with one generator in one run.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use sqlx::PgPool;

use crate::loadgen::{self, LoadSpec, Outcome, Pace, Workload};

/// The header an order carries its sale token in.
const SALE_TOKEN: &str = "x-sale-token";
use crate::plan::{Plan, PlanSettings};
use crate::report::{PipelineReport, RunReport};
use crate::target::Target;
use crate::verify::{self, Seen};

#[derive(Debug, Clone)]
pub struct FlashSale {
    pub users: u64,
    pub stock: i64,
    pub per_user_limit: u32,
    pub connections: usize,
    pub pace: Pace,
    pub duration: Duration,
    pub retry_fraction: f64,
    pub again_fraction: f64,
    pub seed: u64,
    /// Closed loop sends at most this many requests.
    pub max_requests: usize,
    /// How long to wait for the backlog to reach the database.
    pub drain_timeout: Duration,
    /// Wait for the database and check the invariants afterwards.
    pub verify: bool,
    /// Act like apps after the load: every request that got no definitive answer (a 5xx,
    /// `overloaded` included: every 503 says "retry with the same request id"; a timeout, a
    /// refused connection) is sent again with the same request id, to the next gateway, once
    /// a second, until it gets one or this much time has passed.
    pub app_retries: Option<Duration>,
}

/// Where the sale runs.
#[derive(Debug, Clone)]
pub enum System {
    /// Our gateway (the target's URL) and its order pipeline.
    Gateway,
    /// The baseline server at this URL: one DB transaction per request.
    Baseline(String),
}

/// The sale's requests and what the bench saw of them.
#[derive(Debug)]
pub struct SaleWorkload {
    plan: Plan,
    tokens: Vec<HeaderValue>,
    /// Each buyer's sale token (same order as `tokens`), when the sale requires them.
    sale_tokens: Option<Vec<HeaderValue>>,
    path: String,
    /// Request ids are `<tag>-<user>-<try>`, unique per run.
    tag: String,
    answers: Mutex<HashMap<(u64, String), i64>>,
    conflicts: AtomicU64,
    /// Requests sent, and those that got a definitive answer (anything but `Error`).
    sent: Mutex<HashSet<(u64, String)>>,
    settled: Mutex<HashSet<(u64, String)>>,
    /// When each request was first sent, and each order's first 202 as (buyer, first sent,
    /// answered).
    sent_at: Mutex<HashMap<(u64, String), tokio::time::Instant>>,
    accepted_at: Mutex<Vec<(u64, tokio::time::Instant, tokio::time::Instant)>>,
}

#[derive(Deserialize)]
struct Accepted<'a> {
    #[serde(borrow)]
    order_id: &'a str,
}

impl SaleWorkload {
    pub fn new(
        plan: Plan,
        tokens: Vec<HeaderValue>,
        sale_tokens: Option<Vec<HeaderValue>>,
        promotion_id: i64,
    ) -> Self {
        let tag = format!(
            "b{}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        Self {
            plan,
            tokens,
            sale_tokens,
            path: format!("/api/seckill/{promotion_id}/orders"),
            tag,
            answers: Mutex::new(HashMap::new()),
            conflicts: AtomicU64::new(0),
            sent: Mutex::new(HashSet::new()),
            settled: Mutex::new(HashSet::new()),
            sent_at: Mutex::new(HashMap::new()),
            accepted_at: Mutex::new(Vec::new()),
        }
    }

    fn sending(&self, key: &(u64, String)) {
        self.sent_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_insert_with(tokio::time::Instant::now);
    }

    /// How long after `at` the sale first took a new order: the first 202 to a request first
    /// sent after `at`, by a buyer `of_interest` picks (the buyers a fault reached, on a
    /// sharded sale).
    pub fn accepted_again_after(
        &self,
        at: tokio::time::Instant,
        of_interest: impl Fn(u64) -> bool,
    ) -> Option<Duration> {
        self.accepted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(user, sent, _)| *sent >= at && of_interest(*user))
            .map(|(_, _, answered)| answered.saturating_duration_since(at))
            .min()
    }

    /// Requests sent that never got a definitive answer.
    pub fn unsettled(&self) -> Vec<(u64, String)> {
        let settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let mut open: Vec<_> = sent.difference(&settled).cloned().collect();
        open.sort();
        open
    }

    /// Record an answer to the request `key`.
    fn answered(&self, key: (u64, String), status: StatusCode, body: &[u8]) -> Outcome {
        let mut outcome = Outcome::of_api_answer(status, body);
        if status == StatusCode::ACCEPTED {
            let first_answer = !self
                .answers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key);
            let sent = self
                .sent_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .copied();
            if let (true, Some(sent)) = (first_answer, sent) {
                self.accepted_at.lock().unwrap_or_else(|e| e.into_inner()).push((
                    key.0,
                    sent,
                    tokio::time::Instant::now(),
                ));
            }
            let order_id = serde_json::from_slice::<Accepted>(body)
                .ok()
                .and_then(|a| a.order_id.parse::<i64>().ok());
            match order_id {
                Some(order_id) => {
                    let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(earlier) = answers.insert(key.clone(), order_id) {
                        if earlier != order_id {
                            self.conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                None => outcome = Outcome::Error,
            }
        }
        // A shed order was refused before any work, and its 503 asks for a retry like any
        // other: an app sends it again.
        if !matches!(outcome, Outcome::Error | Outcome::Shed) {
            self.settled.lock().unwrap_or_else(|e| e.into_inner()).insert(key);
        }
        outcome
    }

    /// The apps' retries: see `FlashSale::app_retries`. Returns how many were sent.
    pub async fn retry_unsettled(&self, gateways: &[String], patience: Duration) -> u64 {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + patience;
        let mut sent = 0;
        for round in 0usize.. {
            let open = self.unsettled();
            if open.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            let calls = open.into_iter().enumerate().map(|(i, (user, request_id))| {
                let gateway = &gateways[(round + i) % gateways.len()];
                let index = usize::try_from(user - 1).unwrap_or(usize::MAX);
                let token = self.tokens.get(index).cloned();
                let mut request = client
                    .post(format!("{gateway}{}", self.path))
                    .header(CONTENT_TYPE, "application/json")
                    .body(format!(r#"{{"quantity":1,"request_id":"{request_id}"}}"#));
                if let Some(sale_token) = self.sale_token(index) {
                    request = request.header(SALE_TOKEN, sale_token);
                }
                async move {
                    let request = match token {
                        Some(token) => request.header(AUTHORIZATION, token),
                        None => return,
                    };
                    self.sending(&(user, request_id.clone()));
                    if let Ok(response) = request.send().await {
                        let status = response.status();
                        let body = response.bytes().await.unwrap_or_default();
                        self.answered((user, request_id), status, &body);
                    }
                }
            });
            let calls: Vec<_> = calls.collect();
            sent += calls.len() as u64;
            futures::stream::iter(calls)
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent
    }

    fn sale_token(&self, index: usize) -> Option<HeaderValue> {
        self.sale_tokens.as_ref()?.get(index).cloned()
    }

    fn request_id(&self, k: u64) -> Option<(u64, String)> {
        let a = self.plan.get(k)?;
        Some((a.user, format!("{}-{}-{}", self.tag, a.user, a.request)))
    }

    pub fn answers(&self) -> HashMap<(u64, String), i64> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }
}

impl Workload for SaleWorkload {
    fn request(&self, k: u64) -> Option<Request<Full<Bytes>>> {
        let (user, request_id) = self.request_id(k)?;
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((user, request_id.clone()));
        self.sending(&(user, request_id.clone()));
        let index = usize::try_from(user - 1).ok()?;
        let token = self.tokens.get(index)?.clone();
        let body = format!(r#"{{"quantity":1,"request_id":"{request_id}"}}"#);
        let mut request = Request::post(self.path.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, token);
        if let Some(sale_token) = self.sale_token(index) {
            request = request.header(SALE_TOKEN, sale_token);
        }
        request.body(Full::new(Bytes::from(body))).ok()
    }

    fn outcome(&self, k: u64, status: StatusCode, body: &[u8]) -> Outcome {
        match self.request_id(k) {
            Some(key) => self.answered(key, status, body),
            None => Outcome::Error,
        }
    }
}

/// A sale `FlashSale::prepare` readied: its promotion, where its traffic goes, and its
/// requests with the apps' tokens.
#[derive(Debug)]
pub struct ReadySale {
    pub promotion_id: i64,
    bases: Vec<String>,
    workload: std::sync::Arc<SaleWorkload>,
}

impl ReadySale {
    /// The sale's requests and what was seen of them (shared with the run).
    pub fn workload(&self) -> std::sync::Arc<SaleWorkload> {
        std::sync::Arc::clone(&self.workload)
    }
}

impl FlashSale {
    /// Run the sale on `system`; the promotion is created unless given.
    pub async fn run(
        &self,
        target: &Target,
        name: &str,
        system: &System,
        promotion: Option<i64>,
    ) -> anyhow::Result<RunReport> {
        let ready = self.prepare(target, system, promotion).await?;
        self.run_prepared(target, name, system, ready).await
    }

    /// Everything before the load: the promotion (created unless given), the plan, and the
    /// apps' sale tokens, fetched as apps fetch theirs during the countdown. A caller that
    /// times something against the load (a fault) starts its clock after this.
    pub async fn prepare(
        &self,
        target: &Target,
        system: &System,
        promotion: Option<i64>,
    ) -> anyhow::Result<ReadySale> {
        let base = match system {
            System::Gateway => target.base.clone(),
            System::Baseline(url) => url.clone(),
        };
        let promotion_id = match (promotion, system) {
            (Some(id), _) => id,
            (None, System::Gateway) => target.create_promotion(self.stock, self.per_user_limit).await?,
            (None, System::Baseline(url)) => {
                crate::baseline::create_promotion(url, self.stock, self.per_user_limit).await?
            }
        };
        let bases = match system {
            System::Gateway => target.gateways.clone(),
            System::Baseline(_) => vec![base],
        };
        let len = self
            .pace
            .planned(self.duration)
            .map_or(self.max_requests, |n| n as usize);
        let plan = Plan::build(
            PlanSettings {
                users: self.users,
                retry_fraction: self.retry_fraction,
                again_fraction: self.again_fraction,
                seed: self.seed,
            },
            len,
        );
        let tokens = target.tokens(1..=self.users)?;
        // Apps fetch their sale tokens before the load, as they do during the countdown
        // (only buyers who take part; the baseline has no tokens).
        let sale_tokens = match system {
            System::Gateway => {
                let buyers = (0..plan.len() as u64)
                    .filter_map(|k| plan.get(k).map(|a| a.user))
                    .max()
                    .unwrap_or(0);
                target.sale_tokens(promotion_id, 1..=buyers).await?
            }
            System::Baseline(_) => None,
        };
        let workload = std::sync::Arc::new(SaleWorkload::new(plan, tokens, sale_tokens, promotion_id));
        Ok(ReadySale {
            promotion_id,
            bases,
            workload,
        })
    }

    /// The load, the apps' retries and the checks, for a sale `prepare` readied.
    pub async fn run_prepared(
        &self,
        target: &Target,
        name: &str,
        system: &System,
        ready: ReadySale,
    ) -> anyhow::Result<RunReport> {
        let ReadySale {
            promotion_id,
            bases,
            workload,
        } = ready;
        let spec = LoadSpec::spread(&bases, self.connections, self.pace, self.duration).await?;
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?
            .as_secs_f64();
        let cpu_start = target.processes.sample();
        let recording = loadgen::run(&spec, std::sync::Arc::clone(&workload), name).await?;
        let load_ended = tokio::time::Instant::now();
        let cpu_load_end = target.processes.sample();
        let target_name = match system {
            System::Gateway => "gateway",
            System::Baseline(_) => "baseline",
        };
        let mut report = RunReport::new(name, target_name, &spec, &recording);
        report.cpu = crate::cpu::run_figures(
            &cpu_start,
            &cpu_load_end,
            None,
            recording.total(),
            recording.count(Outcome::Accepted),
        );
        if let Some(patience) = self.app_retries {
            report.app_retries = workload.retry_unsettled(&bases, patience).await;
        }
        if !self.verify {
            return Ok(report);
        }
        let answers = workload.answers();
        let seen = Seen {
            promotion_id,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            accepted: &answers,
            conflicting_answers: workload.conflicts(),
            // Without app retries, every error may hide an order the bench never heard of;
            // with them, only the requests still without an answer may.
            client_errors: match self.app_retries {
                Some(_) => workload.unsettled().len() as u64,
                None => recording.count(Outcome::Error),
            },
        };
        let db = order_core::postgres::lazy_pool(&order_core::runtime::settings::DatabaseSettings {
            max_connections: 2,
            ..target.database.clone()
        })?;
        match system {
            System::Gateway => {
                let distinct = answers.values().collect::<std::collections::HashSet<_>>().len() as i64;
                let drained = drain(&db, promotion_id, distinct, self.drain_timeout).await?;
                if drained.is_some() {
                    let cpu_drained = target.processes.sample();
                    report.cpu = crate::cpu::run_figures(
                        &cpu_start,
                        &cpu_load_end,
                        Some(&cpu_drained),
                        recording.total(),
                        distinct as u64,
                    );
                }
                let drain_secs = drained.map_or(f64::NAN, |at| (at - load_ended).as_secs_f64());
                let store = order_core::redis::stock::StockStore::new(
                    order_core::redis::connect(&target.redis)
                        .await
                        .context("connect to Redis")?,
                );
                report.verification = Some(verify::gateway_sale(&db, &store, &seen, target.writer).await?);
                report.pipeline = Some(PipelineReport {
                    accepted_orders: distinct as u64,
                    drain_secs,
                    db_rows_per_sec: inserts_per_second(&db, promotion_id, started_at).await?,
                    pace_limit: target.writer.max_rows_per_sec,
                });
            }
            System::Baseline(_) => {
                report.verification = Some(verify::baseline_sale(&db, &seen).await?);
            }
        }
        Ok(report)
    }
}

/// Poll until the promotion has `want` orders; the instant it did, or `None` on timeout.
async fn drain(
    db: &PgPool,
    promotion_id: i64,
    want: i64,
    timeout: Duration,
) -> anyhow::Result<Option<tokio::time::Instant>> {
    let spinner = crate::progress::spinner("draining");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let have: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE promotion_id = $1")
            .bind(promotion_id)
            .fetch_one(db)
            .await
            .context("count persisted orders")?;
        spinner.set_message(format!("{have} of {want} accepted orders in the database"));
        if have >= want {
            spinner.finish_and_clear();
            return Ok(Some(tokio::time::Instant::now()));
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            eprintln!("gave up waiting: {have} of {want} accepted orders in the database");
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rows inserted per second since `started_at` (Unix seconds), from the rows' insert times.
async fn inserts_per_second(
    db: &PgPool,
    promotion_id: i64,
    started_at: f64,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT floor(extract(epoch FROM updated_at) - $2)::BIGINT AS s, count(*)
         FROM orders WHERE promotion_id = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(promotion_id)
    .bind(started_at)
    .fetch_all(db)
    .await
    .context("count inserts per second")?;
    let last = rows.last().map_or(0, |(s, _)| *s).max(0);
    let by_second: HashMap<i64, i64> = rows.into_iter().collect();
    Ok((0..=last)
        .map(|s| (s as f64 + 0.5, by_second.get(&s).copied().unwrap_or(0) as f64))
        .collect())
}
