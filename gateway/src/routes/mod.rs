//! The gateway's HTTP routes.

mod admin;
mod health;
mod orders;
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
        .route("/orders/{id}", get(orders::get_order))
        .route("/promotions/{id}", get(promotions::get_promotion))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit_per_ip));
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
        .route("/promotions/{id}/reconcile", post(admin::reconcile_promotion));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/api", api)
        .nest("/admin", admin)
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
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
