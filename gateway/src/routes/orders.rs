//! `GET /api/orders/{id}`: the caller's order, and the long poll on it (`?wait_ms=N`, held
//! while the order's status is the one the app last saw, `?status=`, `queued` by default).
//!
//! Every accepted buyer's app polls here until its order leaves `queued`: the flood's second
//! wave. Where the answer comes from (Redis while the sale is in this gateway's cache, the
//! database, the archive) is the status use case's business
//! (`order_core::app::order_status`); this file parses, waits and maps.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use order_core::domain::ids::{OrderId, UserId};
use order_core::domain::orders::{OrderView, SeenStatus};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathId;
use crate::state::OrderRoutes;
use crate::wire::checkout::OrderViewBody;

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrderQuery {
    /// Hold the request until the order's status changes, at most this many milliseconds
    /// (the gateway's `orders.long_poll_max_ms`, 10000 by default). Counts against the
    /// per-user rate limit.
    #[param(minimum = 0, maximum = 10000)]
    pub wait_ms: Option<u64>,
    /// With `wait_ms`: the status the app last saw (default `queued`). The answer comes as
    /// soon as the order's status is another one.
    #[param(
        pattern = "^(queued|pending_payment|paid|shipped|completed|cancelled|refund_requested|refunded)$"
    )]
    pub status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1), OrderQuery),
    responses(
        (status = 200, body = OrderViewBody),
        (status = 400, description = "malformed request (invalid_query: wait_ms above the maximum)", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody),
        crate::responses::UserFailures,
    ),
)]
pub async fn get_order(
    State(state): State<Arc<OrderRoutes>>,
    PathId(id): PathId,
    user: User,
    query: Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<OrderViewBody>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let order_id = OrderId(id);
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
    if wait > state.long_poll_max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait_ms is at most {}", state.long_poll_max.as_millis()),
        ));
    }
    if wait.is_zero() {
        let order = current(&state, order_id, user.id).await?;
        return order.map(|o| Json(o.into())).ok_or_else(not_found);
    }
    let known = match query.status.as_deref() {
        None => SeenStatus::Queued,
        Some(raw) => SeenStatus::parse(raw)
            .ok_or_else(|| ApiError::bad_request("invalid_query", "status is an order status"))?,
    };
    state.limits.check_user(user.id.get())?;
    let watching = state.order_watch.watch(order_id).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_waiters",
            e.to_string(),
        )
        .retry_after(1)
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    // Registered before the first look, so a change right after it is not missed.
    let mut change = Box::pin(watching.next_change());
    let mut latest = current(&state, order_id, user.id).await?.ok_or_else(not_found)?;
    loop {
        if latest.status != known || state.order_watch.is_closing() {
            return Ok(Json(latest.into()));
        }
        tokio::select! {
            _ = &mut change => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(latest.into())),
        }
        change = Box::pin(watching.next_change());
        latest = current(&state, order_id, user.id).await?.ok_or_else(not_found)?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(latest.into()));
        }
    }
}

/// The order as it stands, looked up by the status use case with this gateway's current
/// sales.
async fn current(state: &OrderRoutes, order_id: OrderId, user: UserId) -> ApiResult<Option<OrderView>> {
    state
        .order_status
        .current(state.cache.as_ref(), order_id, user)
        .await
        .map_err(|e| ApiError::dependency("look up an order's status", e))
}
