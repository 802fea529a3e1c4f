//! `/admin/promotions`: operations staff create and steer flash sales (admin key).
//!
//! PostgreSQL holds what was configured; Redis what remains to sell. Each change writes the
//! database row first (bumping its revision), then brings Redis up to that revision in one
//! script (`StockStore::sync`), then this gateway's cache; other gateways follow on their
//! next refresh, and a refresher that sees Redis behind the row syncs it (a crash between the
//! two steps heals). Redis decides what stock may do, atomically and on its own clock: a
//! started sale it lost is never loaded afresh (only a repair restores it), and stock never
//! drops below the units reserved. Adding stock is the only stock change allowed once a sale
//! has started.

use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use order_core::domain::promotion::{Promotion, PromotionError, PromotionFields, MAX_STOCK};
use order_core::redis::stock::{IfStarted, LiveStock, ShardStock, SyncOutcome};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::state::AppState;
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

fn invalid(e: PromotionError) -> ApiError {
    match e {
        PromotionError::LockedWhileRunning(_) | PromotionError::Ended => {
            ApiError::conflict(e.code(), e.to_string())
        }
        _ => ApiError::unprocessable(e.code(), e.to_string()),
    }
}

fn invalid_challenge(e: order_core::domain::sale_access::ChallengeError) -> ApiError {
    ApiError::unprocessable("invalid_challenge", e.to_string())
}

fn db_error(e: order_core::postgres::Error) -> ApiError {
    ApiError::dependency("promotion database call", e)
}

fn stock_error(e: order_core::redis::stock::StockError) -> ApiError {
    ApiError::dependency("promotion Redis call", e)
}

fn not_found() -> ApiError {
    ApiError::not_found("promotion_not_found", "no such promotion")
}

fn started_not_loaded(id: i64) -> ApiError {
    ApiError::conflict(
        "started_not_loaded",
        format!(
            "the sale has started and Redis does not hold it, so units may already be sold: pause it, \
             let the order backlog drain, then POST /admin/promotions/{id}/reconcile?repair=true"
        ),
    )
}

/// Bring Redis up to a row (`StockStore::sync`) and the cache with it. Refusals are logged
/// with the action; the caller answers them.
async fn sync(
    state: &AppState,
    row: &Promotion,
    if_started: IfStarted,
    action: &str,
) -> Result<SyncOutcome, order_core::redis::stock::StockError> {
    let outcome = state.stock.sync(row, if_started).await?;
    match outcome {
        SyncOutcome::BelowReserved { remaining } => tracing::warn!(
            promotion_id = row.id,
            action,
            stock = row.stock,
            remaining,
            "Redis refused the row's stock: below the units already reserved"
        ),
        SyncOutcome::StartedNotLoaded => tracing::warn!(
            promotion_id = row.id,
            action,
            "the sale has started and is not in Redis: not loaded afresh (reconcile with repair restores it)"
        ),
        _ => {}
    }
    if let Some(remaining) = outcome.remaining() {
        state.cache.upsert(row.clone()).set_remaining(remaining);
    }
    Ok(outcome)
}

/// After a committed write: the write stands even when Redis cannot follow right now (a
/// 5xx would make the operator press again, adding stock twice); the refreshers bring Redis
/// up to the row's revision once it answers.
async fn sync_after_write(state: &AppState, row: &Promotion, if_started: IfStarted, action: &str) {
    if let Err(e) = sync(state, row, if_started, action).await {
        tracing::warn!(
            promotion_id = row.id,
            action,
            error = %e,
            "written to the database; Redis follows on the next cache refresh"
        );
    }
}

/// The view answered after a committed write: `remaining` absent when Redis cannot say.
async fn view_after_write(state: &AppState, promotion: Promotion) -> AdminPromotion {
    let shards = state
        .stock
        .shard_stocks(promotion.sale())
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(promotion_id = promotion.id, error = %e, "remaining stock unreadable");
            Vec::new()
        });
    admin_view(state, promotion, shards)
}

/// The sale's remaining and each shard's stock, both absent until every shard is loaded.
fn stock_view(shards: &[Option<ShardStock>]) -> (Option<i64>, Vec<ShardStockBody>) {
    let Some(live) = LiveStock::of(shards) else {
        return (None, Vec::new());
    };
    let bodies = shards
        .iter()
        .flatten()
        .map(|s| ShardStockBody {
            shard: s.index,
            remaining: s.remaining,
            stock: s.stock(),
            taken_in: s.got,
            lent: s.lent,
        })
        .collect();
    (Some(live.remaining), bodies)
}

fn admin_view(state: &AppState, promotion: Promotion, shards: Vec<Option<ShardStock>>) -> AdminPromotion {
    let (remaining, shard_stock) = stock_view(&shards);
    AdminPromotion {
        state: promotion
            .state(state.cache.clock.now(), remaining.is_some_and(|r| r <= 0))
            .into(),
        remaining,
        shard_stock,
        promotion: PromotionBody::from(&promotion),
    }
}

async fn view(state: &AppState, promotion: Promotion) -> ApiResult<AdminPromotion> {
    let shards = state
        .stock
        .shard_stocks(promotion.sale())
        .await
        .map_err(stock_error)?;
    let entry = state.cache.upsert(promotion.clone());
    if let Some(live) = LiveStock::of(&shards) {
        entry.set_remaining(live.remaining);
    }
    Ok(admin_view(state, promotion, shards))
}

async fn load(state: &AppState, id: i64) -> ApiResult<Promotion> {
    state
        .promotions
        .get(id)
        .await
        .map_err(db_error)?
        .ok_or_else(not_found)
}

/// Time for the sale to be in Redis (a just-created sale that already started included).
fn within_warmup_lead(state: &AppState, p: &Promotion) -> bool {
    let lead = chrono::Duration::from_std(state.warmup_lead).unwrap_or_default();
    p.within_warmup_lead(state.cache.clock.now(), lead)
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
    State(state): State<AppState>,
    ApiJson(input): ApiJson<NewPromotionBody>,
) -> ApiResult<(StatusCode, Json<AdminPromotion>)> {
    let fields = PromotionFields::parse(input.into_domain().map_err(invalid_challenge)?).map_err(invalid)?;
    if fields.ends_at <= state.cache.clock.now() {
        return Err(ApiError::unprocessable(
            "invalid_window",
            "ends_at is in the past",
        ));
    }
    let promotion = state.promotions.insert(&fields).await.map_err(db_error)?;
    if within_warmup_lead(&state, &promotion) {
        // Just created: nothing can have been sold, so even a sale starting now is loaded.
        sync_after_write(&state, &promotion, IfStarted::LoadJustCreated, "create").await;
    }
    tracing::info!(
        promotion_id = promotion.id,
        stock = promotion.stock,
        "promotion created"
    );
    Ok((
        StatusCode::CREATED,
        Json(view_after_write(&state, promotion).await),
    ))
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
    State(state): State<AppState>,
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
        .promotions
        .list(query.before_id, limit)
        .await
        .map_err(db_error)?;
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
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<AdminPromotion>> {
    let promotion = load(&state, id).await?;
    Ok(Json(view(&state, promotion).await?))
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
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(patch): ApiJson<PromotionPatchBody>,
) -> ApiResult<Json<AdminPromotion>> {
    let current = load(&state, id).await?;
    let now = state.cache.clock.now();
    let fields = current
        .patched(patch.into_domain().map_err(invalid_challenge)?, now)
        .map_err(invalid)?;
    let edit_conflict = || {
        ApiError::conflict(
            "edit_conflict",
            "the promotion changed meanwhile; reload and retry",
        )
    };
    let updated = state
        .promotions
        .update(id, &fields, current.revision)
        .await
        .map_err(db_error)?
        .ok_or_else(edit_conflict)?;
    // A sale that had not started had nothing sold before its old start: it may be loaded
    // while Redis' clock is before that, even when the edit moves the start to now.
    let if_started = IfStarted::LoadIfBefore(current.starts_at);
    let refused = match sync(&state, &updated, if_started, "edit").await {
        Ok(SyncOutcome::BelowReserved { .. }) => Some(ApiError::conflict(
            "stock_below_reserved",
            "the sale has taken orders: stock cannot go below the units reserved (the edit was undone)",
        )),
        Ok(_) => None,
        // Redis could not judge the new stock: undo, so the retry starts from the same row.
        Err(e) => Some(stock_error(e)),
    };
    if let Some(refused) = refused {
        // Judged not started here, but Redis' clock started the sale meanwhile (a slow
        // database call) and units were reserved, or Redis is unreachable: undo the edit,
        // guarded by its revision.
        let undone = state
            .promotions
            .update(id, &current.fields(), updated.revision)
            .await
            .map_err(db_error)?;
        let Some(undone) = undone else {
            tracing::error!(
                promotion_id = id,
                "an edit Redis refused could not be undone (the row changed again); reconcile the promotion"
            );
            return Err(edit_conflict());
        };
        sync_after_write(&state, &undone, if_started, "undo edit").await;
        return Err(refused);
    }
    tracing::info!(
        promotion_id = id,
        stock = updated.stock,
        per_user_limit = updated.per_user_limit,
        starts_at = %updated.starts_at,
        ends_at = %updated.ends_at,
        "promotion updated"
    );
    Ok(Json(view_after_write(&state, updated).await))
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
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<StatusCode> {
    let promotion = load(&state, id).await?;
    let now = state.cache.clock.now();
    if promotion.has_started(now) && now < promotion.ends_at {
        return Err(ApiError::conflict(
            "promotion_running",
            "a running sale cannot be deleted; pause it instead",
        ));
    }
    if state
        .stock
        .reservation_count(promotion.sale())
        .await
        .map_err(stock_error)?
        > 0
    {
        return Err(ApiError::conflict("has_orders", "the promotion has orders"));
    }
    if !state.promotions.delete_unused(id).await.map_err(db_error)? {
        return Err(ApiError::conflict("has_orders", "the promotion has orders"));
    }
    state
        .stock
        .forget_promotion(promotion.sale())
        .await
        .map_err(stock_error)?;
    state.cache.remove(id);
    tracing::info!(promotion_id = id, "promotion deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_paused(state: AppState, id: i64, paused: bool) -> ApiResult<Json<AdminPromotion>> {
    let Some(promotion) = state.promotions.set_paused(id, paused).await.map_err(db_error)? else {
        return Err(missing_or_retired(&state, id).await);
    };
    let action = if paused { "pause" } else { "resume" };
    sync_after_write(&state, &promotion, IfStarted::Refuse, action).await;
    tracing::info!(promotion_id = id, paused, "promotion pause flag changed");
    Ok(Json(view_after_write(&state, promotion).await))
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
    State(state): State<AppState>,
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
    State(state): State<AppState>,
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
    State(state): State<AppState>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<AddStock>,
) -> ApiResult<Json<AdminPromotion>> {
    if !(1..=MAX_STOCK).contains(&body.units) {
        return Err(invalid(PromotionError::InvalidAddStock));
    }
    let current = load(&state, id).await?;
    if state.cache.clock.now() >= current.ends_at {
        return Err(invalid(PromotionError::Ended));
    }
    // Database first: if Redis then fails, Redis holds less than configured (never more)
    // until a refresher brings it up to the row's revision. Redis adds the difference between
    // the row's stock and its own, once, whoever applies the revision first (a warm-up that
    // read the new row, or this call).
    let promotion = state
        .promotions
        .add_stock(id, body.units)
        .await
        .map_err(db_error)?
        .ok_or_else(|| invalid(PromotionError::InvalidStock))?;
    sync_after_write(&state, &promotion, IfStarted::Refuse, "add stock").await;
    tracing::info!(promotion_id = id, units = body.units, "stock added");
    Ok(Json(view_after_write(&state, promotion).await))
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
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<WarmedUp>> {
    let promotion = load(&state, id).await?;
    let remaining = sync(&state, &promotion, IfStarted::Refuse, "warm-up")
        .await
        .map_err(stock_error)?
        .remaining()
        .ok_or_else(|| started_not_loaded(id))?;
    tracing::info!(promotion_id = id, remaining, "promotion warmed up");
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
async fn deployment_traffic(state: &AppState, id: i64) -> Result<SaleTraffic, ApiError> {
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
    State(state): State<AppState>,
    PathId(id): PathId,
) -> ApiResult<Json<PromotionStats>> {
    let promotion = load(&state, id).await?;
    let shards = state
        .stock
        .shard_stocks(promotion.sale())
        .await
        .map_err(stock_error)?;
    let (remaining, shard_stock) = stock_view(&shards);
    let reserved = state
        .stock
        .reservation_count(promotion.sale())
        .await
        .map_err(stock_error)?;
    let queued = state
        .stock
        .pending_count(promotion.sale())
        .await
        .map_err(stock_error)?;
    let counts = order_core::postgres::orders::order_counts(&state.deps.db, id)
        .await
        .map_err(|e| ApiError::dependency("count orders", e))?;
    let count = |status: &str| counts.get(status).copied().unwrap_or(0);
    Ok(Json(PromotionStats {
        promotion_id: id,
        state: promotion
            .state(state.cache.clock.now(), remaining.is_some_and(|r| r <= 0))
            .into(),
        stock: promotion.stock,
        remaining,
        shard_stock,
        reserved,
        queued,
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
    State(state): State<AppState>,
    PathId(id): PathId,
    query: Result<Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ReconcileReportBody>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let promotion = load(&state, id).await?;
    let report =
        order_core::app::reconcile::reconcile(&state.deps.db, &state.stock, &promotion, query.repair)
            .await
            .map_err(
                |e| match e.downcast_ref::<order_core::app::reconcile::SaleRetired>() {
                    Some(retired) => sale_retired(retired.to_string()),
                    None => ApiError::dependency("reconcile a promotion", e),
                },
            )?;
    if let Some(repair) = &report.repaired {
        tracing::warn!(
            promotion_id = id,
            drift = report.drift,
            released = repair.released,
            restored = repair.restored,
            requests_restored = repair.requests_restored,
            request_conflicts = repair.request_conflicts,
            remaining = repair.remaining,
            "promotion repaired"
        );
    } else if !report.consistent {
        tracing::warn!(
            promotion_id = id,
            drift = report.drift,
            "reconciliation found drift"
        );
    }
    if let Some(repair) = &report.repaired {
        state.cache.upsert(promotion).set_remaining(repair.remaining);
    }
    Ok(Json(report.into()))
}

/// 409 `sale_retired`: the sale ended and its keys left Redis.
fn sale_retired(message: impl Into<String>) -> ApiError {
    ApiError::conflict("sale_retired", message)
}

/// Why a guarded write to a promotion changed nothing: the sale was retired, or it is gone.
async fn missing_or_retired(state: &AppState, id: i64) -> ApiError {
    match state.promotions.keys_retired_at(id).await {
        Ok(Some(at)) => sale_retired(format!(
            "the sale's keys were retired from Redis at {at}: it can no longer change"
        )),
        Ok(None) => not_found(),
        Err(e) => db_error(e),
    }
}
