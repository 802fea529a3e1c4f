//! Flash-sale stock in Redis: the Lua scripts of `lua/` behind typed calls.
//!
//! Every key of one promotion carries the hash tag `{promo:<id>}`, so each script touches a
//! single slot and runs unchanged on Redis Cluster; calls that touch several sales send one
//! command per sale, together, never a pipeline across slots. Scripts run by `EVALSHA`
//! (loaded on first use, on every node of a cluster) over the shared multiplexed connection.

use std::collections::HashMap;
use std::sync::Arc;

use crate::redis::RedisConnection;
use redis::Script;

use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::lifecycle::OrderStatus;
use crate::domain::promotion::Promotion;
use crate::domain::reservation::Reservation;
use crate::domain::shards::{SaleShards, Shard};

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
    /// Orders confirmed in the history the shard was verified in (`confirm.lua`): a retry of
    /// one is confirmed again while the shard is fenced.
    pub confirmed: String,
}

impl PromotionKeys {
    /// The keys of a sale on one shard (every sale created without `shards`).
    pub fn new(promotion_id: i64) -> Self {
        Self::of(SaleShards::single(promotion_id).shard(0))
    }

    /// The keys of one shard of a sale: each shard has a full set under its own hash tag.
    pub fn of(shard: Shard) -> Self {
        let tag = format!("{{{}}}", shard.tag());
        Self {
            meta: format!("{tag}:meta"),
            buyers: format!("{tag}:buyers"),
            requests: format!("{tag}:requests"),
            reservations: format!("{tag}:reservations"),
            pending: format!("{tag}:pending"),
            released: format!("{tag}:released"),
            orders: format!("{tag}:orders"),
            confirmed: format!("{tag}:confirmed"),
        }
    }

    fn all(&self) -> [&str; 8] {
        [
            &self.meta,
            &self.buyers,
            &self.requests,
            &self.reservations,
            &self.pending,
            &self.released,
            &self.orders,
            &self.confirmed,
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
    /// The sale's Redis node may have lost writes of it (a failover to a replica that
    /// lagged, a restart from an old append-only file): it sells again once recovered.
    Recovering,
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

/// The orders a repair rebuilds a sale from.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairOrders<'a> {
    /// In the database, not cancelled or refunded.
    pub live: &'a [Reservation],
    /// Accepted and on their way to the database (read from the broker).
    pub queued: &'a [Reservation],
    /// Cancelled or refunded.
    pub dead: &'a [Reservation],
}

/// Who repairs: an operator (reconcile with repair; a fence stays) or the recovery that read
/// every accepted order of the sale (it ends the fence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairKind {
    Operator,
    Recover,
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

#[derive(Debug, Clone, thiserror::Error)]
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
    pub sale: SaleShards,
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
    /// The promotion row revision Redis reflects (the oldest of the shards').
    pub revision: i64,
    /// Units lent by one shard and not yet taken in by another (sharded sales; see
    /// `lend.lua`). A sale with units on their way is not closed.
    pub in_transit: i64,
    /// A shard recovers from writes its Redis node lost (`confirm.lua`): no new buyer until
    /// it is repaired.
    pub fenced: bool,
}

/// Remaining stock and pause flag as Redis has them now (summed over a sale's shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStock {
    pub remaining: i64,
    pub paused: bool,
}

impl LiveStock {
    /// A sale's, from its shards' (`StockStore::shard_stocks`): `None` unless every shard is
    /// loaded.
    pub fn of(shards: &[Option<ShardStock>]) -> Option<LiveStock> {
        if shards.is_empty() {
            return None;
        }
        shards.iter().try_fold(
            LiveStock {
                remaining: 0,
                paused: false,
            },
            |sum, shard| {
                let shard = shard.as_ref()?;
                Some(LiveStock {
                    remaining: sum.remaining + shard.remaining,
                    paused: sum.paused || shard.paused,
                })
            },
        )
    }
}

/// One shard's stock as Redis has it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStock {
    pub index: u16,
    pub remaining: i64,
    pub paused: bool,
    /// Its share of the configured stock.
    pub share: i64,
    /// Units it took in from other shards, and lent to them.
    pub got: i64,
    pub lent: i64,
}

impl ShardStock {
    /// What this shard has to sell in all: remaining + its reserved units, when conserved.
    pub fn stock(&self) -> i64 {
        self.share + self.got - self.lent
    }
}

/// A bound on the moves one request of a sharded sale asks for: each move brings at least
/// the units it needs to its shard, so reaching it means that many moves were taken by
/// other buyers first (a sale selling out under a crowd), never a loop.
const MAX_MOVES_PER_REQUEST: u32 = 64;

/// Cheap to clone: one multiplexed connection and the scripts, shared.
#[derive(Clone)]
pub struct StockStore {
    conn: RedisConnection,
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
    lend: Script,
    receive: Script,
}

impl std::fmt::Debug for StockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockStore").finish_non_exhaustive()
    }
}

/// What one shard's `sync_promotion.lua` said, ranked to merge a sale's shards: a refusal
/// on any shard is the sale's answer.
fn merge_sync(outcomes: Vec<SyncOutcome>) -> SyncOutcome {
    let total: i64 = outcomes.iter().filter_map(|o| o.remaining()).sum();
    if outcomes.contains(&SyncOutcome::StartedNotLoaded) {
        return SyncOutcome::StartedNotLoaded;
    }
    let rank = |o: &SyncOutcome| match o {
        SyncOutcome::BelowReserved { .. } => 3,
        SyncOutcome::Loaded { .. } => 2,
        SyncOutcome::Applied { .. } => 1,
        _ => 0,
    };
    match outcomes.iter().map(rank).max().unwrap_or(0) {
        3 => SyncOutcome::BelowReserved { remaining: total },
        2 => SyncOutcome::Loaded { remaining: total },
        1 => SyncOutcome::Applied { remaining: total },
        _ => SyncOutcome::Current { remaining: total },
    }
}

/// One column of a matrix from `StockStore::counters`: each shard's counter towards `shard`,
/// as (that shard's index, value), where set.
fn towards(counters: &[Vec<Option<i64>>], shard: Shard) -> Vec<(u16, i64)> {
    counters
        .iter()
        .enumerate()
        .filter_map(|(other, row)| {
            Some((
                other as u16,
                row.get(usize::from(shard.index)).copied().flatten()?,
            ))
        })
        .collect()
}

type RawSnapshot = (i64, i64, i64, String, i64, i64, Vec<i64>, i64, i64, i64, i64);

/// A sale's view from its shards' views: closed only when every shard is and no units are on
/// their way between shards; the epoch is the shards' epochs joined, so a move on any shard
/// changes it.
fn merge_snapshots(shards: Vec<RawSnapshot>) -> Option<Snapshot> {
    let mut merged = Snapshot {
        remaining: 0,
        paused: false,
        epoch: String::new(),
        closed: true,
        now_ms: 0,
        buyers: Vec::new(),
        revision: i64::MAX,
        in_transit: 0,
        fenced: false,
    };
    let mut epochs = Vec::with_capacity(shards.len());
    for (loaded, remaining, paused, epoch, closed, now_ms, buyers, revision, lent, got, fenced) in shards {
        if loaded != 1 {
            return None;
        }
        merged.remaining += remaining;
        merged.paused |= paused == 1;
        merged.closed &= closed == 1;
        merged.now_ms = merged.now_ms.max(now_ms);
        merged.buyers.extend(buyers);
        merged.revision = merged.revision.min(revision);
        merged.in_transit += lent - got;
        merged.fenced |= fenced == 1;
        epochs.push(epoch);
    }
    merged.closed &= merged.in_transit == 0;
    merged.epoch = epochs.join("/");
    Some(merged)
}

impl StockStore {
    pub fn new(conn: RedisConnection) -> Self {
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
                lend: Script::new(include_str!("../../../lua/lend.lua")),
                receive: Script::new(include_str!("../../../lua/receive.lua")),
            }),
        }
    }

    /// Reserve units for one buyer's request (`reserve.lua` on the buyer's shard). The
    /// parameter types carry what the script relies on: a request id without the `:` and `|`
    /// its keys and payloads use as separators, and a quantity within bounds.
    ///
    /// On a sharded sale, a buyer whose shard has too little stock is served from the others:
    /// each other shard in turn lends part of what it has (`lend.lua`), the buyer's shard takes
    /// it in (`receive.lua`) and the reserve runs again there. Rounds over the other shards go
    /// on while any of them lends (other buyers of the shard may take the units first). Sold
    /// out only when, in the last round, no shard had anything to lend, and the units already
    /// on their way to the buyer's shard were taken in and were not enough either (or after
    /// `MAX_MOVES_PER_REQUEST` moves all taken by others first). Each step is one script on
    /// one shard.
    pub async fn reserve(
        &self,
        sale: SaleShards,
        user: UserId,
        request_id: &RequestId,
        quantity: Quantity,
        order_id: OrderId,
    ) -> Result<ReserveOutcome, StockError> {
        let home = sale.shard_of(user.get());
        let outcome = self
            .reserve_on(home, user, request_id, quantity, order_id)
            .await?;
        if outcome != ReserveOutcome::SoldOut || sale.count() == 1 {
            return Ok(outcome);
        }
        let mut moves = 0;
        loop {
            let mut lent_any = false;
            let mut counters = Vec::with_capacity(usize::from(sale.count()) - 1);
            for step in 1..sale.count() {
                let lender = sale.shard(home.index + step);
                let (given, counter) = self.lend(lender, home, i64::from(quantity.get())).await?;
                counters.push((lender.index, counter));
                if given == 0 {
                    continue;
                }
                lent_any = true;
                self.receive(home, &[(lender.index, counter)]).await?;
                let outcome = self
                    .reserve_on(home, user, request_id, quantity, order_id)
                    .await?;
                moves += 1;
                if outcome != ReserveOutcome::SoldOut || moves >= MAX_MOVES_PER_REQUEST {
                    return Ok(outcome);
                }
            }
            if !lent_any {
                // No shard has stock to lend. Units another request moved towards this shard
                // may still be on their way (lent, not yet taken in): take them in, and ask
                // once more before answering sold out.
                self.receive(home, &counters).await?;
                return self.reserve_on(home, user, request_id, quantity, order_id).await;
            }
        }
    }

    async fn reserve_on(
        &self,
        shard: Shard,
        user: UserId,
        request_id: &RequestId,
        quantity: Quantity,
        order_id: OrderId,
    ) -> Result<ReserveOutcome, StockError> {
        let k = PromotionKeys::of(shard);
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
            -7 => ReserveOutcome::Recovering,
            _ => return Err(unexpected()),
        })
    }

    /// `from` lends `to` at least `need` units if it has them (`lend.lua`): the units given
    /// (0 when it had none, or is not loaded) and its counter `lent:<to>` after the move.
    async fn lend(&self, from: Shard, to: Shard, need: i64) -> Result<(i64, i64), StockError> {
        let mut conn = self.conn.clone();
        let (given, lent): (i64, i64) = self
            .scripts
            .lend
            .key(PromotionKeys::of(from).meta)
            .arg(to.index)
            .arg(need)
            .invoke_async(&mut conn)
            .await?;
        Ok((given.max(0), lent))
    }

    /// `to` takes in what the lenders' counters show (`receive.lua`); the units added.
    async fn receive(&self, to: Shard, lent: &[(u16, i64)]) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.receive.key(PromotionKeys::of(to).meta);
        for (lender, counter) in lent {
            invocation.arg(*lender).arg(*counter);
        }
        let (added, _remaining): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(added.max(0))
    }

    /// Finish every move between a sale's shards that stopped halfway (a gateway that lent
    /// and crashed before the receiver took the units in): each shard takes in what the
    /// others' counters show. Idempotent; the units moved.
    pub async fn settle(&self, sale: SaleShards) -> Result<i64, StockError> {
        if sale.count() == 1 {
            return Ok(0);
        }
        let counters = self.counters(sale, "lent").await?;
        let mut moved = 0;
        for receiver in sale.shards() {
            let lent = towards(&counters, receiver);
            if !lent.is_empty() {
                moved += self.receive(receiver, &lent).await?;
            }
        }
        Ok(moved)
    }

    /// Every shard's move counters of one kind (`lent` or `got`), read together: row d,
    /// column k is shard d's `<kind>:<k>` (`None` when unset; a sale on one shard has none).
    async fn counters(&self, sale: SaleShards, kind: &str) -> Result<Vec<Vec<Option<i64>>>, StockError> {
        if sale.count() == 1 {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = sale.shards().map(|s| format!("{kind}:{}", s.index)).collect();
        let reads = sale.shards().map(|shard| {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(PromotionKeys::of(shard).meta).arg(&fields);
            async move { cmd.query_async::<Vec<Option<i64>>>(&mut conn).await }
        });
        Ok(futures::future::try_join_all(reads).await?)
    }

    /// Undo the reservation of an order the database holds as cancelled or refunded, at most
    /// once, on its buyer's shard. Never for an order that is not in the database (see
    /// `release.lua`).
    pub async fn release(
        &self,
        sale: SaleShards,
        user_id: i64,
        order_id: OrderId,
    ) -> Result<ReleaseOutcome, StockError> {
        let k = PromotionKeys::of(sale.shard_of(user_id));
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

    /// Bring Redis up to this revision of the promotion row (`sync_promotion.lua` on each
    /// shard, with the shard's share of the stock): loads a sale that has not started,
    /// applies rules, pause flag and stock changes of a newer revision, ignores an older one.
    /// Every write to the row is followed by this call.
    pub async fn sync(&self, p: &Promotion, if_started: IfStarted) -> Result<SyncOutcome, StockError> {
        let calls = p.sale().shards().map(|shard| {
            let k = PromotionKeys::of(shard);
            let mut invocation = self.scripts.sync.prepare_invoke();
            for key in k.all() {
                invocation.key(key);
            }
            Self::row_args(&mut invocation, p, shard.share_of(p.stock));
            invocation.arg(match if_started {
                IfStarted::Refuse => p.starts_at.timestamp_millis(),
                IfStarted::LoadIfBefore(start) => start.max(p.starts_at).timestamp_millis(),
                IfStarted::LoadJustCreated => i64::MAX,
            });
            let mut conn = self.conn.clone();
            async move {
                let (code, remaining): (i64, i64) = invocation.invoke_async(&mut conn).await?;
                Ok::<_, StockError>(match code {
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
        });
        Ok(merge_sync(futures::future::try_join_all(calls).await?))
    }

    /// The promotion row as `sync_promotion.lua` and `repair.lua` take it (ARGV 1 to 7), with
    /// the stock of the shard it goes to.
    fn row_args(invocation: &mut redis::ScriptInvocation<'_>, p: &Promotion, stock: i64) {
        invocation
            .arg(stock)
            .arg(p.per_user_limit)
            .arg(p.starts_at.timestamp_millis())
            .arg(p.ends_at.timestamp_millis())
            .arg(if p.paused { "1" } else { "0" })
            .arg(p.created_at.timestamp_micros())
            .arg(p.revision);
    }

    /// Rebuild a promotion's Redis state from the database's orders (`repair.lua`, one atomic
    /// step per shard, each with its buyers' orders): `live` orders hold their reservations,
    /// `dead` (cancelled or refunded) ones do not, `queued` ones (accepted, read from the
    /// broker, not yet in the database) hold theirs and wait in the pending set; reservations
    /// still in flight are kept; buyers and remaining recounted. Moves between shards left
    /// halfway are finished first. `RepairKind::Recover` also ends the shards' fences (the caller
    /// read every accepted order of the sale); `RepairKind::Operator` leaves them.
    pub async fn repair(
        &self,
        p: &Promotion,
        orders: RepairOrders<'_>,
        kind: RepairKind,
    ) -> Result<RepairOutcome, StockError> {
        let sale = p.sale();
        let mut total = RepairOutcome {
            remaining: 0,
            restored: 0,
            released: 0,
            requests_restored: 0,
            request_conflicts: 0,
        };
        // What each shard took in from each other one: the other's lent counters are at
        // least that, even on a shard that lost its data.
        let taken_in = self.counters(sale, "got").await?;
        for shard in sale.shards() {
            let k = PromotionKeys::of(shard);
            let mut invocation = self.scripts.repair.prepare_invoke();
            for key in k.all() {
                invocation.key(key);
            }
            Self::row_args(&mut invocation, p, shard.share_of(p.stock));
            invocation.arg(match kind {
                RepairKind::Recover => "1",
                RepairKind::Operator => "0",
            });
            let floors = towards(&taken_in, shard);
            invocation.arg(floors.len());
            for (other, units) in floors {
                invocation.arg(other).arg(units);
            }
            let mine = |r: &&Reservation| sale.shard_of(r.user_id) == shard;
            for list in [orders.live, orders.queued] {
                let list: Vec<&Reservation> = list.iter().filter(mine).collect();
                invocation.arg(list.len());
                for r in list {
                    invocation.arg(r.order_id.0).arg(encode_reservation(r));
                }
            }
            for r in orders.dead.iter().filter(mine) {
                invocation.arg(r.order_id.0).arg(encode_reservation(r));
            }
            let mut conn = self.conn.clone();
            let (remaining, restored, released, requests_restored, request_conflicts): (
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = invocation.invoke_async(&mut conn).await?;
            total.remaining += remaining;
            total.restored += restored;
            total.released += released;
            total.requests_restored += requests_restored;
            total.request_conflicts += request_conflicts;
        }
        let moved = self.settle(sale).await?;
        total.remaining += moved;
        Ok(total)
    }

    /// Atomic views of several promotions (`snapshot.lua` on each shard), read together.
    /// `known_epochs[i]`: the epoch of the buyer list the caller holds for `sales[i]`.
    /// `None` for a promotion that is not loaded (on every shard).
    pub async fn snapshots(
        &self,
        sales: &[SaleShards],
        known_epochs: &[Option<String>],
    ) -> Result<Vec<Option<Snapshot>>, StockError> {
        let calls = sales.iter().zip(known_epochs).map(|(sale, epoch)| {
            let known: Vec<&str> = epoch
                .as_deref()
                .map(|e| e.split('/').collect())
                .unwrap_or_default();
            let shards = sale.shards().map(move |shard| {
                let k = PromotionKeys::of(shard);
                let mut conn = self.conn.clone();
                let script = &self.scripts.snapshot;
                // A list held for another shard count matches no shard.
                let epoch = match known.len() == usize::from(sale.count()) {
                    true => known[usize::from(shard.index)].to_owned(),
                    false => String::new(),
                };
                async move {
                    script
                        .key(&k.meta)
                        .key(&k.buyers)
                        .arg(&epoch)
                        .invoke_async::<RawSnapshot>(&mut conn)
                        .await
                }
            });
            futures::future::try_join_all(shards)
        });
        let rows = futures::future::try_join_all(calls).await?;
        Ok(rows.into_iter().map(merge_snapshots).collect())
    }

    /// Redis' clock (Unix ms): the one clock every decision about sale windows and
    /// reservation ages uses.
    pub async fn redis_time_ms(&self) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Each shard's stock of a sale, read together; `None` for a shard not loaded.
    pub async fn shard_stocks(&self, sale: SaleShards) -> Result<Vec<Option<ShardStock>>, StockError> {
        let reads = sale.shards().map(|shard| {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(PromotionKeys::of(shard).meta).arg(&[
                "remaining",
                "paused",
                "stock",
                "got_total",
                "lent_total",
            ]);
            async move {
                let (remaining, paused, share, got, lent): Raw = cmd.query_async(&mut conn).await?;
                Ok::<_, StockError>(remaining.map(|remaining| ShardStock {
                    index: shard.index,
                    remaining,
                    paused: paused.as_deref() == Some("1"),
                    share: share.unwrap_or(0),
                    got: got.unwrap_or(0),
                    lent: lent.unwrap_or(0),
                }))
            }
        });
        type Raw = (Option<i64>, Option<String>, Option<i64>, Option<i64>, Option<i64>);
        futures::future::try_join_all(reads).await
    }

    /// Remaining stock and pause flag of several promotions, read together (each shard its
    /// own slot); `None` for a promotion that is not loaded.
    pub async fn live_stock(&self, sales: &[SaleShards]) -> Result<Vec<Option<LiveStock>>, StockError> {
        let rows = futures::future::try_join_all(sales.iter().map(|sale| self.shard_stocks(*sale))).await?;
        Ok(rows.iter().map(|shards| LiveStock::of(shards)).collect())
    }

    pub async fn reservation(
        &self,
        shard: Shard,
        order_id: OrderId,
    ) -> Result<Option<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let payload: Option<String> = redis::cmd("HGET")
            .arg(PromotionKeys::of(shard).reservations)
            .arg(order_id.0)
            .query_async(&mut conn)
            .await?;
        Ok(payload.and_then(|p| decode_reservation(order_id, &p)))
    }

    /// The order a user's request id reserved, if any (read only): answers a retry for a
    /// sale the gateway no longer lists (ended long ago) with the order it holds.
    pub async fn order_for_request(
        &self,
        sale: SaleShards,
        user_id: i64,
        request_id: &str,
    ) -> Result<Option<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = redis::cmd("HGET")
            .arg(PromotionKeys::of(sale.shard_of(user_id)).requests)
            .arg(format!("{user_id}:{request_id}"))
            .query_async(&mut conn)
            .await?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    /// Record what the database holds of orders just persisted: their status markers answer
    /// buyers' polls without the database, and their long polls wake (`order_persisted.lua`,
    /// once per shard). The orders leave the pending set.
    pub async fn mark_persisted(&self, orders: &[PersistedOrder]) -> Result<(), StockError> {
        let mut by_shard: HashMap<Shard, Vec<&PersistedOrder>> = HashMap::new();
        for order in orders {
            by_shard
                .entry(order.sale.shard_of(order.user_id))
                .or_default()
                .push(order);
        }
        let mut conn = self.conn.clone();
        for (shard, orders) in by_shard {
            let k = PromotionKeys::of(shard);
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
    /// (`order_status.lua` on its buyer's shard); `false` when Redis holds no marker or a
    /// later one.
    pub async fn mark_status(
        &self,
        shard: Shard,
        order_id: OrderId,
        status: OrderStatus,
    ) -> Result<bool, StockError> {
        let mut conn = self.conn.clone();
        let moved: i64 = self
            .scripts
            .order_status
            .key(PromotionKeys::of(shard).orders)
            .arg(ORDER_STATUS_CHANNEL)
            .arg(order_id.0)
            .arg(status.rank())
            .arg(status.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// What Redis knows of one seckill order, read atomically on its buyer's shard
    /// (`order_view.lua`).
    pub async fn order_in_redis(&self, shard: Shard, order_id: OrderId) -> Result<OrderInRedis, StockError> {
        let k = PromotionKeys::of(shard);
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

    /// Which of `sales` holds `order_id` of buyer `user_id` (a reservation or a status
    /// marker), as its index in the slice, and what it holds, looked up in each at once.
    /// There is no index from order id to sale: accepting an order costs one Redis call, and
    /// a poll looks in the few sales that ran when the id was minted, on the buyer's shard.
    pub async fn find_order(
        &self,
        sales: &[SaleShards],
        user_id: i64,
        order_id: OrderId,
    ) -> Result<Option<(usize, OrderInRedis)>, StockError> {
        let views = futures::future::try_join_all(
            sales
                .iter()
                .map(|sale| self.order_in_redis(sale.shard_of(user_id), order_id)),
        )
        .await?;
        Ok(views
            .into_iter()
            .enumerate()
            .find(|(_, seen)| seen.reservation.is_some() || seen.marker.is_some() || seen.pending))
    }

    /// Forget that these orders of one shard wait to be persisted (they are in the database
    /// now).
    pub async fn clear_pending(&self, shard: Shard, ids: &[OrderId]) -> Result<(), StockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(PromotionKeys::of(shard).pending)
            .arg(ids.iter().map(|id| id.0).collect::<Vec<_>>())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Orders of one shard reserved at or before `reserved_before_ms` and still waiting to be
    /// persisted.
    pub async fn stale_pending(
        &self,
        shard: Shard,
        reserved_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(PromotionKeys::of(shard).pending)
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
    pub async fn touch_pending(&self, shard: Shard, ids: &[OrderId], now_ms: i64) -> Result<(), StockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(PromotionKeys::of(shard).pending).arg("XX");
        for id in ids {
            cmd.arg(now_ms).arg(id.0);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The live reservations among `ids` on one shard (`None` where released or unknown).
    pub async fn reservations(
        &self,
        shard: Shard,
        ids: &[OrderId],
    ) -> Result<Vec<Option<Reservation>>, StockError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(PromotionKeys::of(shard).reservations);
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

    /// Every live reservation of one shard (reconciliation; stock-sized).
    pub async fn all_reservations(&self, shard: Shard) -> Result<Vec<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(PromotionKeys::of(shard).reservations)
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

    /// One command on one key of every shard, the replies added up.
    async fn summed(
        &self,
        sale: SaleShards,
        command: &str,
        key: fn(PromotionKeys) -> String,
    ) -> Result<u64, StockError> {
        let counts = futures::future::try_join_all(
            sale.shards()
                .map(|s| self.on_key::<u64>(command, key(PromotionKeys::of(s)))),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }

    /// Remaining stock and pause flag of one promotion (`None`: not loaded).
    pub async fn live_stock_of(&self, sale: SaleShards) -> Result<Option<LiveStock>, StockError> {
        Ok(self.live_stock(&[sale]).await?.pop().flatten())
    }

    /// Units held per buyer on one shard, as its buyers hash has them.
    pub async fn all_buyers(&self, shard: Shard) -> Result<HashMap<i64, i64>, StockError> {
        self.on_key("HGETALL", PromotionKeys::of(shard).buyers).await
    }

    /// Orders waiting to be persisted, over every shard.
    pub async fn pending_count(&self, sale: SaleShards) -> Result<u64, StockError> {
        self.summed(sale, "ZCARD", |k| k.pending).await
    }

    /// Number of live reservations of a promotion, over every shard.
    pub async fn reservation_count(&self, sale: SaleShards) -> Result<u64, StockError> {
        self.summed(sale, "HLEN", |k| k.reservations).await
    }

    /// Units a user holds in live reservations of a promotion.
    pub async fn units_held(&self, sale: SaleShards, user_id: i64) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let held: Option<i64> = redis::cmd("HGET")
            .arg(PromotionKeys::of(sale.shard_of(user_id)).buyers)
            .arg(user_id)
            .query_async(&mut conn)
            .await?;
        Ok(held.unwrap_or(0))
    }

    /// Drop every key of a promotion, on every shard (it was deleted before any order
    /// existed).
    pub async fn forget_promotion(&self, sale: SaleShards) -> Result<(), StockError> {
        for shard in sale.shards() {
            let mut conn = self.conn.clone();
            redis::cmd("DEL")
                .arg(&PromotionKeys::of(shard).all()[..])
                .query_async::<()>(&mut conn)
                .await?;
        }
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

    fn shard(remaining: i64, closed: i64, epoch: &str, lent: i64, got: i64) -> RawSnapshot {
        (
            1,
            remaining,
            0,
            epoch.to_owned(),
            closed,
            5,
            vec![remaining],
            3,
            lent,
            got,
            0,
        )
    }

    #[test]
    fn a_sharded_sale_is_closed_only_when_every_shard_is_and_nothing_is_on_its_way() {
        let open = merge_snapshots(vec![shard(0, 1, "a", 0, 0), shard(2, 0, "b", 0, 0)]).expect("loaded");
        assert_eq!(
            (open.remaining, open.closed, open.epoch.as_str()),
            (2, false, "a/b")
        );
        let closed = merge_snapshots(vec![shard(0, 1, "a", 0, 4), shard(0, 1, "b", 4, 0)]).expect("loaded");
        assert!(closed.closed && closed.in_transit == 0, "{closed:?}");
        assert_eq!(closed.buyers, vec![0, 0]);
        let moving = merge_snapshots(vec![shard(0, 1, "a", 0, 3), shard(0, 1, "b", 4, 0)]).expect("loaded");
        assert!(!moving.closed && moving.in_transit == 1, "{moving:?}");
        let mut lost = shard(0, 1, "b", 0, 0);
        lost.0 = 0;
        assert_eq!(merge_snapshots(vec![shard(0, 1, "a", 0, 0), lost]), None);
    }

    #[test]
    fn a_refusal_on_any_shard_is_the_sales_answer() {
        use SyncOutcome::*;
        assert_eq!(
            merge_sync(vec![Loaded { remaining: 3 }, Applied { remaining: 2 }]),
            Loaded { remaining: 5 }
        );
        assert_eq!(
            merge_sync(vec![Applied { remaining: 3 }, BelowReserved { remaining: 1 }]),
            BelowReserved { remaining: 4 }
        );
        assert_eq!(
            merge_sync(vec![Current { remaining: 3 }, StartedNotLoaded]),
            StartedNotLoaded
        );
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
