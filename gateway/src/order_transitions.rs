//! What the routes that move an order through its lifecycle share (checkout, the admin's
//! refunds and completions): the answer, and the mapping of checkout errors.

use axum::Json;
use order_core::domain::checkout::{Rejection, Transition};
use order_core::postgres::checkout::CheckoutError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};

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
