//! `GET /api/orders/{id}`: the caller's order. `queued` while the accepted reservation waits
//! in Pulsar, then the database's state. Another user's order is indistinguishable from a
//! missing one.

use axum::extract::State;
use axum::Json;
use chrono::{TimeZone, Utc};
use order_core::domain::ids::OrderId;
use order_core::domain::orders::OrderView;
use order_core::postgres::orders;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathId;
use crate::startup::AppState;
use crate::wire::checkout::OrderViewBody;

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = OrderViewBody),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        crate::openapi::UserFailures,
    ),
)]
pub async fn get_order(
    State(state): State<AppState>,
    PathId(id): PathId,
    user: User,
) -> ApiResult<Json<OrderViewBody>> {
    let order_id = OrderId(id);
    if let Some(order) = orders::find_for_user(&state.deps.db, order_id, user.id.get())
        .await
        .map_err(|e| ApiError::dependency("read an order", e))?
    {
        return Ok(Json(order.into()));
    }
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let promotion_id = state
        .stock
        .order_promotion(order_id)
        .await
        .map_err(|e| ApiError::dependency("look up a queued order", e))?
        .ok_or_else(not_found)?;
    let reservation = state
        .stock
        .reservation(promotion_id, order_id)
        .await
        .map_err(|e| ApiError::dependency("look up a queued order", e))?
        .filter(|r| r.user_id == user.id.get())
        .ok_or_else(not_found)?;
    let unit_price = state
        .cache
        .get(promotion_id)
        .map_or(0, |e| e.promotion.price_cents);
    Ok(Json(OrderViewBody::from(OrderView {
        order_id,
        status: "queued".to_owned(),
        kind: "seckill".to_owned(),
        promotion_id: Some(promotion_id),
        total_cents: unit_price * i64::from(reservation.quantity),
        expires_at: None,
        created_at: Utc
            .timestamp_millis_opt(reservation.reserved_at_ms)
            .single()
            .unwrap_or_else(Utc::now),
    })))
}
