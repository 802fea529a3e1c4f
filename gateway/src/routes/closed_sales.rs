//! Orders for a sale that is over (sold out, ended, paused, not started), refused before
//! anything else runs: once a hot sale sells out, nearly every request is one, so what
//! it costs is what the flood costs.
//!
//! Only what the rules need is done. The buyer's token is verified, because a buyer on the
//! sale's final list may hold an order: that request goes the whole way, to Redis, which
//! answers a retry with the order its request id holds. Everyone else is refused from this
//! gateway's cache, as the handler would refuse them, without reading the body, charging
//! the rate limits or taking a place in the seckill limit (each costs more than the answer).
//! An open sale, an unknown one, or a request without a valid token passes on untouched: the
//! handler gives those their usual answers.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use order_core::domain::promotion::PromotionState;

use crate::error::ApiError;
use crate::promotion_cache::LocalDecision;
use crate::sale_counters::{SaleEvent, SaleRejection};
use crate::state::AppState;

/// The route template as the request metrics label it.
const ROUTE: &str = "/api/seckill/:id/orders";

pub(super) async fn refuse_orders_for_closed_sales(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let Some((sale, reason)) = closed_to_this_buyer(&state, &request) else {
        return next.run(request).await;
    };
    state.counters.count(sale, SaleEvent::Rejected(reason));
    metrics::counter!("seckill_orders_total", "outcome" => reason.code()).increment(1);
    let response = ApiError::from(reason).into_response();
    let status = match response.status().as_u16() {
        409 => "409",
        403 => "403",
        _ => "other",
    };
    metrics::counter!("seckill_http_requests_total", "route" => ROUTE, "method" => "POST", "status" => status)
        .increment(1);
    metrics::histogram!("seckill_http_request_duration_seconds", "route" => ROUTE, "method" => "POST")
        .record(started.elapsed().as_secs_f64());
    response
}

/// The sale and why it refuses this request, when the cache can tell on its own.
fn closed_to_this_buyer(state: &AppState, request: &Request) -> Option<(i64, SaleRejection)> {
    let sale = super::seckill_order_sale(request.method(), request.uri().path())?;
    let id: i64 = sale.parse().ok()?;
    let entry = state.cache.get(id)?;
    let now = state.cache.clock.now();
    // An open sale (the reserve path) pays nothing here, not even the token's check.
    if entry.state(now) == PromotionState::Active {
        return None;
    }
    let token = crate::auth::bearer_token(request.headers())?;
    let user = state.auth.user_id(token).ok()?;
    match entry.decide(user.get(), now) {
        LocalDecision::Reject(closed) => Some((id, SaleRejection::of_state(closed)?)),
        LocalDecision::AskRedis => None,
    }
}
