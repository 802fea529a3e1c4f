//! What the routes that move an order through its lifecycle share (checkout, payments, the
//! admin's refunds and completions): the answer, the mapping of checkout errors, and moving
//! the order's status marker in Redis once the change is committed, so polls answered from
//! Redis see it.

use axum::Json;
use order_core::domain::checkout::{Rejection, Transition};
use order_core::domain::ids::OrderId;
use order_core::domain::lifecycle::OrderStatus;
use order_core::postgres::checkout::CheckoutError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// An order's status after a lifecycle change.
#[derive(Debug, Serialize, ToSchema)]
pub struct NewStatus {
    /// `paid`, `shipped`, `completed`, `cancelled`, `refund_requested` or `refunded`.
    pub status: &'static str,
}

pub fn transition_result(result: Transition) -> ApiResult<Json<NewStatus>> {
    match result {
        Transition::Done { status, .. } => Ok(Json(NewStatus {
            status: status.as_str(),
        })),
        Transition::NotFound => Err(ApiError::not_found("order_not_found", "no such order")),
        Transition::Illegal(e) => Err(ApiError::conflict("illegal_transition", e.to_string())),
    }
}

pub fn checkout_error(e: CheckoutError) -> ApiError {
    match (e.rejection(), e) {
        (Some((code, Rejection::Conflict)), e) => ApiError::conflict(code, e.to_string()),
        (Some((code, Rejection::Invalid)), e) => ApiError::unprocessable(code, e.to_string()),
        (None, CheckoutError::Database(e)) => ApiError::dependency("checkout database call", e),
        (None, e) => ApiError::internal("checkout", e),
    }
}

/// After a lifecycle transition: when it was done, move the order's marker (`status_changed`).
pub async fn after_transition(state: &AppState, order_id: OrderId, result: &Transition) {
    if let Transition::Done {
        status,
        promotion_id,
        user_id,
    } = result
    {
        status_changed(state, order_id, *user_id, *promotion_id, *status).await;
    }
}

/// After a committed status change of an order: move its marker in Redis, so polls answered
/// from Redis see it (best effort: a marker left behind ages out, see the module doc). Only a
/// seckill order (`promotion_id`, from its row) has a marker, on its buyer's shard.
pub async fn status_changed(
    state: &AppState,
    order_id: OrderId,
    user_id: i64,
    promotion_id: Option<i64>,
    status: OrderStatus,
) {
    let Some(promotion_id) = promotion_id else {
        return;
    };
    let sale = match state.cache.get(promotion_id) {
        Some(entry) => Some(entry.promotion.sale()),
        None => state
            .promotions
            .sale_shards(promotion_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%order_id, error = %e, "the order's sale unreadable; its marker ages out");
                None
            }),
    };
    let Some(sale) = sale else {
        return;
    };
    if let Err(e) = state
        .stock
        .mark_status(sale.shard_of(user_id), order_id, status)
        .await
    {
        tracing::warn!(%order_id, %status, error = %e, "order status marker not moved; it ages out");
    }
}
