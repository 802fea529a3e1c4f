//! `POST /api/seckill/{promotion_id}/orders`: the hot path.
//!
//! limits → local cache (no I/O) → one Lua reserve in Redis → publish to Pulsar → 202.
//! PostgreSQL is never touched here.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use order_core::events::SeckillOrderAccepted;
use order_core::ids::OrderId;
use order_core::promotion::PromotionState;
use order_core::stock::{ReleaseOutcome, ReserveOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::startup::AppState;

/// Units per seckill request; a promotion's own per-user limit may be lower.
pub const MAX_QUANTITY: i64 = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeckillOrderRequest {
    #[serde(default = "one")]
    pub quantity: i64,
    pub request_id: String,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub order_id: OrderId,
    pub status: &'static str,
}

/// A validated quantity: 1 to `MAX_QUANTITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, ApiError> {
        if (1..=MAX_QUANTITY).contains(&raw) {
            Ok(Quantity(raw as u32))
        } else {
            Err(ApiError::unprocessable(
                "invalid_quantity",
                format!("quantity must be between 1 and {MAX_QUANTITY}"),
            ))
        }
    }
}

/// A client-chosen idempotency key: 1 to 64 of `A-Z a-z 0-9 . _ -`.
pub fn parse_request_id(raw: String) -> Result<String, ApiError> {
    let ok = (1..=64).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(raw)
    } else {
        Err(ApiError::unprocessable(
            "invalid_request_id",
            "request_id must be 1 to 64 characters of A-Z a-z 0-9 . _ -",
        ))
    }
}

fn rejection(state: PromotionState) -> Option<ApiError> {
    match state {
        PromotionState::Scheduled => Some(ApiError::forbidden("not_started", "the sale has not started")),
        PromotionState::Ended => Some(ApiError::forbidden("ended", "the sale has ended")),
        PromotionState::Paused => Some(ApiError::forbidden("paused", "the sale is paused")),
        PromotionState::SoldOut => Some(ApiError::conflict("sold_out", "sold out")),
        PromotionState::Active => None,
    }
}

/// The answer for a closed sale when Redis (rather than the local cache) found it closed.
fn closed(state: PromotionState) -> ApiError {
    rejection(state).unwrap_or_else(|| ApiError::unavailable("reserve stock", "an open sale was refused"))
}

fn limit_exceeded() -> ApiError {
    ApiError::conflict(
        "limit_exceeded",
        "you have reached the per-user limit for this sale",
    )
}

fn queued(order_id: OrderId) -> (StatusCode, Json<Queued>) {
    (
        StatusCode::ACCEPTED,
        Json(Queued {
            order_id,
            status: "queued",
        }),
    )
}

#[utoipa::path(post, path = "/api/seckill/{promotion_id}/orders", tag = "seckill", security(("user_jwt" = [])), params(("promotion_id" = i64, Path)), request_body = SeckillOrderRequest, responses((status = 202, body = Queued), (status = 400, description = "malformed request", body = crate::error::ErrorBody), (status = 401, description = "missing or invalid credentials", body = crate::error::ErrorBody), (status = 403, description = "sale not open (not_started, ended, paused)", body = crate::error::ErrorBody), (status = 404, description = "not found", body = crate::error::ErrorBody), (status = 409, description = "conflict (sold_out, limit_exceeded, out_of_stock, illegal_transition, …)", body = crate::error::ErrorBody), (status = 413, description = "body too large", body = crate::error::ErrorBody), (status = 415, description = "not JSON", body = crate::error::ErrorBody), (status = 422, description = "invalid body or field", body = crate::error::ErrorBody), (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody), (status = 503, description = "a dependency is unavailable or checkout is busy (Retry-After)", body = crate::error::ErrorBody)))]
pub async fn place_seckill_order(
    State(state): State<AppState>,
    PathId(promotion_id): PathId,
    user: User,
    ApiJson(body): ApiJson<SeckillOrderRequest>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let result = place(&state, promotion_id, user, body).await;
    let outcome = match &result {
        Ok(_) => {
            state.rejections.count(promotion_id, crate::rejections::ACCEPTED);
            "accepted"
        }
        Err(e) => {
            if state.cache.get(promotion_id).is_some() {
                state.rejections.count(promotion_id, e.code);
            }
            match e.code {
                code @ ("sold_out"
                | "limit_exceeded"
                | "not_started"
                | "ended"
                | "paused"
                | "rate_limited"
                | "promotion_not_found") => code,
                "unavailable" => "error",
                _ => "invalid_request",
            }
        }
    };
    metrics::counter!("seckill_orders_total", "outcome" => outcome).increment(1);
    result
}

async fn place(
    state: &AppState,
    promotion_id: i64,
    user: User,
    body: SeckillOrderRequest,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    state.limits.check_user(user.id)?;
    let quantity = Quantity::parse(body.quantity)?;
    let request_id = parse_request_id(body.request_id)?;

    let entry = state
        .cache
        .get(promotion_id)
        .ok_or_else(|| ApiError::not_found("promotion_not_found", "no such promotion"))?;
    let local_state = entry.state();
    if let Some(rejected) = rejection(local_state) {
        // Nobody can hold an order before the start, and most of a sold-out flood holds
        // none: both are rejected without I/O. A user who may hold one could be retrying an
        // accepted request, which must get its order id back.
        if local_state == PromotionState::Scheduled || !entry.may_hold_order(user.id) {
            return Err(rejected);
        }
        return match state
            .stock
            .order_for_request(promotion_id, user.id, &request_id)
            .await
        {
            Ok(Some(order_id)) => Ok(queued(order_id)),
            Ok(None) => Err(rejected),
            Err(e) => {
                tracing::debug!(error = %e, "request id lookup failed; answering from the cache");
                Err(rejected)
            }
        };
    }
    if i64::from(quantity.0) > i64::from(entry.promotion.per_user_limit) {
        return Err(limit_exceeded());
    }

    let order_id = state.ids.next_id();
    let reserve = || {
        order_core::metrics::timed(
            "redis",
            "reserve",
            state
                .stock
                .reserve(promotion_id, user.id, &request_id, quantity.0, order_id),
        )
    };
    let mut outcome = reserve()
        .await
        .map_err(|e| ApiError::unavailable("reserve stock", e))?;
    if outcome == ReserveOutcome::NotLoaded {
        if entry.promotion.has_started(Utc::now()) {
            // Loading a started sale afresh would offer its whole stock again next to the
            // orders already taken: Redis lost it, and only a reconcile can restore it.
            return Err(not_loaded(promotion_id));
        }
        // Not started: nothing can have been reserved, so loading now is safe.
        state
            .stock
            .warmup(&entry.promotion)
            .await
            .map_err(|e| ApiError::unavailable("warm up a promotion", e))?;
        outcome = reserve()
            .await
            .map_err(|e| ApiError::unavailable("reserve stock", e))?;
    }

    match outcome {
        ReserveOutcome::Reserved { order_id, remaining } => {
            crate::request_id::record_order_id(order_id);
            entry.add_buyer(user.id);
            if remaining <= 0 {
                entry.mark_sold_out();
            }
            let p = &entry.promotion;
            let event = SeckillOrderAccepted {
                event_id: order_id.to_string(),
                event_type: SeckillOrderAccepted::TYPE.to_owned(),
                version: SeckillOrderAccepted::VERSION,
                occurred_at: Utc::now(),
                order_id,
                promotion_id,
                user_id: user.id,
                sku_id: p.sku_id.clone(),
                title: p.title.clone(),
                quantity: quantity.0,
                unit_price_cents: p.price_cents,
                request_id,
            };
            let (published, indexed) = tokio::join!(
                order_core::metrics::timed("pulsar", "publish", state.publisher.publish(&event)),
                state.stock.index_order(order_id, promotion_id)
            );
            if let Err(e) = indexed {
                tracing::warn!(%order_id, error = %e, "order index not written; polling sees it once persisted");
            }
            tracing::debug!(promotion_id, remaining, "reserved; publishing");
            if let Err(publish_error) = published {
                return Err(release_after_failed_publish(state, promotion_id, order_id, publish_error).await);
            }
            Ok(queued(order_id))
        }
        ReserveOutcome::Duplicate { order_id } => {
            crate::request_id::record_order_id(order_id);
            Ok(queued(order_id))
        }
        ReserveOutcome::SoldOut => {
            entry.mark_sold_out();
            Err(closed(PromotionState::SoldOut))
        }
        ReserveOutcome::LimitExceeded => Err(limit_exceeded()),
        ReserveOutcome::NotStarted => Err(closed(PromotionState::Scheduled)),
        ReserveOutcome::Ended => Err(closed(PromotionState::Ended)),
        ReserveOutcome::Paused => Err(closed(PromotionState::Paused)),
        ReserveOutcome::NotLoaded => Err(not_loaded(promotion_id)),
    }
}

/// 503 `not_loaded`: the sale's stock is not in Redis (the refresher logs what to do).
fn not_loaded(promotion_id: i64) -> ApiError {
    ApiError {
        retry_after_secs: Some(5),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_loaded",
            format!("sale {promotion_id} is not available right now; retry later"),
        )
    }
}

/// The broker did not take the order: give the stock back (and let the same request id try
/// again), then tell the client to retry.
async fn release_after_failed_publish(
    state: &AppState,
    promotion_id: i64,
    order_id: OrderId,
    publish_error: order_core::bus::PublishError,
) -> ApiError {
    metrics::counter!("seckill_publish_failures_total").increment(1);
    match state.stock.release(promotion_id, order_id, true).await {
        Ok(ReleaseOutcome::Released { remaining }) => {
            if let Some(entry) = state.cache.get(promotion_id) {
                entry.set_remaining(remaining);
            }
            ApiError::unavailable(
                &format!("publish order {order_id}; reservation released"),
                publish_error,
            )
        }
        Ok(ReleaseOutcome::NothingToRelease) => ApiError::unavailable(
            &format!("publish order {order_id}; reservation was already released"),
            publish_error,
        ),
        // The reservation stays; the recovery sweeper republishes it. The client may retry
        // with the same request id and gets this order id.
        Err(release_error) => ApiError::unavailable(
            &format!("publish order {order_id} ({publish_error}); release its reservation"),
            release_error,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(1).is_ok());
        assert!(Quantity::parse(MAX_QUANTITY).is_ok());
        for bad in [0, -1, MAX_QUANTITY + 1, i64::MAX] {
            assert_eq!(Quantity::parse(bad).map_err(|e| e.code), Err("invalid_quantity"));
        }
    }

    #[test]
    fn request_id_charset_and_length() {
        assert!(parse_request_id("a1.B_2-c".into()).is_ok());
        for bad in ["", "has space", "pipe|x", "colon:x", &"x".repeat(65)] {
            assert_eq!(
                parse_request_id(bad.to_owned()).map_err(|e| e.code),
                Err("invalid_request_id"),
                "{bad}"
            );
        }
    }
}
