//! What the whole deployment did, not one process: per-sale counters every gateway adds its
//! share to, and the heartbeats of the gateways and order writers that run.
//!
//! A gateway counts locally (atomics on the hot path) and adds what it counted since its last
//! flush to `{promo:<id>}:counters` once a second, so the totals survive a gateway that
//! stops, and three gateways show the whole sale instead of a third of it. Heartbeats are
//! stamped with Redis' clock (`heartbeat.lua`) in `seckill:instances:<scope>`.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
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
}

fn counters_key(promotion_id: i64) -> String {
    format!("{{promo:{promotion_id}}}:counters")
}

#[derive(Clone)]
pub struct DeploymentStore {
    conn: ConnectionManager,
    /// `seckill:instances:<scope>`: deployments that share a Redis keep separate lists.
    instances: String,
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
    pub fn new(conn: ConnectionManager, scope: &str) -> Self {
        Self {
            conn,
            instances: format!("seckill:instances:{scope}"),
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
        redis::cmd("ZREM")
            .arg(&self.instances)
            .arg(Self::member(role, name))
            .query_async(&mut conn)
            .await
    }

    /// Once a second: `report` (what this instance adds to the deployment's totals; nothing
    /// for a writer), then this instance's heartbeat; until shutdown, then `report` once more
    /// and leave the list. A Redis outage is logged once per streak; what `report` could not
    /// add waits for the next round.
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
            let sent = match report().await {
                Ok(()) => self.heartbeat(role, &name).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(role = role.as_str(), "reporting to the deployment works again");
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(role = role.as_str(), error = %e, "heartbeat or counts not sent to Redis; kept for the next try");
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
        let ((secs, micros), members): ((i64, i64), Vec<(String, i64)>) = redis::pipe()
            .cmd("TIME")
            .cmd("ZRANGE")
            .arg(&self.instances)
            .arg(0)
            .arg(-1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let now_ms = secs * 1000 + micros / 1000;
        Ok(members
            .into_iter()
            .filter_map(|(member, at_ms)| {
                let (role, name) = member.split_once(':')?;
                Some(Instance {
                    role: role.to_owned(),
                    name: name.to_owned(),
                    silent_for: Duration::from_millis(u64::try_from(now_ms - at_ms).unwrap_or(0)),
                })
            })
            .collect())
    }

    /// Add `(promotion, counter, n)` to the deployment's totals (one round trip).
    pub async fn add_counts(&self, counts: &[(i64, &'static str, u64)]) -> redis::RedisResult<()> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (promotion_id, counter, n) in counts {
            pipe.cmd("HINCRBY")
                .arg(counters_key(*promotion_id))
                .arg(*counter)
                .arg(*n)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async(&mut conn).await
    }

    /// The deployment's totals for a sale, by counter.
    pub async fn counts(&self, promotion_id: i64) -> redis::RedisResult<BTreeMap<String, u64>> {
        let mut conn = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(counters_key(promotion_id))
            .query_async(&mut conn)
            .await
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
