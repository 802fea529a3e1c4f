//! The three dependencies every binary holds, how they are connected at start, and the
//! readiness report behind `/readyz`.
//!
//! Start-up waits (with a deadline) until all three answer, so a binary that is up is usable;
//! afterwards each probe runs with its own short timeout, so one dead dependency shows as
//! not ready instead of hanging the report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::redis::durability::Confirmer;
use crate::redis::RedisConnection;
use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;

use crate::bus::{self, PulsarClient};
use crate::runtime::settings::{DatabaseSettings, PulsarSettings, RedisSettings};

/// Connections to Redis, PostgreSQL and Pulsar, cheap to clone.
#[derive(Clone)]
pub struct Dependencies {
    pub redis: RedisConnection,
    /// Confirms writes on Redis' replicas, on a connection of its own (`redis::durability`).
    pub confirmer: Confirmer,
    pub db: PgPool,
    pub pulsar: PulsarClient,
    /// Looked up by the Pulsar probe: proves the broker answers protocol requests.
    pub pulsar_probe_topic: String,
    pub probe_timeout: Duration,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies")
            .field("pulsar_probe_topic", &self.pulsar_probe_topic)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct DependencySettings<'a> {
    pub redis: &'a RedisSettings,
    pub database: &'a DatabaseSettings,
    pub pulsar: &'a PulsarSettings,
    pub connect_timeout: Duration,
    pub probe_timeout: Duration,
}

impl Dependencies {
    /// Connect to all three, retrying each until `connect_timeout` has passed.
    pub async fn connect(settings: DependencySettings<'_>) -> anyhow::Result<Self> {
        let deadline = Instant::now() + settings.connect_timeout;
        // Boxed: the connect futures (Sentinel, Cluster) are deep, and binaries nest this one
        // in theirs.
        let connect = || Box::pin(crate::redis::connect(settings.redis));
        let redis = retry_until(deadline, "Redis", connect)
            .await
            .context("connect to Redis")?;
        let confirm_conn = retry_until(deadline, "Redis", connect)
            .await
            .context("connect to Redis (confirmations)")?;
        let confirmer = Confirmer::new(
            confirm_conn,
            settings.redis.replicas_acked(),
            Duration::from_millis(settings.redis.durability.replica_timeout_ms),
        );
        let db = connect_database(settings.database, deadline).await?;
        let pulsar = retry_until(deadline, "Pulsar", || bus::connect(settings.pulsar))
            .await
            .context("connect to Pulsar")?;
        Ok(Self {
            redis,
            confirmer,
            db,
            pulsar,
            pulsar_probe_topic: settings.pulsar.topic(&settings.pulsar.seckill_orders_topic),
            probe_timeout: settings.probe_timeout,
        })
    }

    /// Probe all three at once.
    pub async fn readiness(&self) -> ReadinessReport {
        let (redis, database, pulsar) = tokio::join!(
            self.probe(async {
                let mut conn = self.redis.clone();
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
            self.probe(async {
                sqlx::query!("SELECT 1 AS alive")
                    .fetch_one(&self.db)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
            self.probe(async {
                self.pulsar
                    .lookup_topic(self.pulsar_probe_topic.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        );
        ReadinessReport::new([("redis", redis), ("database", database), ("pulsar", pulsar)])
    }

    async fn probe(&self, check: impl std::future::Future<Output = Result<(), String>>) -> CheckResult {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(self.probe_timeout, check).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", self.probe_timeout.as_millis())),
        };
        CheckResult {
            ready: outcome.is_ok(),
            error: outcome.err(),
            latency_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// A pool that has answered once, retrying until `deadline`.
pub async fn connect_database(settings: &DatabaseSettings, deadline: Instant) -> anyhow::Result<PgPool> {
    let db = crate::postgres::lazy_pool(settings)?;
    retry_until(deadline, "PostgreSQL", || async {
        sqlx::query!("SELECT 1 AS alive").fetch_one(&db).await.map(|_| ())
    })
    .await
    .context("connect to PostgreSQL")?;
    Ok(db)
}

async fn retry_until<T, E, F, Fut>(deadline: Instant, what: &str, mut attempt: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "{what} not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// `{"ready": bool, "checks": {"redis": {...}, "database": {...}, "pulsar": {...}}}`
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, CheckResult>,
}

impl ReadinessReport {
    pub fn new(checks: impl IntoIterator<Item = (&'static str, CheckResult)>) -> Self {
        let checks: BTreeMap<_, _> = checks.into_iter().collect();
        Self {
            ready: checks.values().all(|c| c.ready),
            checks,
        }
    }
}
