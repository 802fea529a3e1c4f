//! `/admin/promotions`: operations staff create and steer flash sales (admin key).
//!
//! What each action does to the database, Redis and this gateway's cache is the sale
//! administration use case's (`order_core::app::sale_admin`); this file parses, calls and
//! maps its outcomes to answers.

use std::collections::HashMap;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use order_core::app::sale_admin::{AdminError, SaleView};
use order_core::domain::promotion::{PromotionError, PromotionFields};
use order_core::redis::stock::ShardStock;
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::state::AdminRoutes;
use crate::wire::promotions::{NewPromotionBody, PromotionBody, PromotionPatchBody, PromotionStateBody};
use crate::wire::reports::ReconcileReportBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminPromotion {
    #[serde(flatten)]
    pub promotion: PromotionBody,
    pub state: PromotionStateBody,
    /// Remaining in Redis (all shards); absent until the promotion is loaded.
    pub remaining: Option<i64>,
    /// Stock per Redis shard, one entry per shard; empty until the promotion is loaded.
    pub shard_stock: Vec<ShardStockBody>,
}

/// One shard's stock: stock moves to the shard whose buyers ran out (`lent`, `taken_in`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardStockBody {
    pub shard: u16,
    pub remaining: i64,
    /// Its share of the configured stock, plus units taken in, less units lent.
    pub stock: i64,
    pub taken_in: i64,
    pub lent: i64,
}

/// A change the sale's state forbids is a conflict; the rest are invalid fields.
pub(crate) fn invalid_status(e: &PromotionError) -> StatusCode {
    match e {
        PromotionError::LockedWhileRunning(_) | PromotionError::Ended => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

fn invalid(e: PromotionError) -> ApiError {
    ApiError::new(invalid_status(&e), e.code(), e.to_string())
}

fn invalid_challenge(e: order_core::domain::sale_access::ChallengeError) -> ApiError {
    ApiError::unprocessable("invalid_challenge", e.to_string())
}

/// Every refusal and failure of sale administration, with its code and status.
fn admin_error(e: AdminError) -> ApiError {
    let message = e.to_string();
    match e {
        AdminError::NotFound => ApiError::not_found("promotion_not_found", message),
        AdminError::Invalid(e) => invalid(e),
        AdminError::WindowInPast => ApiError::unprocessable("invalid_window", message),
        AdminError::EditConflict => ApiError::conflict("edit_conflict", message),
        AdminError::StockBelowReserved => ApiError::conflict("stock_below_reserved", message),
        AdminError::Running => ApiError::conflict("promotion_running", message),
        AdminError::HasOrders => ApiError::conflict("has_orders", message),
        AdminError::StartedNotLoaded(id) => ApiError::conflict(
            "started_not_loaded",
            format!(
                "the sale has started and Redis does not hold it, so units may already be sold: pause it, \
                 let the order backlog drain, then POST /admin/promotions/{id}/reconcile?repair=true"
            ),
        ),
        AdminError::Retired(message) => ApiError::conflict("sale_retired", message),
        AdminError::Database(e) => ApiError::dependency("promotion database call", e),
        AdminError::Redis(e) => ApiError::dependency("promotion Redis call", e),
        AdminError::Reconcile(e) => ApiError::dependency("reconcile a promotion", e),
    }
}

fn admin_promotion(view: SaleView) -> AdminPromotion {
    AdminPromotion {
        state: view.state.into(),
        remaining: view.remaining,
        shard_stock: view.shards.iter().map(shard_stock_body).collect(),
        promotion: PromotionBody::from(&view.promotion),
    }
}

fn shard_stock_body(s: &ShardStock) -> ShardStockBody {
    ShardStockBody {
        shard: s.index,
        remaining: s.remaining,
        stock: s.stock(),
        taken_in: s.got,
        lent: s.lent,
    }
}

#[utoipa::path(
    post,
    path = "/admin/promotions",
    tag = "admin",
    security(("admin_key" = [])),
    request_body = NewPromotionBody,
    responses(
        (status = 201, body = AdminPromotion),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 413, description = "body too large", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn create_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    ApiJson(input): ApiJson<NewPromotionBody>,
) -> ApiResult<(StatusCode, Json<AdminPromotion>)> {
    let fields = PromotionFields::parse(input.into_domain().map_err(invalid_challenge)?).map_err(invalid)?;
    let view = state
        .sale_admin
        .create(state.cache.as_ref(), fields)
        .await
        .map_err(admin_error)?;
    Ok((StatusCode::CREATED, Json(admin_promotion(view))))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    pub before_id: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionPage {
    pub items: Vec<PromotionBody>,
    /// Pass as `before_id` for the next page; absent on the last one.
    pub next_before_id: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/admin/promotions",
    tag = "admin",
    security(("admin_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, body = PromotionPage),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn list_promotions(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<PromotionPage>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        ));
    }
    let items = state
        .sale_admin
        .list(query.before_id, limit)
        .await
        .map_err(admin_error)?;
    let next_before_id = (items.len() as i64 == limit)
        .then(|| items.last().map(|p| p.id))
        .flatten();
    Ok(Json(PromotionPage {
        items: items.iter().map(PromotionBody::from).collect(),
        next_before_id,
    }))
}

#[utoipa::path(
    get,
    path = "/admin/promotions/{id}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = AdminPromotion),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn get_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<AdminPromotion>> {
    let view = state
        .sale_admin
        .get(state.cache.as_ref(), id)
        .await
        .map_err(admin_error)?;
    Ok(Json(admin_promotion(view)))
}

#[utoipa::path(
    patch,
    path = "/admin/promotions/{id}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    request_body = PromotionPatchBody,
    responses(
        (status = 200, body = AdminPromotion),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "edit_conflict (the row changed meanwhile), promotion_running (a started sale: only title and ends_at), stock_below_reserved, ended", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn patch_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
    ApiJson(patch): ApiJson<PromotionPatchBody>,
) -> ApiResult<Json<AdminPromotion>> {
    let patch = patch.into_domain().map_err(invalid_challenge)?;
    let view = state
        .sale_admin
        .edit(state.cache.as_ref(), id, patch)
        .await
        .map_err(admin_error)?;
    Ok(Json(admin_promotion(view)))
}

#[utoipa::path(
    delete,
    path = "/admin/promotions/{id}",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "promotion_running, has_orders", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn delete_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    state
        .sale_admin
        .delete(state.cache.as_ref(), id)
        .await
        .map_err(admin_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(state: Arc<AdminRoutes>, id: i64, paused: bool) -> ApiResult<Json<AdminPromotion>> {
    let view = state
        .sale_admin
        .set_paused(state.cache.as_ref(), id, paused)
        .await
        .map_err(admin_error)?;
    Ok(Json(admin_promotion(view)))
}

#[utoipa::path(
    post,
    path = "/admin/promotions/{id}/pause",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = AdminPromotion),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "sale_retired: the sale ended and its keys left Redis", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn pause_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<AdminPromotion>> {
    set_paused(state, id, true).await
}

#[utoipa::path(
    post,
    path = "/admin/promotions/{id}/resume",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = AdminPromotion),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "sale_retired: the sale ended and its keys left Redis", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn resume_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<AdminPromotion>> {
    set_paused(state, id, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStock {
    #[schema(minimum = 1, maximum = 10_000_000)]
    pub units: i64,
}

#[utoipa::path(
    post,
    path = "/admin/promotions/{id}/stock",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    request_body = AddStock,
    responses(
        (status = 200, body = AdminPromotion),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "ended", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn add_stock(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AddStock>,
) -> ApiResult<Json<AdminPromotion>> {
    let view = state
        .sale_admin
        .add_stock(state.cache.as_ref(), id, body.units)
        .await
        .map_err(admin_error)?;
    Ok(Json(admin_promotion(view)))
}

#[utoipa::path(
    post,
    path = "/admin/promotions/{id}/warmup",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = WarmedUp),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "started_not_loaded: a started sale Redis lost is restored by reconcile with repair, never loaded afresh", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn warmup_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<WarmedUp>> {
    let remaining = state
        .sale_admin
        .warm_up(state.cache.as_ref(), id)
        .await
        .map_err(admin_error)?;
    Ok(Json(WarmedUp { remaining }))
}

/// A sale in Redis after a warm-up.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarmedUp {
    /// Units left to sell.
    pub remaining: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionStats {
    pub promotion_id: i64,
    pub state: PromotionStateBody,
    pub stock: i64,
    /// Units left to sell in Redis (absent until loaded).
    pub remaining: Option<i64>,
    /// Stock per Redis shard, one entry per shard; empty until loaded.
    pub shard_stock: Vec<ShardStockBody>,
    /// Live reservations in Redis (queued or persisted, not cancelled).
    pub reserved: u64,
    /// Accepted but not yet persisted.
    pub queued: u64,
    /// Orders in the database that are not cancelled or refunded.
    pub persisted: i64,
    pub paid: i64,
    pub cancelled: i64,
    #[schema(value_type = Object)]
    pub orders_by_status: HashMap<String, i64>,
    /// The sale's requests on every gateway of the deployment: each adds its counts to
    /// Redis once a second (this gateway's are current).
    pub deployment: SaleTraffic,
    /// The sale's requests on the gateway that answers, since it started.
    pub this_gateway: SaleTraffic,
    /// Gateways and order writers heard from in the last hour, most recent first.
    pub instances: Vec<InstanceBody>,
}

/// A sale's requests by outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleTraffic {
    /// Requests answered 202 (a retry that got its order again included).
    pub accepted: u64,
    /// Refused by the rate limits before the sale was asked (429).
    pub shed: u64,
    /// Shed by a gateway's adaptive seckill limit, overloaded, before any work (503).
    pub overloaded: u64,
    pub tokens_issued: u64,
    /// Token requests refused (challenge failed, too early, rate limited).
    pub tokens_refused: u64,
    /// Refusals by code (`sold_out`, `limit_exceeded`, `not_started`, `ended`, `paused`,
    /// `sale_token_required`, `sale_token_invalid`, `sale_token_expired`).
    #[schema(value_type = Object)]
    pub rejections: std::collections::BTreeMap<&'static str, u64>,
}

impl SaleTraffic {
    fn from_counts(mut counts: crate::sale_counters::Counts) -> Self {
        let mut take = |name| counts.remove(name).unwrap_or(0);
        let (accepted, shed, overloaded, tokens_issued, tokens_refused) = (
            take("accepted"),
            take("shed"),
            take("overloaded"),
            take("tokens_issued"),
            take("tokens_refused"),
        );
        Self {
            accepted,
            shed,
            overloaded,
            tokens_issued,
            tokens_refused,
            rejections: counts,
        }
    }
}

/// A gateway or order writer as the deployment last heard from it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceBody {
    /// `gateway` or `writer`.
    pub role: String,
    /// Its listening address (`host:port`).
    pub name: String,
    /// Since its last heartbeat (each sends one a second), on Redis' clock.
    pub seconds_since_heartbeat: f64,
    /// Heard from in the last 5 seconds.
    pub live: bool,
    /// An order writer's pace at its last heartbeat (writers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_sec: Option<f64>,
    /// Rows the writer inserted since it started (writers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_inserted: Option<u64>,
}

/// A heartbeat older than this means the instance stopped or hangs.
const LIVE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The deployment's totals: the other gateways' as last written to Redis, this one's now.
async fn deployment_traffic(state: &AdminRoutes, id: i64) -> Result<SaleTraffic, ApiError> {
    let counts = state
        .counters
        .deployment(&state.deployment, id)
        .await
        .map_err(deployment_error)?;
    Ok(SaleTraffic::from_counts(counts))
}

fn deployment_error(e: redis::RedisError) -> ApiError {
    ApiError::dependency("read the deployment's counters", e)
}

#[utoipa::path(
    get,
    path = "/admin/promotions/{id}/stats",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = PromotionStats),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn promotion_stats(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<PromotionStats>> {
    let figures = state.sale_admin.figures(id).await.map_err(admin_error)?;
    let counts = figures.orders_by_status;
    let count = |status: &str| counts.get(status).copied().unwrap_or(0);
    let view = figures.view;
    Ok(Json(PromotionStats {
        promotion_id: id,
        state: view.state.into(),
        stock: view.promotion.stock,
        remaining: view.remaining,
        shard_stock: view.shards.iter().map(shard_stock_body).collect(),
        reserved: figures.reserved,
        queued: figures.queued,
        persisted: counts.values().sum::<i64>() - count("cancelled") - count("refunded"),
        paid: count("paid"),
        cancelled: count("cancelled"),
        orders_by_status: counts,
        deployment: deployment_traffic(&state, id).await?,
        this_gateway: SaleTraffic::from_counts(state.counters.snapshot(id)),
        instances: state
            .deployment
            .instances()
            .await
            .map_err(deployment_error)?
            .into_iter()
            .map(|i| InstanceBody {
                live: i.silent_for <= LIVE_WITHIN,
                seconds_since_heartbeat: i.silent_for.as_secs_f64(),
                rows_per_sec: i.writer.map(|w| w.rows_per_sec),
                rows_inserted: i.writer.map(|w| w.rows_inserted),
                role: i.role,
                name: i.name,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReconcileQuery {
    #[serde(default)]
    pub repair: bool,
}

#[utoipa::path(
    post,
    path = "/admin/promotions/{id}/reconcile",
    tag = "admin",
    security(("admin_key" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1), ReconcileQuery),
    responses(
        (status = 200, body = ReconcileReportBody),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "sale_retired: the sale ended and its keys left Redis; the database alone holds it", body = crate::error::ErrorBody),
        crate::responses::AdminFailures,
    ),
)]
pub async fn reconcile_promotion(
    _: Admin,
    State(state): State<Arc<AdminRoutes>>,
    PathId(id): PathId,
    query: Result<Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ReconcileReportBody>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let report = state
        .sale_admin
        .reconcile(state.cache.as_ref(), id, query.repair)
        .await
        .map_err(admin_error)?;
    Ok(Json(report.into()))
}
