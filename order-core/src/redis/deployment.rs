//! What the whole deployment did, not one process: per-sale counters every gateway adds its
//! share to, and the heartbeats of the gateways and order writers that run.
//!
//! A gateway counts locally (atomics on the hot path) and writes its running totals to
//! `{promo:<id>}:counters` once a second, one field per process and counter, so the totals
//! survive a gateway that stops, a lost reply counts nothing twice, and three gateways show
//! the whole sale instead of a third of it. Heartbeats are
//! stamped with Redis' clock (`heartbeat.lua`) in `seckill:instances:<scope>`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::redis::RedisConnection;
use redis::Script;

use crate::runtime::shutdown::ShutdownListener;

/// A member silent this long is dropped from the set (it shows as gone well before).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The two roles that report heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Writer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Writer => "writer",
        }
    }
}

/// One process as the deployment last heard from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub role: String,
    pub name: String,
    /// Since its last heartbeat, on Redis' clock.
    pub silent_for: Duration,
    /// An order writer's figures as of its last heartbeat.
    pub writer: Option<WriterFigures>,
}

/// What an order writer reports with its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriterFigures {
    /// Its current pace.
    pub rows_per_sec: f64,
    /// Rows it inserted since it started.
    pub rows_inserted: u64,
}

impl Eq for WriterFigures {}

fn counters_key(promotion_id: i64) -> String {
    format!("{{promo:{promotion_id}}}:counters")
}

#[derive(Clone)]
pub struct DeploymentStore {
    conn: RedisConnection,
    /// `{seckill:<scope>}:instances`: deployments that share a Redis keep separate lists.
    instances: String,
    /// `{seckill:<scope>}:writers`: each order writer's figures (`rows_per_sec|rows_inserted`).
    writers: String,
    heartbeat: std::sync::Arc<Script>,
}

impl std::fmt::Debug for DeploymentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentStore").finish_non_exhaustive()
    }
}

impl DeploymentStore {
    /// `scope` names the deployment's order stream (the seckill-orders topic), like the
    /// writers' shared pace, so two deployments on one Redis do not list each other.
    /// Drop a sale's counts (its keys were retired from Redis).
    pub async fn forget_counters(&self, promotion_id: i64) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(counters_key(promotion_id))
            .query_async::<()>(&mut conn)
            .await
    }

    pub fn new(conn: RedisConnection, scope: &str) -> Self {
        Self {
            conn,
            // One hash tag: `leave` and `instances` pipeline both keys (one slot on a cluster).
            instances: format!("{{seckill:{scope}}}:instances"),
            writers: format!("{{seckill:{scope}}}:writers"),
            heartbeat: std::sync::Arc::new(Script::new(include_str!("../../../lua/heartbeat.lua"))),
        }
    }

    fn member(role: Role, name: &str) -> String {
        format!("{}:{name}", role.as_str())
    }

    pub async fn heartbeat(&self, role: Role, name: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _now_ms: i64 = self
            .heartbeat
            .key(&self.instances)
            .arg(Self::member(role, name))
            .arg(FORGET_AFTER.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// A process that stops cleanly leaves the list at once.
    pub async fn leave(&self, role: Role, name: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("ZREM")
            .arg(&self.instances)
            .arg(Self::member(role, name))
            .ignore()
            .cmd("HDEL")
            .arg(&self.writers)
            .arg(name)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// An order writer's figures, sent with its heartbeat (the dashboard adds them up).
    pub async fn set_writer_figures(&self, name: &str, figures: WriterFigures) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(&self.writers)
            .arg(name)
            .arg(format!("{}|{}", figures.rows_per_sec, figures.rows_inserted))
            .query_async(&mut conn)
            .await
    }

    /// Once a second: `report` (this instance's totals; nothing for a writer) and this
    /// instance's heartbeat; until shutdown, then `report` once more and leave the list. A
    /// Redis outage is logged once per streak; what `report` could not write is written
    /// next second.
    pub async fn heartbeat_until_shutdown<F, Fut>(
        self,
        role: Role,
        name: String,
        mut shutdown: ShutdownListener,
        mut report: F,
    ) where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<()>>,
    {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => break,
            }
            // The heartbeat goes out whatever `report` does: an instance whose counts cannot
            // be written is still alive.
            let reported = report().await;
            let sent = self.heartbeat(role, &name).await.and(reported);
            match sent {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(role = role.as_str(), "reporting to the deployment works again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(role = role.as_str(), error = %e, "heartbeat or counts not sent to Redis; sent again next second");
                }
                _ => {}
            }
        }
        if let Err(e) = report().await {
            tracing::warn!(role = role.as_str(), error = %e, "last counts not sent at shutdown");
        }
        if let Err(e) = self.leave(role, &name).await {
            tracing::debug!(error = %e, "leave the list of live instances");
        }
    }

    /// Every process heard from in the last hour, most recent first.
    pub async fn instances(&self) -> redis::RedisResult<Vec<Instance>> {
        let mut conn = self.conn.clone();
        type Reply = ((i64, i64), Vec<(String, i64)>, BTreeMap<String, String>);
        let ((secs, micros), members, writers): Reply = redis::pipe()
            .cmd("TIME")
            .cmd("ZREVRANGE")
            .arg(&self.instances)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(&self.writers)
            .query_async(&mut conn)
            .await?;
        let now_ms = secs * 1000 + micros / 1000;
        let figures = |name: &str| {
            let (rate, rows) = writers.get(name)?.split_once('|')?;
            Some(WriterFigures {
                rows_per_sec: rate.parse().ok()?,
                rows_inserted: rows.parse().ok()?,
            })
        };
        Ok(members
            .into_iter()
            .filter_map(|(member, at_ms)| {
                let (role, name) = member.split_once(':')?;
                Some(Instance {
                    writer: (role == Role::Writer.as_str()).then(|| figures(name)).flatten(),
                    role: role.to_owned(),
                    name: name.to_owned(),
                    silent_for: Duration::from_millis(u64::try_from(now_ms - at_ms).unwrap_or(0)),
                })
            })
            .collect())
    }

    /// Record `source`'s running totals `(promotion, counter, total)`, sent together (each
    /// sale's hash is its own slot on a cluster). Each field holds one process's total
    /// (`<source>|<counter>`), so sending the same figures twice (a reply lost, a retry)
    /// counts nothing twice.
    pub async fn set_counts(
        &self,
        source: &str,
        counts: &[(i64, &'static str, u64)],
    ) -> redis::RedisResult<()> {
        let writes = counts.iter().map(|(promotion_id, counter, total)| {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("HSET");
            cmd.arg(counters_key(*promotion_id))
                .arg(format!("{source}|{counter}"))
                .arg(*total);
            async move { cmd.query_async::<()>(&mut conn).await }
        });
        futures::future::try_join_all(writes).await?;
        Ok(())
    }

    /// A sale's totals by counter, added up over every process but `except` (the caller,
    /// who adds its own current figures).
    pub async fn counts(&self, promotion_id: i64, except: &str) -> redis::RedisResult<BTreeMap<String, u64>> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, u64> = redis::cmd("HGETALL")
            .arg(counters_key(promotion_id))
            .query_async(&mut conn)
            .await?;
        let mut totals = BTreeMap::new();
        for (field, n) in fields {
            if let Some((source, counter)) = field.rsplit_once('|') {
                if source != except {
                    *totals.entry(counter.to_owned()).or_insert(0) += n;
                }
            }
        }
        Ok(totals)
    }
}

/// How an instance is listed: `host:port` of its listener, with the machine's host name in
/// place of a wildcard address (`0.0.0.0` on every host would make them all one).
pub fn instance_name(host: &str, port: u16) -> String {
    let wildcard = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    let host = if wildcard {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| host.to_owned())
    } else {
        host.to_owned()
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_named_after_its_machine() {
        assert_eq!(instance_name("127.0.0.1", 8080), "127.0.0.1:8080");
        let named = instance_name("0.0.0.0", 8080);
        assert!(
            named.ends_with(":8080") && !named.starts_with("0.0.0.0"),
            "{named}"
        );
    }
}
