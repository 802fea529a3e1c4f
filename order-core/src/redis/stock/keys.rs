//! The Redis keys of a sale's shard: every key shares the shard's hash tag.

use super::*;

/// The Redis keys of one sale (a promotion as it runs).
#[derive(Debug, Clone)]
pub struct SaleKeys {
    pub meta: String,
    pub buyers: String,
    pub requests: String,
    pub reservations: String,
    pub pending: String,
    /// Orders released for good (cancelled or refunded): a repair never restores them.
    pub released: String,
    /// Status markers of persisted orders (see `order_persisted.lua`).
    pub orders: String,
    /// Orders confirmed in the history the shard was verified in (`confirm.lua`): a retry of
    /// one is confirmed again while the shard is fenced.
    pub confirmed: String,
}

impl SaleKeys {
    /// The keys of a sale on one shard (every sale created without `shards`).
    pub fn new(promotion_id: i64) -> Self {
        Self::of(SaleShards::single(promotion_id).shard(0))
    }

    /// The keys of one shard of a sale: each shard has a full set under its own hash tag.
    pub fn of(shard: Shard) -> Self {
        let tag = format!("{{{}}}", shard.tag());
        Self {
            meta: format!("{tag}:meta"),
            buyers: format!("{tag}:buyers"),
            requests: format!("{tag}:requests"),
            reservations: format!("{tag}:reservations"),
            pending: format!("{tag}:pending"),
            released: format!("{tag}:released"),
            orders: format!("{tag}:orders"),
            confirmed: format!("{tag}:confirmed"),
        }
    }

    pub(super) fn all(&self) -> [&str; 8] {
        [
            &self.meta,
            &self.buyers,
            &self.requests,
            &self.reservations,
            &self.pending,
            &self.released,
            &self.orders,
            &self.confirmed,
        ]
    }
}
