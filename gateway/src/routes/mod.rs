//! The gateway's HTTP routes.

mod admin;
mod catalog;
pub mod checkout;
mod health;
mod orders;
pub mod payments;
mod promotions;
pub mod seckill;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::startup::AppState;

/// Request bodies are small JSON documents; anything bigger is refused before parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/seckill/{promotion_id}/orders",
            post(seckill::place_seckill_order),
        )
        .route("/orders", get(checkout::list_orders))
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/pay", post(checkout::pay))
        .route("/orders/{id}/cancel", post(checkout::cancel))
        .route("/orders/{id}/refund", post(checkout::request_refund))
        .route("/checkout/preview", post(checkout::preview))
        .route("/checkout", post(checkout::place))
        .route("/coupons", get(checkout::my_coupons))
        .route("/promotions/{id}", get(promotions::get_promotion))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_per_ip))
        // The provider is not rate-limited per IP (all callbacks come from its few hosts).
        .route("/payments/callback", post(payments::payment_callback));
    let admin = Router::new()
        .route(
            "/promotions",
            post(admin::create_promotion).get(admin::list_promotions),
        )
        .route(
            "/promotions/{id}",
            get(admin::get_promotion)
                .patch(admin::patch_promotion)
                .delete(admin::delete_promotion),
        )
        .route("/promotions/{id}/pause", post(admin::pause_promotion))
        .route("/promotions/{id}/resume", post(admin::resume_promotion))
        .route("/promotions/{id}/stock", post(admin::add_stock))
        .route("/promotions/{id}/warmup", post(admin::warmup_promotion))
        .route("/promotions/{id}/stats", get(admin::promotion_stats))
        .route("/promotions/{id}/reconcile", post(admin::reconcile_promotion))
        .route("/skus", post(catalog::create_sku))
        .route("/skus/{id}", get(catalog::get_sku).patch(catalog::patch_sku))
        .route("/coupons", post(catalog::create_coupon))
        .route("/coupons/{id}/grants", post(catalog::grant_coupon))
        .route("/orders/{id}/refund", post(catalog::approve_refund))
        .route("/orders/{id}/complete", post(catalog::complete_order));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/metrics",
            get(|| async { order_core::metrics::install().render() }),
        )
        .nest("/api", api)
        .nest("/admin", admin)
        // After routing, so the route template is known (unmatched paths are not counted).
        .route_layer(middleware::from_fn(track_requests))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::request_id::with_request_id))
        .with_state(state)
}

async fn limit_per_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded = state
        .limits
        .trust_forwarded_for
        .then(|| {
            request
                .headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        })
        .flatten();
    if let Some(ip) = forwarded.or(peer) {
        state.limits.check_ip(ip)?;
    }
    Ok(next.run(request).await)
}

/// `seckill_http_requests_total{route, method, status}` and
/// `seckill_http_request_duration_seconds{route, method}`, by route template (fixed
/// cardinality).
async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `/api/orders/:id` rather than `{id}`: braces in label values trip some scrapers.
        .map_or_else(
            || "unmatched".to_owned(),
            |p| p.as_str().replace('{', ":").replace('}', ""),
        );
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("seckill_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("seckill_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
