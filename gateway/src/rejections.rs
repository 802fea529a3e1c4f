//! Why a sale refuses a buyer, and how often it did, per promotion, on this gateway (for the
//! stats endpoint and the dashboard's inbound rate).
//!
//! `SaleRejection` is the one place that gives each reason its code, status, message and
//! metric label: handlers, counters and the metrics all take it from there.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use order_core::domain::promotion::PromotionState;

use crate::error::ApiError;

/// A sale that is not open to this buyer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleRejection {
    SoldOut,
    LimitExceeded,
    NotStarted,
    Ended,
    Paused,
}

impl SaleRejection {
    pub const ALL: [SaleRejection; 5] = [
        SaleRejection::SoldOut,
        SaleRejection::LimitExceeded,
        SaleRejection::NotStarted,
        SaleRejection::Ended,
        SaleRejection::Paused,
    ];

    /// The API error code, also the counters' and the metric's label.
    pub fn code(self) -> &'static str {
        match self {
            SaleRejection::SoldOut => "sold_out",
            SaleRejection::LimitExceeded => "limit_exceeded",
            SaleRejection::NotStarted => "not_started",
            SaleRejection::Ended => "ended",
            SaleRejection::Paused => "paused",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            SaleRejection::SoldOut | SaleRejection::LimitExceeded => StatusCode::CONFLICT,
            SaleRejection::NotStarted | SaleRejection::Ended | SaleRejection::Paused => StatusCode::FORBIDDEN,
        }
    }

    fn message(self) -> &'static str {
        match self {
            SaleRejection::SoldOut => "sold out",
            SaleRejection::LimitExceeded => "you have reached the per-user limit for this sale",
            SaleRejection::NotStarted => "the sale has not started",
            SaleRejection::Ended => "the sale has ended",
            SaleRejection::Paused => "the sale is paused",
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

    fn slot(self) -> usize {
        self as usize
    }
}

impl From<SaleRejection> for ApiError {
    fn from(r: SaleRejection) -> Self {
        ApiError::new(r.status(), r.code(), r.message())
    }
}

/// One slot per rejection, then the acceptances.
const ACCEPTED_SLOT: usize = SaleRejection::ALL.len();
const SLOTS: usize = SaleRejection::ALL.len() + 1;

#[derive(Debug, Default)]
pub struct Rejections {
    counts: RwLock<HashMap<i64, Arc<[AtomicU64; SLOTS]>>>,
}

impl Rejections {
    /// Count a rejection. Callers pass only promotions that exist, so the map stays bounded
    /// by the number of promotions.
    pub fn rejected(&self, promotion_id: i64, reason: SaleRejection) {
        self.bump(promotion_id, reason.slot());
    }

    /// Count an acceptance (the inbound rate counts both).
    pub fn accept(&self, promotion_id: i64) {
        self.bump(promotion_id, ACCEPTED_SLOT);
    }

    fn bump(&self, promotion_id: i64, slot: usize) {
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
        counters[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests this gateway accepted for the promotion.
    pub fn accepted(&self, promotion_id: i64) -> u64 {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&promotion_id)
            .map_or(0, |c| c[ACCEPTED_SLOT].load(Ordering::Relaxed))
    }

    pub fn snapshot(&self, promotion_id: i64) -> BTreeMap<&'static str, u64> {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        let counters = counts.get(&promotion_id);
        SaleRejection::ALL
            .iter()
            .map(|r| {
                (
                    r.code(),
                    counters.map_or(0, |c| c[r.slot()].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot_and_code() {
        let rejections = Rejections::default();
        for (n, reason) in SaleRejection::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                rejections.rejected(7, reason);
            }
        }
        rejections.accept(7);
        let snapshot = rejections.snapshot(7);
        for (n, reason) in SaleRejection::ALL.into_iter().enumerate() {
            assert_eq!(snapshot[reason.code()], n as u64 + 1, "{reason:?}");
        }
        assert_eq!(rejections.accepted(7), 1);
        assert_eq!(snapshot.len(), SaleRejection::ALL.len());
    }
}
