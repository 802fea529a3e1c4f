//! Redis adapter: the connection every request shares, the sale's stock (Lua scripts), the
//! shared clock, the writers' shared pace and the gateways' worker-id leases.
//!
//! One multiplexed connection per process, to a single node, to a Redis Cluster
//! (`redis.cluster_nodes`) or to the primary a group of Sentinels names
//! (`redis.sentinel_nodes`): concurrent commands are pipelined, and it finds Redis again by
//! itself after a restart or a failover. On a cluster the client follows MOVED/ASK and
//! routes each command by its key; every key a command or script touches shares one hash tag,
//! so nothing here is cross-slot. Under Sentinel, a call that meets a dead, paused or demoted
//! primary asks the Sentinels again (`SentinelLink`), and so does the first call after each
//! second, so a primary that was replaced while this process was not looking (a split brain)
//! is left within about a second.
//!
//! The cluster client can wedge while it recovers from a node that went away under load
//! (every call then waits in its recovery, with no reply and no error; seen in the fault
//! suite after a node restart). So each cluster call has a deadline, and a connection that
//! has answered nothing but failures for `REBUILD_AFTER` is replaced by a fresh one from the
//! seed nodes, in the background: a gray failure of the client heals like one of Redis.
//! A call that timed out also replaces it (at most every `REBUILD_ON_TIMEOUT`): the client
//! reconnects to a master that stopped answering (a paused process still accepts
//! connections) and keeps its slots there, while the cluster promotes its replica; a fresh
//! connection reads the slots anew.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;

use crate::runtime::settings::{RedisSettings, RedisShape};

pub mod clock;
pub mod deployment;
pub mod durability;
pub mod global_pace;
pub mod status_channel;
pub mod stock;
pub mod topology;
pub mod worker_lease;

/// The shared connection: cheap to clone (clones share one socket per node).
#[derive(Clone)]
pub enum RedisConnection {
    Node(ConnectionManager),
    Cluster(Arc<ClusterLink>),
    Sentinel(Arc<SentinelLink>),
}

/// A call's outcome under its deadline: an elapsed deadline is a timeout error.
fn within_deadline<T>(
    outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    what: &str,
) -> redis::RedisResult<T> {
    outcome.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {what} within the call's deadline"),
        )))
    })
}

/// A failure of the connection itself, not an answer of the server.
fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped()
}

/// How long a cluster connection may fail every call before it is replaced.
const REBUILD_AFTER: Duration = Duration::from_secs(5);
/// After a call timed out, the connection is replaced unless it was this recently.
const REBUILD_ON_TIMEOUT: Duration = Duration::from_secs(1);

/// A cluster connection that is replaced when it stops answering.
pub struct ClusterLink {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    /// Since when every call failed (`None` while calls succeed).
    failing_since: Mutex<Option<Instant>>,
    /// When the connection was last made.
    built_at: Mutex<Instant>,
    rebuilding: AtomicBool,
    /// A call's deadline: the response timeout plus a connect, for a call that waits for a
    /// reconnection first.
    deadline: Duration,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink").finish_non_exhaustive()
    }
}

impl ClusterLink {
    fn current(&self) -> ClusterConnection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A reply or an error from the server proves the connection works; a timeout or a
    /// connection error counts towards replacing it.
    fn judge<T>(
        self: &Arc<Self>,
        outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> redis::RedisResult<T> {
        let result = within_deadline(outcome, "the Redis Cluster");
        let broken = match &result {
            Ok(_) => false,
            Err(e) => connection_failed(e) || e.kind() == redis::ErrorKind::ClusterConnectionNotFound,
        };
        let timed_out = matches!(&result, Err(e) if e.is_timeout());
        let mut failing = self.failing_since.lock().unwrap_or_else(|e| e.into_inner());
        if !broken {
            *failing = None;
            return result;
        }
        let since = *failing.get_or_insert_with(Instant::now);
        drop(failing);
        let stale = timed_out
            && self.built_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= REBUILD_ON_TIMEOUT;
        if (stale || since.elapsed() >= REBUILD_AFTER) && !self.rebuilding.swap(true, Ordering::AcqRel) {
            let link = Arc::clone(self);
            tokio::spawn(async move { link.rebuild().await });
        }
        result
    }

    async fn rebuild(self: Arc<Self>) {
        let fresh = tokio::time::timeout(self.deadline, self.client.get_async_connection()).await;
        match fresh {
            Ok(Ok(conn)) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
                *self.failing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::warn!(
                    "Redis Cluster calls timed out or failed; replaced the connection (slots read anew)"
                );
                metrics::counter!("seckill_redis_cluster_reconnects_total").increment(1);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replace the Redis Cluster connection; retried on the next failure")
            }
            Err(_) => {
                tracing::warn!("replace the Redis Cluster connection: timed out; retried on the next failure")
            }
        }
        *self.built_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.rebuilding.store(false, Ordering::Release);
    }
}

/// How often a call may ask the Sentinels again after a failure, and how long a working
/// connection is trusted before a call checks in the background that the Sentinels still
/// name its node.
const SENTINEL_RECHECK: Duration = Duration::from_millis(250);
const SENTINEL_VERIFY_EVERY: Duration = Duration::from_secs(1);

/// The connection to the primary a group of Sentinels names, replaced when they name another.
pub struct SentinelLink {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection and the address it goes to.
    conn: RwLock<(MultiplexedConnection, String)>,
    /// When the Sentinels were last asked (a failure asks again at most every
    /// `SENTINEL_RECHECK`; a working connection is verified every `SENTINEL_VERIFY_EVERY`).
    asked_at: Mutex<Instant>,
    asking: AtomicBool,
    config: AsyncConnectionConfig,
    deadline: Duration,
}

impl std::fmt::Debug for SentinelLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelLink").finish_non_exhaustive()
    }
}

/// `host:port` of a client's node, for logs and comparisons (never a password).
fn node_address(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

impl SentinelLink {
    async fn connect(
        settings: &RedisSettings,
        config: AsyncConnectionConfig,
        deadline: Duration,
    ) -> redis::RedisResult<Self> {
        let data = settings.url.expose_secret().into_connection_info()?;
        let node_info =
            SentinelNodeConnectionInfo::default().set_redis_connection_info(data.redis_settings().clone());
        let mut sentinel = SentinelClient::build(
            settings.sentinel_urls(),
            settings.sentinel_master.clone(),
            Some(node_info),
            SentinelServerType::Master,
        )?;
        let (conn, addr) = Self::open(&mut sentinel, &config, deadline).await?;
        Ok(Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            conn: RwLock::new((conn, addr)),
            asked_at: Mutex::new(Instant::now()),
            asking: AtomicBool::new(false),
            config,
            deadline,
        })
    }

    /// Ask the Sentinels for the primary and connect to it.
    async fn open(
        sentinel: &mut SentinelClient,
        config: &AsyncConnectionConfig,
        deadline: Duration,
    ) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let opened = tokio::time::timeout(deadline, async {
            let client = sentinel.async_get_client().await?;
            let addr = node_address(&client);
            let conn = client
                .get_multiplexed_async_connection_with_config(config)
                .await?;
            redis::RedisResult::Ok((conn, addr))
        })
        .await;
        opened.unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no primary from the Sentinels within the call's deadline",
            )))
        })
    }

    fn current(&self) -> MultiplexedConnection {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    /// The primary's address this link talks to now.
    pub fn address(&self) -> String {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// A timeout, a broken connection, or a node that is no longer a writable primary
    /// (READONLY: demoted; NOREPLICAS: a primary cut off from its replicas, perhaps the old
    /// one of a split brain) makes the link ask the Sentinels again; so does the first call
    /// once `SENTINEL_VERIFY_EVERY` passed without asking.
    fn judge<T>(
        self: &Arc<Self>,
        outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> redis::RedisResult<T> {
        let result = within_deadline(outcome, "the Redis primary");
        let suspect = match &result {
            Ok(_) => false,
            Err(e) => {
                connection_failed(e)
                    || e.is_connection_refusal()
                    || matches!(
                        e.code(),
                        Some("READONLY" | "NOREPLICAS" | "MASTERDOWN" | "UNBLOCKED")
                    )
            }
        };
        let since = self.asked_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        let due = if suspect {
            SENTINEL_RECHECK
        } else {
            SENTINEL_VERIFY_EVERY
        };
        if since >= due && !self.asking.swap(true, Ordering::AcqRel) {
            let link = Arc::clone(self);
            tokio::spawn(async move { link.ask_again(suspect).await });
        }
        result
    }

    /// Ask the Sentinels which node is the primary; move there when it is another node, or
    /// when the current connection failed.
    async fn ask_again(self: Arc<Self>, failed: bool) {
        *self.asked_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut sentinel = self.sentinel.lock().await;
        let named = tokio::time::timeout(self.deadline, sentinel.async_get_client()).await;
        match named {
            Ok(Ok(client)) => {
                let addr = node_address(&client);
                if failed || addr != self.address() {
                    match tokio::time::timeout(
                        self.deadline,
                        client.get_multiplexed_async_connection_with_config(&self.config),
                    )
                    .await
                    {
                        Ok(Ok(conn)) => {
                            let old = std::mem::replace(
                                &mut *self.conn.write().unwrap_or_else(|e| e.into_inner()),
                                (conn, addr.clone()),
                            );
                            if old.1 != addr {
                                tracing::warn!(from = %old.1, to = %addr, "the Sentinels name another Redis primary; moved to it");
                                metrics::counter!("seckill_redis_primary_changes_total").increment(1);
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, node = %addr, "connect to the primary the Sentinels name; retried on the next failure")
                        }
                        Err(_) => {
                            tracing::warn!(node = %addr, "connect to the primary the Sentinels name: timed out; retried on the next failure")
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ask the Sentinels for the primary; retried on the next failure")
            }
            Err(_) => {
                tracing::warn!("ask the Sentinels for the primary: timed out; retried on the next failure")
            }
        }
        drop(sentinel);
        *self.asked_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.asking.store(false, Ordering::Release);
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Node(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(link) => Box::pin(async move {
                let mut conn = link.current();
                let outcome = tokio::time::timeout(link.deadline, conn.req_packed_command(cmd)).await;
                link.judge(outcome)
            }),
            RedisConnection::Sentinel(link) => Box::pin(async move {
                let mut conn = link.current();
                let outcome = tokio::time::timeout(link.deadline, conn.req_packed_command(cmd)).await;
                link.judge(outcome)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Node(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(link) => Box::pin(async move {
                let mut conn = link.current();
                let outcome =
                    tokio::time::timeout(link.deadline, conn.req_packed_commands(pipeline, offset, count))
                        .await;
                link.judge(outcome)
            }),
            RedisConnection::Sentinel(link) => Box::pin(async move {
                let mut conn = link.current();
                let outcome =
                    tokio::time::timeout(link.deadline, conn.req_packed_commands(pipeline, offset, count))
                        .await;
                link.judge(outcome)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Node(c) => c.get_db(),
            RedisConnection::Cluster(link) => link.current().get_db(),
            RedisConnection::Sentinel(link) => link.current().get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Node(_) => "RedisConnection::Node",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
            RedisConnection::Sentinel(_) => "RedisConnection::Sentinel",
        })
    }
}

impl RedisConnection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<RedisConnection> {
    let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    let response_timeout = Duration::from_millis(settings.response_timeout_ms);
    if settings.shape() == RedisShape::Sentinel {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let link = SentinelLink::connect(settings, config, connect_timeout + response_timeout).await?;
        return Ok(RedisConnection::Sentinel(Arc::new(link)));
    }
    let nodes = settings.cluster_node_urls();
    if !nodes.is_empty() {
        let client = ClusterClient::builder(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(response_timeout)
            .retries(2)
            .build()?;
        let conn = client.get_async_connection().await?;
        return Ok(RedisConnection::Cluster(Arc::new(ClusterLink {
            client,
            conn: RwLock::new(conn),
            failing_since: Mutex::new(None),
            built_at: Mutex::new(Instant::now()),
            rebuilding: AtomicBool::new(false),
            deadline: connect_timeout + response_timeout,
        })));
    }
    let client = redis::Client::open(settings.url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2);
    Ok(RedisConnection::Node(
        client.get_connection_manager_with_config(config).await?,
    ))
}
