//! Layered token buckets (governor): per client IP, per user, then global; and sale-token
//! requests per buyer (`sale_tokens.per_user`), all per gateway.
//!
//! Per-IP comes first so one noisy client cannot drain the per-user or global budget; the
//! global bucket is last so only traffic that passed the others spends it. Keyed buckets are
//! pruned periodically so memory follows the active clients, not every client ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub trust_forwarded_for: bool,
    pub global: Limit,
    pub per_ip: Limit,
    pub per_user: Limit,
}

impl Limit {
    pub fn quota(&self, key: &'static str) -> Result<Quota, order_core::runtime::settings::SettingsError> {
        let invalid =
            |reason: &str| order_core::runtime::settings::SettingsError::invalid(key, reason.to_owned());
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(invalid("per_second must be a positive number"));
        }
        let burst = NonZeroU32::new(self.burst).ok_or_else(|| invalid("burst must be at least 1"))?;
        let period = Duration::from_secs_f64(1.0 / self.per_second);
        Ok(Quota::with_period(period)
            .ok_or_else(|| invalid("per_second is too large"))?
            .allow_burst(burst))
    }
}

#[derive(Debug)]
pub struct RateLimits {
    global: DefaultDirectRateLimiter,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_user: DefaultKeyedRateLimiter<i64>,
    /// Sale-token requests per buyer (a script asking in a loop).
    sale_tokens: DefaultKeyedRateLimiter<i64>,
    pub trust_forwarded_for: bool,
}

impl RateLimits {
    pub fn new(
        settings: &RateLimitSettings,
        sale_tokens: &Limit,
    ) -> Result<Self, order_core::runtime::settings::SettingsError> {
        Ok(Self {
            global: governor::RateLimiter::direct(settings.global.quota("rate_limit.global")?),
            per_ip: governor::RateLimiter::keyed(settings.per_ip.quota("rate_limit.per_ip")?),
            per_user: governor::RateLimiter::keyed(settings.per_user.quota("rate_limit.per_user")?),
            sale_tokens: governor::RateLimiter::keyed(sale_tokens.quota("sale_tokens.per_user")?),
            trust_forwarded_for: settings.trust_forwarded_for,
        })
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.per_ip
            .check_key(&ip)
            .map_err(|n| too_many(n.wait_time_from(DefaultClock::default().now())))
    }

    /// Per user, then global.
    pub fn check_user(&self, user_id: i64) -> Result<(), ApiError> {
        let now = || DefaultClock::default().now();
        self.per_user
            .check_key(&user_id)
            .map_err(|n| too_many(n.wait_time_from(now())))?;
        self.global.check().map_err(|n| too_many(n.wait_time_from(now())))
    }

    /// A buyer's sale-token request, after `check_user`.
    pub fn check_token_request(&self, user_id: i64) -> Result<(), ApiError> {
        self.sale_tokens
            .check_key(&user_id)
            .map_err(|n| too_many(n.wait_time_from(DefaultClock::default().now())))
    }

    /// Drop buckets of clients that have been quiet long enough to be full again.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_user.retain_recent();
        self.sale_tokens.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_user.shrink_to_fit();
        self.sale_tokens.shrink_to_fit();
    }

    pub fn spawn_pruner(
        self: &Arc<Self>,
        mut shutdown: order_core::runtime::shutdown::ShutdownListener,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = tick.tick() => this.prune(),
                    _ = shutdown.recv() => break,
                }
            }
        })
    }
}

fn too_many(wait: Duration) -> ApiError {
    ApiError::rate_limited(wait.as_secs_f64().ceil() as u64)
}
