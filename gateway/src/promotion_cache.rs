//! Each gateway's local view of the promotions: lets the hot path reject not-started, ended,
//! paused and sold-out requests without any I/O.
//!
//! A background task refreshes it every `seckill.cache_refresh_ms`: promotions from
//! PostgreSQL (off the hot path), remaining stock and pause flags from Redis in one pipelined
//! round trip. So when stock comes back (a cancelled order), every gateway stops rejecting
//! locally within one refresh. The same task loads promotions into Redis shortly before they
//! start. Redis stays the authority: the cache only short-circuits, the Lua script decides.
//!
//! Retries must keep their order id (a client that timed out retries with the same request
//! id after the sale sold out). So the cache also knows, per closed sale, which users hold
//! reservations: only they are sent on to Redis; everyone else is rejected without I/O.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use order_core::promotion::{Promotion, PromotionRepo, PromotionState};
use order_core::shutdown::ShutdownListener;
use order_core::stock::StockStore;

#[derive(Debug)]
pub struct CachedPromotion {
    pub promotion: Promotion,
    sold_out: AtomicBool,
    remaining: AtomicI64,
    paused_in_redis: AtomicBool,
    /// Users holding reservations: as of the last refresh, plus those this gateway accepted.
    buyers: RwLock<HashSet<i64>>,
}

impl CachedPromotion {
    fn new(promotion: Promotion, previous: Option<&CachedPromotion>) -> Self {
        let remaining = previous.map_or(promotion.stock, |p| p.remaining.load(Ordering::Relaxed));
        Self {
            sold_out: AtomicBool::new(previous.is_some_and(|p| p.is_sold_out())),
            paused_in_redis: AtomicBool::new(
                previous.is_some_and(|p| p.paused_in_redis.load(Ordering::Relaxed)),
            ),
            remaining: AtomicI64::new(remaining),
            buyers: RwLock::new(previous.map(|p| p.buyers_snapshot()).unwrap_or_default()),
            promotion,
        }
    }

    /// Whether `user_id` may hold a reservation (and so a retry may deserve its order id).
    pub fn may_hold_order(&self, user_id: i64) -> bool {
        self.buyers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&user_id)
    }

    pub fn add_buyer(&self, user_id: i64) {
        self.buyers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user_id);
    }

    fn buyers_snapshot(&self) -> HashSet<i64> {
        self.buyers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_buyers(&self, buyers: Vec<i64>) {
        *self.buyers.write().unwrap_or_else(|e| e.into_inner()) = buyers.into_iter().collect();
    }

    pub fn is_sold_out(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed)
    }

    pub fn mark_sold_out(&self) {
        self.sold_out.store(true, Ordering::Relaxed);
        self.remaining.store(0, Ordering::Relaxed);
    }

    pub fn set_remaining(&self, remaining: i64) {
        self.remaining.store(remaining, Ordering::Relaxed);
        self.sold_out.store(remaining <= 0, Ordering::Relaxed);
    }

    /// Approximate: as of the last refresh or reservation seen by this gateway.
    pub fn remaining(&self) -> i64 {
        self.remaining.load(Ordering::Relaxed).max(0)
    }

    pub fn state(&self) -> PromotionState {
        let mut p = self.promotion.state(Utc::now(), self.is_sold_out());
        if p == PromotionState::Active && self.paused_in_redis.load(Ordering::Relaxed) {
            p = PromotionState::Paused;
        }
        p
    }
}

#[derive(Debug, Default)]
pub struct PromotionCache {
    entries: RwLock<HashMap<i64, Arc<CachedPromotion>>>,
    /// Running sales found missing in Redis, reported once each.
    lost: std::sync::Mutex<HashSet<i64>>,
}

impl PromotionCache {
    pub fn get(&self, id: i64) -> Option<Arc<CachedPromotion>> {
        self.read().get(&id).cloned()
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

    /// Reload promotions from the database and live stock from Redis; load promotions that
    /// start within `warmup_lead` into Redis.
    pub async fn refresh(
        &self,
        repo: &PromotionRepo,
        stock: &StockStore,
        warmup_lead: Duration,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let promotions = repo
            .list_current(chrono::Duration::hours(1))
            .await
            .context("load current promotions")?;
        let ids: Vec<i64> = promotions.iter().map(|p| p.id).collect();
        let live = stock.live_stock(&ids).await.context("read live stock")?;
        let now = Utc::now();
        let lead = chrono::Duration::from_std(warmup_lead).unwrap_or_default();

        for (promotion, live) in promotions.iter().zip(&live) {
            if live.is_some() {
                self.lost
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&promotion.id);
            } else if promotion.has_started(now) && now < promotion.ends_at {
                // Redis lost a running sale (or never got it). Loading it afresh would offer
                // its whole stock again beside the orders already taken: oversell. Reported
                // once; the seckill path answers 503 `not_loaded` meanwhile.
                if self
                    .lost
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(promotion.id)
                {
                    tracing::error!(
                        promotion_id = promotion.id,
                        "a running sale is not in Redis; pause it, wait for the order backlog to drain, \
                         then reconcile with repair (POST /admin/promotions/{{id}}/reconcile?repair=true)"
                    );
                }
                continue;
            }
            let due = promotion.starts_at - lead <= now && now < promotion.ends_at;
            if live.is_none() && due {
                let remaining = stock.warmup(promotion).await.context("warm up a promotion")?;
                tracing::info!(
                    promotion_id = promotion.id,
                    remaining,
                    "promotion loaded into Redis"
                );
            }
        }

        let mut fresh = HashMap::with_capacity(promotions.len());
        {
            let old = self.read();
            for (promotion, live) in promotions.into_iter().zip(live) {
                let entry = match old.get(&promotion.id) {
                    Some(existing) if existing.promotion == promotion => Arc::clone(existing),
                    previous => Arc::new(CachedPromotion::new(promotion, previous.map(|e| &**e))),
                };
                if let Some(live) = live {
                    entry.set_remaining(live.remaining);
                    entry.paused_in_redis.store(live.paused, Ordering::Relaxed);
                }
                fresh.insert(entry.promotion.id, entry);
            }
        }
        // Buyers matter only where the hot path rejects locally.
        let closed: Vec<Arc<CachedPromotion>> = fresh
            .values()
            .filter(|e| {
                matches!(
                    e.state(),
                    PromotionState::SoldOut | PromotionState::Paused | PromotionState::Ended
                )
            })
            .cloned()
            .collect();
        let closed_ids: Vec<i64> = closed.iter().map(|e| e.promotion.id).collect();
        let buyers = stock.buyers(&closed_ids).await.context("read buyers")?;
        for (entry, buyers) in closed.iter().zip(buyers) {
            entry.set_buyers(buyers);
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub fn spawn_refresher(
        self: &Arc<Self>,
        repo: PromotionRepo,
        stock: StockStore,
        every: Duration,
        warmup_lead: Duration,
        mut shutdown: ShutdownListener,
    ) {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.recv() => break,
                }
                match cache.refresh(&repo, &stock, warmup_lead).await {
                    Ok(()) if failing => {
                        tracing::info!("promotion cache refresh recovered");
                        failing = false;
                    }
                    Ok(()) => {}
                    // Log the first failure of a streak only; the cache keeps its last view.
                    Err(e) if !failing => {
                        tracing::warn!(error = format!("{e:#}"), "promotion cache refresh failed");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        });
    }
}
