//! Building the consumers process: connect dependencies, migrate, subscribe, and run the
//! order writer, the recovery sweeper and the payment-timeout canceller next to the health
//! and status endpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use order_core::bus::JsonProducer;
use order_core::db::MIGRATOR;
use order_core::promotion::PromotionRepo;
use order_core::readiness::{Dependencies, DependencySettings, ReadinessReport};
use order_core::shutdown::{Shutdown, ShutdownListener};
use order_core::stock::StockStore;
use tokio::net::TcpListener;

use crate::canceller::PaymentTimeoutCanceller;
use crate::order_writer::OrderWriter;
use crate::settings::Settings;
use crate::stats::{Stats, StatusReport};
use crate::sweeper::RecoverySweeper;

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    deps: Dependencies,
    port: u16,
    stats: Arc<Stats>,
    writer: OrderWriter,
    sweeper: RecoverySweeper,
    canceller: PaymentTimeoutCanceller,
}

#[derive(Debug, Clone)]
struct HttpState {
    deps: Dependencies,
    stats: Arc<Stats>,
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

        let pulsar = &settings.pulsar;
        let stats = Arc::new(Stats::default());
        let stock = StockStore::new(deps.redis.clone());
        let publish_timeout = Duration::from_millis(pulsar.operation_timeout_ms);
        let writer = OrderWriter::new(
            &deps.pulsar,
            pulsar.topic(&pulsar.seckill_orders_topic),
            pulsar.topic(&settings.writer.dead_letter_topic),
            deps.db.clone(),
            stock.clone(),
            settings.writer.clone(),
            &settings.orders,
            Arc::clone(&stats),
        )
        .await
        .context("subscribe the order writer to seckill-orders")?;
        let republisher = JsonProducer::new(
            &deps.pulsar,
            pulsar.topic(&pulsar.seckill_orders_topic),
            None,
            publish_timeout,
        )
        .await
        .context("create the sweeper's producer")?;
        let sweeper = RecoverySweeper {
            db: deps.db.clone(),
            stock: stock.clone(),
            promotions: PromotionRepo::new(deps.db.clone()),
            producer: Arc::new(republisher),
            settings: settings.sweeper.clone(),
            stats: Arc::clone(&stats),
        };
        let order_events = JsonProducer::new(
            &deps.pulsar,
            pulsar.topic(&pulsar.order_events_topic),
            None,
            publish_timeout,
        )
        .await
        .context("create the order-events producer")?;
        let canceller = PaymentTimeoutCanceller {
            db: deps.db.clone(),
            stock,
            order_events: Arc::new(order_events),
            order_events_topic: pulsar.order_events_topic.clone(),
            settings: settings.canceller.clone(),
            stats: Arc::clone(&stats),
        };

        let address = settings.consumers.address();
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("bind the consumers' health listener to {address}"))?;
        let port = listener.local_addr().context("read the bound address")?.port();
        Ok(Self {
            listener,
            deps,
            port,
            stats,
            writer,
            sweeper,
            canceller,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dependencies(&self) -> &Dependencies {
        &self.deps
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Run the workers and the endpoints until `shutdown` fires; in-flight batches finish or
    /// are left unacknowledged for redelivery.
    pub async fn run_until_stopped(self, mut shutdown: ShutdownListener) -> anyhow::Result<()> {
        let workers = Shutdown::new();
        let tasks = vec![
            tokio::spawn(self.writer.run(workers.subscribe())),
            tokio::spawn(self.sweeper.run(workers.subscribe())),
            tokio::spawn(self.canceller.run(workers.subscribe())),
        ];
        let router = Router::new()
            .route(
                "/healthz",
                get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
            )
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .with_state(HttpState {
                deps: self.deps,
                stats: self.stats,
            });
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await
            .context("serve health endpoints");
        workers.trigger();
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(10), task).await.is_err() {
                tracing::warn!("a worker did not stop within 10 s");
            }
        }
        served
    }
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<ReadinessReport>) {
    let report = state.deps.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}

async fn status(State(state): State<HttpState>) -> Json<StatusReport> {
    Json(state.stats.report())
}
