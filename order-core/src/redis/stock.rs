//! Flash-sale stock in Redis: the Lua scripts of `lua/` behind typed calls.
//!
//! Every key of one promotion carries the hash tag `{promo:<id>}`, so each script touches a
//! single slot and runs unchanged on Redis Cluster. Scripts run by `EVALSHA` (loaded on first
//! use) over the shared multiplexed connection.

use std::collections::HashMap;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use crate::domain::lifecycle::OrderStatus;
use crate::domain::promotion::Promotion;
use crate::domain::reservation::Reservation;

/// The Redis keys of one promotion.
#[derive(Debug, Clone)]
pub struct PromotionKeys {
    pub meta: String,
    pub buyers: String,
    pub requests: String,
    pub reservations: String,
    pub pending: String,
    /// Orders released for good (cancelled or refunded): a repair never restores them.
    pub released: String,
    /// Status markers of persisted orders (see `order_persisted.lua`).
    pub orders: String,
}

impl PromotionKeys {
    pub fn new(promotion_id: i64) -> Self {
        let tag = format!("{{promo:{promotion_id}}}");
        Self {
            meta: format!("{tag}:meta"),
            buyers: format!("{tag}:buyers"),
            requests: format!("{tag}:requests"),
            reservations: format!("{tag}:reservations"),
            pending: format!("{tag}:pending"),
            released: format!("{tag}:released"),
            orders: format!("{tag}:orders"),
        }
    }

    fn all(&self) -> [&str; 7] {
        [
            &self.meta,
            &self.buyers,
            &self.requests,
            &self.reservations,
            &self.pending,
            &self.released,
            &self.orders,
        ]
    }
}

/// What `reserve.lua` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    Reserved {
        order_id: OrderId,
        remaining: i64,
    },
    /// The same user already sent this request id: the first attempt's order, its
    /// reservation (`None` once released: the order was cancelled) and whether it still
    /// waits to be persisted (then a copy must be on its way before the retry gets 202).
    Duplicate {
        order_id: OrderId,
        reservation: Option<Reservation>,
        pending: bool,
    },
    NotLoaded,
    NotStarted,
    Ended,
    Paused,
    LimitExceeded,
    SoldOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    Released {
        remaining: i64,
    },
    /// Already released, or never reserved.
    NothingToRelease,
}

/// What `sync_promotion.lua` did with one revision of a promotion row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Loaded for the first time with the row's stock.
    Loaded { remaining: i64 },
    /// A newer revision: rules follow the row, remaining moved by the stock difference.
    Applied { remaining: i64 },
    /// Redis already reflects this revision or a newer one: nothing written.
    Current { remaining: i64 },
    /// Refused: Redis does not hold the sale and it has started on Redis' clock. Units may
    /// have been sold before Redis lost it: only a repair (reconcile) restores it.
    StartedNotLoaded,
    /// Refused: the row's stock is below the units already reserved.
    BelowReserved { remaining: i64 },
}

impl SyncOutcome {
    /// Remaining stock in Redis, when the sale is loaded.
    pub fn remaining(self) -> Option<i64> {
        match self {
            SyncOutcome::Loaded { remaining }
            | SyncOutcome::Applied { remaining }
            | SyncOutcome::Current { remaining }
            | SyncOutcome::BelowReserved { remaining } => Some(remaining),
            SyncOutcome::StartedNotLoaded => None,
        }
    }
}

/// May `sync` load a sale that has already started?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfStarted {
    /// Most callers: a started sale missing from Redis was lost, not new.
    Refuse,
    /// An edit of a sale that had not started (moving its start to now, say): nothing was
    /// sold while Redis' clock is before the start the sale had before the edit.
    LoadIfBefore(chrono::DateTime<chrono::Utc>),
    /// The request that just created the row: nothing can have been sold yet.
    LoadJustCreated,
}

/// What `repair.lua` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairOutcome {
    pub remaining: i64,
    /// Reservations given back to live orders the database holds.
    pub restored: i64,
    /// Reservations taken from cancelled or refunded orders.
    pub released: i64,
    /// Request ids mapped again to their orders.
    pub requests_restored: i64,
    /// Request ids Redis maps to another order than the database's (left as they are).
    pub request_conflicts: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from {script}: {reply}")]
    UnexpectedReply { script: &'static str, reply: String },
}

/// The channel every status marker change is published on (the order id as the message):
/// each gateway subscribes once and wakes the long polls of that order.
pub const ORDER_STATUS_CHANNEL: &str = "seckill:order-status";

/// A persisted order as the writer hands it to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedOrder {
    pub promotion_id: i64,
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub user_id: i64,
    pub total_cents: i64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What the database held of an order when its marker was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMarker {
    pub status: OrderStatus,
    pub user_id: i64,
    pub total_cents: i64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    /// On Redis' clock.
    pub written_at_ms: i64,
}

impl StatusMarker {
    /// Unpaid and past its expiry: the canceller may have cancelled it since, so the marker
    /// no longer answers for the order.
    pub fn unpaid_past_expiry(&self, now_ms: i64) -> bool {
        self.status == OrderStatus::PendingPayment && self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// One seckill order as Redis holds it, with Redis' clock at the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderInRedis {
    pub reservation: Option<Reservation>,
    /// Accepted and not yet persisted.
    pub pending: bool,
    pub marker: Option<StatusMarker>,
    pub now_ms: i64,
}

/// `rank|status|user|total|expires_ms|created_ms|written_ms`.
fn decode_marker(raw: &str) -> Option<StatusMarker> {
    let mut parts = raw.split('|');
    let _rank = parts.next()?;
    let status = parts.next()?.parse().ok()?;
    let user_id = parts.next()?.parse().ok()?;
    let total_cents = parts.next()?.parse().ok()?;
    let expires_at_ms: i64 = parts.next()?.parse().ok()?;
    let created_at_ms = parts.next()?.parse().ok()?;
    let written_at_ms = parts.next()?.parse().ok()?;
    Some(StatusMarker {
        status,
        user_id,
        total_cents,
        expires_at_ms: (expires_at_ms > 0).then_some(expires_at_ms),
        created_at_ms,
        written_at_ms,
    })
}

/// The hash value `reserve.lua` writes for a reservation.
fn encode_reservation(r: &Reservation) -> String {
    format!(
        "{}|{}|{}|{}",
        r.user_id, r.quantity, r.reserved_at_ms, r.request_id
    )
}

fn decode_reservation(order_id: OrderId, payload: &str) -> Option<Reservation> {
    let mut parts = payload.splitn(4, '|');
    Some(Reservation {
        order_id,
        user_id: parts.next()?.parse().ok()?,
        quantity: parts.next()?.parse().ok()?,
        reserved_at_ms: parts.next()?.parse().ok()?,
        request_id: parts.next()?.to_owned(),
    })
}

/// A gateway's atomic view of one loaded promotion (`snapshot.lua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub remaining: i64,
    pub paused: bool,
    /// Counts every change that can reopen the sale.
    pub epoch: String,
    /// Sold out, paused or ended on Redis' clock: no new buyer before the epoch moves.
    pub closed: bool,
    /// Redis' clock when the snapshot was taken.
    pub now_ms: i64,
    /// Every buyer, when closed and the caller's epoch differed; otherwise empty.
    pub buyers: Vec<i64>,
    /// The promotion row revision Redis reflects.
    pub revision: i64,
}

/// Remaining stock and pause flag as Redis has them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStock {
    pub remaining: i64,
    pub paused: bool,
}

/// Cheap to clone: one multiplexed connection and the scripts, shared.
#[derive(Clone)]
pub struct StockStore {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
}

struct Scripts {
    reserve: Script,
    release: Script,
    sync: Script,
    repair: Script,
    snapshot: Script,
    order_persisted: Script,
    order_status: Script,
    order_view: Script,
}

impl std::fmt::Debug for StockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockStore").finish_non_exhaustive()
    }
}

impl StockStore {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            scripts: Arc::new(Scripts {
                reserve: Script::new(include_str!("../../../lua/reserve.lua")),
                release: Script::new(include_str!("../../../lua/release.lua")),
                sync: Script::new(include_str!("../../../lua/sync_promotion.lua")),
                repair: Script::new(include_str!("../../../lua/repair.lua")),
                snapshot: Script::new(include_str!("../../../lua/snapshot.lua")),
                order_persisted: Script::new(include_str!("../../../lua/order_persisted.lua")),
                order_status: Script::new(include_str!("../../../lua/order_status.lua")),
                order_view: Script::new(include_str!("../../../lua/order_view.lua")),
            }),
        }
    }

    /// Reserve units for one buyer's request (`reserve.lua`). The parameter types carry what
    /// the script relies on: a request id without the `:` and `|` its keys and payloads use
    /// as separators, and a quantity within bounds.
    pub async fn reserve(
        &self,
        promotion: PromotionId,
        user: UserId,
        request_id: &RequestId,
        quantity: Quantity,
        order_id: OrderId,
    ) -> Result<ReserveOutcome, StockError> {
        let k = PromotionKeys::new(promotion.get());
        let mut conn = self.conn.clone();
        let (code, id, remaining, payload, pending): (i64, String, i64, String, i64) = self
            .scripts
            .reserve
            .key(&k.meta)
            .key(&k.buyers)
            .key(&k.requests)
            .key(&k.reservations)
            .key(&k.pending)
            .arg(user.get())
            .arg(request_id.as_str())
            .arg(quantity.get())
            .arg(order_id.0)
            .invoke_async(&mut conn)
            .await?;
        let unexpected = || StockError::UnexpectedReply {
            script: "reserve.lua",
            reply: format!("{code} {id:?} {remaining}"),
        };
        Ok(match code {
            1 => ReserveOutcome::Reserved {
                order_id: id.parse().map_err(|_| unexpected())?,
                remaining,
            },
            2 => {
                let order_id = id.parse().map_err(|_| unexpected())?;
                ReserveOutcome::Duplicate {
                    order_id,
                    reservation: decode_reservation(order_id, &payload),
                    pending: pending == 1,
                }
            }
            -1 => ReserveOutcome::NotLoaded,
            -2 => ReserveOutcome::NotStarted,
            -3 => ReserveOutcome::Ended,
            -4 => ReserveOutcome::Paused,
            -5 => ReserveOutcome::LimitExceeded,
            -6 => ReserveOutcome::SoldOut,
            _ => return Err(unexpected()),
        })
    }

    /// Undo the reservation of an order the database holds as cancelled or refunded, at most
    /// once. Never for an order that is not in the database (see `release.lua`).
    pub async fn release(&self, promotion_id: i64, order_id: OrderId) -> Result<ReleaseOutcome, StockError> {
        let k = PromotionKeys::new(promotion_id);
        let mut conn = self.conn.clone();
        let (code, remaining): (i64, i64) = self
            .scripts
            .release
            .key(&k.meta)
            .key(&k.buyers)
            .key(&k.reservations)
            .key(&k.pending)
            .key(&k.released)
            .arg(order_id.0)
            .invoke_async(&mut conn)
            .await?;
        match code {
            1 => Ok(ReleaseOutcome::Released { remaining }),
            0 => Ok(ReleaseOutcome::NothingToRelease),
            _ => Err(StockError::UnexpectedReply {
                script: "release.lua",
                reply: format!("{code} {remaining}"),
            }),
        }
    }

    /// Bring Redis up to this revision of the promotion row (`sync_promotion.lua`): loads a
    /// sale that has not started, applies rules, pause flag and stock changes of a newer
    /// revision, ignores an older one. Every write to the row is followed by this call.
    pub async fn sync(&self, p: &Promotion, if_started: IfStarted) -> Result<SyncOutcome, StockError> {
        let k = PromotionKeys::new(p.id);
        let mut invocation = self.scripts.sync.prepare_invoke();
        for key in k.all() {
            invocation.key(key);
        }
        Self::row_args(&mut invocation, p);
        invocation.arg(match if_started {
            IfStarted::Refuse => p.starts_at.timestamp_millis(),
            IfStarted::LoadIfBefore(start) => start.max(p.starts_at).timestamp_millis(),
            IfStarted::LoadJustCreated => i64::MAX,
        });
        let mut conn = self.conn.clone();
        let (code, remaining): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(match code {
            1 => SyncOutcome::Loaded { remaining },
            2 => SyncOutcome::Applied { remaining },
            3 => SyncOutcome::Current { remaining },
            -1 => SyncOutcome::StartedNotLoaded,
            -2 => SyncOutcome::BelowReserved { remaining },
            _ => {
                return Err(StockError::UnexpectedReply {
                    script: "sync_promotion.lua",
                    reply: format!("{code} {remaining}"),
                })
            }
        })
    }

    /// The promotion row as `sync_promotion.lua` and `repair.lua` take it (ARGV 1 to 7).
    fn row_args(invocation: &mut redis::ScriptInvocation<'_>, p: &Promotion) {
        invocation
            .arg(p.stock)
            .arg(p.per_user_limit)
            .arg(p.starts_at.timestamp_millis())
            .arg(p.ends_at.timestamp_millis())
            .arg(if p.paused { "1" } else { "0" })
            .arg(p.created_at.timestamp_micros())
            .arg(p.revision);
    }

    /// Rebuild a promotion's Redis state from the database's orders in one atomic step
    /// (`repair.lua`): `live` orders hold their reservations, `dead` (cancelled or refunded)
    /// ones do not; reservations still in flight are kept; buyers and remaining recounted.
    pub async fn repair(
        &self,
        p: &Promotion,
        live: &[Reservation],
        dead: &[Reservation],
    ) -> Result<RepairOutcome, StockError> {
        let k = PromotionKeys::new(p.id);
        let mut invocation = self.scripts.repair.prepare_invoke();
        for key in k.all() {
            invocation.key(key);
        }
        Self::row_args(&mut invocation, p);
        invocation.arg(live.len());
        for r in live.iter().chain(dead) {
            invocation.arg(r.order_id.0).arg(encode_reservation(r));
        }
        let mut conn = self.conn.clone();
        let (remaining, restored, released, requests_restored, request_conflicts) =
            invocation.invoke_async(&mut conn).await?;
        Ok(RepairOutcome {
            remaining,
            restored,
            released,
            requests_restored,
            request_conflicts,
        })
    }

    /// Atomic views of several promotions (`snapshot.lua`), pipelined in one round trip.
    /// `known_epochs[i]`: the epoch of the buyer list the caller holds for `promotion_ids[i]`.
    /// `None` for a promotion that is not loaded.
    pub async fn snapshots(
        &self,
        promotion_ids: &[i64],
        known_epochs: &[Option<String>],
    ) -> Result<Vec<Option<Snapshot>>, StockError> {
        if promotion_ids.is_empty() {
            return Ok(Vec::new());
        }
        // Concurrent calls share the multiplexed connection: one pipelined round trip.
        type Raw = (i64, i64, i64, String, i64, i64, Vec<i64>, i64);
        let calls = promotion_ids.iter().zip(known_epochs).map(|(id, epoch)| {
            let k = PromotionKeys::new(*id);
            let mut conn = self.conn.clone();
            let script = &self.scripts.snapshot;
            let epoch = epoch.clone().unwrap_or_default();
            async move {
                script
                    .key(&k.meta)
                    .key(&k.buyers)
                    .arg(&epoch)
                    .invoke_async::<Raw>(&mut conn)
                    .await
            }
        });
        let rows = futures::future::try_join_all(calls).await?;
        Ok(rows
            .into_iter()
            .map(
                |(loaded, remaining, paused, epoch, closed, now_ms, buyers, revision)| {
                    (loaded == 1).then_some(Snapshot {
                        remaining,
                        paused: paused == 1,
                        epoch,
                        closed: closed == 1,
                        now_ms,
                        buyers,
                        revision,
                    })
                },
            )
            .collect())
    }

    /// Redis' clock (Unix ms): the one clock every decision about sale windows and
    /// reservation ages uses.
    pub async fn redis_time_ms(&self) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Remaining stock and pause flag of several promotions in one pipelined round trip;
    /// `None` for a promotion that is not loaded.
    pub async fn live_stock(&self, promotion_ids: &[i64]) -> Result<Vec<Option<LiveStock>>, StockError> {
        if promotion_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in promotion_ids {
            pipe.cmd("HMGET")
                .arg(PromotionKeys::new(*id).meta)
                .arg("remaining")
                .arg("paused");
        }
        let mut conn = self.conn.clone();
        let rows: Vec<(Option<i64>, Option<String>)> = pipe.query_async(&mut conn).await?;
        Ok(rows
            .into_iter()
            .map(|(remaining, paused)| {
                remaining.map(|remaining| LiveStock {
                    remaining,
                    paused: paused.as_deref() == Some("1"),
                })
            })
            .collect())
    }

    pub async fn reservation(
        &self,
        promotion_id: i64,
        order_id: OrderId,
    ) -> Result<Option<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let payload: Option<String> = redis::cmd("HGET")
            .arg(PromotionKeys::new(promotion_id).reservations)
            .arg(order_id.0)
            .query_async(&mut conn)
            .await?;
        Ok(payload.and_then(|p| decode_reservation(order_id, &p)))
    }

    /// The order a user's request id reserved, if any (read only): answers a retry for a
    /// sale the gateway no longer lists (ended long ago) with the order it holds.
    pub async fn order_for_request(
        &self,
        promotion_id: i64,
        user_id: i64,
        request_id: &str,
    ) -> Result<Option<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = redis::cmd("HGET")
            .arg(PromotionKeys::new(promotion_id).requests)
            .arg(format!("{user_id}:{request_id}"))
            .query_async(&mut conn)
            .await?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    /// Record what the database holds of orders just persisted: their status markers answer
    /// buyers' polls without the database, and their long polls wake (`order_persisted.lua`).
    /// The orders leave the pending set.
    pub async fn mark_persisted(&self, orders: &[PersistedOrder]) -> Result<(), StockError> {
        let mut by_promotion: HashMap<i64, Vec<&PersistedOrder>> = HashMap::new();
        for order in orders {
            by_promotion.entry(order.promotion_id).or_default().push(order);
        }
        let mut conn = self.conn.clone();
        for (promotion_id, orders) in by_promotion {
            let k = PromotionKeys::new(promotion_id);
            let mut invocation = self.scripts.order_persisted.key(&k.orders);
            invocation.key(&k.pending).arg(ORDER_STATUS_CHANNEL);
            for o in orders {
                invocation
                    .arg(o.order_id.0)
                    .arg(o.status.rank())
                    .arg(o.status.as_str())
                    .arg(o.user_id)
                    .arg(o.total_cents)
                    .arg(o.expires_at_ms.unwrap_or(0))
                    .arg(o.created_at_ms);
            }
            let _written: i64 = invocation.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Move a persisted order's marker to a later status after the database committed it
    /// (`order_status.lua`); `false` when Redis holds no marker or a later one.
    pub async fn mark_status(
        &self,
        promotion_id: i64,
        order_id: OrderId,
        status: OrderStatus,
    ) -> Result<bool, StockError> {
        let mut conn = self.conn.clone();
        let moved: i64 = self
            .scripts
            .order_status
            .key(PromotionKeys::new(promotion_id).orders)
            .arg(ORDER_STATUS_CHANNEL)
            .arg(order_id.0)
            .arg(status.rank())
            .arg(status.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// What Redis knows of one seckill order, read atomically (`order_view.lua`).
    pub async fn order_in_redis(
        &self,
        promotion_id: i64,
        order_id: OrderId,
    ) -> Result<OrderInRedis, StockError> {
        let k = PromotionKeys::new(promotion_id);
        let mut conn = self.conn.clone();
        let (reservation, pending, marker, now_ms): (String, i64, String, i64) = self
            .scripts
            .order_view
            .key(&k.reservations)
            .key(&k.pending)
            .key(&k.orders)
            .arg(order_id.0)
            .invoke_async(&mut conn)
            .await?;
        let marker = match marker.as_str() {
            "" => None,
            raw => Some(decode_marker(raw).ok_or_else(|| StockError::UnexpectedReply {
                script: "order_view.lua",
                reply: raw.to_owned(),
            })?),
        };
        Ok(OrderInRedis {
            reservation: decode_reservation(order_id, &reservation),
            pending: pending == 1,
            marker,
            now_ms,
        })
    }

    /// Which of `promotion_ids` holds `order_id` (a reservation or a status marker), as its
    /// index in the slice, and what it holds, looked up in each at once (one pipelined round
    /// trip). There is no index from
    /// order id to sale: accepting an order costs one Redis call, and a poll looks in the few
    /// sales that ran when the id was minted.
    pub async fn find_order(
        &self,
        promotion_ids: &[i64],
        order_id: OrderId,
    ) -> Result<Option<(usize, OrderInRedis)>, StockError> {
        let views =
            futures::future::try_join_all(promotion_ids.iter().map(|id| self.order_in_redis(*id, order_id)))
                .await?;
        Ok(views
            .into_iter()
            .enumerate()
            .find(|(_, seen)| seen.reservation.is_some() || seen.marker.is_some() || seen.pending))
    }

    /// Forget that these orders wait to be persisted (they are in the database now).
    pub async fn clear_pending(&self, orders: &[(i64, OrderId)]) -> Result<(), StockError> {
        if orders.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (promotion_id, order_id) in orders {
            pipe.cmd("ZREM")
                .arg(PromotionKeys::new(*promotion_id).pending)
                .arg(order_id.0)
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Orders reserved at or before `reserved_before_ms` and still waiting to be persisted.
    pub async fn stale_pending(
        &self,
        promotion_id: i64,
        reserved_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(PromotionKeys::new(promotion_id).pending)
            .arg("-inf")
            .arg(reserved_before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Move pending orders' scores to `now_ms` (they were just republished).
    pub async fn touch_pending(
        &self,
        promotion_id: i64,
        ids: &[OrderId],
        now_ms: i64,
    ) -> Result<(), StockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(PromotionKeys::new(promotion_id).pending).arg("XX");
        for id in ids {
            cmd.arg(now_ms).arg(id.0);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The live reservations among `ids` (`None` where released or unknown).
    pub async fn reservations(
        &self,
        promotion_id: i64,
        ids: &[OrderId],
    ) -> Result<Vec<Option<Reservation>>, StockError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(PromotionKeys::new(promotion_id).reservations);
        for id in ids {
            cmd.arg(id.0);
        }
        let mut conn = self.conn.clone();
        let payloads: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        Ok(ids
            .iter()
            .zip(payloads)
            .map(|(id, p)| p.and_then(|p| decode_reservation(*id, &p)))
            .collect())
    }

    /// Every live reservation of a promotion (reconciliation; stock-sized).
    pub async fn all_reservations(&self, promotion_id: i64) -> Result<Vec<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(PromotionKeys::new(promotion_id).reservations)
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, payload)| decode_reservation(id.parse().ok()?, &payload))
            .collect())
    }

    /// One command on one key.
    async fn on_key<T: redis::FromRedisValue>(&self, command: &str, key: String) -> Result<T, StockError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd(command).arg(key).query_async(&mut conn).await?)
    }

    /// Remaining stock and pause flag of one promotion (`None`: not loaded).
    pub async fn live_stock_of(&self, promotion_id: i64) -> Result<Option<LiveStock>, StockError> {
        Ok(self.live_stock(&[promotion_id]).await?.pop().flatten())
    }

    /// Units held per buyer, as the buyers hash has them.
    pub async fn all_buyers(&self, promotion_id: i64) -> Result<HashMap<i64, i64>, StockError> {
        self.on_key("HGETALL", PromotionKeys::new(promotion_id).buyers)
            .await
    }

    /// Orders waiting to be persisted.
    pub async fn pending_count(&self, promotion_id: i64) -> Result<u64, StockError> {
        self.on_key("ZCARD", PromotionKeys::new(promotion_id).pending)
            .await
    }

    /// Number of live reservations of a promotion.
    pub async fn reservation_count(&self, promotion_id: i64) -> Result<u64, StockError> {
        self.on_key("HLEN", PromotionKeys::new(promotion_id).reservations)
            .await
    }

    /// Units a user holds in live reservations of a promotion.
    pub async fn units_held(&self, promotion_id: i64, user_id: i64) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let held: Option<i64> = redis::cmd("HGET")
            .arg(PromotionKeys::new(promotion_id).buyers)
            .arg(user_id)
            .query_async(&mut conn)
            .await?;
        Ok(held.unwrap_or(0))
    }

    /// Drop every key of a promotion (it was deleted before any order existed).
    pub async fn forget_promotion(&self, promotion_id: i64) -> Result<(), StockError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(&PromotionKeys::new(promotion_id).all()[..])
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_of_a_promotion_share_one_hash_tag() {
        let k = PromotionKeys::new(42);
        for key in k.all() {
            assert!(key.starts_with("{promo:42}:"), "{key}");
        }
    }

    #[test]
    fn a_reservation_payload_keeps_pipes_inside_the_request_id() {
        let r = decode_reservation(OrderId(9), "17|2|1700000000000|req|with|pipes").expect("parses");
        assert_eq!(
            (r.user_id, r.quantity, r.request_id.as_str()),
            (17, 2, "req|with|pipes")
        );
        assert_eq!(decode_reservation(OrderId(9), "garbage"), None);
    }
}
