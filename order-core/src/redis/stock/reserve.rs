//! Taking units: `reserve.lua` on the buyer's shard, moves of stock between a sale's shards
//! (`lend.lua`, `receive.lua`), and `release.lua` giving units back.

use super::*;

// This file's scripts (`lua/`), loaded into `StockStore`'s script set.
pub(super) const RESERVE_LUA: &str = include_str!("../../../../lua/reserve.lua");
pub(super) const RELEASE_LUA: &str = include_str!("../../../../lua/release.lua");
pub(super) const LEND_LUA: &str = include_str!("../../../../lua/lend.lua");
pub(super) const RECEIVE_LUA: &str = include_str!("../../../../lua/receive.lua");

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

/// A bound on the moves one request of a sharded sale asks for: each move brings at least
/// the units it needs to its shard, so reaching it means that many moves were taken by
/// other buyers first (a sale selling out under a crowd), never a loop.
pub(super) const MAX_MOVES_PER_REQUEST: u32 = 64;

/// One column of a matrix from `StockStore::counters`: each shard's counter towards `shard`,
/// as (that shard's index, value), where set.
pub(super) fn towards(counters: &[Vec<Option<i64>>], shard: Shard) -> Vec<(u16, i64)> {
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

impl StockStore {
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

    pub(super) async fn reserve_on(
        &self,
        shard: Shard,
        user: UserId,
        request_id: &RequestId,
        quantity: Quantity,
        order_id: OrderId,
    ) -> Result<ReserveOutcome, StockError> {
        let k = SaleKeys::of(shard);
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
    pub(super) async fn lend(&self, from: Shard, to: Shard, need: i64) -> Result<(i64, i64), StockError> {
        let mut conn = self.conn.clone();
        let (given, lent): (i64, i64) = self
            .scripts
            .lend
            .key(SaleKeys::of(from).meta)
            .arg(to.index)
            .arg(need)
            .invoke_async(&mut conn)
            .await?;
        Ok((given.max(0), lent))
    }

    /// `to` takes in what the lenders' counters show (`receive.lua`); the units added.
    pub(super) async fn receive(&self, to: Shard, lent: &[(u16, i64)]) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let mut invocation = self.scripts.receive.key(SaleKeys::of(to).meta);
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
    pub(super) async fn counters(
        &self,
        sale: SaleShards,
        kind: &str,
    ) -> Result<Vec<Vec<Option<i64>>>, StockError> {
        if sale.count() == 1 {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = sale.shards().map(|s| format!("{kind}:{}", s.index)).collect();
        let reads = sale.shards().map(|shard| {
            let mut conn = self.conn.clone();
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(SaleKeys::of(shard).meta).arg(&fields);
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
        user_id: UserId,
        order_id: OrderId,
    ) -> Result<ReleaseOutcome, StockError> {
        let k = SaleKeys::of(sale.shard_of(user_id.get()));
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
}
