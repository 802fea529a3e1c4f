//! `POST /api/seckill/{promotion_id}/orders`: the hot path.
//!
//! shed when overloaded (`shedding`, before the body is read) → limits → local cache (no
//! I/O) → sale token (an HMAC, no I/O) → the placing use case (`order_core::app::seckill`:
//! one Lua reserve in Redis → confirmed on the replicas → published to Pulsar) → 202.
//! PostgreSQL is never touched per request (a sale the cache has not seen wakes its
//! refresher early, at most every 100 ms).
//!
//! A 202 is a promise: an order the use case held but could not confirm or publish answers
//! 503 `order_unconfirmed` (retry with the same request id) and keeps its unit; a retry on
//! any gateway gets the same order.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use order_core::app::seckill::{Awaiting, PlaceError, Refusal as SeckillRefusal, SeckillOrder};
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId};
use order_core::domain::promotion::PromotionState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::promotion_cache::LocalDecision;
use crate::sale_counters::{SaleEvent, SaleRejection};
use crate::state::SeckillRoutes;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeckillOrderRequest {
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 100, default = 1)]
    pub quantity: i64,
    /// The app's idempotency key for this order: the same key gets the same order.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub request_id: String,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    #[schema(value_type = crate::wire::OrderIdSchema)]
    pub order_id: OrderId,
    pub status: &'static str,
}

fn parse_quantity(raw: i64) -> Result<Quantity, ApiError> {
    Quantity::parse(raw).map_err(|e| ApiError::unprocessable("invalid_quantity", e.to_string()))
}

/// The request id, parsed once (`RequestId`), or 422 `invalid_request_id`.
fn parse_request_id(raw: String) -> Result<RequestId, ApiError> {
    RequestId::parse(raw).map_err(|e| ApiError::unprocessable("invalid_request_id", e.to_string()))
}

/// Why an order was not accepted: the sale refused this buyer (counted per reason), or
/// anything else (bad input, rate limit, a dependency).
#[derive(Debug)]
enum Refusal {
    Sale(SaleRejection),
    Other(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Other(e)
    }
}

impl From<SaleRejection> for Refusal {
    fn from(r: SaleRejection) -> Self {
        Refusal::Sale(r)
    }
}

/// The metric label of a refusal that is not the sale's: by what the client should do.
fn other_outcome(e: &ApiError) -> &'static str {
    match e.status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::NOT_FOUND => "promotion_not_found",
        status if status.is_server_error() => "error",
        _ => "invalid_request",
    }
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

/// A 503 that asks for the same request id again, without logging per request (a broker
/// outage under a flood would otherwise log every request; the cause is logged where it
/// is detected, once per streak).
fn retry_later(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(1)
}

#[utoipa::path(
    post,
    path = "/api/seckill/{promotion_id}/orders",
    tag = "seckill",
    security(("user_jwt" = [])),
    params(
        ("promotion_id" = i64, Path, description = "numeric id", minimum = 1),
        ("X-Sale-Token" = Option<String>, Header, description = "the buyer's sale token (`POST /api/seckill/{promotion_id}/token`); required when the sale has `requires_token`"),
    ),
    request_body = SeckillOrderRequest,
    responses(
        (status = 202, body = Queued),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 401, description = "missing or invalid credentials", body = crate::error::ErrorBody),
        (status = 403, description = "sale not open (`not_started`, `ended`, `paused`), or the sale needs a sale token: `sale_token_required` (none sent), `sale_token_invalid` (not this buyer's for this sale), `sale_token_expired`; for these three, get a token and retry with the same request id (a retry of an order already held with a lapsed token gets its order)", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 409, description = "sold_out, limit_exceeded", body = crate::error::ErrorBody),
        (status = 413, description = "body too large", body = crate::error::ErrorBody),
        (status = 415, description = "not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody),
        (status = 500, description = "internal_error: a bug (not retryable; logged with its cause)", body = crate::error::ErrorBody),
        (status = 503, description = "retry with the same request id (Retry-After): `overloaded` (shed before any work: this gateway is saturated), `order_unconfirmed` (the order is held but Redis' replicas or the queue did not confirm it yet), `recovering` (the sale repairs itself after a Redis failover), `not_loaded`, `no_order_ids`, `unavailable`", body = crate::error::ErrorBody),
    ),
)]
pub async fn place_seckill_order(
    State(state): State<Arc<SeckillRoutes>>,
    PathId(promotion_id): PathId,
    user: User,
    headers: HeaderMap,
    worked_on: Option<axum::Extension<crate::shedding::WorkedOn>>,
    ApiJson(body): ApiJson<SeckillOrderRequest>,
) -> ApiResult<(StatusCode, Json<Queued>)> {
    let promotion =
        PromotionId::parse(promotion_id).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let worked_on = worked_on.map(|w| w.0);
    let (outcome, result) = match place(&state, promotion, user, &headers, body, worked_on.as_ref()).await {
        Ok(accepted) => {
            state.counters.count(promotion_id, SaleEvent::Accepted);
            ("accepted", Ok(accepted))
        }
        Err(Refusal::Sale(reason)) => {
            if state.cache.get(promotion_id).is_some() {
                state.counters.count(promotion_id, SaleEvent::Rejected(reason));
            }
            (reason.code(), Err(reason.into()))
        }
        Err(Refusal::Other(e)) => {
            if e.status == StatusCode::TOO_MANY_REQUESTS && state.cache.get(promotion_id).is_some() {
                state.counters.count(promotion_id, SaleEvent::Shed);
            }
            (other_outcome(&e), Err(e))
        }
    };
    metrics::counter!("seckill_orders_total", "outcome" => outcome).increment(1);
    result
}

/// The sale refused a buyer for what Redis or the local cache found: a state that lets
/// everyone in here (`Active`) is a bug.
fn closed(state: PromotionState) -> Refusal {
    match SaleRejection::of_state(state) {
        Some(reason) => Refusal::Sale(reason),
        None => Refusal::Other(ApiError::internal("reserve stock", "an open sale was refused")),
    }
}

async fn place(
    state: &SeckillRoutes,
    promotion: PromotionId,
    user: User,
    headers: &HeaderMap,
    body: SeckillOrderRequest,
    worked_on: Option<&crate::shedding::WorkedOn>,
) -> Result<(StatusCode, Json<Queued>), Refusal> {
    let promotion_id = promotion.get();
    state.limits.check_user(user.id.get())?;
    let quantity = parse_quantity(body.quantity)?;
    let request_id = parse_request_id(body.request_id)?;

    // A sale this gateway has not seen yet (created a moment ago elsewhere) is looked up.
    let Some(entry) = state
        .cache
        .find(promotion_id)
        .await
        .map_err(|e| ApiError::unavailable("look up a promotion", e))?
    else {
        // Not a current sale: it may have ended long ago, and a retry still gets its order
        // (on its buyer's shard: the row says how many the sale has).
        let held = state
            .seckill
            .held_in_past_sale(promotion_id, user.id, &request_id)
            .await
            .map_err(place_error)?;
        return match held {
            Some(order_id) => Ok(queued(order_id)),
            None => Err(ApiError::not_found("promotion_not_found", "no such promotion").into()),
        };
    };
    let now = state.cache.clock.now();
    // A bot without a genuine token is refused before it costs a Redis call. A buyer whose
    // genuine token lapsed may be retrying an order it holds: that retry still gets its
    // order (one Redis read); anything else asks for a fresh token (403, retryable with the
    // same request id).
    if entry.promotion.access.requires_token {
        let checked =
            state
                .sale_tokens
                .check_order(headers, promotion_id, user.id.get(), now.timestamp_millis());
        if let Err(refusal) = checked {
            if refusal == SaleRejection::TokenExpired {
                let held = state
                    .seckill
                    .held_order(entry.promotion.sale(), user.id, &request_id)
                    .await
                    .map_err(place_error)?;
                if let Some(order_id) = held {
                    return Ok(queued(order_id));
                }
            }
            return Err(refusal.into());
        }
    }
    // Nobody can hold an order before the start, and most of a closed sale's flood holds
    // none: both are refused without I/O. A user who may hold one goes on to Redis, which
    // answers a retry with its order id whatever the sale's state.
    if let LocalDecision::Reject(local) = entry.decide(user.id.get(), now) {
        return Err(closed(local));
    }
    if i64::from(quantity.get()) > i64::from(entry.promotion.per_user_limit) {
        return Err(SaleRejection::LimitExceeded.into());
    }

    // Minted only under a valid worker-id lease: two gateways never mint the same id.
    let order_id = state.ids.mint().map_err(|_| {
        retry_later(
            "no_order_ids",
            "this gateway is renewing its order-id lease; retry with the same request_id".into(),
        )
    })?;
    // From here the request costs Redis and the broker: its latency drives the limit.
    if let Some(worked_on) = worked_on {
        worked_on.mark();
    }
    let placed = state
        .seckill
        .place(
            SeckillOrder {
                promotion: &entry.promotion,
                user: user.id,
                request_id: &request_id,
                quantity,
                order_id,
                clock: &state.cache.clock,
            },
            |remaining| entry.reserved(remaining),
        )
        .await
        .map_err(place_error)?;
    match placed {
        Ok(order_id) => Ok(queued(order_id)),
        Err(refusal) => {
            // What Redis found closed is this gateway's news too: later requests are
            // refused without I/O.
            match refusal {
                SeckillRefusal::Closed(PromotionState::SoldOut) => {
                    entry.mark_sold_out();
                    entry.snapshot_now(&state.stock, &state.cache.clock).await;
                }
                SeckillRefusal::Closed(PromotionState::Ended | PromotionState::Paused) => {
                    entry.snapshot_now(&state.stock, &state.cache.clock).await;
                }
                _ => {}
            }
            Err(refused(promotion_id, refusal))
        }
    }
}

/// The answer to an order the use case did not queue.
fn refused(promotion_id: i64, refusal: SeckillRefusal) -> Refusal {
    match refusal {
        SeckillRefusal::Closed(state) => closed(state),
        SeckillRefusal::LimitExceeded => SaleRejection::LimitExceeded.into(),
        SeckillRefusal::Recovering => SaleRejection::Recovering.into(),
        SeckillRefusal::NotLoaded => not_loaded(promotion_id).into(),
        SeckillRefusal::Unconfirmed {
            awaiting: Awaiting::Replicas,
            ..
        } => retry_later(
            "order_unconfirmed",
            "your order is held, but Redis has not confirmed it on its replicas yet; retry with the same request_id".into(),
        )
        .into(),
        SeckillRefusal::Unconfirmed {
            awaiting: Awaiting::Queue,
            ..
        } => retry_later(
            "order_unconfirmed",
            "your order is held, but the order queue has not confirmed it yet; retry with the same request_id".into(),
        )
        .into(),
    }
}

fn place_error(e: PlaceError) -> ApiError {
    ApiError::dependency(e.step(), e)
}

/// 503 `not_loaded`: the sale's stock is not in Redis (the refresher logs what to do).
fn not_loaded(promotion_id: i64) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_loaded",
        format!("sale {promotion_id} is not available right now; retry later"),
    )
    .retry_after(5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_core::domain::ids::MAX_QUANTITY;

    #[test]
    fn quantity_bounds() {
        assert!(parse_quantity(1).is_ok());
        assert!(parse_quantity(MAX_QUANTITY).is_ok());
        for bad in [0, -1, MAX_QUANTITY + 1, i64::MAX] {
            assert_eq!(parse_quantity(bad).map_err(|e| e.code), Err("invalid_quantity"));
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
