//! A sale's state in Redis as a whole: loading and syncing its row (`sync_promotion.lua`),
//! repairing it from the database (`repair.lua`), the gateways' snapshots (`snapshot.lua`),
//! live stock per shard, and forgetting a retired sale.

use super::*;

// This file's scripts (`lua/`), loaded into `StockStore`'s script set.
pub(super) const SYNC_PROMOTION_LUA: &str = include_str!("../../../../lua/sync_promotion.lua");
pub(super) const REPAIR_LUA: &str = include_str!("../../../../lua/repair.lua");
pub(super) const SNAPSHOT_LUA: &str = include_str!("../../../../lua/snapshot.lua");

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

/// What one shard's `sync_promotion.lua` said, ranked to merge a sale's shards: a refusal
/// on any shard is the sale's answer.
pub(super) fn merge_sync(outcomes: Vec<SyncOutcome>) -> SyncOutcome {
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

pub(super) type RawSnapshot = (i64, i64, i64, String, i64, i64, Vec<i64>, i64, i64, i64, i64);

/// A sale's view from its shards' views: closed only when every shard is and no units are on
/// their way between shards; the epoch is the shards' epochs joined, so a move on any shard
/// changes it.
pub(super) fn merge_snapshots(shards: Vec<RawSnapshot>) -> Option<Snapshot> {
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
    /// Bring Redis up to this revision of the promotion row (`sync_promotion.lua` on each
    /// shard, with the shard's share of the stock): loads a sale that has not started,
    /// applies rules, pause flag and stock changes of a newer revision, ignores an older one.
    /// Every write to the row is followed by this call.
    pub async fn sync(&self, p: &Promotion, if_started: IfStarted) -> Result<SyncOutcome, StockError> {
        let calls = p.sale().shards().map(|shard| {
            let k = SaleKeys::of(shard);
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
    pub(super) fn row_args(invocation: &mut redis::ScriptInvocation<'_>, p: &Promotion, stock: i64) {
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
            let k = SaleKeys::of(shard);
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
            let mine = |r: &&Reservation| sale.shard_of(r.user_id.get()) == shard;
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
                let k = SaleKeys::of(shard);
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
            cmd.arg(SaleKeys::of(shard).meta).arg(&[
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

    /// Remaining stock and pause flag of one promotion (`None`: not loaded).
    pub async fn live_stock_of(&self, sale: SaleShards) -> Result<Option<LiveStock>, StockError> {
        Ok(self.live_stock(&[sale]).await?.pop().flatten())
    }

    /// Drop every key of a promotion, on every shard (it was deleted before any order
    /// existed).
    pub async fn forget_promotion(&self, sale: SaleShards) -> Result<(), StockError> {
        for shard in sale.shards() {
            let mut conn = self.conn.clone();
            redis::cmd("DEL")
                .arg(&SaleKeys::of(shard).all()[..])
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }
}
