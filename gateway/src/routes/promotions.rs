//! `GET /api/promotions/{id}`: the public view, served from the local cache.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

use crate::error::ApiResult;
use crate::extract::PathId;
use crate::promotion_cache::CachedPromotion;
use crate::state::SeckillRoutes;
use crate::wire::promotions::PromotionStateBody;

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicPromotion {
    pub id: i64,
    pub sku_id: String,
    pub title: String,
    pub price_cents: i64,
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub state: PromotionStateBody,
    /// Approximate (refreshed about twice a second).
    pub remaining: i64,
    /// Orders need a sale token (`POST /api/seckill/{id}/token`).
    pub requires_token: bool,
    /// What the app passes before it gets a token: `none`, `proof_of_work` or `webhook`.
    #[schema(pattern = "^(none|proof_of_work|webhook)$")]
    pub challenge: &'static str,
}

impl PublicPromotion {
    fn of(entry: &CachedPromotion, now: DateTime<Utc>) -> Self {
        let p = &entry.promotion;
        Self {
            id: p.id,
            sku_id: p.sku_id.clone(),
            title: p.title.clone(),
            price_cents: p.price_cents,
            per_user_limit: p.per_user_limit,
            starts_at: p.starts_at,
            ends_at: p.ends_at,
            state: entry.state(now).into(),
            remaining: entry.remaining(),
            requires_token: p.access.requires_token,
            challenge: p.access.challenge.kind(),
        }
    }
}

#[utoipa::path(
    get,
    path = "/api/promotions/{id}",
    tag = "seckill",
    params(("id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = PublicPromotion),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 500, description = "internal_error: a bug (not retryable; logged with its cause)", body = crate::error::ErrorBody),
        (status = 503, description = "a dependency is unavailable; retry after Retry-After", body = crate::error::ErrorBody),
    ),
)]
pub async fn get_promotion(
    State(state): State<Arc<SeckillRoutes>>,
    PathId(id): PathId,
) -> ApiResult<Json<PublicPromotion>> {
    let entry = state.current_sale(id).await?;
    Ok(Json(PublicPromotion::of(&entry, state.cache.clock.now())))
}
