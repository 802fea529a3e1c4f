//! `GET /api/orders/{id}`: the caller's order, and the long poll on it (`?wait_ms=N`, held
//! while the order's status is the one the app last saw, `?status=`, `queued` by default).
//!
//! Every accepted buyer's app polls here until its order leaves `queued`: the flood's second
//! wave. While the order's sale is current (in this gateway's cache), the answer comes from
//! Redis alone: `queued` from the reservation and the pending set, then the status marker the
//! writer records once the order is persisted (and the payment and lifecycle paths move
//! forward). PostgreSQL answers only for checkout orders, sales that have cooled down (left
//! the cache), and markers that are missing or older than `orders.status_max_age_secs` (a
//! marker write a crash skipped is thereby stale for at most that long; a writer that died
//! before its Redis step leaves `queued` until the sweeper takes the stored order out of the
//! pending set). An order of a month past the retention is read from that month's archive
//! file (`archived: true`, its final status). Another user's order is indistinguishable from
//! a missing one.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, TimeZone, Utc};
use order_core::domain::ids::OrderId;
use order_core::domain::orders::{OrderView, SeenStatus};
use order_core::domain::shards::SaleShards;
use order_core::postgres::{order_data, orders};
use order_core::redis::stock::{OrderInRedis, StatusMarker};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::User;
use crate::error::{ApiError, ApiResult};
use crate::extract::PathId;
use crate::settings::StatusSource;
use crate::state::AppState;
use crate::wire::checkout::OrderViewBody;

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrderQuery {
    /// Hold the request until the order's status changes, at most this many milliseconds
    /// (the gateway's `orders.long_poll_max_ms`, 10000 by default). Counts against the
    /// per-user rate limit.
    #[param(minimum = 0, maximum = 10000)]
    pub wait_ms: Option<u64>,
    /// With `wait_ms`: the status the app last saw (default `queued`). The answer comes as
    /// soon as the order's status is another one.
    #[param(
        pattern = "^(queued|pending_payment|paid|shipped|completed|cancelled|refund_requested|refunded)$"
    )]
    pub status: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "orders",
    security(("user_jwt" = [])),
    params(("id" = i64, Path, description = "numeric id", minimum = 1), OrderQuery),
    responses(
        (status = 200, body = OrderViewBody),
        (status = 400, description = "malformed request (invalid_query: wait_ms above the maximum)", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody),
        crate::responses::UserFailures,
    ),
)]
pub async fn get_order(
    State(state): State<AppState>,
    PathId(id): PathId,
    user: User,
    query: Result<Query<OrderQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<OrderViewBody>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let order_id = OrderId(id);
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
    if wait > state.long_poll_max {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("wait_ms is at most {}", state.long_poll_max.as_millis()),
        ));
    }
    if wait.is_zero() {
        let order = current(&state, order_id, user.id.get()).await?;
        return order.map(|o| Json(o.into())).ok_or_else(not_found);
    }
    let known = match query.status.as_deref() {
        None => SeenStatus::Queued,
        Some(raw) => SeenStatus::parse(raw)
            .ok_or_else(|| ApiError::bad_request("invalid_query", "status is an order status"))?,
    };
    state.limits.check_user(user.id.get())?;
    let watching = state.order_watch.watch(order_id).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_waiters",
            e.to_string(),
        )
        .retry_after(1)
    })?;
    let deadline = tokio::time::Instant::now() + wait;
    // Registered before the first look, so a change right after it is not missed.
    let mut change = Box::pin(watching.next_change());
    let mut latest = current(&state, order_id, user.id.get())
        .await?
        .ok_or_else(not_found)?;
    loop {
        if latest.status != known || state.order_watch.is_closing() {
            return Ok(Json(latest.into()));
        }
        tokio::select! {
            _ = &mut change => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(latest.into())),
        }
        change = Box::pin(watching.next_change());
        latest = current(&state, order_id, user.id.get())
            .await?
            .ok_or_else(not_found)?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(latest.into()));
        }
    }
}

/// The order as it stands: from Redis while its sale is current, else from the database.
async fn current(state: &AppState, order_id: OrderId, user_id: i64) -> ApiResult<Option<OrderView>> {
    // What the current sales hold of the order, read at most once per answer.
    let mut in_redis = None;
    if state.status_source == StatusSource::Redis {
        let found = held_by_current_sale(state, order_id, user_id).await?;
        if let Some((entry, seen)) = &found {
            let judged = judge(
                seen,
                order_id,
                entry.promotion.id,
                user_id,
                entry.promotion.price_cents,
                state.status_max_age,
            );
            match judged {
                FromRedis::Order(view) => return Ok(Some(view)),
                FromRedis::NotTheirs => return Ok(None),
                FromRedis::AskDatabase => {}
            }
        }
        in_redis = Some(found);
    }
    if let Some(order) = orders::find_for_user(&state.deps.db, order_id, user_id)
        .await
        .map_err(|e| ApiError::dependency("read an order", e))?
    {
        return Ok(Some(order));
    }
    // Not in the database: an accepted order still on its way there.
    let found = match in_redis {
        Some(found) => found,
        None => held_by_current_sale(state, order_id, user_id).await?,
    };
    if let Some((entry, seen)) = found {
        return Ok(seen.reservation.filter(|r| r.user_id == user_id).map(|r| {
            queued(
                order_id,
                entry.promotion.id,
                entry.promotion.price_cents,
                r.quantity,
                r.reserved_at_ms,
            )
        }));
    }
    // Older than the retention: its month went to the archive. Asked after the current
    // sales, so the polls of orders still on their way (the common miss) do not pay for it,
    // and before the older sales' Redis keys, which are gone by then.
    if let Some(order) = order_data::find_archived(&state.deps.db, &state.archive_dir, order_id, user_id)
        .await
        .map_err(|e| ApiError::dependency("read an archived order", e))?
    {
        return Ok(Some(order));
    }
    // Of a sale this gateway does not hold: created a moment ago on another gateway, or
    // over for a while.
    let sales = sales_in_database_around(state, order_id)
        .await
        .map_err(|e| ApiError::dependency("look up an order's sale", e))?;
    for sale in sales {
        if let Some(view) = queued_elsewhere(state, order_id, sale, user_id).await? {
            return Ok(Some(view));
        }
    }
    Ok(None)
}

/// The current sale (in this gateway's cache) that holds the order in Redis, with what it
/// holds: looked up in the sales that ran when the order id was minted (usually one).
async fn held_by_current_sale(
    state: &AppState,
    order_id: OrderId,
    user_id: i64,
) -> ApiResult<
    Option<(
        std::sync::Arc<crate::promotion_cache::CachedPromotion>,
        OrderInRedis,
    )>,
> {
    let mut candidates = state.cache.sales_around(order_id.minted_at_ms());
    if candidates.is_empty() {
        return Ok(None);
    }
    let sales: Vec<_> = candidates.iter().map(|e| e.promotion.sale()).collect();
    let found = state
        .stock
        .find_order(&sales, user_id, order_id)
        .await
        .map_err(|e| ApiError::dependency("look up an order in Redis", e))?;
    Ok(found.map(|(index, seen)| (candidates.swap_remove(index), seen)))
}

/// Every sale, current or not, that ran when the order id was minted.
async fn sales_in_database_around(state: &AppState, order_id: OrderId) -> sqlx::Result<Vec<SaleShards>> {
    let Some(minted) = at_ms(order_id.minted_at_ms()) else {
        return Ok(Vec::new());
    };
    let margin = chrono::Duration::from_std(crate::promotion_cache::MINT_MARGIN).unwrap_or_default();
    state.promotions.sales_running_around(minted, margin).await
}

/// What Redis can say of a seckill order without the database.
enum FromRedis {
    Order(OrderView),
    /// Another user's order: answered as missing.
    NotTheirs,
    /// Not a seckill order of a current sale, or Redis cannot vouch for it.
    AskDatabase,
}

/// Redis' view of one order, judged: the marker when it is the buyer's and fresh, `queued`
/// while the reservation waits in the pending set, else the database.
fn judge(
    seen: &OrderInRedis,
    order_id: OrderId,
    promotion_id: i64,
    user_id: i64,
    unit_price: i64,
    max_age: Duration,
) -> FromRedis {
    if let Some(marker) = &seen.marker {
        if marker.user_id != user_id {
            return FromRedis::NotTheirs;
        }
        return match fresh(marker, seen.now_ms, max_age) {
            true => FromRedis::Order(OrderView {
                order_id,
                status: SeenStatus::Stored(marker.status),
                kind: "seckill".to_owned(),
                promotion_id: Some(promotion_id),
                total_cents: marker.total_cents,
                expires_at: marker.expires_at_ms.and_then(at_ms),
                created_at: at_ms(marker.created_at_ms).unwrap_or_else(Utc::now),
                archived: false,
            }),
            false => FromRedis::AskDatabase,
        };
    }
    match &seen.reservation {
        Some(r) if r.user_id != user_id => FromRedis::NotTheirs,
        Some(r) if seen.pending => FromRedis::Order(queued(
            order_id,
            promotion_id,
            unit_price,
            r.quantity,
            r.reserved_at_ms,
        )),
        // Persisted without a marker (its write failed), or released: the database knows.
        _ => FromRedis::AskDatabase,
    }
}

/// A marker is trusted for `max_age` after it was written, and an unpaid one not past its
/// expiry (the canceller may have cancelled it since).
fn fresh(marker: &StatusMarker, now_ms: i64, max_age: Duration) -> bool {
    let young = now_ms - marker.written_at_ms <= max_age.as_millis() as i64;
    young && !marker.unpaid_past_expiry(now_ms)
}

fn at_ms(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn queued(
    order_id: OrderId,
    promotion_id: i64,
    unit_price: i64,
    quantity: u32,
    reserved_at_ms: i64,
) -> OrderView {
    OrderView {
        order_id,
        status: SeenStatus::Queued,
        kind: "seckill".to_owned(),
        promotion_id: Some(promotion_id),
        total_cents: unit_price * i64::from(quantity),
        expires_at: None,
        created_at: at_ms(reserved_at_ms).unwrap_or_else(Utc::now),
        archived: false,
    }
}

/// Not in the database: an accepted order still on its way there, of a sale this gateway's
/// cache does not hold (yet).
async fn queued_elsewhere(
    state: &AppState,
    order_id: OrderId,
    sale: SaleShards,
    user_id: i64,
) -> ApiResult<Option<OrderView>> {
    let promotion_id = sale.id();
    let lookup = |e| ApiError::dependency("look up a queued order", e);
    let Some(reservation) = state
        .stock
        .reservation(sale.shard_of(user_id), order_id)
        .await
        .map_err(lookup)?
        .filter(|r| r.user_id == user_id)
    else {
        return Ok(None);
    };
    let unit_price = state
        .cache
        .get(promotion_id)
        .map_or(0, |e| e.promotion.price_cents);
    Ok(Some(queued(
        order_id,
        promotion_id,
        unit_price,
        reservation.quantity,
        reservation.reserved_at_ms,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_core::domain::lifecycle::OrderStatus;
    use order_core::domain::reservation::Reservation;

    fn marker(status: OrderStatus, written_at_ms: i64, expires_at_ms: Option<i64>) -> StatusMarker {
        StatusMarker {
            status,
            user_id: 7,
            total_cents: 300,
            expires_at_ms,
            created_at_ms: 1_000,
            written_at_ms,
        }
    }

    fn seen(marker: Option<StatusMarker>, pending: bool, now_ms: i64) -> OrderInRedis {
        OrderInRedis {
            reservation: Some(Reservation {
                order_id: OrderId(5),
                user_id: 7,
                quantity: 3,
                reserved_at_ms: 1_000,
                request_id: "r".into(),
            }),
            pending,
            marker,
            now_ms,
        }
    }

    fn status(answer: FromRedis) -> Option<String> {
        match answer {
            FromRedis::Order(view) => Some(view.status.to_string()),
            FromRedis::NotTheirs => Some("not theirs".into()),
            FromRedis::AskDatabase => None,
        }
    }

    #[test]
    fn redis_answers_queued_then_fresh_markers_and_leaves_the_rest_to_the_database() {
        let age = Duration::from_secs(60);
        let judged = |s: &OrderInRedis, user| status(judge(s, OrderId(5), 2, user, 100, age));
        assert_eq!(judged(&seen(None, true, 2_000), 7), Some("queued".into()));
        assert_eq!(judged(&seen(None, true, 2_000), 8), Some("not theirs".into()));
        assert_eq!(
            judged(&seen(None, false, 2_000), 7),
            None,
            "persisted, marker missing"
        );
        let paid = marker(OrderStatus::Paid, 2_000, Some(900_000));
        assert_eq!(
            judged(&seen(Some(paid.clone()), false, 3_000), 7),
            Some("paid".into())
        );
        assert_eq!(
            judged(&seen(Some(paid), false, 62_001), 7),
            None,
            "older than the max age"
        );
        let unpaid = marker(OrderStatus::PendingPayment, 2_000, Some(10_000));
        assert_eq!(
            judged(&seen(Some(unpaid.clone()), false, 9_999), 7),
            Some("pending_payment".into())
        );
        assert_eq!(
            judged(&seen(Some(unpaid), false, 10_000), 7),
            None,
            "past its expiry"
        );
    }
}
