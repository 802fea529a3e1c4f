//! Redis adapter: the connection every request shares, the sale's stock (Lua scripts), the
//! shared clock, the writers' shared pace and the gateways' worker-id leases.
//!
//! One multiplexed connection per process, to a single node or to a Redis Cluster
//! (`redis.cluster_nodes`): concurrent commands are pipelined, and it reconnects by itself
//! after Redis restarts. On a cluster the client follows MOVED/ASK and routes each command
//! by its key; every key a command or script touches shares one hash tag, so nothing here is
//! cross-slot.
//!
//! The cluster client can wedge while it recovers from a node that went away under load
//! (every call then waits in its recovery, with no reply and no error; seen in the fault
//! suite after a node restart). So each cluster call has a deadline, and a connection that
//! has answered nothing but failures for `REBUILD_AFTER` is replaced by a fresh one from the
//! seed nodes, in the background: a gray failure of the client heals like one of Redis.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;

use crate::runtime::settings::RedisSettings;

pub mod clock;
pub mod deployment;
pub mod global_pace;
pub mod status_channel;
pub mod stock;
pub mod worker_lease;

/// The shared connection: cheap to clone (clones share one socket per node).
#[derive(Clone)]
pub enum RedisConnection {
    Node(ConnectionManager),
    Cluster(Arc<ClusterLink>),
}

/// How long a cluster connection may fail every call before it is replaced.
const REBUILD_AFTER: Duration = Duration::from_secs(5);

/// A cluster connection that is replaced when it stops answering.
pub struct ClusterLink {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    /// Since when every call failed (`None` while calls succeed).
    failing_since: Mutex<Option<Instant>>,
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
        let result = outcome.unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer from the Redis Cluster within the call's deadline",
            )))
        });
        let broken = match &result {
            Ok(_) => false,
            Err(e) => {
                e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.kind() == redis::ErrorKind::ClusterConnectionNotFound
            }
        };
        let mut failing = self.failing_since.lock().unwrap_or_else(|e| e.into_inner());
        if !broken {
            *failing = None;
            return result;
        }
        let since = *failing.get_or_insert_with(Instant::now);
        drop(failing);
        if since.elapsed() >= REBUILD_AFTER && !self.rebuilding.swap(true, Ordering::AcqRel) {
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
                    "the Redis Cluster connection failed every call for {REBUILD_AFTER:?}; replaced it"
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replace the Redis Cluster connection; retried on the next failure")
            }
            Err(_) => {
                tracing::warn!("replace the Redis Cluster connection: timed out; retried on the next failure")
            }
        }
        self.rebuilding.store(false, Ordering::Release);
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Node(c) => c.get_db(),
            RedisConnection::Cluster(link) => link.current().get_db(),
        }
    }
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Node(_) => "RedisConnection::Node",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
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
