//! The gateway's shared state, built once by `startup`, and the narrower state each route
//! group receives.
//!
//! A handler takes its group's state (`State<Arc<OrderRoutes>>`, …: axum's `FromRef` picks it
//! out of the app state), so it can reach only what its routes use; the middleware and the
//! background tasks see the whole [`AppContext`]. It lives apart from `startup` so that
//! handlers, extractors and the router depend on it without depending on how the gateway is
//! built: `startup` imports the routes, never the other way round.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use order_core::app::catalog::CatalogAdmin;
use order_core::app::checkout::Checkout;
use order_core::app::lifecycle::OrderLifecycle;
use order_core::app::order_status::OrderStatusReader;
use order_core::app::sale_admin::SaleAdmin;
use order_core::app::seckill::SeckillOrders;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::deployment::DeploymentStore;
use order_core::redis::stock::StockStore;
use order_core::redis::worker_lease::WorkerLease;
use order_core::runtime::readiness::Dependencies;
use order_core::runtime::supervisor::Health;

use crate::auth::Authenticator;
use crate::error::{ApiError, ApiResult};
use crate::order_watch::OrderWatch;
use crate::promotion_cache::{CachedPromotion, PromotionCache};
use crate::rate_limit::RateLimits;
use crate::sale_counters::SaleCounters;
use crate::sale_tokens::SaleTokens;
use crate::settings::PaymentSettings;

/// The router's state. Shared behind one `Arc`: axum clones the state for every request,
/// and a deep clone (connections, scripts, client handles) showed up in profiles.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

#[derive(Debug)]
pub struct AppContext {
    pub deps: Dependencies,
    pub auth: Arc<Authenticator>,
    pub limits: Arc<RateLimits>,
    /// The seckill order route's adaptive concurrency limit (load shedding).
    pub seckill_limiter: Arc<crate::shedding::SeckillLimiter>,
    pub cache: Arc<PromotionCache>,
    pub stock: StockStore,
    /// Mints order ids under this gateway's worker-id lease.
    pub ids: Arc<WorkerLease>,
    pub promotions: PromotionRepo,
    /// How long before its start a sale is loaded into Redis.
    pub warmup_lead: Duration,
    /// This gateway's per-sale counts, added to the deployment's totals every second.
    pub counters: Arc<SaleCounters>,
    /// The deployment's totals and the live gateways and writers (Redis).
    pub deployment: DeploymentStore,
    /// A request body must arrive within this (slow-client protection).
    pub body_read_timeout: Duration,
    /// Held long polls of order status, woken by the status channel.
    pub order_watch: Arc<OrderWatch>,
    pub seckill_routes: Arc<SeckillRoutes>,
    pub order_routes: Arc<OrderRoutes>,
    pub checkout_routes: Arc<CheckoutRoutes>,
    pub admin_routes: Arc<AdminRoutes>,
    pub ops_routes: Arc<OpsRoutes>,
}

impl crate::auth::HasAuthenticator for AppState {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
}

/// The sale's app routes: placing orders, sale tokens, a sale's public view.
#[derive(Debug)]
pub struct SeckillRoutes {
    pub limits: Arc<RateLimits>,
    pub cache: Arc<PromotionCache>,
    /// For the snapshot a refusal takes of a sale Redis found closed.
    pub stock: StockStore,
    /// Places seckill orders: reserve, confirm on the replicas, publish.
    pub seckill: SeckillOrders,
    pub ids: Arc<WorkerLease>,
    pub counters: Arc<SaleCounters>,
    pub sale_tokens: SaleTokens,
}

impl SeckillRoutes {
    /// A sale this gateway knows as current (looked up when it has not seen it yet), or 404
    /// `promotion_not_found`; 503 when the list cannot be read right now.
    pub async fn current_sale(&self, id: i64) -> ApiResult<Arc<CachedPromotion>> {
        self.cache
            .find(id)
            .await
            .map_err(|e| ApiError::unavailable("look up a promotion", e))?
            .ok_or_else(|| ApiError::not_found("promotion_not_found", "no such promotion"))
    }
}

/// `GET /api/orders/{id}` and its long poll.
#[derive(Debug)]
pub struct OrderRoutes {
    pub limits: Arc<RateLimits>,
    /// The current sales, which the status lookup asks first.
    pub cache: Arc<PromotionCache>,
    pub order_watch: Arc<OrderWatch>,
    /// Works out an order's status from Redis, the database or the archive.
    pub order_status: OrderStatusReader,
    pub long_poll_max: Duration,
}

/// Normal checkout, the user's orders and the payment provider's callbacks: on checkout's
/// own pool behind its own concurrency limit (isolation from the seckill flood).
#[derive(Debug)]
pub struct CheckoutRoutes {
    pub limits: Arc<RateLimits>,
    /// Where a lifecycle change finds a seckill order's sale, to move its marker.
    pub cache: Arc<PromotionCache>,
    pub ids: Arc<WorkerLease>,
    pub checkout: Checkout,
    pub slots: tokio::sync::Semaphore,
    pub queue_timeout: Duration,
    pub payments: PaymentSettings,
}

/// Operators' routes: sales, the catalog, order refunds and completions, sale figures.
#[derive(Debug)]
pub struct AdminRoutes {
    pub cache: Arc<PromotionCache>,
    pub sale_admin: SaleAdmin,
    pub catalog: CatalogAdmin,
    /// The operators' lifecycle changes (refund approvals, completions), on the main pool.
    pub operator_lifecycle: OrderLifecycle,
    pub counters: Arc<SaleCounters>,
    pub deployment: DeploymentStore,
}

/// Health, readiness and the dashboard's relay of the consumers' status.
#[derive(Debug)]
pub struct OpsRoutes {
    pub deps: Dependencies,
    /// Whether every background task still runs (`/healthz`).
    pub health: Health,
    /// The consumers' `/status`, relayed to the dashboard.
    pub consumers_status_url: String,
    pub http: reqwest::Client,
}

impl FromRef<AppState> for Arc<SeckillRoutes> {
    fn from_ref(state: &AppState) -> Self {
        state.seckill_routes.clone()
    }
}

impl FromRef<AppState> for Arc<OrderRoutes> {
    fn from_ref(state: &AppState) -> Self {
        state.order_routes.clone()
    }
}

impl FromRef<AppState> for Arc<CheckoutRoutes> {
    fn from_ref(state: &AppState) -> Self {
        state.checkout_routes.clone()
    }
}

impl FromRef<AppState> for Arc<AdminRoutes> {
    fn from_ref(state: &AppState) -> Self {
        state.admin_routes.clone()
    }
}

impl FromRef<AppState> for Arc<OpsRoutes> {
    fn from_ref(state: &AppState) -> Self {
        state.ops_routes.clone()
    }
}
