//! Sale administration: operations staff create and steer flash sales.
//!
//! PostgreSQL holds what was configured; Redis what remains to sell. Each change writes the
//! database row first (bumping its revision), then brings Redis up to that revision in one
//! script (`StockStore::sync`), then the caller's cache ([`SaleCache`]); other gateways
//! follow on their next refresh, and a refresher that sees Redis behind the row syncs it (a
//! crash between the two steps heals). Redis decides what stock may do, atomically and on its
//! own clock: a started sale it lost is never loaded afresh (only a repair restores it), and
//! stock never drops below the units reserved. Adding stock is the only stock change allowed
//! once a sale has started.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::app::reconcile::{self, SaleRetired};
use crate::domain::promotion::{
    Promotion, PromotionError, PromotionFields, PromotionPatch, PromotionState, MAX_STOCK,
};
use crate::domain::reconcile::ReconcileReport;
use crate::postgres::promotions::PromotionRepo;
use crate::postgres::{orders, Pool};
use crate::redis::clock::RedisClock;
use crate::redis::stock::{IfStarted, LiveStock, ShardStock, StockError, StockStore, SyncOutcome};
use crate::runtime::transient::Transient;

/// What the caller keeps of the sales it serves (the gateway's promotion cache): told of
/// every row and remaining stock an admin action produced.
pub trait SaleCache {
    /// The row as written, and its remaining stock when Redis holds it.
    fn written(&self, row: &Promotion, remaining: Option<i64>);
    fn deleted(&self, id: i64);
}

/// A sale as an operator sees it.
#[derive(Debug, Clone)]
pub struct SaleView {
    pub promotion: Promotion,
    pub state: PromotionState,
    /// Remaining in Redis, all shards; `None` until every shard is loaded (or Redis could
    /// not say, after a committed write).
    pub remaining: Option<i64>,
    /// One per shard, in order; empty until every shard is loaded.
    pub shards: Vec<ShardStock>,
}

/// A sale's figures for the operator's stats.
#[derive(Debug, Clone)]
pub struct SaleFigures {
    pub view: SaleView,
    /// Live reservations in Redis (queued or persisted, not cancelled).
    pub reserved: u64,
    /// Accepted but not yet persisted.
    pub queued: u64,
    /// Orders in the database by status.
    pub orders_by_status: HashMap<String, i64>,
}

/// Why an admin action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such promotion")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] PromotionError),
    #[error("ends_at is in the past")]
    WindowInPast,
    #[error("the promotion changed meanwhile; reload and retry")]
    EditConflict,
    #[error("the sale has taken orders: stock cannot go below the units reserved (the edit was undone)")]
    StockBelowReserved,
    #[error("a running sale cannot be deleted; pause it instead")]
    Running,
    #[error("the promotion has orders")]
    HasOrders,
    /// The sale started and Redis does not hold it: units may already be sold.
    #[error("sale {0} has started and Redis does not hold it")]
    StartedNotLoaded(i64),
    /// The sale ended and its keys left Redis: it can no longer change.
    #[error("{0}")]
    Retired(String),
    #[error("promotion database call: {0}")]
    Database(#[from] crate::postgres::Error),
    #[error("promotion Redis call: {0}")]
    Redis(#[from] StockError),
    #[error("reconcile a promotion: {0:#}")]
    Reconcile(anyhow::Error),
}

impl Transient for AdminError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => e.is_transient(),
            Self::Redis(e) => e.is_transient(),
            Self::Reconcile(e) => e.is_transient(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SaleAdmin {
    db: Pool,
    promotions: PromotionRepo,
    stock: StockStore,
    clock: Arc<RedisClock>,
    /// How long before its start a sale is loaded into Redis.
    warmup_lead: Duration,
}

impl SaleAdmin {
    pub fn new(db: Pool, stock: StockStore, clock: Arc<RedisClock>, warmup_lead: Duration) -> Self {
        Self {
            promotions: PromotionRepo::new(db.clone()),
            db,
            stock,
            clock,
            warmup_lead,
        }
    }

    pub async fn create(
        &self,
        cache: &impl SaleCache,
        fields: PromotionFields,
    ) -> Result<SaleView, AdminError> {
        if fields.ends_at <= self.clock.now() {
            return Err(AdminError::WindowInPast);
        }
        let promotion = self.promotions.insert(&fields).await?;
        let lead = chrono::Duration::from_std(self.warmup_lead).unwrap_or_default();
        if promotion.within_warmup_lead(self.clock.now(), lead) {
            // Just created: nothing can have been sold, so even a sale starting now is loaded.
            self.sync_after_write(cache, &promotion, IfStarted::LoadJustCreated, "create")
                .await;
        }
        tracing::info!(
            promotion_id = promotion.id,
            stock = promotion.stock,
            "promotion created"
        );
        Ok(self.view_after_write(promotion).await)
    }

    /// Promotions older than `before_id` (all when `None`), newest first, at most `limit`.
    pub async fn list(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<Promotion>, AdminError> {
        Ok(self.promotions.list(before_id, limit).await?)
    }

    pub async fn get(&self, cache: &impl SaleCache, id: i64) -> Result<SaleView, AdminError> {
        let promotion = self.load(id).await?;
        let shards = self.stock.shard_stocks(promotion.sale()).await?;
        let view = self.view_of(promotion, &shards);
        cache.written(&view.promotion, view.remaining);
        Ok(view)
    }

    pub async fn edit(
        &self,
        cache: &impl SaleCache,
        id: i64,
        patch: PromotionPatch,
    ) -> Result<SaleView, AdminError> {
        let current = self.load(id).await?;
        let fields = current.patched(patch, self.clock.now())?;
        let updated = self
            .promotions
            .update(id, &fields, current.revision)
            .await?
            .ok_or(AdminError::EditConflict)?;
        // A sale that had not started had nothing sold before its old start: it may be
        // loaded while Redis' clock is before that, even when the edit moves the start to now.
        let if_started = IfStarted::LoadIfBefore(current.starts_at);
        let refused = match self.sync(cache, &updated, if_started, "edit").await {
            Ok(SyncOutcome::BelowReserved { .. }) => Some(AdminError::StockBelowReserved),
            Ok(_) => None,
            // Redis could not judge the new stock: undo, so the retry starts from the same row.
            Err(e) => Some(AdminError::Redis(e)),
        };
        if let Some(refused) = refused {
            // Judged not started here, but Redis' clock started the sale meanwhile (a slow
            // database call) and units were reserved, or Redis is unreachable: undo the
            // edit, guarded by its revision.
            let Some(undone) = self
                .promotions
                .update(id, &current.fields(), updated.revision)
                .await?
            else {
                tracing::error!(
                    promotion_id = id,
                    "an edit Redis refused could not be undone (the row changed again); reconcile the promotion"
                );
                return Err(AdminError::EditConflict);
            };
            self.sync_after_write(cache, &undone, if_started, "undo edit")
                .await;
            return Err(refused);
        }
        tracing::info!(
            promotion_id = id,
            stock = updated.stock,
            per_user_limit = updated.per_user_limit,
            starts_at = %updated.starts_at,
            ends_at = %updated.ends_at,
            "promotion updated"
        );
        Ok(self.view_after_write(updated).await)
    }

    /// Delete a sale that is not running and took no orders.
    pub async fn delete(&self, cache: &impl SaleCache, id: i64) -> Result<(), AdminError> {
        let promotion = self.load(id).await?;
        let now = self.clock.now();
        if promotion.has_started(now) && now < promotion.ends_at {
            return Err(AdminError::Running);
        }
        if self.stock.reservation_count(promotion.sale()).await? > 0 {
            return Err(AdminError::HasOrders);
        }
        if !self.promotions.delete_unused(id).await? {
            return Err(AdminError::HasOrders);
        }
        self.stock.forget_promotion(promotion.sale()).await?;
        cache.deleted(id);
        tracing::info!(promotion_id = id, "promotion deleted");
        Ok(())
    }

    pub async fn set_paused(
        &self,
        cache: &impl SaleCache,
        id: i64,
        paused: bool,
    ) -> Result<SaleView, AdminError> {
        let Some(promotion) = self.promotions.set_paused(id, paused).await? else {
            return Err(self.missing_or_retired(id).await);
        };
        let action = if paused { "pause" } else { "resume" };
        self.sync_after_write(cache, &promotion, IfStarted::Refuse, action)
            .await;
        tracing::info!(promotion_id = id, paused, "promotion pause flag changed");
        Ok(self.view_after_write(promotion).await)
    }

    pub async fn add_stock(
        &self,
        cache: &impl SaleCache,
        id: i64,
        units: i64,
    ) -> Result<SaleView, AdminError> {
        if !(1..=MAX_STOCK).contains(&units) {
            return Err(PromotionError::InvalidAddStock.into());
        }
        let current = self.load(id).await?;
        if self.clock.now() >= current.ends_at {
            return Err(PromotionError::Ended.into());
        }
        // Database first: if Redis then fails, Redis holds less than configured (never more)
        // until a refresher brings it up to the row's revision. Redis adds the difference
        // between the row's stock and its own, once, whoever applies the revision first (a
        // warm-up that read the new row, or this call).
        let promotion = self
            .promotions
            .add_stock(id, units)
            .await?
            .ok_or(PromotionError::InvalidStock)?;
        self.sync_after_write(cache, &promotion, IfStarted::Refuse, "add stock")
            .await;
        tracing::info!(promotion_id = id, units, "stock added");
        Ok(self.view_after_write(promotion).await)
    }

    /// Load the sale into Redis now; its remaining stock.
    pub async fn warm_up(&self, cache: &impl SaleCache, id: i64) -> Result<i64, AdminError> {
        let promotion = self.load(id).await?;
        let remaining = self
            .sync(cache, &promotion, IfStarted::Refuse, "warm-up")
            .await?
            .remaining()
            .ok_or(AdminError::StartedNotLoaded(id))?;
        tracing::info!(promotion_id = id, remaining, "promotion warmed up");
        Ok(remaining)
    }

    pub async fn figures(&self, id: i64) -> Result<SaleFigures, AdminError> {
        let promotion = self.load(id).await?;
        let shards = self.stock.shard_stocks(promotion.sale()).await?;
        let reserved = self.stock.reservation_count(promotion.sale()).await?;
        let queued = self.stock.pending_count(promotion.sale()).await?;
        let orders_by_status = orders::order_counts(&self.db, id).await?;
        Ok(SaleFigures {
            view: self.view_of(promotion, &shards),
            reserved,
            queued,
            orders_by_status,
        })
    }

    /// Compare the sale's Redis with its orders in the database, and repair it when asked.
    pub async fn reconcile(
        &self,
        cache: &impl SaleCache,
        id: i64,
        repair: bool,
    ) -> Result<ReconcileReport, AdminError> {
        let promotion = self.load(id).await?;
        let report = reconcile::reconcile(&self.db, &self.stock, &promotion, repair)
            .await
            .map_err(|e| match e.downcast_ref::<SaleRetired>() {
                Some(retired) => AdminError::Retired(retired.to_string()),
                None => AdminError::Reconcile(e),
            })?;
        if let Some(repair) = &report.repaired {
            tracing::warn!(
                promotion_id = id,
                drift = report.drift,
                released = repair.released,
                restored = repair.restored,
                requests_restored = repair.requests_restored,
                request_conflicts = repair.request_conflicts,
                remaining = repair.remaining,
                "promotion repaired"
            );
            cache.written(&promotion, Some(repair.remaining));
        } else if !report.consistent {
            tracing::warn!(
                promotion_id = id,
                drift = report.drift,
                "reconciliation found drift"
            );
        }
        Ok(report)
    }

    async fn load(&self, id: i64) -> Result<Promotion, AdminError> {
        self.promotions.get(id).await?.ok_or(AdminError::NotFound)
    }

    /// Bring Redis up to a row (`StockStore::sync`) and the cache with it. Refusals are
    /// logged with the action; the caller answers them.
    async fn sync(
        &self,
        cache: &impl SaleCache,
        row: &Promotion,
        if_started: IfStarted,
        action: &str,
    ) -> Result<SyncOutcome, StockError> {
        let outcome = self.stock.sync(row, if_started).await?;
        match outcome {
            SyncOutcome::BelowReserved { remaining } => tracing::warn!(
                promotion_id = row.id,
                action,
                stock = row.stock,
                remaining,
                "Redis refused the row's stock: below the units already reserved"
            ),
            SyncOutcome::StartedNotLoaded => tracing::warn!(
                promotion_id = row.id,
                action,
                "the sale has started and is not in Redis: not loaded afresh (reconcile with repair restores it)"
            ),
            _ => {}
        }
        if let Some(remaining) = outcome.remaining() {
            cache.written(row, Some(remaining));
        }
        Ok(outcome)
    }

    /// After a committed write: the write stands even when Redis cannot follow right now (a
    /// failure would make the operator press again, adding stock twice); the refreshers
    /// bring Redis up to the row's revision once it answers.
    async fn sync_after_write(
        &self,
        cache: &impl SaleCache,
        row: &Promotion,
        if_started: IfStarted,
        action: &str,
    ) {
        if let Err(e) = self.sync(cache, row, if_started, action).await {
            tracing::warn!(
                promotion_id = row.id,
                action,
                error = %e,
                "written to the database; Redis follows on the next cache refresh"
            );
        }
    }

    /// The view answered after a committed write: `remaining` absent when Redis cannot say.
    async fn view_after_write(&self, promotion: Promotion) -> SaleView {
        let shards = self
            .stock
            .shard_stocks(promotion.sale())
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(promotion_id = promotion.id, error = %e, "remaining stock unreadable");
                Vec::new()
            });
        self.view_of(promotion, &shards)
    }

    fn view_of(&self, promotion: Promotion, shards: &[Option<ShardStock>]) -> SaleView {
        let (remaining, shards) = match LiveStock::of(shards) {
            Some(live) => (Some(live.remaining), shards.iter().flatten().cloned().collect()),
            None => (None, Vec::new()),
        };
        SaleView {
            state: promotion.state(self.clock.now(), remaining.is_some_and(|r| r <= 0)),
            promotion,
            remaining,
            shards,
        }
    }

    /// Why a guarded write to a promotion changed nothing: the sale was retired, or it is gone.
    async fn missing_or_retired(&self, id: i64) -> AdminError {
        match self.promotions.keys_retired_at(id).await {
            Ok(Some(at)) => AdminError::Retired(format!(
                "the sale's keys were retired from Redis at {at}: it can no longer change"
            )),
            Ok(None) => AdminError::NotFound,
            Err(e) => AdminError::Database(e),
        }
    }
}
