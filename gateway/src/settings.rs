//! The gateway's typed settings (see `order_core::settings` for the layering).

use order_core::settings::{
    require_secret, DatabaseSettings, LogSettings, PulsarSettings, RedisSettings, ServerSettings,
    SettingsError, StartupSettings, Validate,
};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub gateway: ServerSettings,
    pub log: LogSettings,
    pub startup: StartupSettings,
    pub redis: RedisSettings,
    pub database: DatabaseSettings,
    pub pulsar: PulsarSettings,
    pub auth: AuthSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    /// HS256 key for app users' JWTs (issued by the platform's login service).
    pub jwt_secret: SecretString,
    /// Bearer key of the admin API.
    pub admin_key: SecretString,
    /// Checked against the `iss` claim only when set.
    #[serde(default)]
    pub jwt_issuer: Option<String>,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        self.database.validate()?;
        self.pulsar.validate()?;
        require_secret("auth.jwt_secret", &self.auth.jwt_secret, 32)?;
        require_secret("auth.admin_key", &self.auth.admin_key, 16)?;
        Ok(())
    }
}
