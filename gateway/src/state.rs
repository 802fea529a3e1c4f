//! What every handler can reach: the gateway's shared state, built once by `startup`.
//!
//! It lives apart from `startup` so that handlers, extractors and the router depend on it
//! without depending on how the gateway is built: `startup` imports the routes, never the
//! other way round.

use std::sync::Arc;
use std::time::Duration;

use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::stock::StockStore;
use order_core::redis::worker_lease::WorkerLease;
use order_core::runtime::readiness::Dependencies;
use order_core::runtime::supervisor::Health;

use crate::auth::Authenticator;
use crate::promotion_cache::PromotionCache;
use crate::rate_limit::RateLimits;

/// What every handler can reach. Shared behind one `Arc`: axum clones the state for every
/// request, and a deep clone (connections, scripts, client handles) showed up in profiles.
pub type AppState = Arc<AppContext>;

#[derive(Debug)]
pub struct AppContext {
    pub deps: Dependencies,
    pub auth: Arc<Authenticator>,
    pub limits: Arc<RateLimits>,
    /// The seckill order route's adaptive concurrency limit (load shedding).
    pub seckill_limiter: Arc<crate::shedding::SeckillLimiter>,
    pub cache: Arc<PromotionCache>,
    pub stock: StockStore,
    /// Places seckill orders: reserve, confirm on the replicas, publish.
    pub seckill: order_core::app::seckill::SeckillOrders,
    /// Mints order ids under this gateway's worker-id lease.
    pub ids: Arc<WorkerLease>,
    pub promotions: PromotionRepo,
    /// The catalog (SKUs, coupons) for operators.
    pub catalog: order_core::app::catalog::CatalogAdmin,
    /// Operators' actions on sales.
    pub sale_admin: order_core::app::sale_admin::SaleAdmin,
    pub warmup_lead: Duration,
    /// This gateway's per-sale counts, added to the deployment's totals every second.
    pub counters: Arc<crate::sale_counters::SaleCounters>,
    /// The deployment's totals and the live gateways and writers (Redis).
    pub deployment: order_core::redis::deployment::DeploymentStore,
    pub sale_tokens: crate::sale_tokens::SaleTokens,
    /// Normal checkout, on its own pool behind its own concurrency limit (isolation from
    /// the seckill flood).
    pub checkout: order_core::app::checkout::Checkout,
    pub checkout_slots: tokio::sync::Semaphore,
    pub checkout_queue_timeout: Duration,
    pub payments: crate::settings::PaymentSettings,
    /// The operators' lifecycle changes (refund approvals, completions), on the main pool.
    pub operator_lifecycle: order_core::app::lifecycle::OrderLifecycle,
    /// The consumers' `/status`, relayed to the dashboard.
    pub consumers_status_url: String,
    pub http: reqwest::Client,
    /// A request body must arrive within this (slow-client protection).
    pub body_read_timeout: Duration,
    /// Whether every background task still runs (`/healthz`).
    pub health: Health,
    /// Held long polls of order status, woken by the status channel.
    pub order_watch: Arc<crate::order_watch::OrderWatch>,
    /// Works out an order's status from Redis, the database or the archive.
    pub order_status: order_core::app::order_status::OrderStatusReader,
    pub long_poll_max: Duration,
}

impl crate::auth::HasAuthenticator for AppState {
    fn authenticator(&self) -> &Authenticator {
        &self.auth
    }
}

impl AppContext {
    /// A sale this gateway knows as current (looked up when it has not seen it yet), or 404
    /// `promotion_not_found`; 503 when the list cannot be read right now.
    pub async fn current_sale(
        &self,
        id: i64,
    ) -> crate::error::ApiResult<Arc<crate::promotion_cache::CachedPromotion>> {
        self.cache
            .find(id)
            .await
            .map_err(|e| crate::error::ApiError::unavailable("look up a promotion", e))?
            .ok_or_else(|| crate::error::ApiError::not_found("promotion_not_found", "no such promotion"))
    }
}
