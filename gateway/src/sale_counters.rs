//! What happened to a sale's requests on this gateway (answered 202, refused by reason, shed
//! by the rate limits, sale tokens issued and refused), counted per promotion on the hot path
//! with atomics, and written to Redis as this process's running totals once a second
//! (`redis::deployment`), so the dashboard shows all gateways, not the one it asked.
//!
//! `SaleRejection` is the one place that gives each refusal its code, status, message and
//! metric label: handlers, counters and the metrics all take it from there.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::http::StatusCode;
use order_core::domain::promotion::PromotionState;
use order_core::domain::sale_access::AccessRefusal;
use order_core::redis::deployment::{DeploymentStore, Role};
use order_core::runtime::shutdown::ShutdownListener;

use crate::error::ApiError;

/// A sale that is not open to this buyer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleRejection {
    SoldOut,
    LimitExceeded,
    NotStarted,
    Ended,
    Paused,
    /// The sale requires a sale token and the order carried none.
    TokenRequired,
    /// The token was not issued for this buyer and sale (or not by this deployment).
    TokenInvalid,
    TokenExpired,
    /// The sale's Redis node may have lost writes of it (a failover, a restart from disk):
    /// closed until it has repaired itself from its accepted orders (503, retry).
    Recovering,
}

impl SaleRejection {
    pub const ALL: [SaleRejection; 9] = [
        SaleRejection::SoldOut,
        SaleRejection::LimitExceeded,
        SaleRejection::NotStarted,
        SaleRejection::Ended,
        SaleRejection::Paused,
        SaleRejection::TokenRequired,
        SaleRejection::TokenInvalid,
        SaleRejection::TokenExpired,
        SaleRejection::Recovering,
    ];

    /// The API error code, also the counters' and the metric's label.
    pub fn code(self) -> &'static str {
        match self {
            SaleRejection::SoldOut => "sold_out",
            SaleRejection::LimitExceeded => "limit_exceeded",
            SaleRejection::NotStarted => "not_started",
            SaleRejection::Ended => "ended",
            SaleRejection::Paused => "paused",
            SaleRejection::TokenRequired => "sale_token_required",
            SaleRejection::TokenInvalid => "sale_token_invalid",
            SaleRejection::TokenExpired => "sale_token_expired",
            SaleRejection::Recovering => "recovering",
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            SaleRejection::SoldOut | SaleRejection::LimitExceeded => StatusCode::CONFLICT,
            SaleRejection::Recovering => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn message(self) -> &'static str {
        match self {
            SaleRejection::SoldOut => "sold out",
            SaleRejection::LimitExceeded => "you have reached the per-user limit for this sale",
            SaleRejection::NotStarted => "the sale has not started",
            SaleRejection::Ended => "the sale has ended",
            SaleRejection::Paused => "the sale is paused",
            SaleRejection::TokenRequired => {
                "this sale needs a sale token: POST /api/seckill/{promotion_id}/token, then send it as X-Sale-Token (retry with the same request_id)"
            }
            SaleRejection::TokenInvalid => {
                "the sale token is not valid for this buyer and sale; get a new one and retry with the same request_id"
            }
            SaleRejection::TokenExpired => "the sale token has expired; get a new one and retry with the same request_id",
            SaleRejection::Recovering => {
                "the sale is recovering from a Redis failover and sells again in a few seconds; retry with the same request_id"
            }
        }
    }

    /// The rejection a sale in `state` gives; `None` when it is open.
    pub fn of_state(state: PromotionState) -> Option<Self> {
        match state {
            PromotionState::Scheduled => Some(SaleRejection::NotStarted),
            PromotionState::Ended => Some(SaleRejection::Ended),
            PromotionState::Paused => Some(SaleRejection::Paused),
            PromotionState::SoldOut => Some(SaleRejection::SoldOut),
            PromotionState::Active => None,
        }
    }

    /// An order's token that did not pass.
    pub fn of_token(refusal: AccessRefusal) -> Self {
        match refusal {
            AccessRefusal::Expired => SaleRejection::TokenExpired,
            AccessRefusal::Forged | AccessRefusal::Unsolved => SaleRejection::TokenInvalid,
        }
    }
}

impl From<SaleRejection> for ApiError {
    fn from(r: SaleRejection) -> Self {
        let error = ApiError::new(r.status(), r.code(), r.message());
        if r == SaleRejection::Recovering {
            error.retry_after(1)
        } else {
            error
        }
    }
}

/// What is counted per sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleEvent {
    Accepted,
    Rejected(SaleRejection),
    /// Refused by the rate limits before the sale was asked (429).
    Shed,
    /// Shed by the gateway's adaptive seckill limit before any work (503 `overloaded`).
    Overloaded,
    TokenIssued,
    /// A token request refused (challenge failed, too early, rate limited).
    TokenRefused,
}

const REJECTIONS: usize = SaleRejection::ALL.len();
const SLOTS: usize = REJECTIONS + 5;

impl SaleEvent {
    fn slot(self) -> usize {
        match self {
            SaleEvent::Rejected(r) => r as usize,
            SaleEvent::Accepted => REJECTIONS,
            SaleEvent::Shed => REJECTIONS + 1,
            SaleEvent::TokenIssued => REJECTIONS + 2,
            SaleEvent::TokenRefused => REJECTIONS + 3,
            SaleEvent::Overloaded => REJECTIONS + 4,
        }
    }

    /// The counter's name in Redis and in the stats.
    fn name_of_slot(slot: usize) -> &'static str {
        match slot {
            s if s < REJECTIONS => SaleRejection::ALL[s].code(),
            s if s == REJECTIONS => "accepted",
            s if s == REJECTIONS + 1 => "shed",
            s if s == REJECTIONS + 2 => "tokens_issued",
            s if s == REJECTIONS + 3 => "tokens_refused",
            _ => "overloaded",
        }
    }
}

/// A sale's counts by name: `accepted`, `shed`, `overloaded`, `tokens_issued`, `tokens_refused` and one
/// per rejection code (all present, zero when nothing happened).
pub type Counts = BTreeMap<&'static str, u64>;

#[derive(Debug)]
pub struct SaleCounters {
    /// This process among the deployment's: its totals are one field each in Redis.
    source: String,
    counts: RwLock<HashMap<i64, Arc<[AtomicU64; SLOTS]>>>,
    /// The totals last written to Redis, per sale (unchanged ones are not sent again).
    published: Mutex<HashMap<i64, [u64; SLOTS]>>,
}

impl Default for SaleCounters {
    fn default() -> Self {
        Self {
            source: uuid::Uuid::new_v4().simple().to_string(),
            counts: RwLock::default(),
            published: Mutex::default(),
        }
    }
}

impl SaleCounters {
    /// Count an event. Callers pass only promotions that exist, so the map stays bounded by
    /// the number of promotions.
    pub fn count(&self, promotion_id: i64, event: SaleEvent) {
        let existing = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&promotion_id)
            .cloned();
        let counters = existing.unwrap_or_else(|| {
            Arc::clone(
                self.counts
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(promotion_id)
                    .or_default(),
            )
        });
        counters[event.slot()].fetch_add(1, Ordering::Relaxed);
    }

    fn load(&self, promotion_id: i64) -> [u64; SLOTS] {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        let mut out = [0; SLOTS];
        if let Some(c) = counts.get(&promotion_id) {
            for (slot, value) in out.iter_mut().enumerate() {
                *value = c[slot].load(Ordering::Relaxed);
            }
        }
        out
    }

    fn named(values: [u64; SLOTS]) -> Counts {
        values
            .into_iter()
            .enumerate()
            .map(|(slot, n)| (SaleEvent::name_of_slot(slot), n))
            .collect()
    }

    /// This gateway's counts for a sale since it started.
    pub fn snapshot(&self, promotion_id: i64) -> Counts {
        Self::named(self.load(promotion_id))
    }

    /// The deployment's totals for a sale: every other process's, as last written to Redis,
    /// and this gateway's as they are now.
    pub async fn deployment(&self, store: &DeploymentStore, promotion_id: i64) -> redis::RedisResult<Counts> {
        let others = store.counts(promotion_id, &self.source).await?;
        let mut counts = self.snapshot(promotion_id);
        for (name, n) in counts.iter_mut() {
            *n += others.get(*name).copied().unwrap_or(0);
        }
        Ok(counts)
    }

    /// Write this gateway's totals that changed since the last flush. A write that failed,
    /// or whose reply was lost, is simply written again: totals, not increments.
    pub async fn flush(&self, store: &DeploymentStore) -> redis::RedisResult<()> {
        let ids: Vec<i64> = self
            .counts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut batch = Vec::new();
        let mut next = Vec::new();
        for id in ids {
            let now = self.load(id);
            let before = published.get(&id).copied().unwrap_or([0; SLOTS]);
            for slot in 0..SLOTS {
                if now[slot] != before[slot] {
                    batch.push((id, SaleEvent::name_of_slot(slot), now[slot]));
                }
            }
            next.push((id, now));
        }
        store.set_counts(&self.source, &batch).await?;
        // Only this task flushes, so nothing else moved `published` in between.
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(next);
        Ok(())
    }

    /// Flush once a second with this gateway's heartbeat, until shutdown (then a last flush,
    /// and the gateway leaves the list of live instances).
    pub fn spawn_publisher(
        self: &Arc<Self>,
        store: DeploymentStore,
        name: String,
        shutdown: ShutdownListener,
    ) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let flushing = store.clone();
        tokio::spawn(
            store.heartbeat_until_shutdown(Role::Gateway, name, shutdown, move || {
                let (this, store) = (Arc::clone(&this), flushing.clone());
                async move { this.flush(&store).await }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_slot_and_name() {
        let counters = SaleCounters::default();
        let events: Vec<SaleEvent> = SaleRejection::ALL
            .into_iter()
            .map(SaleEvent::Rejected)
            .chain([
                SaleEvent::Accepted,
                SaleEvent::Shed,
                SaleEvent::Overloaded,
                SaleEvent::TokenIssued,
                SaleEvent::TokenRefused,
            ])
            .collect();
        for (n, event) in events.iter().enumerate() {
            for _ in 0..=n {
                counters.count(7, *event);
            }
        }
        let snapshot = counters.snapshot(7);
        assert_eq!(snapshot.len(), events.len());
        for (n, event) in events.iter().enumerate() {
            assert_eq!(
                snapshot[SaleEvent::name_of_slot(event.slot())],
                n as u64 + 1,
                "{event:?}"
            );
        }
        assert_eq!(snapshot["accepted"], SaleRejection::ALL.len() as u64 + 1);
        assert_eq!(counters.snapshot(8).values().sum::<u64>(), 0);
    }
}
