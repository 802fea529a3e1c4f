//! Building the consumers process: connect dependencies, migrate, serve health.

use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use order_core::db::MIGRATOR;
use order_core::readiness::{Dependencies, DependencySettings, ReadinessReport};
use order_core::shutdown::ShutdownListener;
use tokio::net::TcpListener;

use crate::settings::Settings;

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    deps: Dependencies,
    port: u16,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let deps = Dependencies::connect(DependencySettings {
            redis: &settings.redis,
            database: &settings.database,
            pulsar: &settings.pulsar,
            connect_timeout: Duration::from_secs(settings.startup.dependency_timeout_secs),
            probe_timeout: Duration::from_millis(settings.startup.readiness_timeout_ms),
        })
        .await?;
        // Both binaries migrate at start; sqlx serialises concurrent runs with an advisory lock.
        MIGRATOR
            .run(&deps.db)
            .await
            .context("apply database migrations")?;
        let address = settings.consumers.address();
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("bind the consumers' health listener to {address}"))?;
        let port = listener.local_addr().context("read the bound address")?.port();
        Ok(Self { listener, deps, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dependencies(&self) -> &Dependencies {
        &self.deps
    }

    /// Run until `shutdown` fires.
    pub async fn run_until_stopped(self, mut shutdown: ShutdownListener) -> anyhow::Result<()> {
        let router = Router::new()
            .route(
                "/healthz",
                get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
            )
            .route("/readyz", get(readyz))
            .with_state(self.deps);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await
            .context("serve health endpoints")
    }
}

async fn readyz(State(deps): State<Dependencies>) -> (StatusCode, Json<ReadinessReport>) {
    let report = deps.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
