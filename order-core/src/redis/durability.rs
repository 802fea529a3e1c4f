//! What a 202 rests on in Redis: an accepted order is confirmed only once its reservation is
//! on the node that holds its shard, in the history the shard was last verified in, and on
//! `redis.durability.replicas` replicas of that node.
//!
//! Why: Redis replicates asynchronously. A master that took a reservation and then died, or
//! stalled past the failover timeout while its replica was promoted (a split brain: the old
//! master runs the commands queued for it before it learns it was replaced), would leave a
//! 202 that the new master does not know, and its unit would be sold twice. So before an
//! order is published, `confirm.lua` runs on the shard's node, in one pipeline with
//! `WAIT <replicas> <ms>`:
//! - the script checks the node's replication id against the history the shard was verified
//!   in (a promoted replica or a restart from disk starts a new one) and fences the shard
//!   when they differ (`history`: the sale sells again once recovered);
//! - it looks for the orders' reservations on this node (a reservation taken on a master that
//!   was replaced since is not there: no confirmation);
//! - it writes one counter, so this connection's replication offset moves past every
//!   reservation it found, whichever connection wrote them; the `WAIT` that follows on the
//!   same connection then proves them on the replicas. A WAIT cannot run inside a script.
//!
//! Concurrent confirmations of one shard share one pipeline (group commit): while one is in
//! flight, the next ones queue and go together, so the cost is one round trip to the
//! replicas per batch, not per order. The confirmations use a connection of their own: a
//! WAIT blocks the connection it arrives on until the replicas answer, and the hot path's
//! shared connection must not wait behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{Script, Value};
use tokio::sync::oneshot;

use crate::domain::ids::OrderId;
use crate::domain::shards::Shard;
use crate::redis::stock::{SaleKeys, StockError};
use crate::redis::RedisConnection;

/// What an order to confirm did: took a unit just now, or is a retry of (or a republish
/// for) an order reserved before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Reserved by this request: a unit left the stock now. Not confirmed on a fenced shard,
    /// whose remaining stock may count units its node lost.
    New,
    /// Reserved before (a retry found it by its request id; the sweeper republishes it): no
    /// unit moves now, and the node's data, which a recovery keeps, holds it. Confirmed on a
    /// fenced shard too.
    Held,
}

/// What `confirm` found for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// On the shard's node in its verified history, and on the replicas asked for.
    Confirmed,
    /// The node holds no reservation for the order: it was taken on a node that was replaced
    /// since (a failover), or released.
    Missing,
    /// The replicas did not acknowledge in time (`acked` of them did): the order stays
    /// reserved and unconfirmed.
    Unreplicated { acked: u8 },
    /// The shard's node may have lost writes (`ShardHistory::Fenced`).
    Fenced,
    /// The sale is not loaded on the shard's node.
    NotLoaded,
}

/// A shard's history as `confirm.lua` judged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardHistory {
    /// The node holds the history the shard was verified in.
    Current,
    /// Fenced since this instant (Redis ms): the node's history differs from the shard's, or
    /// differed when the fence went up.
    Fenced {
        since_ms: i64,
    },
    NotLoaded,
}

/// Whether a confirmation found an order's reservation on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    No,
    /// Reserved on the node.
    Reserved,
    /// Reserved, and found by a confirmation in the shard's verified history: its unit was
    /// taken there.
    InHistory,
}

/// One `confirm.lua` answer: the shard's history, the node's replication id, and per order id
/// what is on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheck {
    pub history: ShardHistory,
    pub replid: String,
    found: Vec<Found>,
}

struct Waiter {
    order_id: OrderId,
    claim: Claim,
    answer: oneshot::Sender<Result<Confirmation, StockError>>,
}

/// The queue of one shard: waiters for the next pipeline, and whether one is in flight.
#[derive(Default)]
struct Lane {
    waiting: Vec<Waiter>,
    busy: bool,
}

/// Confirms accepted orders (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Confirmer {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConnection,
    replicas: u8,
    timeout: Duration,
    script: Script,
    lanes: Mutex<HashMap<Shard, Lane>>,
}

impl std::fmt::Debug for Confirmer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirmer")
            .field("replicas", &self.inner.replicas)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Confirmer {
    /// `conn` should be a connection of its own (see the module docs).
    pub fn new(conn: RedisConnection, replicas: u8, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                replicas,
                timeout,
                script: Script::new(include_str!("../../../lua/confirm.lua")),
                lanes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Replicas each confirmation waits for.
    pub fn replicas(&self) -> u8 {
        self.inner.replicas
    }

    /// How long a confirmation waits for them.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The confirmations' own connection: other writes that must reach the replicas before
    /// they count (worker-id leases) pipeline their `WAIT` on it.
    pub fn connection(&self) -> RedisConnection {
        self.inner.conn.clone()
    }

    /// Confirm one order of `shard`, together with whatever else of that shard is waiting.
    pub async fn confirm(
        &self,
        shard: Shard,
        order_id: OrderId,
        claim: Claim,
    ) -> Result<Confirmation, StockError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes.entry(shard).or_default();
            lane.waiting.push(Waiter {
                order_id,
                claim,
                answer,
            });
            !std::mem::replace(&mut lane.busy, true)
        };
        if start {
            // A task of its own: the request that started the lane may be dropped (its client
            // went away) while others wait on the batch.
            let inner = Arc::clone(&self.inner);
            tokio::spawn(async move { inner.drain(shard).await });
        }
        answered.await.unwrap_or_else(|_| {
            Err(StockError::UnexpectedReply {
                script: "confirm.lua",
                reply: "the confirmation batch ended without an answer".into(),
            })
        })
    }

    /// The shard's history on its node (`confirm.lua` without orders); fences the shard when
    /// the node's history is not the shard's.
    pub async fn check(&self, shard: Shard) -> Result<ShardCheck, StockError> {
        self.inner.run(shard, &[]).await.map(|(check, _)| check)
    }
}

/// At most this many orders in one pipeline; more wait for the next.
const MAX_BATCH: usize = 512;

/// Frees a shard's lane when its drain ends however it ends (a panic included), so the next
/// confirmation starts a new one instead of waiting for a batch nobody sends.
struct LaneGuard<'a> {
    inner: &'a Inner,
    shard: Shard,
    /// Set when the drain ends normally (it has removed the lane itself).
    finished: bool,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // The waiters still queued get an error when their senders drop with the lane.
            let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.remove(&self.shard);
        }
    }
}

impl Inner {
    /// Send the waiting confirmations of `shard`, batch after batch, until none wait.
    async fn drain(&self, shard: Shard) {
        let mut guard = LaneGuard {
            inner: self,
            shard,
            finished: false,
        };
        loop {
            let batch: Vec<Waiter> = {
                let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(lane) = lanes.get_mut(&shard) else {
                    guard.finished = true;
                    return;
                };
                if lane.waiting.is_empty() {
                    lanes.remove(&shard);
                    guard.finished = true;
                    return;
                }
                let take = lane.waiting.len().min(MAX_BATCH);
                lane.waiting.drain(..take).collect()
            };
            let ids: Vec<OrderId> = batch.iter().map(|w| w.order_id).collect();
            match self.run(shard, &ids).await {
                Ok((check, acked)) => {
                    for (i, waiter) in batch.into_iter().enumerate() {
                        let judged = judge(&check, i, waiter.claim, acked, self.replicas);
                        let _ = waiter.answer.send(Ok(judged));
                    }
                }
                Err(e) => {
                    for waiter in batch {
                        let _ = waiter.answer.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One pipeline: `confirm.lua` for `ids`, then `WAIT` (when replicas are asked for);
    /// what the script found, and how many replicas acknowledged.
    async fn run(&self, shard: Shard, ids: &[OrderId]) -> Result<(ShardCheck, u8), StockError> {
        let keys = SaleKeys::of(shard);
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.script.get_hash())
            .arg(3)
            .arg(&keys.meta)
            .arg(&keys.reservations)
            .arg(&keys.confirmed);
        for id in ids {
            pipe.arg(id.0);
        }
        if self.replicas > 0 {
            pipe.cmd("WAIT")
                .arg(self.replicas)
                .arg(self.timeout.as_millis() as u64);
        }
        let mut conn = self.conn.clone();
        let mut replies: Vec<Value> = pipe.ignore_errors().query_async(&mut conn).await?;
        if is_noscript(replies.first()) {
            // First use on this node (or it restarted): load, then once more.
            self.script.prepare_invoke().load_async(&mut conn).await?;
            replies = pipe.query_async(&mut conn).await?;
        }
        let mut replies = replies.into_iter();
        let script = replies.next().ok_or_else(|| unexpected("no reply"))?;
        let check = decode(script)?;
        let acked = match replies.next() {
            Some(Value::Int(n)) => u8::try_from(n).unwrap_or(u8::MAX),
            Some(Value::ServerError(e)) => return Err(StockError::Redis(e.into())),
            Some(other) => return Err(unexpected(&format!("WAIT answered {other:?}"))),
            None => 0,
        };
        Ok((check, acked))
    }
}

fn judge(check: &ShardCheck, i: usize, claim: Claim, acked: u8, replicas: u8) -> Confirmation {
    let found = check.found.get(i).copied().unwrap_or(Found::No);
    match (&check.history, claim, found) {
        (ShardHistory::NotLoaded, _, _) => Confirmation::NotLoaded,
        (_, _, Found::No) => Confirmation::Missing,
        // A unit taken after the node's history changed may be one it lost: only an order
        // whose unit was taken in the verified history is confirmed on a fenced shard.
        (ShardHistory::Fenced { .. }, Claim::New, _)
        | (ShardHistory::Fenced { .. }, Claim::Held, Found::Reserved) => Confirmation::Fenced,
        _ if acked < replicas => Confirmation::Unreplicated { acked },
        _ => Confirmation::Confirmed,
    }
}

fn is_noscript(reply: Option<&Value>) -> bool {
    matches!(reply, Some(Value::ServerError(e)) if e.code() == "NOSCRIPT")
}

fn parse<T: redis::FromRedisValue>(value: Value) -> Result<T, StockError> {
    redis::from_redis_value(value).map_err(|e| StockError::Redis(e.into()))
}

fn unexpected(reply: &str) -> StockError {
    StockError::UnexpectedReply {
        script: "confirm.lua",
        reply: reply.to_owned(),
    }
}

/// `{code, replid, fenced since ms, found...}` (see confirm.lua).
fn decode(reply: Value) -> Result<ShardCheck, StockError> {
    let (code, replid, since_ms, found): (i64, String, i64, Vec<i64>) = match reply {
        Value::ServerError(e) => return Err(StockError::Redis(e.into())),
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut next = |what: &str| items.next().ok_or_else(|| unexpected(what));
            let code = parse(next("empty")?)?;
            let replid = parse(next("no replication id")?)?;
            let since = parse(next("no fence")?)?;
            let found = items.map(parse).collect::<Result<Vec<i64>, _>>()?;
            (code, replid, since, found)
        }
        other => return Err(unexpected(&format!("{other:?}"))),
    };
    let history = match code {
        1 => ShardHistory::Current,
        2 => ShardHistory::Fenced { since_ms },
        0 => ShardHistory::NotLoaded,
        _ => return Err(unexpected(&format!("code {code}"))),
    };
    let found = found
        .into_iter()
        .map(|f| match f {
            0 => Ok(Found::No),
            1 => Ok(Found::Reserved),
            2 => Ok(Found::InHistory),
            other => Err(unexpected(&format!("found {other}"))),
        })
        .collect::<Result<_, _>>()?;
    Ok(ShardCheck {
        history,
        replid,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(history: ShardHistory, found: &[Found]) -> ShardCheck {
        ShardCheck {
            history,
            replid: "r".into(),
            found: found.to_vec(),
        }
    }

    use Found::{InHistory, No, Reserved};

    #[test]
    fn a_new_unit_is_confirmed_only_in_the_current_history_when_found_and_replicated() {
        let current = check(ShardHistory::Current, &[InHistory, No]);
        assert_eq!(judge(&current, 0, Claim::New, 1, 1), Confirmation::Confirmed);
        assert_eq!(judge(&current, 1, Claim::New, 1, 1), Confirmation::Missing);
        assert_eq!(
            judge(&current, 0, Claim::New, 0, 1),
            Confirmation::Unreplicated { acked: 0 }
        );
        assert_eq!(judge(&current, 0, Claim::New, 0, 0), Confirmation::Confirmed);
        let fenced = check(ShardHistory::Fenced { since_ms: 5 }, &[InHistory, No]);
        assert_eq!(judge(&fenced, 0, Claim::New, 1, 1), Confirmation::Fenced);
        let lost = check(ShardHistory::NotLoaded, &[]);
        assert_eq!(judge(&lost, 0, Claim::Held, 1, 1), Confirmation::NotLoaded);
    }

    #[test]
    fn on_a_fenced_shard_only_an_order_whose_unit_was_taken_in_the_verified_history_is_confirmed() {
        let fenced = check(ShardHistory::Fenced { since_ms: 5 }, &[InHistory, Reserved, No]);
        assert_eq!(judge(&fenced, 0, Claim::Held, 1, 1), Confirmation::Confirmed);
        assert_eq!(
            judge(&fenced, 0, Claim::Held, 0, 1),
            Confirmation::Unreplicated { acked: 0 }
        );
        assert_eq!(judge(&fenced, 1, Claim::Held, 1, 1), Confirmation::Fenced);
        assert_eq!(judge(&fenced, 2, Claim::Held, 1, 1), Confirmation::Missing);
    }
}
