//! A sale that repairs itself after its Redis node lost writes, with no operator.
//!
//! What Redis can lose: a replica promoted before it had the last writes, a node restarted
//! from an append-only file older than its last writes, a double fault. A 202 rests on
//! writes the replicas confirmed (`redis::durability`), so a clean failover loses no
//! accepted order; but which node is promoted, and what a restarted node reloads, is not up
//! to us. So every shard records the Redis history (replication id) its data was verified in,
//! and a node whose history is another (a promoted replica, a restart) fences the shard
//! (`confirm.lua`): reserve answers `recovering`, nothing is confirmed. Then:
//!
//! 1. Wait until every order confirmed in the old history has reached the broker: such an
//!    order's publish started before the history changed, and a publish gives up after
//!    `seckill.publish_timeout_ms` (the grace).
//! 2. Read the sale's accepted orders from the broker (`seckill-orders`, from a bookmark taken
//!    before the sale started up to the topic's end now), and its orders from PostgreSQL.
//!    Together they are every order the sale ever accepted: an order is in the database, or
//!    still on its way there in the broker.
//! 3. Repair the shards from them in one script each (`repair.lua`): reservations and request
//!    ids of live orders back, those on their way pending again, remaining recounted, the
//!    node's history recorded and the fence lifted.
//!
//! A started sale missing from its node altogether is recovered the same way (the repair loads
//! it). Every step may run twice, in two consumers processes at once: the repair is one
//! atomic script per shard that keeps what Redis holds beyond what it was handed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;

use crate::bus::{Bookmark, TopicReader};
use crate::domain::accepted_order::NewSeckillOrder;
use crate::domain::ids::OrderId;
use crate::domain::promotion::Promotion;
use crate::domain::reconcile::reservations;
use crate::domain::reservation::Reservation;
use crate::postgres::orders::orders_of_sale;
use crate::postgres::promotions::PromotionRepo;
use crate::redis::durability::{Confirmer, ShardHistory};
use crate::redis::stock::{RepairKind, RepairOrders, RepairOutcome, StockStore};

/// How far before a sale's start (or its creation, if earlier) its orders are looked for in
/// the broker: covers clocks that disagree by that much.
const CLOCK_MARGIN_MS: i64 = 60_000;

/// A sale's state as its shards' nodes have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaleHealth {
    /// Every shard's node holds the history the shard was verified in.
    Healthy,
    /// Fenced since this instant (Redis ms, the earliest of its shards).
    Fenced { since_ms: i64 },
    /// Started, and missing from a shard's node: lost with its keys.
    Lost,
    /// Not loaded yet and not started: the gateways' refreshers load it.
    NotLoaded,
    /// Its keys left Redis for good (`retire`): nothing to rebuild, nothing may write them.
    Retired,
}

/// What a recovery read and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Accepted orders of the sale read from the broker.
    pub from_broker: usize,
    /// Of those, not in the database yet: pending again.
    pub queued: usize,
    /// Orders of the sale in the database.
    pub stored: usize,
    pub repair: RepairOutcome,
}

#[derive(Debug, Clone)]
pub struct SaleRecovery {
    pub db: PgPool,
    pub stock: StockStore,
    pub confirmer: Confirmer,
    /// `seckill-orders`.
    pub reader: TopicReader,
    /// Reading the sale's orders from the broker gives up after this.
    pub read_deadline: Duration,
}

impl SaleRecovery {
    /// Check every shard's history (fencing a shard whose node's history changed).
    pub async fn health(&self, p: &Promotion, now_ms: i64) -> anyhow::Result<SaleHealth> {
        let mut fenced: Option<i64> = None;
        let mut missing = false;
        for shard in p.sale().shards() {
            let check =
                self.confirmer.check(shard).await.with_context(|| {
                    format!("check the Redis history of sale {} shard {}", p.id, shard.index)
                })?;
            match check.history {
                ShardHistory::Current => {}
                ShardHistory::Fenced { since_ms } => {
                    fenced = Some(fenced.map_or(since_ms, |f| f.min(since_ms)));
                }
                ShardHistory::NotLoaded => missing = true,
            }
        }
        if missing && now_ms >= p.starts_at.timestamp_millis() {
            // Gone from a node: lost, unless retired (then nothing may write its keys).
            let retired = PromotionRepo::new(self.db.clone())
                .keys_retired_at(p.id)
                .await
                .context("read the sale's retirement")?;
            if retired.is_some() {
                return Ok(SaleHealth::Retired);
            }
        }
        Ok(match (fenced, missing) {
            (_, true) if now_ms >= p.starts_at.timestamp_millis() => SaleHealth::Lost,
            (Some(since_ms), _) => SaleHealth::Fenced { since_ms },
            (None, true) => SaleHealth::NotLoaded,
            (None, false) => SaleHealth::Healthy,
        })
    }

    /// Rebuild the sale from every order it accepted and lift its fences. The caller waits
    /// the grace after the fence first (see the module docs).
    pub async fn recover(&self, p: &Promotion, bookmarks: &[Bookmark]) -> anyhow::Result<Recovered> {
        let mut rebuilt = self.recover_all(&[p], bookmarks).await?;
        rebuilt
            .pop()
            .map_or_else(|| anyhow::bail!("no sale to rebuild"), |(_, r)| r)
    }

    /// Rebuild several sales (those of a node that failed over) from one read of the broker,
    /// in the order given (a caller puts the running sales first): one result per sale. Fails
    /// as a whole only when the broker cannot be read.
    pub async fn recover_all(
        &self,
        sales: &[&Promotion],
        bookmarks: &[Bookmark],
    ) -> anyhow::Result<Vec<(i64, anyhow::Result<Recovered>)>> {
        let Some(earliest) = sales
            .iter()
            .map(|p| p.starts_at.min(p.created_at).timestamp_millis() - CLOCK_MARGIN_MS)
            .min()
        else {
            return Ok(Vec::new());
        };
        let end = self
            .reader
            .end()
            .await
            .context("find the end of seckill-orders")?;
        let from = bookmarks
            .iter()
            .filter(|b| b.at_ms <= earliest)
            .max_by_key(|b| b.at_ms);
        let ids: HashSet<i64> = sales.iter().map(|p| p.id).collect();
        let accepted = self
            .reader
            .read(
                from,
                &end,
                |payload| accepted_order(&ids, payload),
                self.read_deadline,
            )
            .await
            .context("read the sales' accepted orders from seckill-orders")?;
        let mut by_sale: HashMap<i64, Vec<Reservation>> = HashMap::new();
        for (promotion_id, reservation) in accepted {
            by_sale.entry(promotion_id).or_default().push(reservation);
        }
        let mut rebuilt = Vec::with_capacity(sales.len());
        for p in sales {
            let accepted = by_sale.remove(&p.id).unwrap_or_default();
            rebuilt.push((p.id, self.rebuild(p, &accepted).await));
        }
        Ok(rebuilt)
    }

    /// Repair one sale from the orders read from the broker and the database's.
    async fn rebuild(&self, p: &Promotion, accepted: &[Reservation]) -> anyhow::Result<Recovered> {
        let orders = orders_of_sale(&self.db, p.id)
            .await
            .context("read the sale's orders")?;
        let stored: HashSet<OrderId> = orders.iter().map(|o| o.id).collect();
        let mut seen = HashSet::new();
        let queued: Vec<Reservation> = accepted
            .iter()
            .filter(|r| !stored.contains(&r.order_id) && seen.insert(r.order_id))
            .cloned()
            .collect();
        let (dead, live): (Vec<_>, Vec<_>) = orders.iter().partition(|o| o.is_dead());
        let (live, dead) = (reservations(&live), reservations(&dead));
        let repair = self
            .stock
            .repair(
                p,
                RepairOrders {
                    live: &live,
                    queued: &queued,
                    dead: &dead,
                },
                RepairKind::Recover,
            )
            .await
            .context("repair the sale in Redis")?;
        Ok(Recovered {
            from_broker: accepted.len(),
            queued: queued.len(),
            stored: orders.len(),
            repair,
        })
    }
}

/// The sale and reservation of an accepted order of one of `sales`, from a `seckill-orders`
/// message; `None` for any other message (another sale's, or one that does not decode: the
/// writer dead-letters those).
fn accepted_order(sales: &HashSet<i64>, payload: &[u8]) -> Option<(i64, Reservation)> {
    // Validated as the writer validates it (the gateway's rules): only what the gateway
    // could have accepted becomes a reservation again.
    let order = NewSeckillOrder::decode(payload).ok()?;
    let promotion_id = order.promotion_id.get();
    if !sales.contains(&promotion_id) {
        return None;
    }
    Some((
        promotion_id,
        Reservation {
            order_id: order.order_id,
            user_id: order.user_id,
            quantity: order.quantity,
            reserved_at_ms: order.accepted_at.timestamp_millis(),
            request_id: order.request_id,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::SeckillOrderAccepted;

    fn event(promotion_id: i64, request_id: &str) -> Vec<u8> {
        serde_json::to_vec(&SeckillOrderAccepted {
            event_id: "7".into(),
            event_type: SeckillOrderAccepted::TYPE.into(),
            version: SeckillOrderAccepted::VERSION,
            occurred_at: chrono::DateTime::from_timestamp_millis(1_000).expect("a time"),
            order_id: OrderId(7),
            promotion_id,
            user_id: 3,
            sku_id: "s".into(),
            title: "t".into(),
            quantity: 1,
            unit_price_cents: 100,
            request_id: request_id.into(),
            shards: 1,
        })
        .expect("serialises")
    }

    #[test]
    fn only_the_sales_own_well_formed_orders_are_read_back() {
        let sales = |ids: &[i64]| ids.iter().copied().collect::<HashSet<i64>>();
        let (sale, mine) = accepted_order(&sales(&[4, 5]), &event(5, "r-1")).expect("the sale's order");
        assert_eq!(
            (sale, mine.order_id, mine.user_id.get(), mine.reserved_at_ms),
            (5, OrderId(7), 3, 1_000)
        );
        assert_eq!(accepted_order(&sales(&[6]), &event(5, "r-1")), None);
        assert_eq!(accepted_order(&sales(&[5]), &event(5, "a|b")), None);
        assert_eq!(accepted_order(&sales(&[5]), b"not json"), None);
    }
}
