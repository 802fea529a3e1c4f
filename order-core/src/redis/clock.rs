//! Redis' clock, as seen from this process: the one clock every instance compares sale
//! windows and reservation times with (`reserve.lua` stamps reservations with Redis' `TIME`).
//! A gateway or consumer whose own clock is off by minutes must not judge a sale started,
//! ended or due for loading differently from the Lua scripts.
//!
//! Fed by replies that carry Redis' time (the cache refresher's snapshots), and read without
//! I/O: Redis' time at the last reply plus the monotonic time since. Before the first reply
//! it falls back to this machine's clock.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct RedisClock {
    base: Mutex<Option<(Instant, i64)>>,
}

impl RedisClock {
    /// Record Redis' time (Unix ms) from a reply that just arrived.
    pub fn observe(&self, redis_ms: i64) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), redis_ms));
    }

    pub fn now_ms(&self) -> i64 {
        match *self.base.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((at, ms)) => ms + at.elapsed().as_millis() as i64,
            None => Utc::now().timestamp_millis(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_else(Utc::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_follows_redis_not_this_machine() {
        let clock = RedisClock::default();
        let an_hour_ago = Utc::now().timestamp_millis() - 3_600_000;
        clock.observe(an_hour_ago);
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        assert_eq!(clock.now_ms(), an_hour_ago + 1500);
    }
}
