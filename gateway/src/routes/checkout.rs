//! Normal checkout and the order lifecycle for app users: preview, place (synchronous, one
//! transaction), list, pay, cancel, request a refund, and the user's coupons.
//!
//! Every handler here runs on checkout's own database pool behind its own concurrency
//! limit, so a seckill flood (which never touches these) cannot starve them either.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use order_core::app::checkout::Payable;
use order_core::domain::checkout::Placement;
use order_core::domain::ids::OrderId;
use order_core::domain::lifecycle::OrderEventKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::SemaphorePermit;
use utoipa::{IntoParams, ToSchema};

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::order_transitions::{checkout_error, transition_result, NewStatus};
use crate::state::CheckoutRoutes;
use crate::wire::catalog::HeldCouponBody;
use crate::wire::checkout::{BreakdownBody, CheckoutBody, OrderViewBody, PlacedOrderBody};
use crate::wire::OrderIdSchema;

/// A slot of checkout's concurrency limit, or 503 `busy` after the queue timeout.
async fn slot(state: &CheckoutRoutes) -> ApiResult<SemaphorePermit<'_>> {
    match tokio::time::timeout(state.queue_timeout, state.slots.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "checkout is busy; retry shortly",
        )
        .retry_after(1)),
    }
}

fn db_error(e: order_core::postgres::Error) -> ApiError {
    ApiError::dependency("checkout database call", e)
}

#[utoipa::path(
    post,
    path = "/api/checkout/preview",
    tag = "checkout",
    security(("user_jwt" = [])),
    request_body = CheckoutBody,
    responses(
        (status = 200, body = BreakdownBody),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 409, description = "out_of_stock, coupon_unavailable, coupon_not_yet_valid, coupon_expired, coupon_min_spend_not_met", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn preview(
    State(state): State<Arc<CheckoutRoutes>>,
    user: User,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> ApiResult<Json<BreakdownBody>> {
    let input = body.into_domain().map_err(|e| checkout_error(e.into()))?;
    let _slot = slot(&state).await?;
    state
        .checkout
        .preview(&input, user.id)
        .await
        .map(|b| Json(b.into()))
        .map_err(checkout_error)
}

#[utoipa::path(
    post,
    path = "/api/checkout",
    tag = "checkout",
    security(("user_jwt" = [])),
    request_body = CheckoutBody,
    responses(
        (status = 201, body = PlacedOrderBody),
        (status = 200, description = "the order this request id placed before", body = PlacedOrderBody),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 409, description = "out_of_stock, coupon_unavailable, coupon_not_yet_valid, coupon_expired, coupon_min_spend_not_met", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn place(
    State(state): State<Arc<CheckoutRoutes>>,
    user: User,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> ApiResult<(StatusCode, Json<PlacedOrderBody>)> {
    let input = body.into_domain().map_err(|e| checkout_error(e.into()))?;
    state.limits.check_user(user.id.get())?;
    let _slot = slot(&state).await?;
    let order_id = state
        .ids
        .mint()
        .map_err(|e| ApiError::unavailable("mint a checkout order id", e))?;
    let placement = state
        .checkout
        .place(&input, user.id, order_id)
        .await
        .map_err(checkout_error)?;
    Ok(match placement {
        Placement::Created(order) => (StatusCode::CREATED, Json(order.into())),
        Placement::Existing(order) => (StatusCode::OK, Json(order.into())),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct Page {
    pub before_id: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<OrderViewBody>,
    #[schema(value_type = Option<OrderIdSchema>)]
    pub next_before_id: Option<OrderId>,
}

#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "orders",
    security(("user_jwt" = [])),
    params(Page),
    responses(
        (status = 200, body = OrderPage),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn list_orders(
    State(state): State<Arc<CheckoutRoutes>>,
    user: User,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<OrderPage>> {
    let Query(page) = page.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = page.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    let before = match page.before_id {
        None => None,
        Some(raw) => Some(
            raw.parse::<OrderId>()
                .map_err(|_| ApiError::bad_request("invalid_query", "before_id is an order id"))?,
        ),
    };
    let _slot = slot(&state).await?;
    let page = state
        .checkout
        .orders_page(user.id, before, limit)
        .await
        .map_err(db_error)?;
    Ok(Json(OrderPage {
        items: page.items.into_iter().map(OrderViewBody::from).collect(),
        next_before_id: page.next_before,
    }))
}

/// What the app hands to the payment provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentRequest {
    #[schema(value_type = OrderIdSchema)]
    pub order_id: OrderId,
    pub amount_cents: i64,
    pub currency: &'static str,
    pub notify_url: String,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/pay",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = PaymentRequest),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "illegal_transition (not awaiting payment)", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn pay(
    State(state): State<Arc<CheckoutRoutes>>,
    PathId(id): PathId,
    user: User,
) -> ApiResult<Json<PaymentRequest>> {
    let _slot = slot(&state).await?;
    let order = match state
        .checkout
        .payable(OrderId(id), user.id)
        .await
        .map_err(db_error)?
    {
        Payable::Order(order) => order,
        Payable::NotFound => return Err(ApiError::not_found("order_not_found", "no such order")),
        Payable::NotPayable(status) => {
            return Err(ApiError::conflict(
                "not_payable",
                format!("the order is {status}, not awaiting payment"),
            ))
        }
    };
    Ok(Json(PaymentRequest {
        order_id: order.order_id,
        amount_cents: order.total_cents,
        currency: "CNY",
        notify_url: state.payments.notify_url.clone(),
        expires_at: order.expires_at,
    }))
}

async fn user_transition(
    state: &CheckoutRoutes,
    id: i64,
    user: User,
    event: OrderEventKind,
) -> ApiResult<Json<NewStatus>> {
    let _slot = slot(state).await?;
    let result = state
        .checkout
        .change_by_owner(state.cache.as_ref(), OrderId(id), user.id, event)
        .await
        .map_err(checkout_error)?;
    transition_result(result)
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, description = "the new status", body = NewStatus),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "illegal_transition (not awaiting payment)", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn cancel(
    State(state): State<Arc<CheckoutRoutes>>,
    PathId(id): PathId,
    user: User,
) -> ApiResult<Json<NewStatus>> {
    user_transition(&state, id, user, OrderEventKind::Cancel).await
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/refund",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, description = "the new status", body = NewStatus),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "illegal_transition (not paid)", body = crate::error::ErrorBody),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn request_refund(
    State(state): State<Arc<CheckoutRoutes>>,
    PathId(id): PathId,
    user: User,
) -> ApiResult<Json<NewStatus>> {
    user_transition(&state, id, user, OrderEventKind::RequestRefund).await
}

#[utoipa::path(
    get,
    path = "/api/coupons",
    tag = "checkout",
    security(("user_jwt" = [])),
    responses(
        (status = 200, body = Vec<HeldCouponBody>),
        crate::responses::CheckoutFailures,
    ),
)]
pub async fn my_coupons(
    State(state): State<Arc<CheckoutRoutes>>,
    user: User,
) -> ApiResult<Json<Vec<HeldCouponBody>>> {
    let _slot = slot(&state).await?;
    let coupons = state.checkout.coupons(user.id).await.map_err(db_error)?;
    Ok(Json(coupons.into_iter().map(HeldCouponBody::from).collect()))
}
