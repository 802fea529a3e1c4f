//! Rejections by reason, and acceptances, per promotion, counted by this gateway (for the
//! stats endpoint and the dashboard's inbound rate).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub const REASONS: [&str; 5] = ["sold_out", "limit_exceeded", "not_started", "ended", "paused"];
/// Counted next to the rejections, for the inbound rate.
pub const ACCEPTED: &str = "accepted";
const SLOTS: usize = REASONS.len() + 1;

#[derive(Debug, Default)]
pub struct Rejections {
    counts: RwLock<HashMap<i64, Arc<[AtomicU64; SLOTS]>>>,
}

impl Rejections {
    /// Count a rejection; codes outside `REASONS` are ignored. Callers pass only promotions
    /// that exist, so the map stays bounded by the number of promotions.
    pub fn count(&self, promotion_id: i64, code: &str) {
        let Some(i) = REASONS
            .iter()
            .position(|r| *r == code)
            .or((code == ACCEPTED).then_some(REASONS.len()))
        else {
            return;
        };
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
        counters[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests this gateway accepted for the promotion.
    pub fn accepted(&self, promotion_id: i64) -> u64 {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        counts
            .get(&promotion_id)
            .map_or(0, |c| c[REASONS.len()].load(Ordering::Relaxed))
    }

    pub fn snapshot(&self, promotion_id: i64) -> BTreeMap<&'static str, u64> {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        let counters = counts.get(&promotion_id);
        REASONS
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, counters.map_or(0, |c| c[i].load(Ordering::Relaxed))))
            .collect()
    }
}
