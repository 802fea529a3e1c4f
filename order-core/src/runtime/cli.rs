//! The command line both service binaries share: where their settings come from, and the
//! `migrate` command. Parsed before anything connects, so `--help`, `--version` and a typo
//! touch nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::runtime::settings::{DatabaseSettings, Environment, SettingsSource};

/// Shown under `--help`: every setting can come from the environment.
pub const ENVIRONMENT_HELP: &str = "\
Settings, later wins: <config>/base.toml, <config>/<environment>.toml, then environment
variables APP_<SECTION>__<KEY> (e.g. APP_GATEWAY__PORT=9000, APP_LOG__FILTER=debug).
  APP_CONFIG_DIR             the config directory (same as --config; default ./config)
  APP_ENVIRONMENT            local (default) or production (same as --environment)
  REDIS_URL, DATABASE_URL, PULSAR_URL
                             short forms of APP_REDIS__URL, APP_DATABASE__URL, APP_PULSAR__URL
  APP_AUTH__JWT_SECRET, APP_AUTH__ADMIN_KEY, APP_AUTH__SALE_TOKEN_SECRET,
  APP_PAYMENTS__CALLBACK_SECRET
                             secrets (never in a file outside development; never logged)
  APP_STARTUP__MIGRATE       apply migrations at start (true in config/local.toml)
  RUST_LOG                   overrides log.filter";

/// Where the settings come from.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// The config directory holding base.toml and <environment>.toml.
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,
    /// local or production.
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
}

impl ConfigArgs {
    /// The process environment, with the flags on top.
    pub fn source(&self) -> anyhow::Result<SettingsSource> {
        let mut source = SettingsSource::from_process_env()?;
        if let Some(dir) = &self.config {
            source = source.with_dir(dir);
        }
        if let Some(name) = &self.environment {
            source = source.with_environment(name.parse::<Environment>()?);
        }
        Ok(source)
    }
}

/// What a service binary is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ServiceCommand {
    /// Run the service until SIGTERM or Ctrl-C (the default).
    Serve,
    /// Apply the database migrations the database lacks, then exit (run once before a new
    /// version rolls out; concurrent runs wait for each other).
    Migrate,
}

/// `migrate`: connect (waiting up to `timeout`), apply, report how many were applied.
pub async fn migrate(database: &DatabaseSettings, timeout: Duration) -> anyhow::Result<usize> {
    let db = crate::runtime::readiness::connect_database(database, Instant::now() + timeout).await?;
    crate::postgres::migrate(&db)
        .await
        .context("apply database migrations")
}

/// Do what the command line asked: `migrate` (logging how many were applied), or `serve`
/// (the default) by running `serve` to its end.
pub async fn dispatch<Fut>(
    command: Option<ServiceCommand>,
    database: &DatabaseSettings,
    timeout: Duration,
    serve: impl FnOnce() -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    match command.unwrap_or(ServiceCommand::Serve) {
        ServiceCommand::Migrate => {
            let applied = migrate(database, timeout).await?;
            tracing::info!(applied, "database schema up to date");
            Ok(())
        }
        ServiceCommand::Serve => serve().await,
    }
}

/// A service's port, taken before anything else starts: listening (so a second copy fails
/// here, before it connects, migrates or subscribes to anything), and closing every
/// connection at once while the service starts (so a client or load balancer learns it
/// cannot be served yet, instead of waiting in the backlog). `ready` hands the listener to
/// the server.
#[derive(Debug)]
pub struct ReservedPort {
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    turning_away: tokio::task::JoinHandle<tokio::net::TcpListener>,
}

impl ReservedPort {
    /// Bind `address` (`host:port`; port 0 picks a free one).
    pub async fn bind(address: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let port = listener.local_addr()?.port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let turning_away = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return listener,
                    // Accepted and dropped: the client sees the connection close.
                    accepted = listener.accept() => drop(accepted),
                }
            }
        });
        Ok(Self {
            port,
            stop,
            turning_away,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop turning connections away; the listener, for the server.
    pub async fn ready(self) -> std::io::Result<tokio::net::TcpListener> {
        let _ = self.stop.send(());
        self.turning_away.await.map_err(std::io::Error::other)
    }
}
