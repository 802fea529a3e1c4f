//! Each gateway's local view of the promotions: lets the hot path reject requests that
//! cannot succeed (not started; sold out, paused or ended for a user who holds no order)
//! without any I/O. Redis stays the authority: the cache only short-circuits, the Lua
//! script decides, and a sale the cache does not know is looked up, never refused.
//!
//! A background task refreshes it every `seckill.cache_refresh_ms`, in two independent
//! halves, so that one dependency being down does not freeze the other:
//! - definitions from PostgreSQL (off the hot path); a request for a sale this gateway has
//!   not seen (created a moment ago on another gateway) wakes the refresher early and waits
//!   for a refresh that started after it arrived (at most one every `MIN_REFRESH_GAP`);
//! - live state from Redis: one atomic `snapshot.lua` per sale (remaining, paused, epoch,
//!   Redis' clock), which also loads sales into Redis shortly before they start.
//!
//! Retries must keep their order id, on any gateway (a buyer accepted on gateway A whose
//! retry lands on B just as the sale sells out). So a closed sale is rejected locally only
//! against a *final* buyer list: read atomically while the sale was closed, at an epoch
//! that has not moved since (see `snapshot.lua`). Such a list holds every user who can hold
//! an order; their requests go on to Redis, everyone else's are refused here. Until a final
//! list is in hand (the first moments after a sale closes) every request goes to Redis.
//! The one gap left: a sale that reopens (stock returned) and closes again within one
//! refresh interval, with a new buyer retrying on a gateway that has not refreshed since.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use order_core::app::order_status::{CurrentSale, CurrentSales};
use order_core::app::sale_admin::SaleCache;
use order_core::domain::promotion::{Promotion, PromotionState};
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::clock::RedisClock;
use order_core::redis::stock::{IfStarted, Snapshot, StockStore, SyncOutcome};
use order_core::runtime::shutdown::ShutdownListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Unknown sale ids cannot make a gateway query PostgreSQL more often than this.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// How long a request for an unknown sale waits for the refresh that may find it.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(2);

/// What Redis said about a sale at the last snapshot (or reservation seen here).
#[derive(Debug, Clone, Default)]
struct Live {
    loaded: bool,
    remaining: i64,
    paused: bool,
    epoch: String,
    /// The final buyer list and the epoch it is final for.
    final_buyers: Option<(String, Arc<HashSet<i64>>)>,
    /// Reservations this gateway made; a snapshot read before one of them is not final.
    reservations_seen: u64,
}

#[derive(Debug)]
pub struct CachedPromotion {
    pub promotion: Promotion,
    live: RwLock<Live>,
    /// One snapshot at a time per sale, when a request found it closed.
    snapshotting: tokio::sync::Mutex<()>,
}

/// What the hot path may do without asking Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDecision {
    Reject(PromotionState),
    AskRedis,
}

impl CachedPromotion {
    fn new(promotion: Promotion, previous: Option<&CachedPromotion>) -> Self {
        let live = previous.map(|p| p.live_view()).unwrap_or(Live {
            remaining: promotion.stock,
            ..Live::default()
        });
        Self {
            promotion,
            live: RwLock::new(live),
            snapshotting: tokio::sync::Mutex::new(()),
        }
    }

    fn live_view(&self) -> Live {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The sale's state at `now` (Redis' clock) as this gateway knows it.
    pub fn state(&self, now: DateTime<Utc>) -> PromotionState {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let sold_out = live.loaded && live.remaining <= 0;
        let state = self.promotion.state(now, sold_out);
        if state == PromotionState::Active && live.paused {
            PromotionState::Paused
        } else {
            state
        }
    }

    /// Refuse locally only what Redis would surely refuse: a sale not started, or a closed
    /// sale for a user outside its final buyer list.
    pub fn decide(&self, user_id: i64, now: DateTime<Utc>) -> LocalDecision {
        let state = self.state(now);
        match state {
            PromotionState::Active => LocalDecision::AskRedis,
            PromotionState::Scheduled => LocalDecision::Reject(state),
            PromotionState::SoldOut | PromotionState::Paused | PromotionState::Ended => {
                let live = self.live.read().unwrap_or_else(|e| e.into_inner());
                match &live.final_buyers {
                    Some((epoch, buyers)) if *epoch == live.epoch && !buyers.contains(&user_id) => {
                        LocalDecision::Reject(state)
                    }
                    _ => LocalDecision::AskRedis,
                }
            }
        }
    }

    /// This gateway reserved a unit: the sale is open, whatever list was held is stale.
    /// `remaining` is the sale's when it has one shard; a shard's remaining says little of
    /// the sale's, so it waits for the next snapshot.
    pub fn reserved(&self, remaining: i64) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.loaded = true;
        if self.promotion.shards == 1 {
            live.remaining = remaining;
        }
        live.final_buyers = None;
        live.reservations_seen += 1;
    }

    /// Redis refused for lack of stock.
    pub fn mark_sold_out(&self) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.loaded = true;
        live.remaining = 0;
    }

    /// Remaining as an admin call just read it from Redis.
    pub fn set_remaining(&self, remaining: i64) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.loaded = true;
        live.remaining = remaining;
        if remaining > 0 {
            live.final_buyers = None;
        }
    }

    /// Approximate: as of the last snapshot or reservation seen by this gateway.
    pub fn remaining(&self) -> i64 {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .remaining
            .max(0)
    }

    /// The epoch of the final list held (to send with a snapshot request), and how many
    /// reservations this gateway had made when the request left.
    fn before_snapshot(&self) -> (Option<String>, u64) {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        (
            live.final_buyers.as_ref().map(|(epoch, _)| epoch.clone()),
            live.reservations_seen,
        )
    }

    fn apply(&self, snapshot: Option<&Snapshot>, reservations_seen: u64) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        let Some(s) = snapshot else {
            *live = Live {
                remaining: live.remaining,
                reservations_seen: live.reservations_seen,
                ..Live::default()
            };
            return;
        };
        if live.reservations_seen != reservations_seen {
            // This gateway reserved while the snapshot was on its way: the sale reopened
            // after it was read, so it is not final. The next refresh reads it again.
            return;
        }
        live.loaded = true;
        live.remaining = s.remaining;
        live.paused = s.paused;
        live.epoch = s.epoch.clone();
        if !s.closed {
            live.final_buyers = None;
        } else if live.final_buyers.as_ref().is_none_or(|(e, _)| *e != s.epoch) {
            // A new final list (the script sends buyers whenever our epoch differs).
            live.final_buyers = Some((s.epoch.clone(), Arc::new(s.buyers.iter().copied().collect())));
        }
    }

    /// Take a snapshot now (a request just found the sale closed), so the flood behind it
    /// is refused locally. One at a time; others carry on to Redis meanwhile.
    pub async fn snapshot_now(&self, stock: &StockStore, clock: &RedisClock) {
        let Ok(_one) = self.snapshotting.try_lock() else {
            return;
        };
        let (epoch, seen) = self.before_snapshot();
        match stock.snapshots(&[self.promotion.sale()], &[epoch]).await {
            Ok(mut snapshots) => {
                let snapshot = snapshots.pop().flatten();
                if let Some(s) = &snapshot {
                    clock.observe(s.now_ms);
                }
                self.apply(snapshot.as_ref(), seen);
            }
            Err(e) => tracing::debug!(error = %e, "snapshot a closed sale; the refresher will"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct RefreshMark {
    started: Instant,
    ok: bool,
}

#[derive(Debug)]
pub struct PromotionCache {
    entries: RwLock<HashMap<i64, Arc<CachedPromotion>>>,
    /// Running sales found missing in Redis, reported once each.
    lost: std::sync::Mutex<HashSet<i64>>,
    pub clock: Arc<RedisClock>,
    wake: Notify,
    refreshed: watch::Sender<RefreshMark>,
}

/// The sale may exist but this gateway cannot tell right now (PostgreSQL unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the promotion list could not be refreshed")]
pub struct LookupUnavailable;

impl Default for PromotionCache {
    fn default() -> Self {
        Self {
            entries: RwLock::default(),
            lost: std::sync::Mutex::default(),
            clock: Arc::default(),
            wake: Notify::new(),
            refreshed: watch::Sender::new(RefreshMark {
                started: Instant::now(),
                ok: false,
            }),
        }
    }
}

impl PromotionCache {
    pub fn get(&self, id: i64) -> Option<Arc<CachedPromotion>> {
        self.read().get(&id).cloned()
    }

    /// The sale, looking it up when this gateway has not seen it: waits for a refresh that
    /// started after the call. `Ok(None)` only when the sale does not exist (or ended long
    /// ago).
    pub async fn find(&self, id: i64) -> Result<Option<Arc<CachedPromotion>>, LookupUnavailable> {
        if let Some(entry) = self.get(id) {
            return Ok(Some(entry));
        }
        let asked = Instant::now();
        let mut marks = self.refreshed.subscribe();
        self.wake.notify_one();
        let deadline = asked + LOOKUP_PATIENCE;
        loop {
            let mark = *marks.borrow_and_update();
            if mark.started >= asked {
                return if mark.ok {
                    Ok(self.get(id))
                } else {
                    Err(LookupUnavailable)
                };
            }
            match tokio::time::timeout_at(deadline, marks.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(LookupUnavailable),
            }
        }
    }

    /// The cached sales an order id minted at `at_ms` (Unix ms) can belong to: those whose
    /// window, widened by `MINT_MARGIN`, contains it (the clocks of minting and of the sale
    /// window are both Redis', as gateways read it; the margin covers their reading errors
    /// and borrowed milliseconds).
    fn sales_around(&self, at_ms: i64) -> Vec<Arc<CachedPromotion>> {
        let margin = order_core::app::order_status::MINT_MARGIN.as_millis() as i64;
        let mut sales: Vec<Arc<CachedPromotion>> = self
            .read()
            .values()
            .filter(|e| {
                e.promotion.starts_at.timestamp_millis() - margin <= at_ms
                    && at_ms <= e.promotion.ends_at.timestamp_millis() + margin
            })
            .cloned()
            .collect();
        sales.sort_unstable_by_key(|e| e.promotion.id);
        sales
    }

    /// Insert or replace after an admin change on this gateway (others see it on refresh).
    pub fn upsert(&self, promotion: Promotion) -> Arc<CachedPromotion> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = Arc::new(CachedPromotion::new(
            promotion.clone(),
            entries.get(&promotion.id).map(|e| &**e),
        ));
        entries.insert(promotion.id, Arc::clone(&entry));
        entry
    }

    pub fn remove(&self, id: i64) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<i64, Arc<CachedPromotion>>> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Reload the definitions from PostgreSQL (entries whose definition did not change keep
    /// their live state).
    pub async fn refresh_definitions(&self, repo: &PromotionRepo) -> anyhow::Result<()> {
        use anyhow::Context;
        let promotions = repo
            .list_current(chrono::Duration::hours(1))
            .await
            .context("load current promotions")?;
        let mut fresh = HashMap::with_capacity(promotions.len());
        {
            let old = self.read();
            for promotion in promotions {
                let entry = match old.get(&promotion.id) {
                    Some(existing) if existing.promotion == promotion => Arc::clone(existing),
                    previous => Arc::new(CachedPromotion::new(promotion, previous.map(|e| &**e))),
                };
                fresh.insert(entry.promotion.id, entry);
            }
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Snapshot every known sale from Redis; load sales that start within `warmup_lead`
    /// (judged on Redis' clock) and are not loaded yet.
    pub async fn refresh_live(&self, stock: &StockStore, warmup_lead: Duration) -> anyhow::Result<()> {
        use anyhow::Context;
        let entries: Vec<Arc<CachedPromotion>> = self.read().values().cloned().collect();
        let sales: Vec<_> = entries.iter().map(|e| e.promotion.sale()).collect();
        let (epochs, seen): (Vec<Option<String>>, Vec<u64>) =
            entries.iter().map(|e| e.before_snapshot()).unzip();
        let snapshots = stock
            .snapshots(&sales, &epochs)
            .await
            .context("snapshot live stock")?;
        if let Some(now_ms) = snapshots.iter().flatten().map(|s| s.now_ms).max() {
            self.clock.observe(now_ms);
        }
        let now = self.clock.now();
        let lead = chrono::Duration::from_std(warmup_lead).unwrap_or_default();
        for ((entry, snapshot), seen) in entries.iter().zip(&snapshots).zip(seen) {
            entry.apply(snapshot.as_ref(), seen);
            let promotion = &entry.promotion;
            if let Some(snapshot) = snapshot {
                self.lost_set().remove(&promotion.id);
                if snapshot.in_transit != 0 {
                    // Units lent by one shard and not taken in by another: usually a move
                    // under way, or one whose gateway died halfway. Finishing it is
                    // idempotent, so the sale is never sold out with units on the way.
                    let moved = stock
                        .settle(promotion.sale())
                        .await
                        .context("settle moves between shards")?;
                    if moved > 0 {
                        tracing::info!(
                            promotion_id = promotion.id,
                            moved,
                            "finished a move of stock between shards"
                        );
                    }
                }
                if snapshot.revision < promotion.revision {
                    // A write to the row whose Redis step never ran (its gateway crashed or
                    // Redis failed in between): bring Redis up to the row.
                    // A refusal repeats every pass until the row changes; the admin call
                    // that wrote the row has logged it already.
                    match stock
                        .sync(promotion, IfStarted::Refuse)
                        .await
                        .context("sync a promotion")?
                    {
                        outcome @ SyncOutcome::Applied { .. } => tracing::info!(
                            promotion_id = promotion.id,
                            revision = promotion.revision,
                            ?outcome,
                            "Redis was behind the promotion row; synced"
                        ),
                        outcome => {
                            tracing::debug!(promotion_id = promotion.id, ?outcome, "sync changed nothing")
                        }
                    }
                }
                continue;
            }
            let loaded = if promotion.due_for_warmup(now, lead) {
                stock
                    .sync(promotion, IfStarted::Refuse)
                    .await
                    .context("warm up a promotion")?
                    .remaining()
            } else {
                None
            };
            if let Some(remaining) = loaded {
                tracing::info!(
                    promotion_id = promotion.id,
                    remaining,
                    "promotion loaded into Redis"
                );
            } else if promotion.has_started(now) && now < promotion.ends_at {
                // Redis lost a running sale (or never got it). Loading it afresh would offer
                // its whole stock again beside the orders already taken: oversell. Reported
                // once; the seckill path answers 503 `not_loaded` meanwhile.
                if self.lost_set().insert(promotion.id) {
                    tracing::error!(
                        promotion_id = promotion.id,
                        "a running sale is not in Redis; pause it, wait for the order backlog to drain, \
                         then reconcile with repair (POST /admin/promotions/{{id}}/reconcile?repair=true)"
                    );
                }
            }
        }
        Ok(())
    }

    fn lost_set(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Both halves; the definitions' outcome is what a lookup waits for.
    pub async fn refresh(
        &self,
        repo: &PromotionRepo,
        stock: &StockStore,
        warmup_lead: Duration,
    ) -> (anyhow::Result<()>, anyhow::Result<()>) {
        let started = Instant::now();
        let definitions = self.refresh_definitions(repo).await;
        self.refreshed.send_replace(RefreshMark {
            started,
            ok: definitions.is_ok(),
        });
        let live = self.refresh_live(stock, warmup_lead).await;
        (definitions, live)
    }

    pub fn spawn_refresher(
        self: &Arc<Self>,
        repo: PromotionRepo,
        stock: StockStore,
        every: Duration,
        warmup_lead: Duration,
        mut shutdown: ShutdownListener,
    ) -> tokio::task::JoinHandle<()> {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Instant::now() - MIN_REFRESH_GAP;
            let (mut definitions_failing, mut live_failing) = (false, false);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cache.wake.notified() => {}
                    _ = shutdown.recv() => break,
                }
                tokio::time::sleep_until(last + MIN_REFRESH_GAP).await;
                last = Instant::now();
                let (definitions, live) = cache.refresh(&repo, &stock, warmup_lead).await;
                report(
                    "promotion definitions (PostgreSQL)",
                    definitions,
                    &mut definitions_failing,
                );
                report("live sale state (Redis)", live, &mut live_failing);
            }
        })
    }
}

/// Log the first failure of a streak and the recovery; the cache keeps its last view.
fn report(what: &str, outcome: anyhow::Result<()>, failing: &mut bool) {
    match outcome {
        Ok(()) if *failing => {
            tracing::info!("promotion cache refresh of {what} recovered");
            *failing = false;
        }
        Ok(()) => {}
        Err(e) if !*failing => {
            tracing::warn!(
                error = format!("{e:#}"),
                "promotion cache refresh of {what} failed"
            );
            *failing = true;
        }
        Err(_) => {}
    }
}

/// The status lookup asks the cache which sales are current.
impl CurrentSales for PromotionCache {
    fn running_around(&self, at_ms: i64) -> Vec<CurrentSale> {
        self.sales_around(at_ms)
            .iter()
            .map(|e| CurrentSale {
                sale: e.promotion.sale(),
                unit_price_cents: e.promotion.price_cents,
            })
            .collect()
    }

    fn get(&self, promotion_id: i64) -> Option<CurrentSale> {
        PromotionCache::get(self, promotion_id).map(|e| CurrentSale {
            sale: e.promotion.sale(),
            unit_price_cents: e.promotion.price_cents,
        })
    }
}

/// Sale administration tells the cache what it wrote.
impl SaleCache for PromotionCache {
    fn written(&self, row: &Promotion, remaining: Option<i64>) {
        let entry = self.upsert(row.clone());
        if let Some(remaining) = remaining {
            entry.set_remaining(remaining);
        }
    }

    fn deleted(&self, id: i64) {
        self.remove(id);
    }
}
