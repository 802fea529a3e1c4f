//! Helpers for this workspace's integration tests: settings aimed at the local stack, a fresh
//! database per test, unique topic names, private stacks a test may stop, and polling with a
//! deadline instead of sleeping.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::{Connection, Executor, PgConnection};

use crate::postgres::MIGRATOR;
use crate::runtime::settings::{DatabaseSettings, Environment, SettingsSource};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("order-core sits inside the workspace")
        .to_path_buf()
}

/// The `local` settings (the stack from scripts/stack.sh), honouring REDIS_URL & co.
pub fn local_source() -> SettingsSource {
    SettingsSource::new(
        workspace_root().join("config"),
        Environment::Local,
        std::env::vars().collect(),
    )
}

/// Run one of the workspace's binaries to its exit with the repository's config (at most
/// `limit`, else the test fails); its output. No backtraces: errors read as an operator
/// sees them.
pub async fn run_to_exit(
    binary: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .env("APP_CONFIG_DIR", workspace_root().join("config"))
        .env_remove("RUST_BACKTRACE")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} {args:?} did not exit within {limit:?}"))
        .unwrap_or_else(|e| panic!("run {binary}: {e}"))
}

/// A name no other test (or earlier run) uses: `prefix-<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Create an empty database (no schema) next to the configured one.
pub async fn empty_database(base: &DatabaseSettings) -> anyhow::Result<DatabaseSettings> {
    let name = unique("test").replace('-', "_");
    let mut admin = PgConnection::connect_with(&base.connect_options()?)
        .await
        .context("connect to the test database server")?;
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .context("create a test database")?;
    Ok(base.with_database_name(&name))
}

/// Create an empty database next to the configured one and run the migrations on it.
pub async fn fresh_database(base: &DatabaseSettings) -> anyhow::Result<DatabaseSettings> {
    let settings = empty_database(base).await?;
    let mut conn = PgConnection::connect_with(&settings.connect_options()?).await?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("migrate the test database")?;
    // Tests share one Redis, where promotions are keyed by id: start each database's ids at
    // a random point so two tests never use the same promotion id.
    let first_id = random_promotion_id();
    conn.execute(format!("ALTER TABLE promotions ALTER COLUMN id RESTART WITH {first_id}").as_str())
        .await
        .context("offset promotion ids")?;
    Ok(settings)
}

/// Poll `check` until it yields `Some`, or panic naming `what` once `timeout` has passed.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A promotion id unlikely to be used by any other test (ids up to 2^40).
pub fn random_promotion_id() -> i64 {
    (uuid::Uuid::new_v4().as_u128() % (1 << 40)) as i64 + 1
}

/// A worker id for a test gateway, so parallel tests mint distinct order ids.
pub fn random_worker_id() -> u16 {
    (uuid::Uuid::new_v4().as_u128() % 1024) as u16
}

/// Environment that runs a child process with its wall clock moved by `offset` ("+10m",
/// "-10m"): libfaketime preloaded (Debian's `faketime` package, installed by setup.sh).
/// The monotonic clock stays true, as it would on a machine whose clock is merely wrong.
pub fn skewed_clock_env(offset: &str) -> Vec<(String, String)> {
    let lib = std::fs::read_dir("/usr/lib")
        .expect("read /usr/lib")
        .flatten()
        .map(|arch| arch.path().join("faketime/libfaketimeMT.so.1"))
        .find(|lib| lib.exists())
        .expect("libfaketime is installed (scripts/setup.sh)");
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A stack of its own (Redis, PostgreSQL, pulsar-lite on free ports, in a temporary
/// directory), started through the same scripts/stack.sh users run, so a test can stop and
/// restart a dependency without disturbing other tests. Stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateStack {
    dir: PathBuf,
    pub redis_port: u16,
    pub pg_port: u16,
    pub pulsar_port: u16,
    metrics_port: u16,
}

impl PrivateStack {
    pub fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("seckill-stack"));
        std::fs::create_dir_all(&dir)?;
        let stack = Self {
            dir,
            redis_port: free_port(),
            pg_port: free_port(),
            pulsar_port: free_port(),
            metrics_port: free_port(),
        };
        stack.run(&["start"])?;
        Ok(stack)
    }

    pub fn stop_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["stop", part])
    }

    /// SIGKILL: a crash, not a clean stop.
    pub fn kill_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["kill", part])
    }

    pub fn start_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["start", part])
    }

    /// SIGSTOP: the part hangs (connections stay open, nothing answers) until resumed.
    pub fn pause_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["pause", part])
    }

    /// SIGCONT after `pause_part`.
    pub fn resume_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["resume", part])
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/seckill", self.pg_port)
    }

    pub fn pulsar_url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.pulsar_port)
    }

    /// Settings source pointing every dependency at this stack.
    pub fn source(&self) -> SettingsSource {
        local_source()
            .with_var("APP_REDIS__URL", self.redis_url())
            .with_var("APP_DATABASE__URL", self.database_url())
            .with_var("APP_PULSAR__URL", self.pulsar_url())
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let output = Command::new(workspace_root().join("scripts/stack.sh"))
            .args(args)
            .env("SECKILL_STACK_DIR", &self.dir)
            .env("SECKILL_REDIS_PORT", self.redis_port.to_string())
            .env("SECKILL_PG_PORT", self.pg_port.to_string())
            .env("SECKILL_PULSAR_PORT", self.pulsar_port.to_string())
            .env("SECKILL_PULSAR_METRICS_PORT", self.metrics_port.to_string())
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("PULSAR_URL")
            .output()
            .context("run scripts/stack.sh")?;
        if !output.status.success() {
            bail!(
                "scripts/stack.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        if let Err(e) = self.run(&["stop"]) {
            eprintln!("stopping a private stack: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `StockStore::reserve` with plain values, parsed as the gateway parses a request (tests
/// drive the production script; a value the gateway would refuse panics here).
pub async fn reserve(
    store: &crate::redis::stock::StockStore,
    promotion_id: i64,
    user_id: i64,
    request_id: &str,
    quantity: i64,
    order_id: crate::domain::ids::OrderId,
) -> Result<crate::redis::stock::ReserveOutcome, crate::redis::stock::StockError> {
    use crate::domain::ids::{PromotionId, Quantity, RequestId, UserId};
    store
        .reserve(
            PromotionId::parse(promotion_id).expect("a positive promotion id"),
            UserId::parse(user_id).expect("a positive user id"),
            &RequestId::parse(request_id).expect("a valid request id"),
            Quantity::parse(quantity).expect("a valid quantity"),
            order_id,
        )
        .await
}
