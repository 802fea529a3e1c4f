//! PostgreSQL adapter: the schema (`MIGRATOR`), connection pools, and every query of the
//! order database, one module per table group or transaction.
//!
//! Queries are `sqlx::query!`/`query_as!`, checked against the schema at compile time (the
//! committed `.sqlx/` data when no database is at hand). Rows are read into structs here and
//! turned into domain types before they leave this module tree.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::runtime::settings::{DatabaseSettings, SettingsError};

pub mod cancellation;
pub mod catalog;
pub mod checkout;
pub mod order_data;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod persist;
pub mod post_payment;
pub mod processed;
pub mod promotions;
pub mod transitions;

/// The order database's connection pool. The binaries hold and pass it; only this module
/// tree queries it (the binaries depend on no database crate).
pub type Pool = PgPool;

/// A failed call to the order database (an outage or a bug: see `runtime::transient`).
pub type Error = sqlx::Error;

/// A value a row stores as text (a status), parsed into its domain type. One the domain does
/// not know means the schema's checks and the code disagree: a bug, reported as a decode
/// error.
pub(crate) fn stored<T: std::str::FromStr<Err = String>>(raw: &str) -> sqlx::Result<T> {
    raw.parse::<T>().map_err(|e| sqlx::Error::Decode(e.into()))
}

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

/// Migrations this database has applied successfully (0 on an empty database).
async fn applied_migrations(db: &PgPool) -> Result<usize, sqlx::Error> {
    let has_table = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM pg_catalog.pg_tables WHERE tablename = '_sqlx_migrations'"#
    )
    .fetch_one(db)
    .await?;
    if has_table == 0 {
        return Ok(0);
    }
    let applied = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM _sqlx_migrations WHERE success"#)
        .fetch_one(db)
        .await?;
    Ok(usize::try_from(applied).unwrap_or(0))
}

/// Apply the migrations the database lacks (`<binary> migrate`, or at start when
/// `startup.migrate` is on); returns how many were applied. Concurrent runs are serialised by
/// sqlx's advisory lock.
pub async fn migrate(db: &PgPool) -> Result<usize, sqlx::migrate::MigrateError> {
    let before = applied_migrations(db).await?;
    MIGRATOR.run(db).await?;
    Ok(MIGRATOR.iter().count().saturating_sub(before))
}

/// At start: with `startup.migrate` on (development), apply what is missing and say how
/// much, once; with it off (production), refuse to run on a schema this build does not
/// expect, naming the command that fixes it.
pub async fn migrate_at_start(db: &PgPool, enabled: bool) -> anyhow::Result<()> {
    if enabled {
        let applied = migrate(db).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        return Ok(());
    }
    let pending = MIGRATOR
        .iter()
        .count()
        .saturating_sub(applied_migrations(db).await?);
    anyhow::ensure!(
        pending == 0,
        "the database lacks {pending} migration(s) this build needs: run `gateway migrate` (or `consumers migrate`) first, or set startup.migrate"
    );
    Ok(())
}
