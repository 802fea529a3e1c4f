//! Layered configuration shared by every binary.
//!
//! Sources, later wins: `config/base.toml`, `config/<environment>.toml` (`APP_ENVIRONMENT`,
//! default `local`), then `APP_<SECTION>__<KEY>` environment variables
//! (`APP_GATEWAY__PORT=9000`). `REDIS_URL`, `REDIS_CLUSTER_NODES`, `REDIS_SENTINEL_NODES`,
//! `REDIS_SENTINEL_MASTER`, `DATABASE_URL` and `PULSAR_URL` are accepted as short forms of
//! `APP_REDIS__URL`, `APP_REDIS__CLUSTER_NODES`, …, `APP_DATABASE__URL` and
//! `APP_PULSAR__URL`, so the same
//! variables point the stack scripts and the binaries at external services.
//!
//! Each binary deserializes the sections it needs into its own typed `Settings` and validates
//! it; an invalid value fails start-up with an error naming the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("APP_ENVIRONMENT is {0:?}; expected `local` or `production`")]
    UnknownEnvironment(String),
    #[error("configuration directory {0} has no base.toml (set APP_CONFIG_DIR)")]
    MissingConfigDir(PathBuf),
    #[error("invalid configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration key `{key}`: {reason}")]
    InvalidValue { key: &'static str, reason: String },
}

impl SettingsError {
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidValue {
            key,
            reason: reason.into(),
        }
    }
}

/// Semantic checks that serde cannot express; run once after loading.
pub trait Validate {
    fn validate(&self) -> Result<(), SettingsError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Local,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Local => "local",
            Environment::Production => "production",
        }
    }
}

impl FromStr for Environment {
    type Err = SettingsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(Environment::Local),
            "production" => Ok(Environment::Production),
            _ => Err(SettingsError::UnknownEnvironment(s.to_owned())),
        }
    }
}

/// Where settings come from: a config directory, an environment name and a set of variables.
/// Tests build one explicitly instead of mutating the process environment.
#[derive(Debug, Clone)]
pub struct SettingsSource {
    dir: PathBuf,
    environment: Environment,
    vars: HashMap<String, String>,
}

const URL_SHORTHANDS: [(&str, &str); 6] = [
    ("REDIS_URL", "APP_REDIS__URL"),
    ("REDIS_CLUSTER_NODES", "APP_REDIS__CLUSTER_NODES"),
    ("REDIS_SENTINEL_NODES", "APP_REDIS__SENTINEL_NODES"),
    ("REDIS_SENTINEL_MASTER", "APP_REDIS__SENTINEL_MASTER"),
    ("DATABASE_URL", "APP_DATABASE__URL"),
    ("PULSAR_URL", "APP_PULSAR__URL"),
];

impl SettingsSource {
    /// The process environment: `APP_CONFIG_DIR`, `APP_ENVIRONMENT` and all variables.
    pub fn from_process_env() -> Result<Self, SettingsError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        let dir = vars
            .get("APP_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_config_dir);
        let environment = vars
            .get("APP_ENVIRONMENT")
            .map(|e| e.parse())
            .transpose()?
            .unwrap_or(Environment::Local);
        Ok(Self::new(dir, environment, vars))
    }

    pub fn new(dir: impl Into<PathBuf>, environment: Environment, vars: HashMap<String, String>) -> Self {
        Self {
            dir: dir.into(),
            environment,
            vars,
        }
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// Read the layers from another directory (`--config`).
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = dir.into();
        self
    }

    pub fn with_environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Replace or add one variable (tests: `APP_GATEWAY__PORT=0`).
    pub fn with_var(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    pub fn load<T: DeserializeOwned + Validate>(&self) -> Result<T, SettingsError> {
        if !self.dir.join("base.toml").is_file() {
            return Err(SettingsError::MissingConfigDir(self.dir.clone()));
        }
        let mut app_vars: HashMap<String, String> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("APP_") && k.contains("__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (short, long) in URL_SHORTHANDS {
            if let Some(v) = self.vars.get(short).filter(|v| !v.is_empty()) {
                app_vars.entry(long.to_owned()).or_insert_with(|| v.clone());
            }
        }
        let settings: T = config::Config::builder()
            .add_source(config::File::from(self.dir.join("base.toml")))
            .add_source(
                config::File::from(self.dir.join(format!("{}.toml", self.environment.as_str())))
                    .required(false),
            )
            .add_source(
                config::Environment::with_prefix("APP")
                    .prefix_separator("_")
                    .separator("__")
                    .source(Some(app_vars)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }
}

/// `./config` when run from the repository root, else the workspace's own `config/`.
fn default_config_dir() -> PathBuf {
    let cwd = Path::new("config");
    if cwd.join("base.toml").is_file() {
        return cwd.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// Where an HTTP listener binds.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
}

impl ServerSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub filter: String,
}

/// Years of order data: monthly partitions created ahead, months past the retention
/// archived to `dir` and dropped, and the event bookkeeping tables pruned by age.
#[derive(Debug, Clone, Deserialize)]
pub struct ArchiveSettings {
    /// The archive sink (one `orders-YYYY-MM.jsonl.gz` per month). The gateway reads
    /// archived orders from it, so every gateway and consumers process sees the same one.
    pub dir: std::path::PathBuf,
    /// Months kept in the database after a month ended.
    pub retention_months: u32,
    /// Partitions exist for the current month and this many after it.
    pub partitions_ahead_months: u32,
    /// How often the consumers create, archive and prune.
    pub interval_secs: u64,
    /// Days a consumer remembers an event it handled: longer than a redelivery can come.
    pub processed_events_days: u32,
    pub notifications_days: u32,
    /// Hours after a sale ended before its keys leave Redis (once its orders are persisted
    /// and reconciled); more than the hour gateways keep an ended sale cached.
    pub sale_keys_grace_hours: u32,
}

impl ArchiveSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let positive = [
            ("archive.retention_months", self.retention_months),
            ("archive.partitions_ahead_months", self.partitions_ahead_months),
            ("archive.processed_events_days", self.processed_events_days),
            ("archive.notifications_days", self.notifications_days),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        if self.sale_keys_grace_hours < 2 {
            return Err(SettingsError::invalid(
                "archive.sale_keys_grace_hours",
                "must be at least 2 (gateways keep an ended sale cached for an hour)",
            ));
        }
        if self.interval_secs == 0 {
            return Err(SettingsError::invalid(
                "archive.interval_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`; secret because it may hold a password.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl DatabaseSettings {
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        let url = self.url.expose_secret();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(SettingsError::invalid(
                "database.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        url.parse()
            .map_err(|e: sqlx::Error| SettingsError::invalid("database.url", e.to_string()))
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// The same server and credentials, another database (tests create one per test).
    pub fn with_database_name(&self, name: &str) -> Self {
        let url = self.url.expose_secret();
        let (without_query, query) = match url.split_once('?') {
            Some((u, q)) => (u, Some(q)),
            None => (url, None),
        };
        let scheme_end = without_query.find("://").map_or(0, |i| i + 3);
        let base = match without_query[scheme_end..].find('/') {
            Some(i) => &without_query[..scheme_end + i],
            None => without_query,
        };
        let mut new_url = format!("{base}/{name}");
        if let Some(q) = query {
            new_url.push('?');
            new_url.push_str(q);
        }
        Self {
            url: SecretString::from(new_url),
            ..self.clone()
        }
    }
}

impl Validate for DatabaseSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.connect_options()?;
        if self.max_connections == 0 {
            return Err(SettingsError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]`; secret because it may hold a password.
    pub url: SecretString,
    /// `redis://host:port,redis://host:port,…`: the seed nodes of a Redis Cluster. When set,
    /// every Redis call goes to the cluster and `url` is not used; empty: the single node.
    /// Secret like `url`.
    #[serde(default = "nothing")]
    pub cluster_nodes: SecretString,
    /// `redis://host:port,…`: the Sentinels that watch one primary and its replicas
    /// (`sentinel_master` names it). When set, every call goes to the primary they name now;
    /// `url` then gives only the password and database of the data nodes. Secret like `url`.
    #[serde(default = "nothing")]
    pub sentinel_nodes: SecretString,
    /// The name the Sentinels monitor the primary under.
    #[serde(default = "default_sentinel_master")]
    pub sentinel_master: String,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    #[serde(default)]
    pub durability: DurabilitySettings,
}

/// What a 202 rests on in Redis (see `redis::durability`).
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
pub struct DurabilitySettings {
    /// Replicas that must hold an accepted order's reservation before its 202 (`WAIT`):
    /// unset means 1 on a Redis Cluster or under Sentinel, 0 on a single node.
    pub replicas: Option<u8>,
    /// How long to wait for them; past it the order is kept and the buyer asked to retry.
    #[serde(default = "default_replica_timeout_ms")]
    pub replica_timeout_ms: u64,
}

fn default_replica_timeout_ms() -> u64 {
    500
}

fn nothing() -> SecretString {
    SecretString::from(String::new())
}

fn default_sentinel_master() -> String {
    "seckill".into()
}

/// Which Redis the binaries talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisShape {
    Node,
    Cluster,
    Sentinel,
}

impl RedisSettings {
    /// The cluster's seed nodes; empty for a single node.
    pub fn cluster_node_urls(&self) -> Vec<String> {
        split_urls(&self.cluster_nodes)
    }

    /// The Sentinels; empty without Sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        split_urls(&self.sentinel_nodes)
    }

    pub fn shape(&self) -> RedisShape {
        if !self.cluster_node_urls().is_empty() {
            RedisShape::Cluster
        } else if !self.sentinel_urls().is_empty() {
            RedisShape::Sentinel
        } else {
            RedisShape::Node
        }
    }

    /// Replicas that must acknowledge a reservation before its order is confirmed.
    pub fn replicas_acked(&self) -> u8 {
        self.durability.replicas.unwrap_or(match self.shape() {
            RedisShape::Node => 0,
            RedisShape::Cluster | RedisShape::Sentinel => 1,
        })
    }

    /// Where the order status channel can be followed on a single node or a cluster: a
    /// cluster forwards every publish to all its nodes, so any node will do (tried in turn
    /// after a failure). Under Sentinel the primary is asked of the Sentinels each time.
    pub fn subscription_urls(&self) -> Vec<String> {
        let nodes = self.cluster_node_urls();
        if nodes.is_empty() {
            vec![self.url.expose_secret().to_owned()]
        } else {
            nodes
        }
    }
}

fn split_urls(list: &SecretString) -> Vec<String> {
    list.expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Validate for RedisSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        redis::Client::open(self.url.expose_secret())
            .map(|_| ())
            .map_err(|e| SettingsError::invalid("redis.url", e.to_string()))?;
        for node in self.cluster_node_urls() {
            redis::Client::open(node.as_str())
                .map_err(|e| SettingsError::invalid("redis.cluster_nodes", e.to_string()))?;
        }
        for node in self.sentinel_urls() {
            redis::Client::open(node.as_str())
                .map_err(|e| SettingsError::invalid("redis.sentinel_nodes", e.to_string()))?;
        }
        if !self.cluster_node_urls().is_empty() && !self.sentinel_urls().is_empty() {
            return Err(SettingsError::invalid(
                "redis.sentinel_nodes",
                "set either redis.cluster_nodes (a Redis Cluster) or redis.sentinel_nodes (Sentinel), not both",
            ));
        }
        if !self.sentinel_urls().is_empty() && self.sentinel_master.trim().is_empty() {
            return Err(SettingsError::invalid(
                "redis.sentinel_master",
                "name the primary the Sentinels monitor",
            ));
        }
        if self.durability.replica_timeout_ms == 0 || self.durability.replica_timeout_ms > 10_000 {
            return Err(SettingsError::invalid(
                "redis.durability.replica_timeout_ms",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PulsarSettings {
    pub url: String,
    pub tenant: String,
    pub namespace: String,
    pub seckill_orders_topic: String,
    pub order_events_topic: String,
    pub operation_timeout_ms: u64,
}

impl PulsarSettings {
    /// The fully qualified name of a topic in the configured tenant and namespace.
    pub fn topic(&self, name: &str) -> String {
        format!("persistent://{}/{}/{}", self.tenant, self.namespace, name)
    }
}

impl Validate for PulsarSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !(self.url.starts_with("pulsar://") || self.url.starts_with("pulsar+ssl://")) {
            return Err(SettingsError::invalid(
                "pulsar.url",
                "must start with pulsar:// or pulsar+ssl://",
            ));
        }
        for (key, value) in [
            ("pulsar.tenant", &self.tenant),
            ("pulsar.namespace", &self.namespace),
            ("pulsar.seckill_orders_topic", &self.seckill_orders_topic),
            ("pulsar.order_events_topic", &self.order_events_topic),
        ] {
            if value.is_empty() || value.contains('/') {
                return Err(SettingsError::invalid(
                    key,
                    "must be a non-empty name without '/'",
                ));
            }
        }
        Ok(())
    }
}

/// How long a binary waits for its dependencies at start before giving up.
#[derive(Debug, Clone, Deserialize)]
pub struct StartupSettings {
    pub dependency_timeout_secs: u64,
    /// Per-probe deadline for `/readyz`.
    pub readiness_timeout_ms: u64,
    /// Apply pending migrations at start. Off by default: a deployment runs `<binary> migrate`
    /// once before it rolls out new versions; `config/local.toml` turns it on for development.
    #[serde(default)]
    pub migrate: bool,
}

/// Require a secret of at least `min_len` bytes (a short HMAC key is guessable).
pub fn require_secret(key: &'static str, secret: &SecretString, min_len: usize) -> Result<(), SettingsError> {
    if secret.expose_secret().len() < min_len {
        return Err(SettingsError::invalid(
            key,
            format!("must be at least {min_len} bytes"),
        ));
    }
    Ok(())
}

/// Just the database section, for tools and tests that need nothing else.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseOnly {
    pub database: DatabaseSettings,
}

impl Validate for DatabaseOnly {
    fn validate(&self) -> Result<(), SettingsError> {
        self.database.validate()
    }
}

/// Just the Pulsar section, for tools and tests that need nothing else.
#[derive(Debug, Clone, Deserialize)]
pub struct PulsarOnly {
    pub pulsar: PulsarSettings,
}

impl Validate for PulsarOnly {
    fn validate(&self) -> Result<(), SettingsError> {
        self.pulsar.validate()
    }
}

/// Just the Redis section, for tools and tests that need nothing else.
#[derive(Debug, Clone, Deserialize)]
pub struct RedisOnly {
    pub redis: RedisSettings,
}

impl Validate for RedisOnly {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()
    }
}
