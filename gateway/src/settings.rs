//! The gateway's typed settings (see `order_core::runtime::settings` for the layering).

use order_core::domain::ids::MAX_WORKER_ID;
use order_core::runtime::settings::{
    require_secret, ArchiveSettings, DatabaseSettings, LogSettings, PulsarSettings, RedisSettings,
    ServerSettings, SettingsError, StartupSettings, Validate,
};
use secrecy::SecretString;
use serde::Deserialize;

use crate::rate_limit::{RateLimitSettings, RateLimits};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub gateway: ServerSettings,
    pub log: LogSettings,
    pub startup: StartupSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub pulsar: PulsarSettings,
    pub auth: AuthSettings,
    pub seckill: SeckillSettings,
    pub sale_tokens: SaleTokenSettings,
    pub rate_limit: RateLimitSettings,
    pub shedding: crate::shedding::SheddingSettings,
    pub orders: OrderSettings,
    pub checkout: CheckoutSettings,
    pub payments: PaymentSettings,
    pub dashboard: DashboardSettings,
    pub http: crate::serve::HttpSettings,
    pub archive: ArchiveSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DashboardSettings {
    /// Where the consumers serve `/status` (the writer's pace and counters).
    pub consumers_status_url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderSettings {
    pub payment_timeout_secs: u64,
    /// A seckill order's status as Redis recorded it is trusted this long after it was
    /// written; then the database answers.
    pub status_max_age_secs: u64,
    /// `GET /api/orders/{id}?wait_ms=N` holds a request at most this long.
    pub long_poll_max_ms: u64,
    /// Long polls held at once per gateway; one more is 503 `too_many_waiters`.
    pub long_poll_max_waiters: usize,
    /// Where a poll of a seckill order is answered first.
    pub status_source: StatusSource,
}

/// `redis`: from Redis while the sale is current, the database otherwise (the default).
/// `database`: the database first for every poll, Redis only for orders not yet stored (the
/// earlier path, kept to measure against and to fall back to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusSource {
    Redis,
    Database,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSettings {
    pub max_connections: u32,
    pub max_concurrency: usize,
    pub queue_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentSettings {
    /// HMAC-SHA256 key the provider signs callbacks with.
    pub callback_secret: SecretString,
    pub notify_url: String,
    pub max_callback_age_secs: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeckillSettings {
    /// An operator's override; by default each gateway leases a free worker id in Redis.
    #[serde(default)]
    pub worker_id: Option<u16>,
    pub worker_lease_ttl_ms: u64,
    pub publish_timeout_ms: u64,
    pub publish_batch_size: u32,
    pub publish_batch_timeout_ms: u64,
    pub cache_refresh_ms: u64,
    pub warmup_lead_secs: u64,
}

/// Sale tokens (anti-bot): when they are handed out, how long they last, and how often one
/// buyer may ask.
#[derive(Debug, Clone, Deserialize)]
pub struct SaleTokenSettings {
    /// Tokens are handed out from this long before a sale starts, and for as long as the
    /// sale is current (a retry after its end may need a fresh one).
    pub lead_secs: u64,
    /// A token is good for this long.
    pub ttl_secs: u64,
    /// A proof-of-work puzzle must be solved within this.
    pub puzzle_ttl_secs: u64,
    /// An external verifier that takes longer is treated as unavailable (503).
    pub verifier_timeout_ms: u64,
    /// Calls to external verifiers in flight at once, per gateway; one more is 503.
    pub max_verifier_calls: usize,
    /// Token requests per buyer, per gateway.
    pub per_user: crate::rate_limit::Limit,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// HS256 key for app users' JWTs (issued by the platform's login service).
    pub jwt_secret: SecretString,
    /// Bearer key of the admin API.
    pub admin_key: SecretString,
    /// HMAC-SHA256 key of sale tokens and proof-of-work puzzles, the same on every gateway.
    pub sale_token_secret: SecretString,
    /// Checked against the `iss` claim only when set.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        self.archive.validate()?;
        self.database.validate()?;
        self.pulsar.validate()?;
        require_secret("auth.jwt_secret", &self.auth.jwt_secret, 32)?;
        require_secret("auth.admin_key", &self.auth.admin_key, 16)?;
        require_secret("auth.sale_token_secret", &self.auth.sale_token_secret, 32)?;
        let tokens = &self.sale_tokens;
        for (key, value, max) in [
            ("sale_tokens.lead_secs", tokens.lead_secs, 7 * 24 * 3600),
            ("sale_tokens.ttl_secs", tokens.ttl_secs, 24 * 3600),
            ("sale_tokens.puzzle_ttl_secs", tokens.puzzle_ttl_secs, 24 * 3600),
            (
                "sale_tokens.verifier_timeout_ms",
                tokens.verifier_timeout_ms,
                60_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(SettingsError::invalid(
                    key,
                    format!("must be between 1 and {max}"),
                ));
            }
        }
        if tokens.max_verifier_calls == 0 {
            return Err(SettingsError::invalid(
                "sale_tokens.max_verifier_calls",
                "must be at least 1",
            ));
        }
        if self.seckill.worker_id.is_some_and(|id| id > MAX_WORKER_ID) {
            return Err(SettingsError::invalid(
                "seckill.worker_id",
                format!("must be at most {MAX_WORKER_ID}"),
            ));
        }
        if self.seckill.worker_lease_ttl_ms < 1000 {
            return Err(SettingsError::invalid(
                "seckill.worker_lease_ttl_ms",
                "must be at least 1000",
            ));
        }
        if self.seckill.publish_batch_size == 0 {
            return Err(SettingsError::invalid(
                "seckill.publish_batch_size",
                "must be at least 1",
            ));
        }
        if self.seckill.cache_refresh_ms == 0 {
            return Err(SettingsError::invalid(
                "seckill.cache_refresh_ms",
                "must be at least 1",
            ));
        }
        RateLimits::new(&self.rate_limit, &self.sale_tokens.per_user)?;
        self.shedding
            .validate()
            .map_err(|e| SettingsError::invalid("shedding", e.to_string()))?;
        require_secret("payments.callback_secret", &self.payments.callback_secret, 32)?;
        if self.checkout.max_connections == 0 || self.checkout.max_concurrency == 0 {
            return Err(SettingsError::invalid(
                "checkout.max_connections",
                "checkout needs at least one connection and one slot",
            ));
        }
        Ok(())
    }
}
