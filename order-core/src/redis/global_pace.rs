//! The order writers' shared pace: one token bucket in Redis (`pace.lua`, GCRA on Redis'
//! clock) that every writer of a deployment spends from, so K consumers processes together
//! insert at most `writer.max_rows_per_sec` rows/s (invariant 5 for the deployment).
//!
//! Each writer still adapts its own rate to commit latency (`pacing::AimdRate`); this bucket
//! is the ceiling above all of them. After a Redis failover the bucket starts empty, not full
//! (the promoted replica may not have the last grants). While Redis cannot be reached no tokens are granted:
//! the writers wait, and the backlog waits in Pulsar.

use std::time::Duration;

use crate::redis::RedisConnection;
use redis::Script;

#[derive(Clone)]
pub struct GlobalPace {
    conn: RedisConnection,
    key: String,
    /// The Redis history the bucket was last spent in (`pace.lua`).
    history_key: String,
    rows_per_sec: f64,
    burst: u32,
    script: std::sync::Arc<Script>,
}

impl std::fmt::Debug for GlobalPace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalPace")
            .field("key", &self.key)
            .field("rows_per_sec", &self.rows_per_sec)
            .field("burst", &self.burst)
            .finish()
    }
}

impl GlobalPace {
    /// `scope` names the stream being paced (the seckill-orders topic), so deployments that
    /// share a Redis do not share a bucket. `burst` is one batch.
    pub fn new(conn: RedisConnection, scope: &str, rows_per_sec: f64, burst: u32) -> Self {
        Self {
            conn,
            key: format!("seckill:pace:{scope}"),
            history_key: format!("{{seckill:pace:{scope}}}:history"),
            rows_per_sec,
            burst: burst.max(1),
            script: std::sync::Arc::new(Script::new(include_str!("../../../lua/pace.lua"))),
        }
    }

    /// Ask once for `rows` tokens (capped at the burst): `Ok(None)` granted and spent,
    /// `Ok(Some(wait))` come back after `wait`.
    pub async fn try_acquire(&self, rows: u32) -> redis::RedisResult<Option<Duration>> {
        let rows = rows.clamp(1, self.burst);
        let mut conn = self.conn.clone();
        let wait_us: u64 = self
            .script
            .key(&self.key)
            .key(&self.history_key)
            .arg(self.rows_per_sec)
            .arg(self.burst)
            .arg(rows)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }
}
