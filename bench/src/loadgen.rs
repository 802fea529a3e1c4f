//! The HTTP load generator: keep-alive HTTP/1.1 connections driven open-loop (each request
//! has a due time on a fixed or ramping clock) or closed-loop (as fast as answers come).
//!
//! Open loop is what makes latency under overload honest: a request that could not be sent
//! on time because every connection was busy counts its latency from when it was due, so a
//! slow server cannot hide its queue by slowing the generator down (coordinated omission).
//! Latencies go into HDR histograms, overall and per second of the run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::time::Instant;

/// How requests are spaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Closed loop: each connection sends its next request when the last one is answered.
    Max,
    /// Open loop at this many requests/s.
    Fixed(f64),
    /// Open loop, the rate rising linearly from `from` to `to` over the run.
    Ramp { from: f64, to: f64 },
}

impl Pace {
    /// When request `k` (0-based) is due, from the start of a run of `duration`; `None`
    /// when it falls after the end. Closed loop: always due now.
    pub fn due(&self, k: u64, duration: Duration) -> Option<Duration> {
        let k = k as f64;
        let at = match *self {
            Pace::Max => return Some(Duration::ZERO),
            Pace::Fixed(rate) => k / rate,
            Pace::Ramp { from, to } => {
                // Requests sent by t: from·t + (to - from)·t² / (2T); solve for t.
                let a = (to - from) / (2.0 * duration.as_secs_f64());
                if a.abs() < 1e-12 {
                    k / from
                } else {
                    (-from + (from * from + 4.0 * a * k).sqrt()) / (2.0 * a)
                }
            }
        };
        (at.is_finite() && at >= 0.0 && at < duration.as_secs_f64()).then(|| Duration::from_secs_f64(at))
    }

    /// How many requests an open-loop run sends; `None` for closed loop.
    pub fn planned(&self, duration: Duration) -> Option<u64> {
        let t = duration.as_secs_f64();
        match *self {
            Pace::Max => None,
            Pace::Fixed(rate) => Some((rate * t).ceil() as u64),
            Pace::Ramp { from, to } => Some(((from + to) / 2.0 * t).ceil() as u64),
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            Pace::Max => "closed loop (as fast as answered)".into(),
            Pace::Fixed(r) => format!("open loop at {r:.0} req/s"),
            Pace::Ramp { from, to } => format!("open loop ramping {from:.0} → {to:.0} req/s"),
        }
    }
}

/// What an answer meant, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 202 for seckill, 201 for checkout.
    Accepted,
    SoldOut,
    LimitExceeded,
    RateLimited,
    /// 403: not started, ended or paused.
    Closed,
    /// Any other 4xx.
    Rejected,
    /// 503 `overloaded`: shed by the gateway's adaptive limit before any work (nothing
    /// reserved).
    Shed,
    /// Any other 5xx, a broken connection or a timeout.
    Error,
}

pub const OUTCOMES: [Outcome; 8] = [
    Outcome::Accepted,
    Outcome::SoldOut,
    Outcome::LimitExceeded,
    Outcome::RateLimited,
    Outcome::Closed,
    Outcome::Rejected,
    Outcome::Shed,
    Outcome::Error,
];

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::SoldOut => "sold_out",
            Outcome::LimitExceeded => "limit_exceeded",
            Outcome::RateLimited => "rate_limited",
            Outcome::Closed => "closed",
            Outcome::Rejected => "rejected",
            Outcome::Shed => "shed",
            Outcome::Error => "error",
        }
    }

    /// The gateway's answer classified by status and error code
    /// (`{"error":{"code":…}}`).
    pub fn of_api_answer(status: StatusCode, body: &[u8]) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Accepted,
            429 => Outcome::RateLimited,
            403 => Outcome::Closed,
            409 => match error_code(body) {
                Some("sold_out") => Outcome::SoldOut,
                Some("limit_exceeded") => Outcome::LimitExceeded,
                _ => Outcome::Rejected,
            },
            400..=499 => Outcome::Rejected,
            503 => match error_code(body) {
                Some("overloaded") => Outcome::Shed,
                _ => Outcome::Error,
            },
            _ => Outcome::Error,
        }
    }
}

/// The code of an API error body (`{"error":{"code":…}}`).
fn error_code(body: &[u8]) -> Option<&str> {
    #[derive(serde::Deserialize)]
    struct Error<'a> {
        #[serde(borrow)]
        code: &'a str,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody<'a> {
        #[serde(borrow)]
        error: Error<'a>,
    }
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error.code)
}

/// A scenario's requests: the `k`-th request, and what its answer meant.
pub trait Workload: Send + Sync + 'static {
    /// `None`: the workload has nothing more to send.
    fn request(&self, k: u64) -> Option<Request<Full<Bytes>>>;
    fn outcome(&self, k: u64, status: StatusCode, body: &[u8]) -> Outcome;
}

/// One gateway to send to.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: HeaderValue,
}

impl Endpoint {
    /// Resolve `base` (`http://host:port`).
    pub async fn resolve(base: &str) -> anyhow::Result<Self> {
        let authority = base
            .strip_prefix("http://")
            .context("the base URL must start with http://")?
            .trim_end_matches('/');
        let addr = tokio::net::lookup_host(authority)
            .await
            .with_context(|| format!("resolve {authority}"))?
            .next()
            .with_context(|| format!("no address for {authority}"))?;
        Ok(Self {
            addr,
            host: HeaderValue::from_str(authority).context("host header")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Connection `i` talks to `endpoints[i % len]`: traffic spread over the gateways as a
    /// load balancer would.
    pub endpoints: Vec<Endpoint>,
    pub connections: usize,
    pub pace: Pace,
    pub duration: Duration,
    /// A request unanswered this long counts as an error (and its connection is replaced).
    pub timeout: Duration,
}

impl LoadSpec {
    /// Resolve `base` (`http://host:port`).
    pub async fn new(base: &str, connections: usize, pace: Pace, duration: Duration) -> anyhow::Result<Self> {
        Self::spread(&[base.to_owned()], connections, pace, duration).await
    }

    /// Connections spread round robin over several gateways.
    pub async fn spread(
        bases: &[String],
        connections: usize,
        pace: Pace,
        duration: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!bases.is_empty(), "no gateway to send to");
        let mut endpoints = Vec::with_capacity(bases.len());
        for base in bases {
            endpoints.push(Endpoint::resolve(base).await?);
        }
        Ok(Self {
            endpoints,
            connections: connections.max(1).max(bases.len()),
            pace,
            duration,
            timeout: Duration::from_secs(10),
        })
    }
}

/// Latencies are recorded in microseconds up to a minute (longer ones count as a minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One second of a run (by due time).
#[derive(Debug, Clone)]
pub struct Second {
    pub counts: [u64; OUTCOMES.len()],
    pub latency_us: Histogram<u64>,
}

/// Everything a run saw.
#[derive(Debug, Clone)]
pub struct Recording {
    /// From the first request to the last answer.
    pub elapsed: Duration,
    pub counts: [u64; OUTCOMES.len()],
    pub latency_us: Histogram<u64>,
    pub seconds: Vec<Second>,
    /// Why requests ended as `error`, by cause (the first few causes seen), so that a failed
    /// run says what failed.
    pub error_causes: BTreeMap<String, u64>,
}

/// Distinct error causes a recording keeps; later ones are counted under the last key.
const MAX_ERROR_CAUSES: usize = 8;

impl Recording {
    fn new() -> Self {
        Self {
            elapsed: Duration::ZERO,
            counts: [0; OUTCOMES.len()],
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            seconds: Vec::new(),
            error_causes: BTreeMap::new(),
        }
    }

    fn note_error(&mut self, cause: String) {
        let key = if self.error_causes.len() < MAX_ERROR_CAUSES || self.error_causes.contains_key(&cause) {
            cause
        } else {
            "(other causes)".to_owned()
        };
        *self.error_causes.entry(key).or_default() += 1;
    }

    fn record(&mut self, at: Duration, outcome: Outcome, latency: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        self.counts[outcome as usize] += 1;
        self.latency_us.saturating_record(us);
        let second = at.as_secs() as usize;
        while self.seconds.len() <= second {
            self.seconds.push(Second {
                counts: [0; OUTCOMES.len()],
                latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds"),
            });
        }
        self.seconds[second].counts[outcome as usize] += 1;
        self.seconds[second].latency_us.saturating_record(us);
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize]
    }

    pub fn throughput(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Drive `workload` as `spec` says, showing a progress bar titled `label` on a terminal.
pub async fn run<W: Workload>(spec: &LoadSpec, workload: Arc<W>, label: &str) -> anyhow::Result<Recording> {
    crate::profile::at_load(true);
    let recorded = run_load(spec, workload, label).await;
    crate::profile::at_load(false);
    recorded
}

async fn run_load<W: Workload>(spec: &LoadSpec, workload: Arc<W>, label: &str) -> anyhow::Result<Recording> {
    let recording = Arc::new(Mutex::new(Recording::new()));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let progress = crate::progress::progress_bar(label, spec.duration);
    let ticker = {
        let (recording, progress) = (Arc::clone(&recording), progress.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let summary = {
                    let r = recording.lock().unwrap_or_else(|e| e.into_inner());
                    live_summary(&r, start.elapsed())
                };
                progress.set_position(start.elapsed().as_millis() as u64);
                progress.set_message(summary);
            }
        })
    };
    let mut connections = Vec::with_capacity(spec.connections);
    for i in 0..spec.connections {
        connections.push(tokio::spawn(connection(
            spec.clone(),
            spec.endpoints[i % spec.endpoints.len()].clone(),
            Arc::clone(&workload),
            Arc::clone(&recording),
            Arc::clone(&next),
            start,
        )));
    }
    for c in connections {
        c.await.context("a load connection task failed")?;
    }
    ticker.abort();
    // Wait for the abort to land: the ticker holds the recording until it is gone.
    let _ = ticker.await;
    progress.finish_and_clear();
    let mut recording = Arc::try_unwrap(recording)
        .map_err(|_| anyhow::anyhow!("recording still shared"))?
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    recording.elapsed = start.elapsed();
    Ok(recording)
}

async fn connection<W: Workload>(
    spec: LoadSpec,
    endpoint: Endpoint,
    workload: Arc<W>,
    recording: Arc<Mutex<Recording>>,
    next: Arc<AtomicU64>,
    start: Instant,
) {
    let end = start + spec.duration;
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(due) = spec.pace.due(k, spec.duration) else {
            return;
        };
        if spec.pace == Pace::Max && Instant::now() >= end {
            return;
        }
        let Some(mut request) = workload.request(k) else {
            return;
        };
        request.headers_mut().insert(HOST, endpoint.host.clone());
        let due = start + due;
        // Sent on time: latency from sending. Behind schedule: from when it was due.
        let sent = if spec.pace != Pace::Max && due > Instant::now() {
            tokio::time::sleep_until(due).await;
            Instant::now()
        } else if spec.pace == Pace::Max {
            Instant::now()
        } else {
            due
        };
        let answer = tokio::time::timeout(spec.timeout, exchange(&mut sender, endpoint.addr, request)).await;
        let latency = sent.elapsed();
        let (outcome, cause) = match answer {
            Ok(Ok((status, body))) => {
                let outcome = workload.outcome(k, status, &body);
                let cause = (outcome == Outcome::Error)
                    .then(|| format!("HTTP {status} {}", error_code(&body).unwrap_or("-")));
                (outcome, cause)
            }
            Ok(Err(e)) => {
                sender = None;
                (Outcome::Error, Some(format!("{e:#}")))
            }
            Err(_) => {
                sender = None;
                (
                    Outcome::Error,
                    Some(format!("no answer within {:?}", spec.timeout)),
                )
            }
        };
        {
            let mut recording = recording.lock().unwrap_or_else(|e| e.into_inner());
            recording.record(sent.saturating_duration_since(start), outcome, latency);
            if let Some(cause) = cause {
                recording.note_error(cause);
            }
        }
        if outcome == Outcome::Error {
            // A refused connection fails at once; do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if outcome == Outcome::Shed && spec.pace == Pace::Max {
            // Closed loop, an app's way: a shed order waits its Retry-After (1 s) before the
            // next, rather than spinning the gateway on rejections. (Open loop models
            // arrivals, which a shed answer does not slow.)
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn exchange(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let connection = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(addr).await?),
    };
    connection.ready().await.context("connection ready")?;
    let response = connection
        .send_request(request)
        .await
        .context("send the request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("read the body")?
        .to_bytes();
    Ok((status, body))
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when the peer closes or the sender is dropped; errors show up on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// One line for the progress bar: the rate so far and the outcomes that matter most.
pub fn live_summary(r: &Recording, elapsed: Duration) -> String {
    format!(
        "{:>7.0} req/s  accepted {}  sold out {}  limit {}  429 {}  errors {}",
        r.total() as f64 / elapsed.as_secs_f64().max(1e-3),
        r.count(Outcome::Accepted),
        r.count(Outcome::SoldOut),
        r.count(Outcome::LimitExceeded),
        r.count(Outcome::RateLimited),
        r.count(Outcome::Error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_pace_spaces_requests_evenly_and_stops_at_the_end() {
        let pace = Pace::Fixed(100.0);
        let d = Duration::from_secs(2);
        assert_eq!(pace.due(0, d), Some(Duration::ZERO));
        assert_eq!(pace.due(50, d), Some(Duration::from_millis(500)));
        assert_eq!(pace.due(199, d), Some(Duration::from_millis(1990)));
        assert_eq!(pace.due(200, d), None);
        assert_eq!(pace.planned(d), Some(200));
    }

    #[test]
    fn a_ramp_sends_its_integral_and_speeds_up() {
        let pace = Pace::Ramp { from: 0.0, to: 200.0 };
        let d = Duration::from_secs(10);
        assert_eq!(pace.planned(d), Some(1000));
        // Half the requests are due after 1/√2 of the run.
        let half = pace.due(500, d).expect("due").as_secs_f64();
        assert!((half - 10.0 / 2f64.sqrt()).abs() < 1e-6, "{half}");
        assert!(pace.due(999, d).is_some());
        assert!(pace.due(1001, d).is_none());
        let at = |k| pace.due(k, d).expect("due within the run");
        let early_gap = at(11) - at(10);
        let late_gap = at(901) - at(900);
        assert!(late_gap < early_gap);
    }

    #[test]
    fn answers_are_classified_by_status_and_error_code() {
        let body = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
        let of = |status: u16, body: &str| {
            Outcome::of_api_answer(StatusCode::from_u16(status).expect("a status"), body.as_bytes())
        };
        assert_eq!(of(202, r#"{"order_id":"1"}"#), Outcome::Accepted);
        assert_eq!(of(409, &body("sold_out")), Outcome::SoldOut);
        assert_eq!(of(409, &body("limit_exceeded")), Outcome::LimitExceeded);
        assert_eq!(of(409, "not json"), Outcome::Rejected);
        assert_eq!(of(429, &body("rate_limited")), Outcome::RateLimited);
        assert_eq!(of(403, &body("paused")), Outcome::Closed);
        assert_eq!(of(400, &body("invalid_json")), Outcome::Rejected);
        assert_eq!(of(503, &body("unavailable")), Outcome::Error);
    }
}
