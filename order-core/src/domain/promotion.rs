//! Flash-sale promotions: validated creation and edits, their state, and when a gateway may
//! load one into Redis.
//!
//! A promotion's stock lives in two places: the `promotions.stock` column (what operations
//! configured) and Redis (what remains to sell, see `redis::stock`). Edits that would let the
//! two disagree while a sale runs are refused here; adding stock is the one way to change
//! stock of a started sale.

use chrono::{DateTime, Utc};

use crate::domain::sale_access::SaleAccess;
use crate::domain::shards::{SaleShards, MAX_SHARDS};

pub const MAX_STOCK: i64 = 10_000_000;
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
pub const MAX_PER_USER_LIMIT: i32 = 100;
const MAX_TEXT: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub id: i64,
    pub sku_id: String,
    pub title: String,
    pub price_cents: i64,
    pub stock: i64,
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub paused: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every write to the row; Redis ignores a revision older than the one it has.
    pub revision: i64,
    /// Sale tokens and the challenge before them (anti-bot).
    pub access: SaleAccess,
    /// Redis shards the stock is spread over (1 to `MAX_SHARDS`), fixed at creation.
    pub shards: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionState {
    Scheduled,
    Active,
    Paused,
    SoldOut,
    Ended,
}

impl PromotionState {
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionState::Scheduled => "scheduled",
            PromotionState::Active => "active",
            PromotionState::Paused => "paused",
            PromotionState::SoldOut => "sold_out",
            PromotionState::Ended => "ended",
        }
    }
}

impl Promotion {
    /// Where the sale's Redis state lives.
    pub fn sale(&self) -> SaleShards {
        SaleShards::new(self.id, i64::from(self.shards)).unwrap_or(SaleShards::single(self.id))
    }

    pub fn state(&self, now: DateTime<Utc>, sold_out: bool) -> PromotionState {
        if now >= self.ends_at {
            PromotionState::Ended
        } else if self.paused {
            PromotionState::Paused
        } else if now < self.starts_at {
            PromotionState::Scheduled
        } else if sold_out {
            PromotionState::SoldOut
        } else {
            PromotionState::Active
        }
    }

    pub fn has_started(&self, now: DateTime<Utc>) -> bool {
        now >= self.starts_at
    }

    /// Time to have the sale in Redis: within `lead` of its start, or later.
    pub fn within_warmup_lead(&self, now: DateTime<Utc>, lead: chrono::Duration) -> bool {
        self.starts_at - lead <= now
    }

    /// A gateway loads the sale into Redis on its own only now: within the lead and not
    /// started. A started sale missing from Redis was lost (units may have been sold), and
    /// only a repair restores it; `sync_promotion.lua` enforces the same on Redis' clock.
    pub fn due_for_warmup(&self, now: DateTime<Utc>, lead: chrono::Duration) -> bool {
        self.within_warmup_lead(now, lead) && !self.has_started(now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromotionError {
    #[error("ends_at must be after starts_at")]
    InvalidWindow,
    #[error("stock must be between 0 and {MAX_STOCK}")]
    InvalidStock,
    #[error("price_cents must be between 0 and {MAX_PRICE_CENTS}")]
    InvalidPrice,
    #[error("per_user_limit must be between 1 and {MAX_PER_USER_LIMIT}")]
    InvalidLimit,
    #[error("{0} must be 1 to 200 characters")]
    InvalidText(&'static str),
    #[error("units to add must be between 1 and {MAX_STOCK}")]
    InvalidAddStock,
    #[error("the sale has started: {0} can no longer change (stock changes through add-stock)")]
    LockedWhileRunning(&'static str),
    #[error("the sale has ended")]
    Ended,
    #[error("shards must be between 1 and {MAX_SHARDS}")]
    InvalidShards,
}

impl PromotionError {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            PromotionError::InvalidWindow => "invalid_window",
            PromotionError::InvalidStock | PromotionError::InvalidAddStock => "invalid_stock",
            PromotionError::InvalidPrice => "invalid_price",
            PromotionError::InvalidLimit => "invalid_limit",
            PromotionError::InvalidText(_) => "invalid_field",
            PromotionError::LockedWhileRunning(_) => "promotion_running",
            PromotionError::Ended => "ended",
            PromotionError::InvalidShards => "invalid_shards",
        }
    }
}

/// A new promotion as an operator described it, not yet validated.
#[derive(Debug, Clone)]
pub struct PromotionInput {
    pub sku_id: String,
    pub title: String,
    pub price_cents: i64,
    pub stock: i64,
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub access: SaleAccess,
    pub shards: i64,
}

/// Fields of a promotion that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionFields {
    pub sku_id: String,
    pub title: String,
    pub price_cents: i64,
    pub stock: i64,
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub access: SaleAccess,
    /// Set at creation; edits keep it.
    pub shards: u16,
}

impl PromotionFields {
    pub fn parse(input: PromotionInput) -> Result<Self, PromotionError> {
        let fields = Self {
            sku_id: input.sku_id.trim().to_owned(),
            title: input.title.trim().to_owned(),
            price_cents: input.price_cents,
            stock: input.stock,
            per_user_limit: input.per_user_limit,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            access: input.access,
            shards: SaleShards::new(0, input.shards)
                .map_err(|_| PromotionError::InvalidShards)?
                .count(),
        };
        fields.check()?;
        Ok(fields)
    }

    fn check(&self) -> Result<(), PromotionError> {
        for (name, text) in [("sku_id", &self.sku_id), ("title", &self.title)] {
            if text.is_empty() || text.chars().count() > MAX_TEXT {
                return Err(PromotionError::InvalidText(name));
            }
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(PromotionError::InvalidPrice);
        }
        if !(0..=MAX_STOCK).contains(&self.stock) {
            return Err(PromotionError::InvalidStock);
        }
        if !(1..=MAX_PER_USER_LIMIT).contains(&self.per_user_limit) {
            return Err(PromotionError::InvalidLimit);
        }
        if self.ends_at <= self.starts_at {
            return Err(PromotionError::InvalidWindow);
        }
        Ok(())
    }
}

/// An edit: absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct PromotionPatch {
    pub sku_id: Option<String>,
    pub title: Option<String>,
    pub price_cents: Option<i64>,
    pub stock: Option<i64>,
    pub per_user_limit: Option<i32>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// May change at any time before the end: operators turn anti-bot rules on mid-sale.
    pub requires_token: Option<bool>,
    pub challenge: Option<crate::domain::sale_access::Challenge>,
}

impl Promotion {
    pub fn fields(&self) -> PromotionFields {
        PromotionFields {
            sku_id: self.sku_id.clone(),
            title: self.title.clone(),
            price_cents: self.price_cents,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            access: self.access.clone(),
            shards: self.shards,
        }
    }

    /// Apply a patch. Once the sale has started only the title and the end time may change
    /// (the end not into the past); stock changes through add-stock.
    pub fn patched(
        &self,
        patch: PromotionPatch,
        now: DateTime<Utc>,
    ) -> Result<PromotionFields, PromotionError> {
        let mut next = self.fields();
        if self.has_started(now) {
            if now >= self.ends_at {
                return Err(PromotionError::Ended);
            }
            let locked = [
                (
                    "sku_id",
                    patch.sku_id.as_ref().is_some_and(|v| v.trim() != self.sku_id),
                ),
                (
                    "price_cents",
                    patch.price_cents.is_some_and(|v| v != self.price_cents),
                ),
                ("stock", patch.stock.is_some_and(|v| v != self.stock)),
                (
                    "per_user_limit",
                    patch.per_user_limit.is_some_and(|v| v != self.per_user_limit),
                ),
                ("starts_at", patch.starts_at.is_some_and(|v| v != self.starts_at)),
            ];
            if let Some((field, _)) = locked.iter().find(|(_, changed)| *changed) {
                return Err(PromotionError::LockedWhileRunning(field));
            }
            if patch.ends_at.is_some_and(|end| end <= now) {
                return Err(PromotionError::InvalidWindow);
            }
        }
        if let Some(v) = patch.sku_id {
            next.sku_id = v.trim().to_owned();
        }
        if let Some(v) = patch.title {
            next.title = v.trim().to_owned();
        }
        next.price_cents = patch.price_cents.unwrap_or(next.price_cents);
        next.stock = patch.stock.unwrap_or(next.stock);
        next.per_user_limit = patch.per_user_limit.unwrap_or(next.per_user_limit);
        next.starts_at = patch.starts_at.unwrap_or(next.starts_at);
        next.ends_at = patch.ends_at.unwrap_or(next.ends_at);
        if let Some(requires_token) = patch.requires_token {
            next.access.requires_token = requires_token;
        }
        if let Some(challenge) = patch.challenge {
            next.access.challenge = challenge;
        }
        next.check()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn input() -> PromotionInput {
        let start = Utc::now() + Duration::hours(1);
        PromotionInput {
            sku_id: " sku-1 ".into(),
            title: "Phone".into(),
            price_cents: 1999,
            stock: 100,
            per_user_limit: 1,
            starts_at: start,
            ends_at: start + Duration::hours(1),
            access: SaleAccess::default(),
            shards: 1,
        }
    }

    fn promotion(starts_in: Duration) -> Promotion {
        let now = Utc::now();
        Promotion {
            id: 1,
            sku_id: "sku-1".into(),
            title: "Phone".into(),
            price_cents: 1999,
            stock: 100,
            per_user_limit: 1,
            starts_at: now + starts_in,
            ends_at: now + starts_in + Duration::hours(1),
            paused: false,
            created_at: now,
            updated_at: now,
            revision: 1,
            access: SaleAccess::default(),
            shards: 1,
        }
    }

    #[test]
    fn parse_trims_text_and_accepts_a_valid_promotion() {
        let f = PromotionFields::parse(input()).expect("valid");
        assert_eq!(f.sku_id, "sku-1");
    }

    #[test]
    fn parse_rejects_each_invalid_field() {
        type Mutation = fn(&mut PromotionInput);
        let cases: [(Mutation, PromotionError); 6] = [
            (|i| i.ends_at = i.starts_at, PromotionError::InvalidWindow),
            (|i| i.stock = -1, PromotionError::InvalidStock),
            (|i| i.stock = MAX_STOCK + 1, PromotionError::InvalidStock),
            (|i| i.price_cents = -5, PromotionError::InvalidPrice),
            (|i| i.per_user_limit = 0, PromotionError::InvalidLimit),
            (|i| i.title = "  ".into(), PromotionError::InvalidText("title")),
        ];
        for (mutate, want) in cases {
            let mut i = input();
            mutate(&mut i);
            assert_eq!(PromotionFields::parse(i), Err(want));
        }
    }

    #[test]
    fn before_start_everything_may_change() {
        let p = promotion(Duration::hours(1));
        let patch = PromotionPatch {
            stock: Some(5),
            price_cents: Some(999),
            ..Default::default()
        };
        let f = p.patched(patch, Utc::now()).expect("editable before start");
        assert_eq!((f.stock, f.price_cents), (5, 999));
    }

    #[test]
    fn a_running_sale_locks_stock_price_limit_and_start() {
        let p = promotion(-Duration::minutes(1));
        let now = Utc::now();
        let stock = PromotionPatch {
            stock: Some(500),
            ..Default::default()
        };
        assert_eq!(
            p.patched(stock, now),
            Err(PromotionError::LockedWhileRunning("stock"))
        );
        let start = PromotionPatch {
            starts_at: Some(now),
            ..Default::default()
        };
        assert_eq!(
            p.patched(start, now),
            Err(PromotionError::LockedWhileRunning("starts_at"))
        );
        let same_stock = PromotionPatch {
            stock: Some(p.stock),
            title: Some("New title".into()),
            ends_at: Some(p.ends_at + Duration::hours(1)),
            ..Default::default()
        };
        let f = p.patched(same_stock, now).expect("title and end may change");
        assert_eq!(f.title, "New title");
    }

    #[test]
    fn a_running_sale_may_turn_sale_tokens_and_a_challenge_on() {
        let p = promotion(-Duration::minutes(1));
        let patch = PromotionPatch {
            requires_token: Some(true),
            challenge: Some(crate::domain::sale_access::Challenge::ProofOfWork { difficulty: 18 }),
            ..Default::default()
        };
        let f = p
            .patched(patch, Utc::now())
            .expect("anti-bot rules may change mid-sale");
        assert!(f.access.requires_token);
        assert_eq!(f.access.challenge.difficulty(), Some(18));
    }

    #[test]
    fn a_sale_is_loaded_on_its_own_only_within_the_lead_before_its_start() {
        let lead = Duration::minutes(5);
        let now = Utc::now();
        assert!(
            !promotion(Duration::minutes(10)).due_for_warmup(now, lead),
            "too early"
        );
        assert!(promotion(Duration::minutes(4)).due_for_warmup(now, lead));
        let started = promotion(-Duration::seconds(1));
        assert!(!started.due_for_warmup(now, lead), "started: lost, not new");
        assert!(started.within_warmup_lead(now, lead));
    }

    #[test]
    fn state_follows_window_pause_and_stock() {
        let now = Utc::now();
        let mut p = promotion(Duration::hours(1));
        assert_eq!(p.state(now, false), PromotionState::Scheduled);
        p.starts_at = now - Duration::minutes(1);
        assert_eq!(p.state(now, false), PromotionState::Active);
        assert_eq!(p.state(now, true), PromotionState::SoldOut);
        p.paused = true;
        assert_eq!(p.state(now, true), PromotionState::Paused);
        p.ends_at = now;
        assert_eq!(p.state(now, false), PromotionState::Ended);
    }
}
