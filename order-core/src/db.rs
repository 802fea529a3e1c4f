//! PostgreSQL: the schema (`MIGRATOR`) and connection pools.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::settings::{DatabaseSettings, SettingsError};

/// The schema, embedded at compile time; binaries run it at start and tests reuse it.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A pool that connects on first use, so a binary can start (and report not ready) while the
/// database is still coming up.
pub fn lazy_pool(settings: &DatabaseSettings) -> Result<PgPool, SettingsError> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        .connect_lazy_with(settings.connect_options()?))
}
