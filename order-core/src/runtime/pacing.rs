//! Pacing the order writer: a governor token bucket in rows/s whose rate adapts to observed
//! commit latency (AIMD: additive increase while commits are fast, multiplicative decrease
//! when they are slow or fail), always within configured bounds.
//!
//! The database sets the pace, not the inbound rate: rows wait in Pulsar until the bucket
//! has tokens for them.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdSettings {
    pub min_rows_per_sec: f64,
    pub max_rows_per_sec: f64,
    pub initial_rows_per_sec: f64,
    /// Rows/s added after each adjustment interval of fast commits.
    pub increase_rows_per_sec: f64,
    /// Factor applied on a slow or failed commit (e.g. 0.5).
    pub decrease_factor: f64,
    /// A commit slower than this counts as "the database is struggling".
    pub target_commit_latency: Duration,
    /// At most one change per interval, so one batch cannot swing the rate.
    pub adjust_interval: Duration,
}

/// The AIMD controller: pure logic, driven by commit observations.
#[derive(Debug, Clone)]
pub struct AimdRate {
    settings: AimdSettings,
    rate: f64,
    last_change: Option<Instant>,
    slow_seen: bool,
}

impl AimdRate {
    pub fn new(settings: AimdSettings) -> Self {
        let rate = settings
            .initial_rows_per_sec
            .clamp(settings.min_rows_per_sec, settings.max_rows_per_sec);
        Self {
            settings,
            rate,
            last_change: None,
            slow_seen: false,
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Record one commit (`None`: it failed). Returns the new rate when it changed. The rate
    /// changes at most once per adjustment interval: down if any commit in it was slow or
    /// failed, up otherwise. The very first observation acts at once only if it is trouble.
    pub fn observe(&mut self, now: Instant, commit_latency: Option<Duration>) -> Option<f64> {
        let slow = commit_latency.is_none_or(|l| l > self.settings.target_commit_latency);
        self.slow_seen |= slow;
        match self.last_change {
            None if !slow => {
                self.last_change = Some(now);
                None
            }
            Some(last) if now.duration_since(last) < self.settings.adjust_interval => None,
            _ => self.adjust(now),
        }
    }

    fn adjust(&mut self, now: Instant) -> Option<f64> {
        let old = self.rate;
        let next = if self.slow_seen {
            self.rate * self.settings.decrease_factor
        } else {
            self.rate + self.settings.increase_rows_per_sec
        };
        self.rate = next.clamp(self.settings.min_rows_per_sec, self.settings.max_rows_per_sec);
        self.last_change = Some(now);
        self.slow_seen = false;
        (self.rate != old).then_some(self.rate)
    }
}

/// A writer's batch is at most a quarter second of its current rate, so pacing stays smooth
/// at low rates (and never more than `batch_size`). At `max_rows_per_sec` this is also the
/// burst of the deployment's shared bucket: the largest batch any writer takes.
pub fn batch_limit(rate: f64, batch_size: u32) -> u32 {
    ((rate / 4.0) as u32).clamp(1, batch_size)
}

/// A token bucket of `rate` rows/s that holds at most `burst` rows.
#[derive(Debug)]
pub struct RowPacer {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl RowPacer {
    /// Starts empty: after a rate change no stored-up burst exceeds the new pace.
    pub fn new(rows_per_sec: f64, burst: u32) -> Self {
        let burst = burst.max(1);
        let period = Duration::from_secs_f64(1.0 / rows_per_sec.max(0.001));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let limiter = RateLimiter::direct(quota);
        if let Some(n) = NonZeroU32::new(burst) {
            let _ = limiter.check_n(n);
        }
        Self { limiter, burst }
    }

    /// Wait until `rows` tokens are available and spend them (`rows` is capped at the burst).
    pub async fn acquire(&self, rows: u32) {
        let n = NonZeroU32::new(rows.clamp(1, self.burst)).unwrap_or(NonZeroU32::MIN);
        // Cannot fail: n <= burst.
        let _ = self.limiter.until_n_ready(n).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AimdSettings {
        AimdSettings {
            min_rows_per_sec: 100.0,
            max_rows_per_sec: 1000.0,
            initial_rows_per_sec: 400.0,
            increase_rows_per_sec: 50.0,
            decrease_factor: 0.5,
            target_commit_latency: Duration::from_millis(100),
            adjust_interval: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fast_commits_raise_the_rate_once_per_interval_up_to_the_max() {
        let mut aimd = AimdRate::new(settings());
        let fast = Some(Duration::from_millis(10));
        assert_eq!(
            aimd.observe(Instant::now(), fast),
            None,
            "first observation starts the clock"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            aimd.observe(Instant::now(), fast),
            None,
            "not a whole interval yet"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(aimd.observe(Instant::now(), fast), Some(450.0));
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            aimd.observe(Instant::now(), fast);
        }
        assert_eq!(aimd.rate(), 1000.0, "capped at the max");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_or_failed_commits_halve_the_rate_down_to_the_min() {
        let mut aimd = AimdRate::new(settings());
        assert_eq!(
            aimd.observe(Instant::now(), Some(Duration::from_millis(500))),
            Some(200.0)
        );
        assert_eq!(
            aimd.observe(Instant::now(), None),
            None,
            "one change per interval"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            aimd.observe(Instant::now(), Some(Duration::from_millis(5))),
            Some(100.0),
            "the failure inside the interval counts"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(aimd.observe(Instant::now(), None), None, "already at the min");
        assert_eq!(aimd.rate(), 100.0);
    }

    #[test]
    fn a_batch_is_at_most_a_quarter_second_of_the_rate() {
        assert_eq!(batch_limit(100.0, 500), 25);
        assert_eq!(batch_limit(100_000.0, 500), 500);
        assert_eq!(batch_limit(1.0, 500), 1);
    }

    #[tokio::test]
    async fn the_pacer_starts_empty_and_releases_rows_at_its_rate() {
        let pacer = RowPacer::new(1000.0, 50);
        let started = std::time::Instant::now();
        for _ in 0..4 {
            pacer.acquire(50).await;
        }
        // 200 rows at 1000 rows/s, starting empty: at least ~200 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(180),
            "{:?}",
            started.elapsed()
        );
    }
}
