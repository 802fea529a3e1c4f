//! Building the gateway: connect dependencies, migrate, bind, route.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use order_core::db::MIGRATOR;
use order_core::readiness::{Dependencies, DependencySettings};
use order_core::shutdown::ShutdownListener;
use tokio::net::TcpListener;

use crate::routes;
use crate::settings::Settings;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub deps: Dependencies,
}

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
}

impl Application {
    /// Connect to Redis, PostgreSQL and Pulsar (waiting up to the configured start-up
    /// deadline), apply migrations and bind the listener. Port 0 picks a free port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let deps = Dependencies::connect(DependencySettings {
            redis: &settings.redis,
            database: &settings.database,
            pulsar: &settings.pulsar,
            connect_timeout: Duration::from_secs(settings.startup.dependency_timeout_secs),
            probe_timeout: Duration::from_millis(settings.startup.readiness_timeout_ms),
        })
        .await?;
        MIGRATOR
            .run(&deps.db)
            .await
            .context("apply database migrations")?;
        let address = settings.gateway.address();
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("bind the gateway to {address}"))?;
        let port = listener.local_addr().context("read the bound address")?.port();
        let router = routes::router(AppState { deps });
        Ok(Self {
            listener,
            router,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until `shutdown` fires, then finish in-flight requests and return.
    pub async fn run_until_stopped(self, mut shutdown: ShutdownListener) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await
            .context("serve HTTP")
    }
}
