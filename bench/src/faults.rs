//! The fault-injection suite: a flash sale per fault on a deployment of its own (a private
//! stack, the gateway and consumers binaries as child processes), with the fault injected
//! mid-sale: the gateway killed (-9) and restarted, the consumers killed mid-batch, the
//! broker killed and restarted, PostgreSQL stopped for a while, Redis restarted (its
//! append-only file on). After each, invariants 1–5 are checked; the table counts
//! requests, accepted, persisted, oversold, lost and duplicated orders.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use order_core::settings::{DatabaseSettings, RedisSettings};
use order_core::test_support::{free_port, random_worker_id, unique, PrivateStack};
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
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::GatewayKill => "gateway kill -9",
            Fault::ConsumersKill => "consumers kill -9",
            Fault::BrokerKill => "broker kill -9",
            Fault::PostgresStop => "postgres stopped",
            Fault::RedisRestart => "redis restart",
            Fault::RedisKill => "redis kill -9",
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
    pub seed: u64,
    pub requests: u64,
    pub accepted: u64,
    pub persisted: u64,
    pub oversold: i64,
    pub lost: u64,
    pub duplicated: u64,
    /// Requests that failed (connection refused while a part was down, 503s).
    pub errors: u64,
    /// The slowest answer: how long the fault held requests up.
    pub max_latency_ms: f64,
    pub failures: Vec<String>,
}

/// Gateway and consumers on a private stack, restartable.
struct Deployment {
    stack: PrivateStack,
    bins: Binaries,
    env: Vec<(String, String)>,
    gateway_port: u16,
    consumers_port: u16,
    gateway: Child,
    consumers: Child,
    /// The children's logs (appended across restarts).
    logs: PathBuf,
}

fn secret() -> String {
    format!("{}-{}", unique("fault-secret"), unique("x"))
}

impl Deployment {
    async fn start(bins: Binaries, writer_rows_per_sec: f64) -> anyhow::Result<(Self, Target)> {
        let stack = tokio::task::spawn_blocking(PrivateStack::start)
            .await
            .context("start the private stack")??;
        let (jwt, admin, callback) = (secret(), secret(), secret());
        let (gateway_port, consumers_port) = (free_port(), free_port());
        let topic = unique("fault-orders");
        let pace = writer_rows_per_sec.to_string();
        let env: Vec<(String, String)> = [
            ("APP_CONFIG_DIR", bins.config_dir.display().to_string()),
            ("APP_REDIS__URL", stack.redis_url()),
            ("APP_DATABASE__URL", stack.database_url()),
            ("APP_PULSAR__URL", stack.pulsar_url()),
            ("APP_PULSAR__SECKILL_ORDERS_TOPIC", topic.clone()),
            ("APP_PULSAR__ORDER_EVENTS_TOPIC", format!("{topic}-events")),
            ("APP_WRITER__DEAD_LETTER_TOPIC", format!("{topic}-dlq")),
            ("APP_AUTH__JWT_SECRET", jwt.clone()),
            ("APP_AUTH__ADMIN_KEY", admin.clone()),
            ("APP_PAYMENTS__CALLBACK_SECRET", callback),
            ("APP_GATEWAY__PORT", gateway_port.to_string()),
            ("APP_CONSUMERS__PORT", consumers_port.to_string()),
            (
                "APP_DASHBOARD__CONSUMERS_STATUS_URL",
                format!("http://127.0.0.1:{consumers_port}/status"),
            ),
            ("APP_SECKILL__WORKER_ID", random_worker_id().to_string()),
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
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let logs = std::env::temp_dir().join(unique("fault-suite-logs"));
        std::fs::create_dir_all(&logs).context("create the log directory")?;
        let gateway = spawn(&bins.gateway, &env, &logs)?;
        let consumers = spawn(&bins.consumers, &env, &logs)?;
        let deployment = Self {
            stack,
            bins,
            env,
            gateway_port,
            consumers_port,
            gateway,
            consumers,
            logs,
        };
        deployment.wait_ready().await?;
        let database = DatabaseSettings {
            url: SecretString::from(deployment.stack.database_url()),
            max_connections: 4,
            acquire_timeout_ms: 5000,
        };
        let redis = RedisSettings {
            url: SecretString::from(deployment.stack.redis_url()),
            connect_timeout_ms: 2000,
            response_timeout_ms: 2000,
        };
        let target = Target::new(
            &format!("http://127.0.0.1:{gateway_port}"),
            SecretString::from(admin),
            SecretString::from(jwt),
            None,
            database,
            redis,
            WriterPace {
                max_rows_per_sec: writer_rows_per_sec,
                batch_size: 50,
            },
        );
        Ok((deployment, target))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        for port in [self.gateway_port, self.consumers_port] {
            loop {
                let ok = client
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "port {port} not ready within 90 s (logs in {})",
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
        tokio::time::sleep(outage).await;
        self.stack(PrivateStack::start_part, part).await
    }

    /// Inject `fault`, keep it for `outage` where that applies, and recover.
    async fn inject(&mut self, fault: Fault, outage: Duration) -> anyhow::Result<()> {
        match fault {
            Fault::None => {}
            Fault::GatewayKill => {
                kill9(&mut self.gateway).await?;
                self.gateway = spawn(&self.bins.gateway, &self.env, &self.logs)?;
            }
            Fault::ConsumersKill => {
                kill9(&mut self.consumers).await?;
                tokio::time::sleep(outage).await;
                self.consumers = spawn(&self.bins.consumers, &self.env, &self.logs)?;
            }
            Fault::BrokerKill => self.outage(PrivateStack::kill_part, "pulsar", outage).await?,
            Fault::PostgresStop => self.outage(PrivateStack::stop_part, "postgres", outage).await?,
            Fault::RedisRestart => self.outage(PrivateStack::stop_part, "redis", outage).await?,
            Fault::RedisKill => self.outage(PrivateStack::kill_part, "redis", outage).await?,
        }
        self.wait_ready().await
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

/// Every fault for every seed; one row each.
pub async fn run(bins: Binaries, s: &FaultSettings) -> anyhow::Result<Vec<FaultRow>> {
    let (mut deployment, target) = Deployment::start(bins, s.writer_rows_per_sec).await?;
    let mut rows = Vec::new();
    for &seed in &s.seeds {
        for &fault in &s.faults {
            let sale = FlashSale {
                users: s.users,
                stock: s.stock,
                per_user_limit: 1,
                connections: 32,
                pace: Pace::Fixed(s.rate),
                duration: s.duration,
                retry_fraction: 0.03,
                again_fraction: 0.05,
                seed,
                max_requests: 0,
                drain_timeout: Duration::from_secs(120),
                verify: true,
            };
            let label = format!("{} #{seed}", fault.name());
            let promotion = target.create_promotion(s.stock, 1).await?;
            let (report, injected) = tokio::join!(
                sale.run(&target, &label, &System::Gateway, Some(promotion)),
                async {
                    tokio::time::sleep(s.fault_at).await;
                    deployment.inject(fault, s.outage).await
                }
            );
            injected.with_context(|| format!("inject {}", fault.name()))?;
            let report = report.with_context(|| format!("the sale under {}", fault.name()))?;
            let v = report.verification.context("the run was not verified")?;
            rows.push(FaultRow {
                fault: fault.name(),
                seed,
                requests: report.requests,
                accepted: v.accepted,
                persisted: v.persisted,
                oversold: v.oversold,
                lost: v.lost,
                duplicated: v.duplicated,
                errors: report.outcomes.get(Outcome::Error.name()).copied().unwrap_or(0),
                max_latency_ms: report.latency_ms.max,
                failures: v.failures,
            });
            eprintln!("{}", table(&rows[rows.len() - 1..]));
        }
    }
    Ok(rows)
}

pub fn table(rows: &[FaultRow]) -> String {
    let mut out = String::from(
        "| fault | seed | requests | accepted | persisted | oversold | lost | duplicated | failed requests | slowest answer ms |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.fault,
            r.seed,
            r.requests,
            r.accepted,
            r.persisted,
            r.oversold,
            r.lost,
            r.duplicated,
            r.errors,
            r.max_latency_ms
        ));
    }
    out
}
