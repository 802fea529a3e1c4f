//! Bodies of the admin promotion API: a new promotion, an edit, and the promotion as shown.

use chrono::{DateTime, Utc};
use order_core::domain::promotion::{Promotion, PromotionInput, PromotionPatch, PromotionState};
use order_core::domain::sale_access::{Challenge, ChallengeError, SaleAccess};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A promotion's row as operations configured it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Promotion)]
pub struct PromotionBody {
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
    /// Orders need a sale token (`X-Sale-Token`, from `POST /api/seckill/{id}/token`).
    pub requires_token: bool,
    pub challenge: ChallengeBody,
    /// Redis shards the stock is spread over.
    pub shards: u16,
}

impl From<&Promotion> for PromotionBody {
    fn from(p: &Promotion) -> Self {
        Self {
            id: p.id,
            sku_id: p.sku_id.clone(),
            title: p.title.clone(),
            price_cents: p.price_cents,
            stock: p.stock,
            per_user_limit: p.per_user_limit,
            starts_at: p.starts_at,
            ends_at: p.ends_at,
            paused: p.paused,
            shards: p.shards,
            created_at: p.created_at,
            updated_at: p.updated_at,
            revision: p.revision,
            requires_token: p.access.requires_token,
            challenge: ChallengeBody::from(&p.access.challenge),
        }
    }
}

/// What an app passes before it gets a sale token: nothing, a proof-of-work puzzle of
/// `difficulty` leading zero bits (about 2^difficulty hashes), or an external verifier (a
/// captcha service's check, answering `{"success": bool}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Challenge)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChallengeBody {
    None,
    ProofOfWork {
        #[schema(minimum = 1, maximum = 28)]
        difficulty: u8,
    },
    Webhook {
        /// http:// or https://, at most 500 characters; the gateway POSTs
        /// `{"promotion_id", "user_id", "solution"}` to it.
        #[schema(min_length = 8, max_length = 500, pattern = "^https?://\\S+$")]
        url: String,
    },
}

impl From<&Challenge> for ChallengeBody {
    fn from(c: &Challenge) -> Self {
        match c {
            Challenge::None => Self::None,
            Challenge::ProofOfWork { difficulty } => Self::ProofOfWork {
                difficulty: *difficulty,
            },
            Challenge::Webhook { url } => Self::Webhook { url: url.clone() },
        }
    }
}

impl ChallengeBody {
    pub fn into_domain(self) -> Result<Challenge, ChallengeError> {
        match self {
            Self::None => Ok(Challenge::None),
            Self::ProofOfWork { difficulty } => Challenge::proof_of_work(difficulty),
            Self::Webhook { url } => Challenge::webhook(&url),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = PromotionState)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStateBody {
    Scheduled,
    Active,
    Paused,
    SoldOut,
    Ended,
}

impl From<PromotionState> for PromotionStateBody {
    fn from(s: PromotionState) -> Self {
        match s {
            PromotionState::Scheduled => Self::Scheduled,
            PromotionState::Active => Self::Active,
            PromotionState::Paused => Self::Paused,
            PromotionState::SoldOut => Self::SoldOut,
            PromotionState::Ended => Self::Ended,
        }
    }
}

/// The create-promotion body, as sent.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[schema(as = PromotionInput)]
#[serde(deny_unknown_fields)]
pub struct NewPromotionBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub sku_id: String,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub title: String,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: i64,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: i64,
    #[serde(default = "default_per_user_limit")]
    #[schema(minimum = 1, maximum = 100, default = 1)]
    pub per_user_limit: i32,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, and in the future (else 422 `invalid_window`).
    pub ends_at: DateTime<Utc>,
    /// Orders need a sale token (default on; `false` lets any signed-in user order).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub requires_token: bool,
    #[serde(default = "no_challenge")]
    #[schema(default = json!({"kind": "none"}))]
    pub challenge: ChallengeBody,
    /// Redis shards the stock is spread over (a hot item on a Redis Cluster: each shard is
    /// served by its own node). Buyers are spread over the shards and stock moves to the
    /// shard that runs out, so nothing is undersold. Fixed at creation.
    #[serde(default = "one_shard")]
    #[schema(minimum = 1, maximum = 16, default = 1)]
    pub shards: i64,
}

fn one_shard() -> i64 {
    1
}

fn default_per_user_limit() -> i32 {
    1
}

fn yes() -> bool {
    true
}

fn no_challenge() -> ChallengeBody {
    ChallengeBody::None
}

impl NewPromotionBody {
    pub fn into_domain(self) -> Result<PromotionInput, ChallengeError> {
        Ok(PromotionInput {
            sku_id: self.sku_id,
            title: self.title,
            price_cents: self.price_cents,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            access: SaleAccess {
                requires_token: self.requires_token,
                challenge: self.challenge.into_domain()?,
            },
            shards: self.shards,
        })
    }
}

/// A PATCH body: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(as = PromotionPatch)]
#[serde(deny_unknown_fields)]
pub struct PromotionPatchBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub sku_id: Option<String>,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*\\S[^\\u0000]*$")]
    pub title: Option<String>,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: Option<i64>,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: Option<i64>,
    #[schema(minimum = 1, maximum = 100)]
    pub per_user_limit: Option<i32>,
    /// Locked once the sale has started (409 `promotion_running`), as are `sku_id`,
    /// `price_cents`, `stock` and `per_user_limit`.
    pub starts_at: Option<DateTime<Utc>>,
    /// After `starts_at`, and in the future once the sale has started (else 422
    /// `invalid_window`).
    pub ends_at: Option<DateTime<Utc>>,
    /// May change until the sale ends (operators turn anti-bot rules on mid-sale).
    pub requires_token: Option<bool>,
    pub challenge: Option<ChallengeBody>,
}

impl PromotionPatchBody {
    pub fn into_domain(self) -> Result<PromotionPatch, ChallengeError> {
        Ok(PromotionPatch {
            sku_id: self.sku_id,
            title: self.title,
            price_cents: self.price_cents,
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            requires_token: self.requires_token,
            challenge: self.challenge.map(ChallengeBody::into_domain).transpose()?,
        })
    }
}
