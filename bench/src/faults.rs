//! The fault-injection suite: a flash sale per fault on a deployment of its own (a private
//! stack; N gateways and M consumers processes, the real binaries, as child processes; the
//! sale's traffic spread over the gateways as a load balancer would), with the fault
//! injected mid-sale on one instance or dependency:
//! - crashes: a gateway killed (-9) and restarted, consumers killed mid-batch, the broker
//!   killed and restarted, PostgreSQL stopped for a while, Redis restarted or killed;
//! - gray failures: a gateway, a consumers process, the broker, Redis or PostgreSQL paused
//!   (SIGSTOP) for a while and resumed (SIGCONT), and a gateway paused past its worker-id
//!   lease;
//! - on a replicated Redis (a Cluster with a replica per master, or Sentinel): the master
//!   holding the sale killed (its replica takes over), paused past the failover timeout (a
//!   split brain: the old master comes back holding commands queued for it), and killed
//!   while its replica lagged (the promoted replica misses the last writes: the row counts
//!   them).
//!
//! After the load the apps retry whatever got no definitive answer (same request id, the
//! next gateway), then invariants 1–5 are checked; the table counts requests, accepted,
//! persisted, oversold, lost and duplicated orders.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use order_core::runtime::settings::{DatabaseSettings, RedisSettings};
use order_core::test_support::{free_port, unique, PrivateStack, RedisKind};
use secrecy::SecretString;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::flash_sale::{FlashSale, System};
use crate::loadgen::{Outcome, Pace};
use crate::target::{Target, WriterPace};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// No fault: the control row.
    None,
    /// SIGKILL the gateway, start a new one on the same port.
    GatewayKill,
    /// SIGKILL the consumers while the writer has a backlog, start new ones.
    ConsumersKill,
    /// SIGKILL pulsar-lite, start it again after the outage.
    BrokerKill,
    /// Stop PostgreSQL for the outage, then start it.
    PostgresStop,
    /// Stop Redis cleanly (the append-only file is flushed) and start it again.
    RedisRestart,
    /// SIGKILL Redis and start it again from its append-only file (fsync every second).
    RedisKill,
    /// SIGSTOP the first gateway for the outage, then SIGCONT.
    GatewayPause,
    /// SIGSTOP the first gateway past its worker-id lease (TTL + 2 s), then SIGCONT: another
    /// gateway may lease its worker id meanwhile.
    GatewayLeaseLapse,
    /// SIGSTOP the first consumers process for the outage, then SIGCONT.
    ConsumersPause,
    /// SIGSTOP pulsar-lite for the outage, then SIGCONT.
    BrokerPause,
    /// SIGSTOP Redis for the outage, then SIGCONT.
    RedisPause,
    /// Stop the Redis Cluster node that holds the sale's first shard cleanly, start it again
    /// from its append-only file after the outage (cluster deployments only).
    RedisNodeRestart,
    /// The same, with the sale's requests on 1,024 connections instead of 32: orders pile up
    /// in the gateways past their seckill limits, which shed the rest (503 `overloaded`).
    RedisPauseFlood,
    /// SIGSTOP PostgreSQL (postmaster and backends) for the outage, then SIGCONT.
    PostgresPause,
    /// Operators steer the running sale through every gateway in turn: add stock, pause
    /// (held for the outage) and resume, edit the title and switch the challenge to proof of
    /// work, warm up, reconcile, repair, add stock again. Nothing may create or lose a unit (oversold counts against the stock
    /// configured at the end).
    AdminActions,
    /// SIGKILL the Redis master holding the sale's first shard (replicated Redis only): its
    /// replica is promoted; the old master starts again after the outage and rejoins as a
    /// replica.
    RedisFailover,
    /// SIGSTOP the replica of the master holding the sale, SIGKILL the master half an outage
    /// later, SIGCONT the replica: it is promoted without the writes it missed (the row counts
    /// them); the old master rejoins after the outage.
    RedisFailoverLagging,
    /// SIGSTOP the master holding the sale past the failover timeout, then SIGCONT: its
    /// replica was promoted meanwhile, and the old master runs what was queued for it before
    /// it learns it was replaced (a split brain).
    RedisMasterPause,
}

/// The faults that need a replicated Redis (`--redis-cluster` or `--redis-sentinel`).
pub const REPLICA_FAULTS: [Fault; 3] = [
    Fault::RedisFailover,
    Fault::RedisFailoverLagging,
    Fault::RedisMasterPause,
];

/// Every fault, the control row excepted.
pub const ALL_FAULTS: [Fault; 14] = [
    Fault::GatewayKill,
    Fault::ConsumersKill,
    Fault::BrokerKill,
    Fault::PostgresStop,
    Fault::RedisRestart,
    Fault::RedisKill,
    Fault::GatewayPause,
    Fault::GatewayLeaseLapse,
    Fault::ConsumersPause,
    Fault::BrokerPause,
    Fault::RedisPause,
    Fault::RedisPauseFlood,
    Fault::PostgresPause,
    Fault::AdminActions,
];

impl Fault {
    /// A fault on the node holding the sale's first shard (not on every node).
    pub fn hits_a_shard(self) -> bool {
        matches!(
            self,
            Fault::RedisNodeRestart
                | Fault::RedisFailover
                | Fault::RedisFailoverLagging
                | Fault::RedisMasterPause
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::GatewayKill => "gateway kill -9",
            Fault::ConsumersKill => "consumers kill -9",
            Fault::BrokerKill => "broker kill -9",
            Fault::PostgresStop => "postgres stopped",
            Fault::RedisRestart => "redis restart",
            Fault::RedisKill => "redis kill -9",
            Fault::GatewayPause => "gateway paused",
            Fault::GatewayLeaseLapse => "gateway paused past its lease",
            Fault::ConsumersPause => "consumers paused",
            Fault::BrokerPause => "broker paused",
            Fault::RedisPause => "redis paused",
            Fault::RedisNodeRestart => "redis cluster node restart",
            Fault::RedisPauseFlood => "redis paused under a flood",
            Fault::PostgresPause => "postgres paused",
            Fault::AdminActions => "admin actions mid-sale",
            Fault::RedisFailover => "redis master killed (failover)",
            Fault::RedisFailoverLagging => "redis failover to a lagging replica",
            Fault::RedisMasterPause => "redis master paused past failover (split brain)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FaultSettings {
    pub faults: Vec<Fault>,
    pub seeds: Vec<u64>,
    pub users: u64,
    pub stock: i64,
    pub rate: f64,
    pub duration: Duration,
    /// When in the sale the fault hits.
    pub fault_at: Duration,
    /// How long a stopped part stays down.
    pub outage: Duration,
    /// The writer's pace: low, so the consumers have a backlog when they are killed.
    pub writer_rows_per_sec: f64,
    /// Gateways and consumers processes of the deployment (faults hit the first of each).
    pub gateways: usize,
    pub consumers: usize,
    /// The private stack's Redis: one node, a Cluster (three masters, a replica each) or a
    /// primary and a replica under three Sentinels.
    pub redis: RedisKind,
    /// Redis shards of each sale.
    pub shards: i64,
}

/// The binaries under test (`target/<profile>/gateway`, `…/consumers`).
#[derive(Debug, Clone)]
pub struct Binaries {
    pub gateway: PathBuf,
    pub consumers: PathBuf,
    pub config_dir: PathBuf,
}

impl Binaries {
    /// Next to the running executable (bench in `target/release`, a test in `target/debug/deps`).
    pub fn beside_current_exe() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("find the running executable")?;
        let mut dir = exe.parent().context("executable directory")?.to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let root = order_core::test_support::workspace_root();
        let bins = Self {
            gateway: dir.join("gateway"),
            consumers: dir.join("consumers"),
            config_dir: root.join("config"),
        };
        for bin in [&bins.gateway, &bins.consumers] {
            anyhow::ensure!(
                bin.exists(),
                "{} is missing: build the workspace's binaries first (cargo build -p gateway -p consumers)",
                bin.display()
            );
        }
        Ok(bins)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultRow {
    pub fault: &'static str,
    /// "3 gateways, 2 consumers"
    pub deployment: String,
    pub seed: u64,
    pub requests: u64,
    pub accepted: u64,
    pub persisted: u64,
    pub oversold: i64,
    pub lost: u64,
    pub duplicated: u64,
    /// Requests that failed (connection refused while a part was down, 503s).
    pub errors: u64,
    /// Orders a gateway shed as `overloaded` before any work (503; nothing reserved).
    pub shed: u64,
    /// Sent again by the apps after the load, same request id, another gateway.
    pub app_retries: u64,
    /// The slowest answer: how long the fault held requests up.
    pub max_latency_ms: f64,
    /// Seconds from the fault until a request sent after it was answered 202 (none: no order
    /// was accepted after the fault, the sale having sold out before).
    pub accepting_again_secs: Option<f64>,
    /// Reservations the master held that the replica promoted in its place did not (the
    /// lagging failover; none for other faults).
    pub writes_lost: Option<u64>,
    /// Every answer of the load by outcome (`accepted`, `sold_out`, `shed`, `error`, ...).
    pub outcomes: std::collections::BTreeMap<&'static str, u64>,
    /// Why the load's `error` answers failed, by cause.
    pub error_causes: std::collections::BTreeMap<String, u64>,
    pub failures: Vec<String>,
}

/// One gateway or consumers process: its port and the running child.
pub(crate) struct Instance {
    port: u16,
    port_var: &'static str,
    bin: PathBuf,
    child: Child,
}

impl Instance {
    fn start(
        bin: &std::path::Path,
        port_var: &'static str,
        env: &[(String, String)],
        logs: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let child = spawn(bin, &with_var(env, port_var, port.to_string()), logs)?;
        Ok(Self {
            port,
            port_var,
            bin: bin.to_path_buf(),
            child,
        })
    }

    /// The same instance again (same port), after it was killed.
    fn restart(&mut self, env: &[(String, String)], logs: &std::path::Path) -> anyhow::Result<()> {
        self.child = spawn(
            &self.bin,
            &with_var(env, self.port_var, self.port.to_string()),
            logs,
        )?;
        Ok(())
    }

    /// SIGSTOP, hold, SIGCONT: the instance hangs, then runs on.
    async fn pause(&self, held: Duration) -> anyhow::Result<()> {
        self.signal("-STOP")?;
        tokio::time::sleep(held).await;
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().context("the instance is not running")?;
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("run kill")?;
        anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        Ok(())
    }
}

fn with_var(env: &[(String, String)], key: &str, value: String) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    env.push((key.to_owned(), value));
    env
}

/// Gateways and consumers on a private stack, restartable.
pub(crate) struct Deployment {
    stack: PrivateStack,
    env: Vec<(String, String)>,
    gateways: Vec<Instance>,
    consumers: Vec<Instance>,
    /// The worker-id lease length the gateways run with.
    lease_ttl: Duration,
    /// When the fault in progress took effect (a part stopped, paused or killed).
    landed: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The children's logs (appended across restarts).
    logs: PathBuf,
}

/// The key of the sale's first shard (its master is the one the Redis faults aim at).
fn first_shard_key(target: &Target, promotion_id: i64) -> anyhow::Result<String> {
    let sale = order_core::domain::shards::SaleShards::new(promotion_id, target.shards)?;
    Ok(order_core::redis::stock::SaleKeys::of(sale.shard(0)).meta)
}

/// Write 64 MB to `key` on `part` (a master whose replica is paused): more than the
/// replication link's socket buffers hold.
fn fill_the_replication_link(stack: &PrivateStack, part: &str, key: &str) -> anyhow::Result<()> {
    let port = stack.part_port(part)?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let ballast = vec![b'x'; 64 << 20];
    redis::cmd("SET").arg(key).arg(ballast).query::<()>(&mut conn)?;
    Ok(())
}

/// The reservations' order ids a data node holds for the sale's first shard.
fn reservations_on(
    stack: &PrivateStack,
    part: &str,
    target: &Target,
    promotion_id: i64,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let sale = order_core::domain::shards::SaleShards::new(promotion_id, target.shards)?;
    let key = order_core::redis::stock::SaleKeys::of(sale.shard(0)).reservations;
    let port = stack.part_port(part)?;
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let ids: Vec<String> = redis::cmd("HKEYS").arg(key).query(&mut conn)?;
    Ok(ids.into_iter().collect())
}

fn secret() -> String {
    format!("{}-{}", unique("fault-secret"), unique("x"))
}

impl Deployment {
    pub(crate) async fn start(bins: Binaries, s: &FaultSettings) -> anyhow::Result<(Self, Target)> {
        let kind = s.redis;
        let stack = tokio::task::spawn_blocking(move || PrivateStack::start_on(kind))
            .await
            .context("start the private stack")??;
        let (jwt, admin, callback) = (secret(), secret(), secret());
        let topic = unique("fault-orders");
        let pace = s.writer_rows_per_sec.to_string();
        let lease_ttl = Duration::from_secs(10);
        let env: Vec<(String, String)> = [
            ("APP_CONFIG_DIR", bins.config_dir.display().to_string()),
            ("APP_REDIS__URL", stack.redis_url()),
            ("APP_REDIS__CLUSTER_NODES", stack.cluster_nodes()),
            ("APP_REDIS__SENTINEL_NODES", stack.sentinel_nodes()),
            ("APP_DATABASE__URL", stack.database_url()),
            ("APP_PULSAR__URL", stack.pulsar_url()),
            ("APP_PULSAR__SECKILL_ORDERS_TOPIC", topic.clone()),
            ("APP_PULSAR__ORDER_EVENTS_TOPIC", format!("{topic}-events")),
            ("APP_WRITER__DEAD_LETTER_TOPIC", format!("{topic}-dlq")),
            ("APP_AUTH__JWT_SECRET", jwt.clone()),
            ("APP_AUTH__ADMIN_KEY", admin.clone()),
            ("APP_PAYMENTS__CALLBACK_SECRET", callback),
            (
                "APP_SECKILL__WORKER_LEASE_TTL_MS",
                lease_ttl.as_millis().to_string(),
            ),
            ("APP_WRITER__MAX_ROWS_PER_SEC", pace.clone()),
            ("APP_WRITER__INITIAL_ROWS_PER_SEC", pace.clone()),
            ("APP_WRITER__MIN_ROWS_PER_SEC", pace),
            ("APP_WRITER__BATCH_SIZE", "50".into()),
            // pulsar-lite does not hand a killed consumer's unacknowledged messages to the
            // next one; the sweeper's pending set recovers them. Its threshold must stay above
            // the time the backlog takes to drain at this pace: a shorter one republishes
            // orders that are merely queued, again every threshold, and the copies (paced like
            // new rows) grow the backlog further (seen at 3 s: 121,758 queued messages).
            ("APP_SWEEPER__REPUBLISH_AFTER_SECS", "20".into()),
            ("APP_SWEEPER__INTERVAL_MS", "500".into()),
            ("APP_RATE_LIMIT__GLOBAL__PER_SECOND", "1000000".into()),
            ("APP_RATE_LIMIT__GLOBAL__BURST", "1000000".into()),
            ("APP_RATE_LIMIT__PER_IP__PER_SECOND", "1000000".into()),
            ("APP_RATE_LIMIT__PER_IP__BURST", "1000000".into()),
            (
                "APP_POST_PAYMENT__ANALYTICS_DIR",
                std::env::temp_dir()
                    .join(unique("fault-analytics"))
                    .display()
                    .to_string(),
            ),
            ("APP_LOG__FILTER", "warn".into()),
            ("APP_STARTUP__DEPENDENCY_TIMEOUT_SECS", "60".into()),
            // The adaptive seckill limit starts at 32 a gateway (it falls from there, and
            // grows only while requests press against it): the suite's 32 connections never
            // reach it, and a flood behind a paused Redis passes it within a second, before
            // the first of its requests times out. From the default 64 the pile-up only just
            // reached the limit as the first requests timed out, and the shedding came or not
            // by a few milliseconds.
            ("APP_SHEDDING__INITIAL_LIMIT", "32".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let logs = std::env::temp_dir().join(unique("fault-suite-logs"));
        std::fs::create_dir_all(&logs).context("create the log directory")?;
        let mut consumers = Vec::with_capacity(s.consumers);
        for _ in 0..s.consumers.max(1) {
            consumers.push(Instance::start(
                &bins.consumers,
                "APP_CONSUMERS__PORT",
                &env,
                &logs,
            )?);
        }
        let env = with_var(
            &env,
            "APP_DASHBOARD__CONSUMERS_STATUS_URL",
            format!("http://127.0.0.1:{}/status", consumers[0].port),
        );
        let mut gateways = Vec::with_capacity(s.gateways);
        for _ in 0..s.gateways.max(1) {
            gateways.push(Instance::start(&bins.gateway, "APP_GATEWAY__PORT", &env, &logs)?);
        }
        let deployment = Self {
            stack,
            env,
            gateways,
            consumers,
            lease_ttl,
            logs,
            landed: std::sync::Mutex::new(None),
        };
        deployment.wait_ready().await?;
        let database = DatabaseSettings {
            url: SecretString::from(deployment.stack.database_url()),
            max_connections: 4,
            acquire_timeout_ms: 5000,
        };
        let redis = RedisSettings {
            url: SecretString::from(deployment.stack.redis_url()),
            cluster_nodes: SecretString::from(deployment.stack.cluster_nodes()),
            sentinel_nodes: SecretString::from(deployment.stack.sentinel_nodes()),
            sentinel_master: "seckill".into(),
            connect_timeout_ms: 2000,
            response_timeout_ms: 2000,
            durability: Default::default(),
        };
        let urls: Vec<String> = deployment
            .gateways
            .iter()
            .map(|g| format!("http://127.0.0.1:{}", g.port))
            .collect();
        // Administered through the last gateway: the faults hit the first.
        let admin_url = urls.last().cloned().context("no gateway")?;
        let target = Target::new(
            &admin_url,
            SecretString::from(admin),
            SecretString::from(jwt),
            None,
            database,
            redis,
            WriterPace {
                max_rows_per_sec: s.writer_rows_per_sec,
                batch_size: 50,
            },
        )
        .with_gateways(urls)
        .with_shards(s.shards);
        Ok((deployment, target))
    }

    /// One more gateway of this deployment, with `extra` settings on top; its URL once ready.
    pub(crate) async fn add_gateway(
        &mut self,
        bin: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let gateway = Instance::start(bin, "APP_GATEWAY__PORT", &env, &self.logs)?;
        let url = format!("http://127.0.0.1:{}", gateway.port);
        self.gateways.push(gateway);
        self.wait_ready().await?;
        Ok(url)
    }

    /// The private stack's PostgreSQL URL.
    pub(crate) fn database_url(&self) -> String {
        self.stack.database_url()
    }

    fn describe(&self) -> String {
        format!(
            "{} gateway{}, {} consumers",
            self.gateways.len(),
            if self.gateways.len() == 1 { "" } else { "s" },
            self.consumers.len()
        )
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let instances = self.gateways.iter().map(|g| ("gateway", g)).enumerate();
        let instances = instances.chain(self.consumers.iter().map(|c| ("consumers", c)).enumerate());
        for (n, (role, port)) in instances.map(|(n, (role, i))| (n, (role, i.port))) {
            loop {
                let answer = client
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                let last = match answer {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "{role} {n} (port {port}) not ready within 90 s: {last} (logs in {})",
                    self.logs.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// A stack script call blocks for seconds: off the runtime's worker (multi-thread only).
    async fn stack(
        &self,
        action: fn(&PrivateStack, &str) -> anyhow::Result<()>,
        part: &str,
    ) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| action(&self.stack, part))
            .with_context(|| format!("{part}: stack action"))
    }

    /// Take a part of the stack down (`stop` or `kill`), keep it down, start it again.
    async fn outage(
        &self,
        down: fn(&PrivateStack, &str) -> anyhow::Result<()>,
        part: &str,
        outage: Duration,
    ) -> anyhow::Result<()> {
        self.stack(down, part).await?;
        self.landed();
        tokio::time::sleep(outage).await;
        self.stack(PrivateStack::start_part, part).await
    }

    /// Pause a part of the stack, keep it paused, resume it.
    async fn pause(&self, part: &str, outage: Duration) -> anyhow::Result<()> {
        self.stack(PrivateStack::pause_part, part).await?;
        self.landed();
        tokio::time::sleep(outage).await;
        self.stack(PrivateStack::resume_part, part).await
    }

    /// The fault took effect now (the first time it is said).
    fn landed(&self) {
        self.landed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(tokio::time::Instant::now);
    }

    /// When the last fault took effect, forgetting it for the next one.
    fn take_landed(&self) -> Option<tokio::time::Instant> {
        self.landed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// The data node that is the master of the sale's first shard now.
    async fn master_of_sale(&self, target: &Target, promotion_id: i64) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.stack.kind() != RedisKind::Node,
            "this fault needs a replicated Redis: --redis-cluster or --redis-sentinel"
        );
        let key = first_shard_key(target, promotion_id)?;
        tokio::task::block_in_place(|| self.stack.master_part(&key))
    }

    /// Inject `fault` into the sale `promotion_id`, keep it for `outage` where that applies,
    /// and recover; the writes a promoted replica lacked, for the lagging failover.
    async fn inject(
        &mut self,
        fault: Fault,
        outage: Duration,
        target: &Target,
        promotion_id: i64,
    ) -> anyhow::Result<Option<u64>> {
        let mut writes_lost = None;
        match fault {
            Fault::None => {}
            Fault::GatewayKill => {
                kill9(&mut self.gateways[0].child).await?;
                self.landed();
                self.gateways[0].restart(&self.env, &self.logs)?;
            }
            Fault::ConsumersKill => {
                kill9(&mut self.consumers[0].child).await?;
                self.landed();
                tokio::time::sleep(outage).await;
                self.consumers[0].restart(&self.env, &self.logs)?;
            }
            Fault::BrokerKill => self.outage(PrivateStack::kill_part, "pulsar", outage).await?,
            Fault::PostgresStop => self.outage(PrivateStack::stop_part, "postgres", outage).await?,
            Fault::RedisRestart => self.outage(PrivateStack::stop_part, "redis", outage).await?,
            Fault::RedisKill => self.outage(PrivateStack::kill_part, "redis", outage).await?,
            Fault::GatewayPause | Fault::GatewayLeaseLapse => {
                let held = if fault == Fault::GatewayPause {
                    outage
                } else {
                    self.lease_ttl + Duration::from_secs(2)
                };
                self.landed();
                self.gateways[0].pause(held).await?;
            }
            Fault::ConsumersPause => {
                self.landed();
                self.consumers[0].pause(outage).await?
            }
            Fault::BrokerPause => self.pause("pulsar", outage).await?,
            Fault::RedisPause | Fault::RedisPauseFlood => self.pause("redis", outage).await?,
            Fault::RedisNodeRestart => {
                anyhow::ensure!(
                    self.stack.has_cluster(),
                    "redis-node-restart needs --redis-cluster"
                );
                let part = self.master_of_sale(target, promotion_id).await?;
                self.outage(PrivateStack::stop_part, &part, outage).await?
            }
            Fault::RedisFailover => {
                let part = self.master_of_sale(target, promotion_id).await?;
                self.outage(PrivateStack::kill_part, &part, outage).await?
            }
            Fault::RedisMasterPause => {
                let part = self.master_of_sale(target, promotion_id).await?;
                self.pause(&part, outage).await?
            }
            Fault::RedisFailoverLagging => {
                writes_lost = Some(
                    self.failover_to_a_lagging_replica(target, promotion_id, outage)
                        .await?,
                );
            }
            Fault::PostgresPause => self.pause("postgres", outage).await?,
            Fault::AdminActions => {
                self.landed();
                operate_mid_sale(target, promotion_id, outage).await?
            }
        }
        if self.stack.kind() != RedisKind::Node && fault != Fault::None {
            // The next sale starts on a whole Redis again: every master with a replica.
            self.stack(PrivateStack::wait_part, "redis").await?;
        }
        self.wait_ready().await?;
        Ok(writes_lost)
    }

    /// The replica of the sale's master stops taking the replication stream (SIGSTOP) while
    /// the master goes on taking reservations; the master dies; the replica runs again and is
    /// promoted without what it missed. The old master comes back (as a replica) after the
    /// outage. The reservations the master held and the promoted replica does not.
    async fn failover_to_a_lagging_replica(
        &self,
        target: &Target,
        promotion_id: i64,
        outage: Duration,
    ) -> anyhow::Result<u64> {
        let started = tokio::time::Instant::now();
        let key = first_shard_key(target, promotion_id)?;
        let master = self.master_of_sale(target, promotion_id).await?;
        let replica = tokio::task::block_in_place(|| self.stack.replica_part(&key))?;
        self.stack(PrivateStack::pause_part, &replica).await?;
        // From here no order is confirmed: the replica does not acknowledge.
        self.landed();
        // A paused replica's kernel still buffers what the master sends, and would apply it
        // when it runs again. A large write fills those buffers first: what the sale writes
        // after it waits in the master's own buffer, and dies with the master.
        let ballast = format!("{key}:ballast");
        tokio::task::block_in_place(|| fill_the_replication_link(&self.stack, &master, &ballast))?;
        // How long the replica lags: half the outage; under Sentinel less than its down-after
        // period, as a replica silent longer counts as down there, and a failover that finds
        // no replica up waits twice the failover timeout before it tries again.
        let lagging_for = match self.stack.kind() {
            RedisKind::Sentinel => {
                Duration::from_millis(order_core::test_support::NODE_TIMEOUT_MS.saturating_sub(600))
            }
            _ => outage / 2,
        };
        tokio::time::sleep(lagging_for).await;
        let held =
            tokio::task::block_in_place(|| reservations_on(&self.stack, &master, target, promotion_id))?;
        self.stack(PrivateStack::kill_part, &master).await?;
        self.stack(PrivateStack::resume_part, &replica).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now_master = tokio::task::block_in_place(|| self.stack.master_part(&key)).unwrap_or_default();
            if now_master == replica {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{replica} was not promoted within 30 s (the master is {now_master:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kept =
            tokio::task::block_in_place(|| reservations_on(&self.stack, &replica, target, promotion_id))?;
        // Whatever reached the replica of the ballast goes (best effort: it is only weight).
        let _ = tokio::task::block_in_place(|| -> anyhow::Result<()> {
            let port = self.stack.part_port(&replica)?;
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
                .get_connection_with_timeout(Duration::from_secs(2))?;
            redis::cmd("DEL").arg(&ballast).query::<()>(&mut conn)?;
            Ok(())
        });
        tokio::time::sleep_until(started + outage).await;
        self.stack(PrivateStack::start_part, &master).await?;
        Ok(held.difference(&kept).count() as u64)
    }
}

fn spawn(bin: &std::path::Path, env: &[(String, String)], logs: &std::path::Path) -> anyhow::Result<Child> {
    let name = bin
        .file_name()
        .map_or("child".into(), |n| n.to_string_lossy().into_owned());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{name}.log")))
        .context("open a child's log")?;
    let mut cmd = Command::new(bin);
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER_NODES")
        .env_remove("REDIS_SENTINEL_NODES")
        .env_remove("DATABASE_URL")
        .env_remove("PULSAR_URL")
        .stdout(Stdio::from(log.try_clone().context("clone a log handle")?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("start {}", bin.display()))
}

async fn kill9(child: &mut Child) -> anyhow::Result<()> {
    child.start_kill().context("SIGKILL")?;
    child.wait().await.context("reap the killed process")?;
    Ok(())
}

/// The operators' buttons, each on the next gateway, while the sale runs.
async fn operate_mid_sale(target: &Target, promotion_id: i64, outage: Duration) -> anyhow::Result<()> {
    use reqwest::Method;
    let sale = format!("/admin/promotions/{promotion_id}");
    let units = || Some(serde_json::json!({ "units": 5 }));
    target
        .operate(0, Method::POST, &format!("{sale}/stock"), units())
        .await?;
    target
        .operate(1, Method::POST, &format!("{sale}/pause"), None)
        .await?;
    tokio::time::sleep(outage).await;
    target
        .operate(2, Method::POST, &format!("{sale}/resume"), None)
        .await?;
    // A new title, and bots are met with proof of work from now on: the apps' tokens,
    // handed out before, stay good for their retries.
    let edit = Some(serde_json::json!({
        "title": "bench flash sale (renamed)",
        "challenge": { "kind": "proof_of_work", "difficulty": 16 },
    }));
    target.operate(0, Method::PATCH, &sale, edit).await?;
    target
        .operate(1, Method::POST, &format!("{sale}/warmup"), None)
        .await?;
    target
        .operate(2, Method::POST, &format!("{sale}/reconcile"), None)
        .await?;
    target
        .operate(0, Method::POST, &format!("{sale}/reconcile?repair=true"), None)
        .await?;
    target
        .operate(1, Method::POST, &format!("{sale}/stock"), units())
        .await?;
    Ok(())
}

/// Every fault for every seed; one row each.
pub async fn run(bins: Binaries, s: &FaultSettings) -> anyhow::Result<Vec<FaultRow>> {
    let (mut deployment, target) = Deployment::start(bins, s).await?;
    let mut rows = Vec::new();
    for &seed in &s.seeds {
        for &fault in &s.faults {
            let sale = FlashSale {
                users: s.users,
                stock: s.stock,
                per_user_limit: 1,
                connections: if fault == Fault::RedisPauseFlood { 1024 } else { 32 },
                pace: Pace::Fixed(s.rate),
                duration: s.duration,
                retry_fraction: 0.03,
                again_fraction: 0.05,
                seed,
                max_requests: 0,
                drain_timeout: Duration::from_secs(120),
                verify: true,
                app_retries: Some(Duration::from_secs(60)),
            };
            let label = format!("{} #{seed}", fault.name());
            let promotion = target.create_promotion(s.stock, 1).await?;
            // The apps fetch their sale tokens first; the fault's clock starts with the load.
            let ready = sale.prepare(&target, &System::Gateway, Some(promotion)).await?;
            let workload = ready.workload();
            let mut fault_started = None;
            let (report, injected) = tokio::join!(
                sale.run_prepared(&target, &label, &System::Gateway, ready),
                async {
                    tokio::time::sleep(s.fault_at).await;
                    fault_started = Some(tokio::time::Instant::now());
                    deployment.inject(fault, s.outage, &target, promotion).await
                }
            );
            let writes_lost = injected.with_context(|| format!("inject {}", fault.name()))?;
            let fault_started = deployment.take_landed().or(fault_started);
            // On a sharded sale a Redis fault hits the first shard's node: its buyers tell when
            // the sale took orders there again (the other shards' buyers never stopped).
            let sale = order_core::domain::shards::SaleShards::new(promotion, s.shards)?;
            let first_shard = sale.shard(0);
            let of_interest = |user: u64| !fault.hits_a_shard() || sale.shard_of(user as i64) == first_shard;
            let accepting_again_secs = fault_started
                .and_then(|at| workload.accepted_again_after(at, of_interest))
                .map(|d| d.as_secs_f64());
            let report = report.with_context(|| format!("the sale under {}", fault.name()))?;
            let v = report.verification.context("the run was not verified")?;
            rows.push(FaultRow {
                fault: fault.name(),
                deployment: deployment.describe(),
                seed,
                requests: report.requests,
                accepted: v.accepted,
                persisted: v.persisted,
                oversold: v.oversold,
                lost: v.lost,
                duplicated: v.duplicated,
                errors: report.outcomes.get(Outcome::Error.name()).copied().unwrap_or(0),
                shed: report.outcomes.get(Outcome::Shed.name()).copied().unwrap_or(0),
                app_retries: report.app_retries,
                max_latency_ms: report.latency_ms.max,
                accepting_again_secs,
                writes_lost,
                outcomes: report.outcomes.clone(),
                error_causes: report.error_causes.clone(),
                failures: v.failures,
            });
            eprintln!("{}", table(&rows[rows.len() - 1..]));
        }
    }
    Ok(rows)
}

pub fn table(rows: &[FaultRow]) -> String {
    let mut out = String::from(
        "| fault | deployment | seed | requests | accepted | persisted | oversold | lost | duplicated | failed requests | shed | app retries | slowest answer ms | accepting again after s | writes lost in Redis |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |\n",
            r.fault,
            r.deployment,
            r.seed,
            r.requests,
            r.accepted,
            r.persisted,
            r.oversold,
            r.lost,
            r.duplicated,
            r.errors,
            r.shed,
            r.app_retries,
            r.max_latency_ms,
            or_dash(r.accepting_again_secs.map(|s| format!("{s:.1}"))),
            or_dash(r.writes_lost.map(|n| n.to_string())),
        ));
    }
    out
}
