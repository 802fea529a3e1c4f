//! The recovery worker: every current sale heals by itself after its Redis node lost writes.
//!
//! Each pass checks every shard of every current sale (`SaleRecovery::health`, which also
//! fences a shard whose node's Redis history changed) and rebuilds a fenced or lost sale once
//! the gateways' publish deadline (plus half a second) has passed since the fence (`SaleRecovery::recover`; the
//! module docs of `order_core::app::recovery` say why the wait and what is read). Once a second it
//! also notes where `seckill-orders` ends (a bookmark), so a recovery reads the topic from
//! just before the sale started rather than from its beginning.
//!
//! Every five seconds it also reads the Redis topology (nodes, roles, replicas and their lag,
//! which node holds each shard of each current sale) for `/status`, the dashboard and
//! `/metrics`, and counts a failover each time a slot range or the primary moves to another
//! node.
//!
//! Several consumers processes run this at once: two may rebuild the same sale, and the
//! repair is one atomic script per shard that counts nothing twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use order_core::app::recovery::{SaleHealth, SaleRecovery};
use order_core::bus::Bookmark;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::topology::Topology;
use order_core::redis::RedisConnection;
use order_core::runtime::settings::RedisSettings;
use order_core::runtime::shutdown::ShutdownListener;
use serde::Serialize;

use crate::settings::RecoverySettings;
use crate::stats::{Counter, Stats};

/// Bookmarks kept: one a second for a day's worth of sales is more than needed; a sale that
/// started before the oldest is read from the topic's beginning.
const BOOKMARKS_KEPT: usize = 3_600;

/// What `/status` shows of Redis: its topology, where the current sales live, the sales this
/// process found fenced and the recoveries it made.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// As last read (every five seconds); `None` until the first reading.
    pub topology: Option<Topology>,
    /// Failovers this process saw: a slot range or the primary that moved to another node.
    pub failovers_seen: u64,
    /// Each current sale's shards and the node serving each.
    pub sales: Vec<SaleNodes>,
    /// Sales fenced or lost right now, by id: since when (Redis ms).
    pub fenced: Vec<FencedSale>,
    /// The last recoveries this process made (newest last).
    pub recovered: Vec<RecoveredSale>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaleNodes {
    pub promotion_id: i64,
    /// The node serving each shard, in shard order.
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FencedSale {
    pub promotion_id: i64,
    pub since_ms: i64,
    /// `fenced` (the node's history changed) or `lost` (the sale's keys are gone).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecoveredSale {
    pub promotion_id: i64,
    /// From the fence to the repair, on Redis' clock.
    pub fenced_ms: i64,
    pub from_broker: usize,
    pub queued: usize,
    pub stored: usize,
    pub remaining: i64,
}

const RECOVERED_KEPT: usize = 20;

#[derive(Debug)]
pub struct RecoveryWorker {
    pub recovery: SaleRecovery,
    pub promotions: PromotionRepo,
    pub settings: RecoverySettings,
    /// How long after a fence a sale is rebuilt (`Settings::recovery_grace`).
    pub grace: Duration,
    pub stats: Arc<Stats>,
    pub report: Arc<Mutex<RecoveryReport>>,
    /// Where the topology is read from.
    pub redis: RedisSettings,
    pub conn: RedisConnection,
}

/// How often the topology is read.
const TOPOLOGY_EVERY_MS: i64 = 5_000;

#[derive(Debug, Default)]
struct State {
    bookmarks: VecDeque<Bookmark>,
    last_bookmark_ms: i64,
    /// Sales found lost (no fence to read a time from): when first seen, Redis ms.
    lost_since: HashMap<i64, i64>,
    /// Sales fenced at the last pass (a new fence counts as a history change).
    fenced: HashMap<i64, i64>,
    last_topology_ms: i64,
    /// The master of each slot range (by its first slot) or the primary, as last read.
    masters: HashMap<u16, String>,
}

impl RecoveryWorker {
    /// Record a topology reading: metrics, failovers (a slot range or the primary on another
    /// node than at the last reading), and which node serves each current sale's shards.
    fn observe(
        &self,
        state: &mut State,
        promotions: &[order_core::domain::promotion::Promotion],
        topology: Topology,
    ) {
        let mut moved = 0;
        for node in topology.nodes.iter().filter(|n| n.role == "master") {
            let starts: Vec<u16> = match topology.shape {
                "cluster" => node.slots.iter().map(|(from, _)| *from).collect(),
                _ => vec![0],
            };
            for start in starts {
                if let Some(before) = state.masters.insert(start, node.address.clone()) {
                    if before != node.address {
                        moved += 1;
                    }
                }
            }
        }
        if moved > 0 {
            metrics::counter!("seckill_redis_failovers_seen_total").increment(moved);
            tracing::warn!(
                moved,
                "Redis masters moved to other nodes since the last reading (a failover)"
            );
        }
        for node in &topology.nodes {
            let role = node.role.clone();
            metrics::gauge!("seckill_redis_node", "address" => node.address.clone(), "role" => role).set(1.0);
            for replica in &node.replicas {
                metrics::gauge!("seckill_redis_replica_behind_bytes", "address" => replica.address.clone())
                    .set(replica.behind_bytes as f64);
            }
        }
        let sales = promotions
            .iter()
            .map(|p| SaleNodes {
                promotion_id: p.id,
                nodes: p
                    .sale()
                    .shards()
                    .map(|shard| {
                        let slot =
                            order_core::domain::shards::key_slot(format!("{{{}}}", shard.tag()).as_bytes());
                        topology
                            .master_of_slot(slot)
                            .map_or_else(|| "unknown".to_owned(), |n| n.address.clone())
                    })
                    .collect(),
            })
            .collect();
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.failovers_seen += moved;
        report.sales = sales;
        report.topology = Some(topology);
    }

    pub async fn run(self, shutdown: ShutdownListener) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        let state = tokio::sync::Mutex::new(State::default());
        crate::periodic::every(interval, shutdown, "redis recovery", || async {
            let mut state = state.lock().await;
            self.pass(&mut state).await
        })
        .await;
    }

    async fn pass(&self, state: &mut State) -> anyhow::Result<()> {
        let now_ms = self
            .recovery
            .stock
            .redis_time_ms()
            .await
            .context("read Redis' clock")?;
        if now_ms - state.last_bookmark_ms >= 1_000 {
            // A bookmark is an optimisation: a broker that does not answer now only makes a
            // later recovery read more.
            if let Ok(Some(bookmark)) = self.recovery.reader.bookmark(now_ms).await {
                state.bookmarks.push_back(bookmark);
                if state.bookmarks.len() > BOOKMARKS_KEPT {
                    state.bookmarks.pop_front();
                }
            }
            state.last_bookmark_ms = now_ms;
        }
        let promotions = self
            .promotions
            .list_current(chrono::Duration::days(1))
            .await
            .context("list current promotions")?;
        if now_ms - state.last_topology_ms >= TOPOLOGY_EVERY_MS {
            state.last_topology_ms = now_ms;
            // The topology is for people and metrics: a reading that fails is skipped.
            if let Ok(topology) = order_core::redis::topology::read(&self.redis, &self.conn).await {
                self.observe(state, &promotions, topology);
            }
        }
        let grace = self.grace.as_millis() as i64;
        let mut fenced_now = Vec::new();
        let mut due = Vec::new();
        let mut first_error = None;
        for promotion in &promotions {
            let health = match self.recovery.health(promotion, now_ms).await {
                Ok(health) => health,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let (since_ms, reason) = match health {
                SaleHealth::Healthy | SaleHealth::NotLoaded | SaleHealth::Retired => {
                    state.lost_since.remove(&promotion.id);
                    state.fenced.remove(&promotion.id);
                    continue;
                }
                SaleHealth::Fenced { since_ms } => (since_ms, "fenced"),
                SaleHealth::Lost => (*state.lost_since.entry(promotion.id).or_insert(now_ms), "lost"),
            };
            if state.fenced.insert(promotion.id, since_ms).is_none() {
                self.stats.count(Counter::SaleFences, 1);
                tracing::warn!(promotion_id = promotion.id, reason, "a sale's Redis node may have lost writes: the sale is closed until it is rebuilt from its accepted orders");
            }
            let fenced = FencedSale {
                promotion_id: promotion.id,
                since_ms,
                reason,
            };
            if now_ms < since_ms + grace {
                fenced_now.push(fenced);
            } else {
                due.push((promotion, fenced));
            }
        }
        // The sales of a node that failed over are rebuilt together: the running ones first,
        // from one read of the broker back to the earliest of their starts (buyers wait on
        // them), then the others from another.
        let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_else(chrono::Utc::now);
        let bookmarks: Vec<Bookmark> = state.bookmarks.iter().cloned().collect();
        let (running, others): (Vec<_>, Vec<_>) = due
            .iter()
            .map(|(p, _)| *p)
            .partition(|p| p.starts_at <= now && now < p.ends_at);
        let mut rebuilt = Vec::new();
        for sales in [running, others] {
            match self.recovery.recover_all(&sales, &bookmarks).await {
                Ok(done) => rebuilt.extend(done),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let mut done = std::collections::HashSet::new();
        for (promotion_id, outcome) in rebuilt {
            let Some((_, fenced)) = due.iter().find(|(p, _)| p.id == promotion_id) else {
                continue;
            };
            match outcome {
                Ok(recovered) => {
                    done.insert(promotion_id);
                    let fenced_ms = now_ms - fenced.since_ms;
                    state.lost_since.remove(&promotion_id);
                    state.fenced.remove(&promotion_id);
                    self.stats.count(Counter::SalesRecovered, 1);
                    metrics::histogram!("seckill_sale_recovery_seconds").record(fenced_ms as f64 / 1000.0);
                    tracing::warn!(
                        promotion_id,
                        fenced_ms,
                        from_broker = recovered.from_broker,
                        queued = recovered.queued,
                        stored = recovered.stored,
                        remaining = recovered.repair.remaining,
                        restored = recovered.repair.restored,
                        "sale rebuilt from its accepted orders; it sells again"
                    );
                    let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
                    report.recovered.push(RecoveredSale {
                        promotion_id,
                        fenced_ms,
                        from_broker: recovered.from_broker,
                        queued: recovered.queued,
                        stored: recovered.stored,
                        remaining: recovered.repair.remaining,
                    });
                    let excess = report.recovered.len().saturating_sub(RECOVERED_KEPT);
                    report.recovered.drain(..excess);
                }
                Err(e) => {
                    first_error.get_or_insert(e.context(format!("rebuild sale {promotion_id}")));
                }
            }
        }
        fenced_now.extend(
            due.into_iter()
                .filter(|(p, _)| !done.contains(&p.id))
                .map(|(_, fenced)| fenced),
        );
        metrics::gauge!("seckill_sales_fenced").set(fenced_now.len() as f64);
        self.report.lock().unwrap_or_else(|e| e.into_inner()).fenced = fenced_now;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
