//! The consumers' typed settings (see `order_core::settings` for the layering).

use order_core::settings::{
    DatabaseSettings, LogSettings, PulsarSettings, RedisSettings, ServerSettings, SettingsError,
    StartupSettings, Validate,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Where `/healthz` and `/readyz` are served.
    pub consumers: ServerSettings,
    pub log: LogSettings,
    pub startup: StartupSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub pulsar: PulsarSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        self.database.validate()?;
        self.pulsar.validate()
    }
}
