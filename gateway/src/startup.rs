//! Building the gateway: connect dependencies, migrate, create the producer, start the
//! background tasks (cache refresher, limiter pruning), bind, route.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use order_core::app::catalog::CatalogAdmin;
use order_core::app::checkout::Checkout;
use order_core::app::lifecycle::OrderLifecycle;
use order_core::app::order_status::{FirstAsked, OrderStatusReader};
use order_core::app::sale_admin::SaleAdmin;
use order_core::app::seckill::SeckillOrders;
use order_core::bus::JsonProducer;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::deployment::DeploymentStore;
use order_core::redis::stock::StockStore;
use order_core::redis::worker_lease::{LeaseSettings, WorkerLease};
use order_core::runtime::cli::ReservedPort;
use order_core::runtime::readiness::{Dependencies, DependencySettings};
use order_core::runtime::shutdown::{Shutdown, ShutdownListener};
use order_core::runtime::supervisor::{Health, Supervisor};
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::order_watch::OrderWatch;
use crate::promotion_cache::PromotionCache;
use crate::rate_limit::RateLimits;
use crate::routes;
use crate::sale_counters::SaleCounters;
use crate::sale_tokens::SaleTokens;
use crate::settings::{Settings, StatusSource};
use crate::state::{
    AdminRoutes, AppContext, AppState, CheckoutRoutes, OpsRoutes, OrderRoutes, SeckillRoutes,
};

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    port: u16,
    http: crate::serve::HttpSettings,
    /// Stops the background tasks when the server stops.
    tasks: Shutdown,
    /// Watches them: one that stops before shutdown stops the gateway.
    supervisor: Supervisor,
    /// Released when the server stops, so held long polls do not hold up the drain.
    order_watch: Arc<crate::order_watch::OrderWatch>,
    seckill_limiter: Arc<crate::shedding::SeckillLimiter>,
}

impl Application {
    /// Bind the listener (port 0 picks a free port), then connect to Redis, PostgreSQL and
    /// Pulsar (waiting up to the configured start-up deadline), apply migrations when
    /// `startup.migrate` is on, and start the background tasks.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The port first: a second copy started by mistake fails here, before it connects,
        // migrates, leases a worker id or subscribes to anything. Until it can serve, it
        // closes every connection at once rather than leave clients waiting.
        let address = settings.gateway.address();
        let reserved = ReservedPort::bind(&address)
            .await
            .with_context(|| format!("bind the gateway to {address}"))?;
        let port = reserved.port();
        let deps = Dependencies::connect(DependencySettings {
            redis: &settings.redis,
            database: &settings.database,
            pulsar: &settings.pulsar,
            connect_timeout: Duration::from_secs(settings.startup.dependency_timeout_secs),
            probe_timeout: Duration::from_millis(settings.startup.readiness_timeout_ms),
        })
        .await?;
        order_core::postgres::migrate_at_start(&deps.db, settings.startup.migrate)
            .await
            .context("apply database migrations")?;
        order_core::runtime::metrics::install();

        let seckill = &settings.seckill;
        let publisher = JsonProducer::new(
            &deps.pulsar,
            settings.pulsar.topic(&settings.pulsar.seckill_orders_topic),
            Some((
                seckill.publish_batch_size,
                Duration::from_millis(seckill.publish_batch_timeout_ms),
            )),
            Duration::from_millis(seckill.publish_timeout_ms),
        )
        .await
        .context("create the seckill-orders producer")?;
        let ids = WorkerLease::acquire(
            deps.confirmer.connection(),
            uuid::Uuid::new_v4().to_string(),
            LeaseSettings {
                ttl: Duration::from_millis(seckill.worker_lease_ttl_ms),
                worker_id: seckill.worker_id,
                replicas: deps.confirmer.replicas(),
                replica_timeout: deps.confirmer.timeout(),
            },
        )
        .await
        .context("lease a worker id for order ids")?;
        let mut supervisor = Supervisor::default();
        let cache = Arc::new(PromotionCache::default());
        let limits = Arc::new(RateLimits::new(
            &settings.rate_limit,
            &settings.sale_tokens.per_user,
        )?);
        let counters: Arc<SaleCounters> = Default::default();
        let stock = StockStore::new(deps.redis.clone());
        let order_watch = Arc::new(OrderWatch::new(settings.orders.long_poll_max_waiters));
        let deployment = DeploymentStore::new(
            deps.redis.clone(),
            &settings.pulsar.topic(&settings.pulsar.seckill_orders_topic),
        );
        let seckill_routes = SeckillRoutes {
            limits: limits.clone(),
            cache: cache.clone(),
            stock: stock.clone(),
            seckill: SeckillOrders::new(
                stock.clone(),
                deps.confirmer.clone(),
                Arc::new(publisher),
                PromotionRepo::new(deps.db.clone()),
            ),
            ids: ids.clone(),
            counters: counters.clone(),
            sale_tokens: SaleTokens::new(&settings.auth.sale_token_secret, &settings.sale_tokens)
                .context("set up sale tokens")?,
        };
        let order_routes = OrderRoutes {
            limits: limits.clone(),
            cache: cache.clone(),
            order_watch: order_watch.clone(),
            order_status: OrderStatusReader::new(
                stock.clone(),
                deps.db.clone(),
                settings.archive.dir.clone(),
                match settings.orders.status_source {
                    StatusSource::Redis => FirstAsked::Redis,
                    StatusSource::Database => FirstAsked::Database,
                },
                Duration::from_secs(settings.orders.status_max_age_secs),
            ),
            long_poll_max: Duration::from_millis(settings.orders.long_poll_max_ms),
        };
        let checkout_routes = CheckoutRoutes {
            limits: limits.clone(),
            cache: cache.clone(),
            ids: ids.clone(),
            checkout: Checkout::new(
                order_core::postgres::lazy_pool(&order_core::runtime::settings::DatabaseSettings {
                    max_connections: settings.checkout.max_connections,
                    ..settings.database.clone()
                })?,
                stock.clone(),
                Duration::from_secs(settings.orders.payment_timeout_secs),
                settings.pulsar.order_events_topic.clone(),
            ),
            slots: tokio::sync::Semaphore::new(settings.checkout.max_concurrency),
            queue_timeout: Duration::from_millis(settings.checkout.queue_timeout_ms),
            payments: settings.payments.clone(),
        };
        let admin_routes = AdminRoutes {
            cache: cache.clone(),
            sale_admin: SaleAdmin::new(
                deps.db.clone(),
                stock.clone(),
                cache.clock.clone(),
                Duration::from_secs(seckill.warmup_lead_secs),
            ),
            catalog: CatalogAdmin::new(deps.db.clone()),
            operator_lifecycle: OrderLifecycle::new(
                deps.db.clone(),
                stock.clone(),
                settings.pulsar.order_events_topic.clone(),
            ),
            counters: counters.clone(),
            deployment: deployment.clone(),
        };
        let ops_routes = OpsRoutes {
            deps: deps.clone(),
            health: supervisor.health(),
            consumers_status_url: settings.dashboard.consumers_status_url.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .context("build the HTTP client")?,
        };
        let state = AppState::new(AppContext {
            auth: Arc::new(Authenticator::new(&settings.auth)),
            limits,
            seckill_limiter: Arc::new(crate::shedding::SeckillLimiter::new(&settings.shedding)),
            cache,
            stock,
            ids,
            promotions: PromotionRepo::new(deps.db.clone()),
            warmup_lead: Duration::from_secs(seckill.warmup_lead_secs),
            counters,
            deployment,
            body_read_timeout: Duration::from_millis(settings.http.body_read_timeout_ms),
            order_watch,
            seckill_routes: Arc::new(seckill_routes),
            order_routes: Arc::new(order_routes),
            checkout_routes: Arc::new(checkout_routes),
            admin_routes: Arc::new(admin_routes),
            ops_routes: Arc::new(ops_routes),
            deps,
        });

        // A first refresh before serving, so a fresh gateway knows the running sales.
        let (definitions, live) = state
            .cache
            .refresh(&state.promotions, &state.stock, state.warmup_lead)
            .await;
        if let Err(e) = definitions.and(live) {
            tracing::warn!(
                error = format!("{e:#}"),
                "initial promotion cache load failed; retrying in the background"
            );
        }
        let tasks = Shutdown::new();
        supervisor.watch(
            "worker-id lease renewal",
            state.ids.spawn_renewal(tasks.subscribe()),
        );
        supervisor.watch(
            "promotion cache refresher",
            state.cache.spawn_refresher(
                state.promotions.clone(),
                state.stock.clone(),
                Duration::from_millis(seckill.cache_refresh_ms),
                state.warmup_lead,
                tasks.subscribe(),
            ),
        );
        supervisor.watch("rate-limit pruner", state.limits.spawn_pruner(tasks.subscribe()));
        supervisor.spawn(
            "order status subscription",
            Arc::clone(&state.order_watch).run(settings.redis.clone(), tasks.subscribe()),
        );
        let order_watch = Arc::clone(&state.order_watch);
        let seckill_limiter = Arc::clone(&state.seckill_limiter);
        supervisor.watch(
            "sale counters publisher",
            state.counters.spawn_publisher(
                state.deployment.clone(),
                order_core::redis::deployment::instance_name(&settings.gateway.host, port),
                tasks.subscribe(),
            ),
        );
        let spec = routes::health::ServedSpec(Arc::new(crate::openapi::spec()));
        let router = routes::router(state).layer(axum::Extension(spec));
        // Ready: from here connections are served (before, they were closed at once).
        let listener = reserved
            .ready()
            .await
            .with_context(|| format!("serve on {address}"))?;
        Ok(Self {
            listener,
            router,
            port,
            http: settings.http.clone(),
            tasks,
            supervisor,
            order_watch,
            seckill_limiter,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The long polls this gateway holds (tests and diagnostics).
    pub fn order_watch(&self) -> Arc<crate::order_watch::OrderWatch> {
        Arc::clone(&self.order_watch)
    }

    /// The seckill route's adaptive limit (tests and diagnostics).
    pub fn seckill_limiter(&self) -> Arc<crate::shedding::SeckillLimiter> {
        Arc::clone(&self.seckill_limiter)
    }

    /// Whether every background task still runs (what `/healthz` answers).
    pub fn health(&self) -> Health {
        self.supervisor.health()
    }

    /// Run one more task under this gateway's supervisor, from now on: if it ends before
    /// shutdown, the gateway stops like for any of its own tasks (tests inject faults here).
    pub fn supervise(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.supervisor.spawn(name, task);
    }

    /// Serve until `shutdown` fires, then finish in-flight requests and return. A background
    /// task that stops before that stops the gateway: the error names it (a gateway whose
    /// cache refresher died would keep refusing or accepting on a stale view).
    pub async fn run_until_stopped(self, shutdown: ShutdownListener) -> anyhow::Result<()> {
        let http_stop = Shutdown::new();
        let stopped = http_stop.subscribe();
        let (listener, router, http) = (self.listener, self.router, self.http);
        let (order_watch, mut draining) = (self.order_watch, http_stop.subscribe());
        let server = tokio::spawn(async move {
            let serving = crate::serve::serve(listener, router, &http, stopped);
            tokio::pin!(serving);
            tokio::select! {
                served = &mut serving => return served.context("serve HTTP"),
                // Draining: held long polls answer now instead of holding the drain up.
                _ = draining.recv() => order_watch.close(),
            }
            serving.await.context("serve HTTP")
        });
        self.supervisor
            .run_with_server(server, &http_stop, &self.tasks, shutdown, Duration::from_secs(10))
            .await
    }
}
