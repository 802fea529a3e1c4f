//! The consumers' typed settings (see `order_core::runtime::settings` for the layering).

use std::time::Duration;

use order_core::runtime::pacing::AimdSettings;
use order_core::runtime::settings::{
    ArchiveSettings, DatabaseSettings, LogSettings, PulsarSettings, RedisSettings, ServerSettings,
    SettingsError, StartupSettings, Validate,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where `/healthz`, `/readyz` and `/status` are served.
    pub consumers: ServerSettings,
    pub log: LogSettings,
    pub startup: StartupSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub pulsar: PulsarSettings,
    pub orders: OrderSettings,
    pub writer: WriterSettings,
    pub sweeper: SweeperSettings,
    pub recovery: RecoverySettings,
    /// The gateways' publish deadline (the recovery waits it out after a fence).
    pub seckill: SeckillPublishing,
    pub canceller: CancellerSettings,
    pub post_payment: PostPaymentSettings,
    pub archive: ArchiveSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PostPaymentSettings {
    pub reward_coupon_code: String,
    pub cents_per_point: i64,
    pub notification_webhook_url: String,
    pub logistics_endpoint: String,
    pub http_timeout_ms: u64,
    pub http_attempts: u32,
    pub analytics_dir: std::path::PathBuf,
    pub max_redeliveries: u32,
    /// Tries of a failing handler per delivery (with backoff up to 5 s) before the delivery
    /// is given up; after `max_redeliveries` given-up deliveries the event is dead-lettered.
    pub handler_attempts: u32,
    pub shipment_interval_ms: u64,
    /// A shipment waits this long after payment before it is handed over.
    pub handover_after_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderSettings {
    pub payment_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WriterSettings {
    pub subscription: String,
    pub batch_size: u32,
    pub linger_ms: u64,
    pub min_rows_per_sec: f64,
    pub max_rows_per_sec: f64,
    pub initial_rows_per_sec: f64,
    pub increase_rows_per_sec: f64,
    pub decrease_factor: f64,
    pub target_commit_latency_ms: u64,
    pub adjust_interval_ms: u64,
    pub max_redeliveries: u32,
    pub dead_letter_topic: String,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// The broker's Prometheus endpoint, for the subscription's backlog on `/status`
    /// (empty: not shown).
    #[serde(default)]
    pub broker_metrics_url: String,
}

impl WriterSettings {
    pub fn aimd(&self) -> AimdSettings {
        AimdSettings {
            min_rows_per_sec: self.min_rows_per_sec,
            max_rows_per_sec: self.max_rows_per_sec,
            initial_rows_per_sec: self.initial_rows_per_sec,
            increase_rows_per_sec: self.increase_rows_per_sec,
            decrease_factor: self.decrease_factor,
            target_commit_latency: Duration::from_millis(self.target_commit_latency_ms),
            adjust_interval: Duration::from_millis(self.adjust_interval_ms),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SweeperSettings {
    pub interval_ms: u64,
    pub republish_after_secs: u64,
    pub batch_size: usize,
}

/// The recovery of sales whose Redis node lost writes (`redis_recovery`).
#[derive(Debug, Clone, Deserialize)]
pub struct RecoverySettings {
    /// How often every current sale's shards are checked.
    pub interval_ms: u64,
    /// Reading a sale's accepted orders back from the broker gives up after this.
    pub read_deadline_ms: u64,
}

/// What the consumers read of the gateways' `[seckill]` section (the same config files).
#[derive(Debug, Clone, Deserialize)]
pub struct SeckillPublishing {
    pub publish_timeout_ms: u64,
}

impl Settings {
    /// How long after a fence a sale is rebuilt: past the gateways' publish deadline, every
    /// order confirmed before the fence is in the broker, or its publish has failed.
    pub fn recovery_grace(&self) -> Duration {
        Duration::from_millis(self.seckill.publish_timeout_ms + 500)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CancellerSettings {
    pub interval_ms: u64,
    pub batch_size: i64,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        self.archive.validate()?;
        let r = &self.recovery;
        for (key, value) in [
            ("recovery.interval_ms", r.interval_ms),
            ("recovery.read_deadline_ms", r.read_deadline_ms),
        ] {
            if value == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        self.database.validate()?;
        self.pulsar.validate()?;
        let w = &self.writer;
        let positive = [
            ("writer.min_rows_per_sec", w.min_rows_per_sec),
            ("writer.increase_rows_per_sec", w.increase_rows_per_sec),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(SettingsError::invalid(key, "must be a positive number"));
            }
        }
        if !(w.max_rows_per_sec.is_finite() && w.max_rows_per_sec >= w.min_rows_per_sec) {
            return Err(SettingsError::invalid(
                "writer.max_rows_per_sec",
                "must be at least min_rows_per_sec",
            ));
        }
        if !(w.decrease_factor > 0.0 && w.decrease_factor < 1.0) {
            return Err(SettingsError::invalid(
                "writer.decrease_factor",
                "must be between 0 and 1",
            ));
        }
        if w.batch_size == 0 {
            return Err(SettingsError::invalid("writer.batch_size", "must be at least 1"));
        }
        if w.max_redeliveries == 0 {
            return Err(SettingsError::invalid(
                "writer.max_redeliveries",
                "must be at least 1",
            ));
        }
        if self.canceller.batch_size < 1 {
            return Err(SettingsError::invalid(
                "canceller.batch_size",
                "must be at least 1",
            ));
        }
        if self.post_payment.cents_per_point <= 0 {
            return Err(SettingsError::invalid(
                "post_payment.cents_per_point",
                "must be at least 1",
            ));
        }
        if self.post_payment.http_attempts == 0 {
            return Err(SettingsError::invalid(
                "post_payment.http_attempts",
                "must be at least 1",
            ));
        }
        if self.sweeper.batch_size == 0 {
            return Err(SettingsError::invalid("sweeper.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}
