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
    create_database(base, "").await
}

/// A database of a name no other test uses, next to the configured one; `as_copy_of` is a
/// `TEMPLATE …` clause, or empty.
async fn create_database(base: &DatabaseSettings, as_copy_of: &str) -> anyhow::Result<DatabaseSettings> {
    let name = unique("test").replace('-', "_");
    let mut admin = PgConnection::connect_with(&base.connect_options()?)
        .await
        .context("connect to the test database server")?;
    admin
        .execute(format!(r#"CREATE DATABASE "{name}" {as_copy_of}"#).as_str())
        .await
        .context("create a test database")?;
    Ok(base.with_database_name(&name))
}

/// Create a migrated database next to the configured one: a copy of the day's template (see
/// [`migrated_template`]), as the migrations would leave an empty one.
pub async fn fresh_database(base: &DatabaseSettings) -> anyhow::Result<DatabaseSettings> {
    let template = migrated_template(base).await?;
    let settings = create_database(base, &format!(r#"TEMPLATE "{template}""#)).await?;
    let mut conn = PgConnection::connect_with(&settings.connect_options()?).await?;
    // Tests share one Redis, where promotions are keyed by id: start each database's ids at
    // a random point so two tests never use the same promotion id.
    let first_id = random_promotion_id();
    conn.execute(format!("ALTER TABLE promotions ALTER COLUMN id RESTART WITH {first_id}").as_str())
        .await
        .context("offset promotion ids")?;
    Ok(settings)
}

/// The migrated template the test databases are copied from, built by the first test that
/// needs it: copying a database costs about a seventh of the CPU of running the migrations, and
/// nearly every test asks for a database. One per set of migrations and UTC day (a migration
/// creates the order partitions around today). Tests run in parallel processes: they queue on
/// an advisory lock, and the template gets its name only once it is whole.
async fn migrated_template(base: &DatabaseSettings) -> anyhow::Result<String> {
    const BUILDING: i64 = 0x5ec_7e57_da7a;
    let mut migrations = std::hash::DefaultHasher::new();
    for migration in MIGRATOR.iter() {
        std::hash::Hash::hash(&migration.version, &mut migrations);
        std::hash::Hash::hash(&*migration.checksum, &mut migrations);
    }
    let name = format!(
        "seckill_template_{:016x}_{}",
        std::hash::Hasher::finish(&migrations),
        chrono::Utc::now().format("%Y%m%d")
    );
    let mut admin = PgConnection::connect_with(&base.connect_options()?)
        .await
        .context("connect to the test database server")?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(BUILDING)
        .execute(&mut admin)
        .await
        .context("wait for the template database")?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{building}""#).as_str())
            .await?;
        admin
            .execute(format!(r#"CREATE DATABASE "{building}""#).as_str())
            .await
            .context("create the template database")?;
        let mut conn =
            PgConnection::connect_with(&base.with_database_name(&building).connect_options()?).await?;
        MIGRATOR
            .run(&mut conn)
            .await
            .context("migrate the template database")?;
        conn.close().await?;
        admin
            .execute(format!(r#"ALTER DATABASE "{building}" RENAME TO "{name}""#).as_str())
            .await
            .context("name the template database")?;
    }
    // Closing the session releases the lock.
    admin.close().await?;
    Ok(name)
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
    // Between the ranges private clusters use (`free_ports_in_a_row`).
    free_ports_at(23_000, 7_000, &[0])
}

/// A random `base` in `from..from + span` whose ports `base + offset` all bind right now.
/// The ranges lie below the kernel's ephemeral range (32768–60999 here, where binding port 0
/// lands): outgoing connections draw their local ports from it, and one could take a port
/// between this probe and the child's own bind.
fn free_ports_at(from: u16, span: u16, offsets: &[u16]) -> u16 {
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    loop {
        let base = from + (uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16;
        if offsets.iter().all(|o| free(base + o)) {
            return base;
        }
    }
}

/// Is this test run on a Redis Cluster (`REDIS_CLUSTER_NODES` set, as `make test`'s cluster
/// pass does)? Private stacks then start a cluster of their own instead of one node.
pub fn cluster_run() -> bool {
    std::env::var("REDIS_CLUSTER_NODES").is_ok_and(|v| !v.trim().is_empty())
}

/// Is this test run under Sentinel (`REDIS_SENTINEL_NODES` set, as `make test`'s Sentinel
/// pass does)? Private stacks then start a primary, a replica and three Sentinels.
pub fn sentinel_run() -> bool {
    std::env::var("REDIS_SENTINEL_NODES").is_ok_and(|v| !v.trim().is_empty())
}

/// The shape of Redis this test run uses.
pub fn redis_run() -> RedisKind {
    if cluster_run() {
        RedisKind::Cluster
    } else if sentinel_run() {
        RedisKind::Sentinel
    } else {
        RedisKind::Node
    }
}

/// The shared cluster of `scripts/stack.sh start redis-cluster`, as settings.
pub fn cluster_source() -> SettingsSource {
    let nodes = std::env::var("REDIS_CLUSTER_NODES")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| {
            let out = Command::new(workspace_root().join("scripts/stack.sh"))
                .args(["env", "redis-cluster"])
                .output()
                .expect("run scripts/stack.sh env redis-cluster");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("export REDIS_CLUSTER_NODES=").map(str::to_owned))
                .expect("scripts/stack.sh names the cluster's nodes")
        });
    let first = nodes.split(',').next().unwrap_or_default().to_owned();
    assert!(
        redis::Client::open(first.as_str())
            .and_then(|c| c.get_connection())
            .is_ok(),
        "no Redis Cluster at {nodes}: run scripts/stack.sh start redis-cluster"
    );
    local_source()
        .with_var("APP_REDIS__CLUSTER_NODES", nodes)
        .with_var("APP_REDIS__SENTINEL_NODES", "")
}

/// Which Redis a private stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    /// One node, no replica.
    Node,
    /// Three masters with a replica each.
    Cluster,
    /// A primary and a replica watched by three Sentinels.
    Sentinel,
}

/// Ports for `n` nodes in a row, free with their cluster bus ports (+10000): 20000–22705 and
/// 30000–32705, apart from `free_port`'s range.
fn free_ports_in_a_row(n: u16) -> u16 {
    let offsets: Vec<u16> = (0..n).flat_map(|i| [i, i + 10_000]).collect();
    free_ports_at(20_000, 2_700, &offsets)
}

/// The node timeout private replicated stacks run with: a master that does not answer for
/// this long is replaced by its replica.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A stack of its own (Redis, PostgreSQL, pulsar-lite on free ports, in a temporary
/// directory), started through the same scripts/stack.sh users run, so a test can stop and
/// restart a dependency without disturbing other tests. Stopped and removed on drop. Its
/// Redis is the run's shape (`redis_run`) or the one asked for (`start_on`): on a cluster or
/// under Sentinel the part `redis` names every data node (a fault on it hits them all),
/// `redis-cluster-N` / `redis-sentinel-N` one of them, and `master_part` the one that is the
/// master of a key now.
#[derive(Debug)]
pub struct PrivateStack {
    dir: PathBuf,
    pub redis_port: u16,
    pub pg_port: u16,
    pub pulsar_port: u16,
    metrics_port: u16,
    kind: RedisKind,
    /// First port of the private cluster or Sentinel group, when it has one.
    replicated_port: u16,
}

impl PrivateStack {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(redis_run())
    }

    /// With a Redis Cluster of its own, whatever the run.
    pub fn start_with_cluster() -> anyhow::Result<Self> {
        Self::start_on(RedisKind::Cluster)
    }

    pub fn start_on(kind: RedisKind) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("seckill-stack"));
        std::fs::create_dir_all(&dir)?;
        let stack = Self {
            dir,
            redis_port: free_port(),
            pg_port: free_port(),
            pulsar_port: free_port(),
            metrics_port: free_port(),
            kind,
            replicated_port: match kind {
                RedisKind::Node => 0,
                RedisKind::Cluster => free_ports_in_a_row(6),
                RedisKind::Sentinel => free_ports_in_a_row(5),
            },
        };
        match kind {
            RedisKind::Node => stack.run(&["start"])?,
            RedisKind::Cluster => stack.run(&["start", "redis-cluster", "postgres", "pulsar"])?,
            RedisKind::Sentinel => stack.run(&["start", "redis-sentinel", "postgres", "pulsar"])?,
        }
        Ok(stack)
    }

    /// `redis` is every data node of a replicated stack.
    fn part<'a>(&self, part: &'a str) -> &'a str {
        match (part, self.kind) {
            ("redis", RedisKind::Cluster) => "redis-cluster",
            ("redis", RedisKind::Sentinel) => "redis-sentinel",
            _ => part,
        }
    }

    pub fn stop_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["stop", self.part(part)])
    }

    /// SIGKILL: a crash, not a clean stop.
    pub fn kill_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["kill", self.part(part)])
    }

    pub fn start_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["start", self.part(part)])
    }

    /// SIGSTOP: the part hangs (connections stay open, nothing answers) until resumed.
    pub fn pause_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["pause", self.part(part)])
    }

    /// SIGCONT after `pause_part`.
    pub fn resume_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["resume", self.part(part)])
    }

    /// Wait until the part is healthy (a replicated Redis: every master has a replica in
    /// sync again).
    pub fn wait_part(&self, part: &str) -> anyhow::Result<()> {
        self.run(&["wait", self.part(part)])
    }

    pub fn kind(&self) -> RedisKind {
        self.kind
    }

    /// The single node's data directory (its append-only files).
    pub fn redis_dir(&self) -> PathBuf {
        self.dir.join("redis")
    }

    pub fn has_cluster(&self) -> bool {
        self.kind == RedisKind::Cluster
    }

    /// The part that is the master of `key` now (a node that a failover may have promoted):
    /// `redis-cluster-N`, `redis-sentinel-N`, or `redis` on a single node.
    pub fn master_part(&self, key: &str) -> anyhow::Result<String> {
        let args: Vec<String> = match self.kind {
            RedisKind::Node => return Ok("redis".into()),
            RedisKind::Cluster => vec![
                "master".into(),
                "redis-cluster".into(),
                crate::domain::shards::key_slot(key.as_bytes()).to_string(),
            ],
            RedisKind::Sentinel => vec!["master".into(), "redis-sentinel".into()],
        };
        let out = self.output(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(out.trim().to_owned())
    }

    /// The replica of the master of `key` (the node a failover promotes).
    pub fn replica_part(&self, key: &str) -> anyhow::Result<String> {
        let master = self.master_part(key)?;
        let port = self.part_port(&master)?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?)?;
        let replica_port: u16 = info
            .lines()
            .find_map(|l| l.strip_prefix("slave0:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("{master} has no replica: {info}"))?;
        self.part_of_port(replica_port)
    }

    /// The port a data node listens on.
    pub fn part_port(&self, part: &str) -> anyhow::Result<u16> {
        let index = |prefix: &str| part.strip_prefix(prefix).and_then(|n| n.parse::<u16>().ok());
        match (self.kind, index("redis-cluster-"), index("redis-sentinel-")) {
            (RedisKind::Node, _, _) if part == "redis" => Ok(self.redis_port),
            (RedisKind::Cluster, Some(n), _) => Ok(self.replicated_port + n),
            (RedisKind::Sentinel, _, Some(n)) => Ok(self.replicated_port + n),
            _ => bail!("no data node {part} in this stack"),
        }
    }

    fn part_of_port(&self, port: u16) -> anyhow::Result<String> {
        let n = port
            .checked_sub(self.replicated_port)
            .with_context(|| format!("port {port} is not this stack's"))?;
        Ok(match self.kind {
            RedisKind::Cluster => format!("redis-cluster-{n}"),
            RedisKind::Sentinel => format!("redis-sentinel-{n}"),
            RedisKind::Node => "redis".into(),
        })
    }

    /// The private cluster's seed nodes (empty without one).
    pub fn cluster_nodes(&self) -> String {
        match self.kind {
            RedisKind::Cluster => (0..6)
                .map(|i| format!("redis://127.0.0.1:{}", self.replicated_port + i))
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        }
    }

    /// The private Sentinels (empty without them).
    pub fn sentinel_nodes(&self) -> String {
        match self.kind {
            RedisKind::Sentinel => (2..5)
                .map(|i| format!("redis://127.0.0.1:{}", self.replicated_port + i))
                .collect::<Vec<_>>()
                .join(","),
            _ => String::new(),
        }
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

    /// The broker's Prometheus endpoint.
    pub fn pulsar_metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// Settings source pointing every dependency at this stack.
    pub fn source(&self) -> SettingsSource {
        local_source()
            .with_var("APP_REDIS__URL", self.redis_url())
            .with_var("APP_DATABASE__URL", self.database_url())
            .with_var("APP_PULSAR__URL", self.pulsar_url())
            .with_var("APP_REDIS__CLUSTER_NODES", self.cluster_nodes())
            .with_var("APP_REDIS__SENTINEL_NODES", self.sentinel_nodes())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(workspace_root().join("scripts/stack.sh"));
        cmd.args(args)
            .env("SECKILL_STACK_DIR", &self.dir)
            .env("SECKILL_REDIS_PORT", self.redis_port.to_string())
            .env("SECKILL_PG_PORT", self.pg_port.to_string())
            .env("SECKILL_PULSAR_PORT", self.pulsar_port.to_string())
            .env("SECKILL_PULSAR_METRICS_PORT", self.metrics_port.to_string())
            .env("SECKILL_REDIS_CLUSTER_PORT", self.replicated_port.to_string())
            .env("SECKILL_REDIS_SENTINEL_PORT", self.replicated_port.to_string())
            .env("SECKILL_REDIS_NODE_TIMEOUT_MS", NODE_TIMEOUT_MS.to_string())
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("PULSAR_URL");
        cmd
    }

    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.command(args).output().context("run scripts/stack.sh")?;
        if !output.status.success() {
            bail!(
                "scripts/stack.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        self.output(args).map(|_| ())
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let stopped = match self.kind {
            RedisKind::Node => self.run(&["stop"]),
            RedisKind::Cluster => self.run(&["stop", "redis-cluster", "postgres", "pulsar"]),
            RedisKind::Sentinel => self.run(&["stop", "redis-sentinel", "postgres", "pulsar"]),
        };
        if let Err(e) = stopped {
            eprintln!("stopping a private stack: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sale row that started 5 s ago and runs for an hour (revision 1), for tests of the Redis
/// scripts without a database.
pub fn running_promotion(
    stock: i64,
    per_user_limit: i32,
    shards: u16,
) -> crate::domain::promotion::Promotion {
    let now = chrono::Utc::now();
    crate::domain::promotion::Promotion {
        id: random_promotion_id(),
        sku_id: "sku".into(),
        title: "t".into(),
        price_cents: 100,
        stock,
        per_user_limit,
        starts_at: now - chrono::Duration::seconds(5),
        ends_at: now + chrono::Duration::hours(1),
        paused: false,
        created_at: now,
        updated_at: now,
        revision: 1,
        access: Default::default(),
        shards,
    }
}

/// `StockStore::reserve` with plain values for a sale on one shard, parsed as the gateway
/// parses a request (tests drive the production script; a value the gateway would refuse
/// panics here).
pub async fn reserve(
    store: &crate::redis::stock::StockStore,
    promotion_id: i64,
    user_id: i64,
    request_id: &str,
    quantity: i64,
    order_id: crate::domain::ids::OrderId,
) -> Result<crate::redis::stock::ReserveOutcome, crate::redis::stock::StockError> {
    let sale = crate::domain::shards::SaleShards::single(promotion_id);
    reserve_in(store, sale, user_id, request_id, quantity, order_id).await
}

/// `reserve` on a sale spread over shards.
pub async fn reserve_in(
    store: &crate::redis::stock::StockStore,
    sale: crate::domain::shards::SaleShards,
    user_id: i64,
    request_id: &str,
    quantity: i64,
    order_id: crate::domain::ids::OrderId,
) -> Result<crate::redis::stock::ReserveOutcome, crate::redis::stock::StockError> {
    use crate::domain::ids::{Quantity, RequestId, UserId};
    store
        .reserve(
            sale,
            UserId::parse(user_id).expect("a positive user id"),
            &RequestId::parse(request_id).expect("a valid request id"),
            Quantity::parse(quantity).expect("a valid quantity"),
            order_id,
        )
        .await
}
