//! Catalog, coupons and order operations for operations staff (admin key).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use order_core::app::catalog::CatalogAdminError;
use order_core::app::lifecycle::Actor;
use order_core::domain::ids::OrderId;
use order_core::domain::lifecycle::OrderEventKind;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::order_transitions::{checkout_error, transition_result, NewStatus};
use crate::state::AdminRoutes;
use crate::wire::catalog::{CouponTemplateBody, NewCouponTemplateBody, SkuBody, SkuChangesBody};

/// Every refusal and failure of the catalog, with its code and status.
fn catalog_error(e: CatalogAdminError) -> ApiError {
    let message = e.to_string();
    match e {
        CatalogAdminError::Invalid(_) | CatalogAdminError::InvalidUserIds => {
            ApiError::unprocessable("invalid_field", message)
        }
        CatalogAdminError::SkuExists => ApiError::conflict("sku_exists", message),
        CatalogAdminError::SkuNotFound => ApiError::not_found("sku_not_found", message),
        CatalogAdminError::CodeTaken => ApiError::conflict("code_taken", message),
        CatalogAdminError::CouponNotFound => ApiError::not_found("coupon_not_found", message),
        CatalogAdminError::Database(e) => ApiError::dependency("catalog database call", e),
    }
}

#[utoipa::path(
    post,
    path = "/admin/skus",
    tag = "catalog",
    security(("admin_key" = [])),
    request_body = SkuBody,
    responses(
        (status = 201, body = SkuBody),
        (status = 409, description = "sku_exists", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn create_sku(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    ApiJson(body): ApiJson<SkuBody>,
) -> ApiResult<(StatusCode, Json<SkuBody>)> {
    let sku = state
        .catalog
        .add_sku(body.into_domain())
        .await
        .map_err(catalog_error)?;
    Ok((StatusCode::CREATED, Json(sku.into())))
}

#[utoipa::path(
    get,
    path = "/admin/skus/{id}",
    tag = "catalog",
    security(("admin_key" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, body = SkuBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn get_sku(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SkuBody>> {
    let sku = state.catalog.sku(&id).await.map_err(catalog_error)?;
    Ok(Json(sku.into()))
}

#[utoipa::path(
    patch,
    path = "/admin/skus/{id}",
    tag = "catalog",
    security(("admin_key" = [])),
    params(("id" = String, Path)),
    request_body = SkuChangesBody,
    responses(
        (status = 200, body = SkuBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn patch_sku(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    Path(id): Path<String>,
    ApiJson(changes): ApiJson<SkuChangesBody>,
) -> ApiResult<Json<SkuBody>> {
    let sku = state
        .catalog
        .edit_sku(&id, &changes.into_domain())
        .await
        .map_err(catalog_error)?;
    Ok(Json(sku.into()))
}

#[utoipa::path(
    post,
    path = "/admin/coupons",
    tag = "catalog",
    security(("admin_key" = [])),
    request_body = NewCouponTemplateBody,
    responses(
        (status = 201, body = CouponTemplateBody),
        (status = 409, description = "code_taken", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn create_coupon(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    ApiJson(input): ApiJson<NewCouponTemplateBody>,
) -> ApiResult<(StatusCode, Json<CouponTemplateBody>)> {
    let template = state
        .catalog
        .add_coupon_template(&input.into_domain())
        .await
        .map_err(catalog_error)?;
    Ok((StatusCode::CREATED, Json(template.into())))
}

/// The grants made, one per user id, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantIds {
    pub grant_ids: Vec<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// Positive user ids.
    #[schema(min_items = 1, max_items = 1000, value_type = Vec<crate::wire::UserIdSchema>)]
    pub user_ids: Vec<i64>,
}

#[utoipa::path(
    post,
    path = "/admin/coupons/{id}/grants",
    tag = "catalog",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    request_body = GrantBody,
    responses(
        (status = 201, body = GrantIds),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn grant_coupon(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<GrantBody>,
) -> ApiResult<(StatusCode, Json<GrantIds>)> {
    let grants = state
        .catalog
        .grant_coupon(id, &body.user_ids)
        .await
        .map_err(catalog_error)?;
    Ok((StatusCode::CREATED, Json(GrantIds { grant_ids: grants })))
}

async fn admin_transition(state: &AdminRoutes, id: i64, event: OrderEventKind) -> ApiResult<Json<NewStatus>> {
    let result = state
        .operator_lifecycle
        .apply(state.cache.as_ref(), OrderId(id), Actor::Operator, event)
        .await
        .map_err(checkout_error)?;
    transition_result(result)
}

/// Approve a refund request: refunded, stock back, refund recorded, `order.refunded`.
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/refund",
    tag = "orders",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, description = "the new status", body = NewStatus),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "illegal_transition (no refund requested)", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn approve_refund(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<NewStatus>> {
    admin_transition(&state, id, OrderEventKind::Refund).await
}

#[utoipa::path(
    post,
    path = "/admin/orders/{id}/complete",
    tag = "orders",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, description = "the new status", body = NewStatus),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "illegal_transition (not shipped)", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn complete_order(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<NewStatus>> {
    admin_transition(&state, id, OrderEventKind::Complete).await
}
