//! Flash-sale stock in Redis: the Lua scripts of `lua/` behind typed calls.
//!
//! Every key of one promotion carries the hash tag `{promo:<id>}`, so each script touches a
//! single slot and runs unchanged on Redis Cluster; calls that touch several sales send one
//! command per sale, together, never a pipeline across slots. Scripts run by `EVALSHA`
//! (loaded on first use, on every node of a cluster) over the shared multiplexed connection.
//!
//! One file per seam, each with its scripts: `keys` (a shard's keys), `reserve` (taking and
//! giving back units, moves between shards), `sale_state` (loading, syncing, snapshots,
//! repair, retirement), `markers` (orders and their status markers), `pending` (the pending
//! set and its sweeps, counts). `StockStore` is one handle over them all.

use std::collections::HashMap;
use std::sync::Arc;

use crate::redis::RedisConnection;
use redis::Script;

use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::lifecycle::OrderStatus;
use crate::domain::promotion::Promotion;
use crate::domain::reservation::Reservation;
use crate::domain::shards::{SaleShards, Shard};

mod keys;
mod markers;
mod pending;
mod reserve;
mod sale_state;

pub use keys::*;
pub use markers::*;
pub use reserve::*;
pub use sale_state::*;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StockError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from {script}: {reply}")]
    UnexpectedReply { script: &'static str, reply: String },
}

/// The hash value `reserve.lua` writes for a reservation.
fn encode_reservation(r: &Reservation) -> String {
    format!(
        "{}|{}|{}|{}",
        r.user_id, r.quantity, r.reserved_at_ms, r.request_id
    )
}

/// `None` for a payload `reserve.lua` could not have written (its fields come parsed).
fn decode_reservation(order_id: OrderId, payload: &str) -> Option<Reservation> {
    let mut parts = payload.splitn(4, '|');
    Some(Reservation {
        order_id,
        user_id: UserId::parse(parts.next()?.parse().ok()?).ok()?,
        quantity: Quantity::parse(parts.next()?.parse().ok()?).ok()?,
        reserved_at_ms: parts.next()?.parse().ok()?,
        request_id: RequestId::parse(parts.next()?).ok()?,
    })
}

/// A reservation read for a count (sweeps, reconciliation): one that cannot be read is an
/// error, never a unit silently left out.
fn decode_counted_reservation(order_id: OrderId, payload: &str) -> Result<Reservation, StockError> {
    decode_reservation(order_id, payload).ok_or_else(|| StockError::UnexpectedReply {
        script: "the reservations hash",
        reply: format!("{order_id} => {payload:?}"),
    })
}

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

impl StockStore {
    pub fn new(conn: RedisConnection) -> Self {
        Self {
            conn,
            scripts: Arc::new(Scripts {
                reserve: Script::new(reserve::RESERVE_LUA),
                release: Script::new(reserve::RELEASE_LUA),
                sync: Script::new(sale_state::SYNC_PROMOTION_LUA),
                repair: Script::new(sale_state::REPAIR_LUA),
                snapshot: Script::new(sale_state::SNAPSHOT_LUA),
                order_persisted: Script::new(markers::ORDER_PERSISTED_LUA),
                order_status: Script::new(markers::ORDER_STATUS_LUA),
                order_view: Script::new(markers::ORDER_VIEW_LUA),
                lend: Script::new(reserve::LEND_LUA),
                receive: Script::new(reserve::RECEIVE_LUA),
            }),
        }
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
        key: fn(SaleKeys) -> String,
    ) -> Result<u64, StockError> {
        let counts = futures::future::try_join_all(
            sale.shards()
                .map(|s| self.on_key::<u64>(command, key(SaleKeys::of(s)))),
        )
        .await?;
        Ok(counts.into_iter().sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keys_of_a_promotion_share_one_hash_tag() {
        let k = SaleKeys::new(42);
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
    fn a_reservation_payload_reads_back_parsed_and_nothing_else_does() {
        let r = decode_reservation(OrderId(9), "17|2|1700000000000|req-1").expect("parses");
        assert_eq!(
            (r.user_id.get(), r.quantity.get(), r.request_id.as_str()),
            (17, 2, "req-1")
        );
        // What the reserve script could not have written: garbage, a request id the edge
        // refuses, a quantity past the limit, no buyer.
        for payload in [
            "garbage",
            "17|2|1700000000000|req|with|pipes",
            "17|101|1|r",
            "0|1|1|r",
        ] {
            assert_eq!(decode_reservation(OrderId(9), payload), None, "{payload}");
            assert!(
                decode_counted_reservation(OrderId(9), payload).is_err(),
                "{payload}"
            );
        }
    }
}
