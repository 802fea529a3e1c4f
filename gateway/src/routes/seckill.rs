//! `POST /api/seckill/{promotion_id}/orders`: the hot path.
//!
//! shed when overloaded (`shedding`, before the body is read) → limits → local cache (no I/O) → sale token (an HMAC, no I/O) → one Lua reserve in Redis
//! → confirmed on the replicas (`redis::durability`, batched per shard) → publish to Pulsar → 202.
//! PostgreSQL is never touched per request (a sale the cache has not seen wakes its
//! refresher early, at most every 100 ms).
//!
//! A reservation is a promise: once `reserve.lua` took a unit for an order id, that order
//! will be persisted — by this publish, by a retry's publish, or by the recovery sweeper.
//! Nothing here ever releases it. So a failed or timed-out publish answers 503
//! `order_unconfirmed` (retry with the same request id) and keeps the unit; a retry on any
//! gateway finds the order id and, while the order is not yet persisted, publishes a copy
//! before answering 202. The writer stores one row per order id.
//!
//! Nothing is published before Redis confirmed the reservation (its node still holds the
//! sale's history, and the replicas hold the reservation): a 202 never rests on a write
//! only one Redis node had. Unconfirmed, the order stays reserved and the buyer retries.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId};
use order_core::domain::promotion::{Promotion, PromotionState};
use order_core::domain::reservation::Reservation;
use order_core::domain::shards::SaleShards;
use order_core::redis::durability::{Claim, Confirmation};
use order_core::redis::stock::{IfStarted, ReserveOutcome, SyncOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, PathId};
use crate::promotion_cache::LocalDecision;
use crate::sale_counters::{SaleEvent, SaleRejection};
use crate::state::AppState;

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
    State(state): State<AppState>,
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
    state: &AppState,
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
        let not_found = || ApiError::not_found("promotion_not_found", "no such promotion");
        let sale = state
            .promotions
            .sale_shards(promotion_id)
            .await
            .map_err(|e| ApiError::dependency("look up a promotion", e))?
            .ok_or_else(not_found)?;
        return match held_order(state, sale, &user, &request_id).await? {
            Some(order_id) => Ok(queued(order_id)),
            None => Err(not_found().into()),
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
                if let Some(order_id) = held_order(state, entry.promotion.sale(), &user, &request_id).await? {
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
    let reserve = || {
        order_core::runtime::metrics::timed(
            "redis",
            "reserve",
            state
                .stock
                .reserve(entry.promotion.sale(), user.id, &request_id, quantity, order_id),
        )
    };
    let mut outcome = reserve()
        .await
        .map_err(|e| ApiError::dependency("reserve stock", e))?;
    if outcome == ReserveOutcome::NotLoaded {
        // Loading a started sale afresh would offer its whole stock again next to the orders
        // already taken: the script refuses it (on Redis' clock), and only a repair restores
        // it. A sale that has not started had nothing reserved, so loading it is safe.
        let loaded = state
            .stock
            .sync(&entry.promotion, IfStarted::Refuse)
            .await
            .map_err(|e| ApiError::dependency("warm up a promotion", e))?;
        if loaded == SyncOutcome::StartedNotLoaded {
            return Err(not_loaded(promotion_id).into());
        }
        outcome = reserve()
            .await
            .map_err(|e| ApiError::dependency("reserve stock", e))?;
    }

    match outcome {
        ReserveOutcome::Reserved { order_id, remaining } => {
            crate::request_id::record_order_id(order_id);
            entry.reserved(remaining);
            let reservation = Reservation {
                order_id,
                user_id: user.id.get(),
                quantity: quantity.get(),
                reserved_at_ms: state.cache.clock.now_ms(),
                request_id: request_id.into_string(),
            };
            // One Redis call per accepted order (and one confirmation per batch of them):
            // polls find the order through its sale.
            tracing::debug!(promotion_id, remaining, "reserved; publishing");
            confirm(state, &entry.promotion, user.id.get(), order_id, Claim::New).await?;
            publish(state, &entry.promotion, &reservation).await?;
            Ok(queued(order_id))
        }
        ReserveOutcome::Duplicate {
            order_id,
            reservation,
            pending,
        } => {
            crate::request_id::record_order_id(order_id);
            // The first attempt may still be publishing, or may have timed out: a 202 needs
            // a copy of the order on its way. The writer keeps one row per order id.
            if let (true, Some(reservation)) = (pending, reservation) {
                confirm(state, &entry.promotion, user.id.get(), order_id, Claim::Held).await?;
                publish(state, &entry.promotion, &reservation).await?;
            }
            Ok(queued(order_id))
        }
        ReserveOutcome::SoldOut => {
            entry.mark_sold_out();
            entry.snapshot_now(&state.stock, &state.cache.clock).await;
            Err(closed(PromotionState::SoldOut))
        }
        ReserveOutcome::LimitExceeded => Err(SaleRejection::LimitExceeded.into()),
        ReserveOutcome::NotStarted => Err(closed(PromotionState::Scheduled)),
        ReserveOutcome::Ended => {
            entry.snapshot_now(&state.stock, &state.cache.clock).await;
            Err(closed(PromotionState::Ended))
        }
        ReserveOutcome::Paused => {
            entry.snapshot_now(&state.stock, &state.cache.clock).await;
            Err(closed(PromotionState::Paused))
        }
        ReserveOutcome::NotLoaded => Err(not_loaded(promotion_id).into()),
        ReserveOutcome::Recovering => Err(SaleRejection::Recovering.into()),
    }
}

/// Redis' confirmation of an order before it is published: the reservation is on its
/// shard's node and on the replicas asked for, and a new unit was taken in the history the
/// sale was verified in (a retry of an order held before needs no more than the first two).
/// Unconfirmed, the order stays reserved (a retry with the same request id confirms it
/// then, or reserves anew where the node lost it) and nothing is published.
async fn confirm(
    state: &AppState,
    promotion: &Promotion,
    user_id: i64,
    order_id: OrderId,
    claim: Claim,
) -> Result<(), Refusal> {
    let shard = promotion.sale().shard_of(user_id);
    let confirmed = order_core::runtime::metrics::timed(
        "redis",
        "confirm",
        state.confirmer.confirm(shard, order_id, claim),
    )
    .await
    .map_err(|e| ApiError::dependency("confirm a reservation", e))?;
    let outcome = match confirmed {
        Confirmation::Confirmed => "confirmed",
        Confirmation::Unreplicated { .. } => "unreplicated",
        Confirmation::Missing => "missing",
        Confirmation::Fenced => "fenced",
        Confirmation::NotLoaded => "not_loaded",
    };
    metrics::counter!("seckill_confirmations_total", "outcome" => outcome).increment(1);
    match confirmed {
        Confirmation::Confirmed => Ok(()),
        Confirmation::Unreplicated { .. } | Confirmation::Missing => Err(retry_later(
            "order_unconfirmed",
            "your order is held, but Redis has not confirmed it on its replicas yet; retry with the same request_id".into(),
        )
        .into()),
        Confirmation::Fenced => Err(SaleRejection::Recovering.into()),
        Confirmation::NotLoaded => Err(not_loaded(promotion.id).into()),
    }
}

/// The order this buyer's request id already holds, if any (a retry's answer when the usual
/// path cannot give it).
async fn held_order(
    state: &AppState,
    sale: SaleShards,
    user: &User,
    request_id: &RequestId,
) -> Result<Option<OrderId>, ApiError> {
    state
        .stock
        .order_for_request(sale, user.id.get(), request_id.as_str())
        .await
        .map_err(|e| ApiError::dependency("look up a request id", e))
}

/// Publish an accepted order and wait for the broker's receipt. On failure the
/// reservation is kept (the order is promised: a retry with the same request id publishes
/// it again, the recovery sweeper republishes it if nobody does) and the client is asked to
/// retry with the same request id.
async fn publish(state: &AppState, promotion: &Promotion, reservation: &Reservation) -> Result<(), ApiError> {
    let event = reservation.accepted_event(promotion);
    let published =
        order_core::runtime::metrics::timed("pulsar", "publish", state.publisher.publish(&event)).await;
    // Logged once per streak of failures (a broker outage under a flood fails every request).
    let was_failing = state.publish_failing.swap(published.is_err(), Ordering::Relaxed);
    match published {
        Ok(()) => {
            if was_failing {
                tracing::info!("publishing accepted orders works again");
            }
            Ok(())
        }
        Err(e) => {
            metrics::counter!("seckill_publish_failures_total").increment(1);
            if !was_failing {
                tracing::warn!(order_id = %reservation.order_id, error = %e, "publish an accepted order; reservations are kept and clients asked to retry");
            }
            Err(retry_later(
                "order_unconfirmed",
                "your order is held, but the order queue has not confirmed it yet; retry with the same request_id".into(),
            ))
        }
    }
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
