//! Building the consumers process: bind, connect dependencies, migrate (when configured),
//! subscribe, and run the order writer, the recovery sweeper and the payment-timeout
//! canceller next to the health and status endpoints.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use order_core::bus::JsonProducer;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::deployment::{DeploymentStore, Role, WriterFigures};
use order_core::redis::global_pace::GlobalPace;
use order_core::redis::stock::StockStore;
use order_core::runtime::cli::ReservedPort;
use order_core::runtime::readiness::{Dependencies, DependencySettings, ReadinessReport};
use order_core::runtime::shutdown::{Shutdown, ShutdownListener};
use order_core::runtime::supervisor::{Health, HealthReport, Supervisor};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::broker_backlog::{BacklogReading, BrokerBacklog};
use crate::canceller::PaymentTimeoutCanceller;
use crate::order_data::OrderDataTask;
use crate::order_writer::OrderWriter;
use order_core::app::payment_expiry::PaymentExpiry;
use order_core::app::post_payment::ShipmentHandOff;
use order_core::app::sweep::RecoverySweep;

use crate::post_payment::analytics::Analytics;
use crate::post_payment::logistics::{Logistics, ShipmentRelay};
use crate::post_payment::notifications::{Notifications, Notifier, OutboxNotifier, WebhookNotifier};
use crate::post_payment::points::Points;
use crate::post_payment::rewards::Rewards;
use crate::post_payment::{EventWorker, Handler};
use crate::redis_recovery::{RecoveryReport, RecoveryWorker};
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
    recovery: RecoveryWorker,
    canceller: PaymentTimeoutCanceller,
    event_workers: Vec<EventWorker>,
    shipments: ShipmentRelay,
    order_data: OrderDataTask,
    backlog: BrokerBacklog,
    supervisor: Supervisor,
    /// `host:port`, as the dashboard lists this writer.
    instance_name: String,
    deployment: DeploymentStore,
}

#[derive(Debug, Clone)]
struct HttpState {
    deps: Dependencies,
    stats: Arc<Stats>,
    backlog: BrokerBacklog,
    health: Health,
    recovery: Arc<std::sync::Mutex<RecoveryReport>>,
}

/// `/status`: the counters, the writer subscription's backlog as the broker counts it, and
/// the sales fenced and recovered after Redis lost writes.
#[derive(Debug, Serialize)]
struct StatusBody {
    #[serde(flatten)]
    report: StatusReport,
    broker_backlog: BacklogReading,
    /// Redis' topology, where the current sales live, fences and recoveries.
    redis: RecoveryReport,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The port first: a second copy started by mistake fails here, before it connects,
        // migrates or subscribes as an order writer (until the workers are built it closes connections at once).
        let address = settings.consumers.address();
        let reserved = ReservedPort::bind(&address)
            .await
            .with_context(|| format!("bind the consumers' health listener to {address}"))?;
        let port = reserved.port();
        let instance_name = order_core::redis::deployment::instance_name(&settings.consumers.host, port);
        let deps = Dependencies::connect(DependencySettings {
            redis: &settings.redis,
            database: &settings.database,
            pulsar: &settings.pulsar,
            connect_timeout: Duration::from_secs(settings.startup.dependency_timeout_secs),
            probe_timeout: Duration::from_millis(settings.startup.readiness_timeout_ms),
        })
        .await?;
        // Only when configured (development); concurrent runs are serialised by an advisory
        // lock.
        order_core::postgres::migrate_at_start(&deps.db, settings.startup.migrate)
            .await
            .context("apply database migrations")?;

        order_core::runtime::metrics::install();
        let pulsar = &settings.pulsar;
        let stats = Arc::new(Stats::default());
        let stock = StockStore::new(deps.redis.clone());
        let publish_timeout = Duration::from_millis(pulsar.operation_timeout_ms);
        // Conflicting orders are parked on the writer's dead-letter topic by the writer itself
        // (the client dead-letters only after redeliveries).
        let dead_letters = JsonProducer::new(
            &deps.pulsar,
            pulsar.topic(&settings.writer.dead_letter_topic),
            None,
            publish_timeout,
        )
        .await
        .context("create the writer's dead-letter producer")?;
        let global_pace = GlobalPace::new(
            deps.redis.clone(),
            &pulsar.topic(&pulsar.seckill_orders_topic),
            settings.writer.max_rows_per_sec,
            order_core::runtime::pacing::batch_limit(
                settings.writer.max_rows_per_sec,
                settings.writer.batch_size,
            ),
        );
        let writer = OrderWriter::new(
            &deps.pulsar,
            pulsar.topic(&pulsar.seckill_orders_topic),
            pulsar.topic(&settings.writer.dead_letter_topic),
            deps.db.clone(),
            stock.clone(),
            global_pace,
            Arc::new(dead_letters),
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
            sweep: RecoverySweep::new(
                deps.db.clone(),
                stock.clone(),
                deps.confirmer.clone(),
                Arc::new(republisher),
                Duration::from_secs(settings.sweeper.republish_after_secs),
                settings.sweeper.batch_size,
            ),
            interval: Duration::from_millis(settings.sweeper.interval_ms),
            stats: Arc::clone(&stats),
        };
        let recovery = RecoveryWorker {
            recovery: order_core::app::recovery::SaleRecovery {
                db: deps.db.clone(),
                stock: stock.clone(),
                confirmer: deps.confirmer.clone(),
                reader: order_core::bus::TopicReader::new(
                    deps.pulsar.clone(),
                    pulsar.topic(&pulsar.seckill_orders_topic),
                ),
                read_deadline: Duration::from_millis(settings.recovery.read_deadline_ms),
            },
            promotions: PromotionRepo::new(deps.db.clone()),
            settings: settings.recovery.clone(),
            grace: settings.recovery_grace(),
            stats: Arc::clone(&stats),
            report: Default::default(),
            redis: settings.redis.clone(),
            conn: deps.redis.clone(),
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
            expiry: PaymentExpiry::new(
                deps.db.clone(),
                stock,
                Arc::new(order_events),
                pulsar.order_events_topic.clone(),
                settings.canceller.batch_size,
            ),
            settings: settings.canceller.clone(),
            stats: Arc::clone(&stats),
        };

        let post = &settings.post_payment;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(post.http_timeout_ms))
            .build()
            .context("build the HTTP client")?;
        let notifier: Box<dyn Notifier> = if post.notification_webhook_url.is_empty() {
            Box::new(OutboxNotifier { db: deps.db.clone() })
        } else {
            Box::new(WebhookNotifier {
                client: http.clone(),
                url: post.notification_webhook_url.clone(),
                attempts: post.http_attempts,
            })
        };
        let handlers: Vec<Box<dyn Handler>> = vec![
            Box::new(Rewards {
                db: deps.db.clone(),
                template_code: post.reward_coupon_code.clone(),
            }),
            Box::new(Points {
                db: deps.db.clone(),
                cents_per_point: post.cents_per_point,
            }),
            Box::new(Notifications::new(deps.db.clone(), notifier)),
            Box::new(Logistics { db: deps.db.clone() }),
            Box::new(Analytics::new(deps.db.clone(), post.analytics_dir.clone())?),
        ];
        let mut event_workers = Vec::with_capacity(handlers.len());
        for handler in handlers {
            let dlq = pulsar.topic(&format!("{}-dlq-{}", pulsar.order_events_topic, handler.name()));
            let name = handler.name();
            event_workers.push(
                EventWorker::subscribe(
                    &deps.pulsar,
                    pulsar.topic(&pulsar.order_events_topic),
                    dlq,
                    post.max_redeliveries,
                    post.handler_attempts,
                    handler,
                )
                .await
                .with_context(|| format!("subscribe the {name} worker to order-events"))?,
            );
        }
        let order_data = OrderDataTask {
            db: deps.db.clone(),
            stock: StockStore::new(deps.redis.clone()),
            deployment: DeploymentStore::new(deps.redis.clone(), &pulsar.topic(&pulsar.seckill_orders_topic)),
            settings: settings.archive.clone(),
        };
        let shipments = ShipmentRelay {
            hand_off: ShipmentHandOff::new(
                deps.db.clone(),
                pulsar.order_events_topic.clone(),
                Duration::from_secs(post.handover_after_secs),
            ),
            client: http,
            endpoint: post.logistics_endpoint.clone(),
            attempts: post.http_attempts,
            interval: Duration::from_millis(post.shipment_interval_ms),
        };
        let backlog = BrokerBacklog::new(
            &settings.writer.broker_metrics_url,
            &pulsar.topic(&pulsar.seckill_orders_topic),
            &settings.writer.subscription,
        )
        .context("build the broker metrics client")?;
        // Ready: from here health checks are answered (before, connections were closed at once).
        let listener = reserved
            .ready()
            .await
            .with_context(|| format!("serve on {address}"))?;
        let deployment =
            DeploymentStore::new(deps.redis.clone(), &pulsar.topic(&pulsar.seckill_orders_topic));
        Ok(Self {
            listener,
            deps,
            port,
            stats,
            writer,
            sweeper,
            recovery,
            canceller,
            event_workers,
            shipments,
            order_data,
            backlog,
            supervisor: Supervisor::default(),
            instance_name,
            deployment,
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

    /// Whether every worker still runs (what `/healthz` answers).
    pub fn health(&self) -> Health {
        self.supervisor.health()
    }

    /// Run one more task under this process's supervisor, from now on: if it ends before
    /// shutdown, the process stops like for any of its own workers (tests inject faults here).
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.supervisor.spawn(name, task);
    }

    /// Run the workers and the endpoints until `shutdown` fires; in-flight batches finish or
    /// are left unacknowledged for redelivery. A worker that stops before that stops the
    /// process: the error names it (see `order_core::runtime::supervisor`).
    pub async fn run_until_stopped(mut self, shutdown: ShutdownListener) -> anyhow::Result<()> {
        let workers = Shutdown::new();
        let supervisor = &mut self.supervisor;
        supervisor.spawn("order writer", self.writer.run(workers.subscribe()));
        supervisor.spawn("recovery sweeper", self.sweeper.run(workers.subscribe()));
        let recovery_report = Arc::clone(&self.recovery.report);
        supervisor.spawn("redis recovery", self.recovery.run(workers.subscribe()));
        supervisor.spawn(
            "payment-timeout canceller",
            self.canceller.run(workers.subscribe()),
        );
        supervisor.spawn("shipment relay", self.shipments.run(workers.subscribe()));
        supervisor.spawn("order data", self.order_data.run(workers.subscribe()));
        for worker in self.event_workers {
            supervisor.spawn(worker.name(), worker.run(workers.subscribe()));
        }
        supervisor.spawn(
            "writer heartbeat",
            // The dashboard lists this writer and adds up the writers' pace and rows.
            {
                let (store, name, stats) = (
                    self.deployment.clone(),
                    self.instance_name.clone(),
                    Arc::clone(&self.stats),
                );
                self.deployment.heartbeat_until_shutdown(
                    Role::Writer,
                    self.instance_name,
                    workers.subscribe(),
                    move || {
                        let (store, name, stats) = (store.clone(), name.clone(), Arc::clone(&stats));
                        async move {
                            let report = stats.report();
                            let figures = WriterFigures {
                                rows_per_sec: report.writer_rows_per_sec,
                                rows_inserted: report.get("rows_inserted"),
                            };
                            store.set_writer_figures(&name, figures).await
                        }
                    },
                )
            },
        );
        let router = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/status", get(status))
            .route("/metrics", get(metrics_text))
            .with_state(HttpState {
                deps: self.deps,
                stats: self.stats,
                backlog: self.backlog,
                health: self.supervisor.health(),
                recovery: recovery_report,
            });
        let http_stop = Shutdown::new();
        let mut http_stopped = http_stop.subscribe();
        let listener = self.listener;
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_stopped.recv().await })
                .await
                .context("serve health endpoints")
        });
        self.supervisor
            .run_with_server(server, &http_stop, &workers, shutdown, Duration::from_secs(10))
            .await
    }
}

async fn healthz(State(state): State<HttpState>) -> (StatusCode, Json<HealthReport>) {
    let report = state.health.report();
    let status = match report.failure {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(report))
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

async fn metrics_text() -> String {
    order_core::runtime::metrics::install().render()
}

async fn status(State(state): State<HttpState>) -> Json<StatusBody> {
    Json(StatusBody {
        report: state.stats.report(),
        broker_backlog: state.backlog.read().await,
        redis: state.recovery.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    })
}
