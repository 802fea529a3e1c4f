//! The `promotions` table: every write bumps `revision`, and edits are guarded by the
//! revision they were based on.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::promotion::{Promotion, PromotionFields, MAX_STOCK};
use crate::domain::sale_access::{Challenge, SaleAccess};
use crate::domain::shards::SaleShards;

/// A `promotions` row as stored: the challenge spans three columns.
struct PromotionRow {
    id: i64,
    sku_id: String,
    title: String,
    price_cents: i64,
    stock: i64,
    per_user_limit: i32,
    starts_at: chrono::DateTime<Utc>,
    ends_at: chrono::DateTime<Utc>,
    paused: bool,
    created_at: chrono::DateTime<Utc>,
    updated_at: chrono::DateTime<Utc>,
    revision: i64,
    requires_token: bool,
    challenge: String,
    pow_difficulty: Option<i16>,
    verifier_url: Option<String>,
    shards: i16,
}

impl TryFrom<PromotionRow> for Promotion {
    type Error = sqlx::Error;

    fn try_from(r: PromotionRow) -> Result<Self, Self::Error> {
        // The table's CHECK constraints admit only what `Challenge::parse` accepts.
        let challenge = Challenge::parse(&r.challenge, r.pow_difficulty, r.verifier_url.as_deref())
            .map_err(|e| sqlx::Error::Decode(format!("promotion {}: {e}", r.id).into()))?;
        Ok(Promotion {
            id: r.id,
            sku_id: r.sku_id,
            title: r.title,
            price_cents: r.price_cents,
            stock: r.stock,
            per_user_limit: r.per_user_limit,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            paused: r.paused,
            created_at: r.created_at,
            updated_at: r.updated_at,
            revision: r.revision,
            shards: SaleShards::new(r.id, r.shards.into())
                .map_err(|e| sqlx::Error::Decode(format!("promotion {}: {e}", r.id).into()))?
                .count(),
            access: SaleAccess {
                requires_token: r.requires_token,
                challenge,
            },
        })
    }
}

fn promotion(row: Option<PromotionRow>) -> sqlx::Result<Option<Promotion>> {
    row.map(Promotion::try_from).transpose()
}

/// The `promotions` table.
#[derive(Debug, Clone)]
pub struct PromotionRepo {
    pool: PgPool,
}

impl PromotionRepo {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn insert(&self, f: &PromotionFields) -> sqlx::Result<Promotion> {
        sqlx::query_as!(
            PromotionRow,
            "INSERT INTO promotions (sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at,
                                     requires_token, challenge, pow_difficulty, verifier_url, shards)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards",
            f.sku_id,
            f.title,
            f.price_cents,
            f.stock,
            f.per_user_limit,
            f.starts_at,
            f.ends_at,
            f.access.requires_token,
            f.access.challenge.kind(),
            f.access.challenge.difficulty().map(i16::from),
            f.access.challenge.url(),
            i16::try_from(f.shards).unwrap_or(1),
        )
        .fetch_one(&self.pool)
        .await?
        .try_into()
    }

    pub async fn get(&self, id: i64) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards
             FROM promotions WHERE id = $1",
            id,
        )
        .fetch_optional(&self.pool)
        .await
        .and_then(promotion)
    }

    /// Newest first, keyset-paginated by id.
    pub async fn list(&self, before_id: Option<i64>, limit: i64) -> sqlx::Result<Vec<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards
             FROM promotions WHERE ($1::BIGINT IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            before_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Promotion::try_from)
        .collect()
    }

    /// Promotions that have not ended long ago: what gateways keep in their local cache.
    pub async fn list_current(&self, ended_within: chrono::Duration) -> sqlx::Result<Vec<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards
             FROM promotions WHERE ends_at > $1 ORDER BY id",
            Utc::now() - ended_within,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Promotion::try_from)
        .collect()
    }

    /// The sales whose window, widened by `margin` on both sides, contains `at`: where an
    /// order id minted at `at` can belong.
    pub async fn sales_running_around(
        &self,
        at: DateTime<Utc>,
        margin: chrono::Duration,
    ) -> sqlx::Result<Vec<SaleShards>> {
        let rows = sqlx::query!(
            "SELECT id, shards FROM promotions WHERE starts_at <= $1 AND ends_at >= $2 ORDER BY id",
            at + margin,
            at - margin,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                SaleShards::new(r.id, r.shards.into())
                    .map_err(|e| sqlx::Error::Decode(format!("promotion {}: {e}", r.id).into()))
            })
            .collect()
    }

    /// Where a sale's Redis state lives (`None`: no such promotion). Fixed at creation.
    pub async fn sale_shards(&self, id: i64) -> sqlx::Result<Option<SaleShards>> {
        let shards = sqlx::query_scalar!("SELECT shards FROM promotions WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await?;
        shards
            .map(|n| {
                SaleShards::new(id, n.into())
                    .map_err(|e| sqlx::Error::Decode(format!("promotion {id}: {e}").into()))
            })
            .transpose()
    }

    /// Store edited fields, guarded by the revision the edit was based on (any concurrent
    /// write to the row makes this return `None`).
    pub async fn update(
        &self,
        id: i64,
        f: &PromotionFields,
        seen_revision: i64,
    ) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "UPDATE promotions SET sku_id = $2, title = $3, price_cents = $4, stock = $5, per_user_limit = $6,
                 starts_at = $7, ends_at = $8, requires_token = $10, challenge = $11, pow_difficulty = $12,
                 verifier_url = $13, updated_at = now(), revision = revision + 1
             WHERE id = $1 AND revision = $9 AND keys_retired_at IS NULL
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards",
            id,
            f.sku_id,
            f.title,
            f.price_cents,
            f.stock,
            f.per_user_limit,
            f.starts_at,
            f.ends_at,
            seen_revision,
            f.access.requires_token,
            f.access.challenge.kind(),
            f.access.challenge.difficulty().map(i16::from),
            f.access.challenge.url(),
        )
        .fetch_optional(&self.pool)
        .await
        .and_then(promotion)
    }

    pub async fn set_paused(&self, id: i64, paused: bool) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "UPDATE promotions SET paused = $2, updated_at = now(), revision = revision + 1
             WHERE id = $1 AND keys_retired_at IS NULL
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards",
            id,
            paused,
        )
        .fetch_optional(&self.pool)
        .await
        .and_then(promotion)
    }

    /// Add units to the configured stock (`None`: no such promotion, or the sum would pass
    /// `MAX_STOCK`).
    pub async fn add_stock(&self, id: i64, units: i64) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "UPDATE promotions SET stock = stock + $2, updated_at = now(), revision = revision + 1
             WHERE id = $1 AND stock + $2 <= $3 AND keys_retired_at IS NULL
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards",
            id,
            units,
            MAX_STOCK,
        )
        .fetch_optional(&self.pool)
        .await
        .and_then(promotion)
    }

    /// When the sale's keys were retired from Redis (`None`: not retired, or no such sale).
    pub async fn keys_retired_at(&self, id: i64) -> sqlx::Result<Option<DateTime<Utc>>> {
        let at = sqlx::query_scalar!("SELECT keys_retired_at FROM promotions WHERE id = $1", id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(at.flatten())
    }

    /// Sales that ended before `ended_before` and still have keys in Redis, or whose keys
    /// were retired since `retired_since` (a crash may have left them there): oldest first.
    pub async fn sales_to_retire(
        &self,
        ended_before: DateTime<Utc>,
        retired_since: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<Promotion>> {
        sqlx::query_as!(
            PromotionRow,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision, requires_token, challenge, pow_difficulty, verifier_url, shards
             FROM promotions
             WHERE ends_at < $1 AND (keys_retired_at IS NULL OR keys_retired_at >= $2)
             ORDER BY ends_at LIMIT $3",
            ended_before,
            retired_since,
            limit,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(Promotion::try_from)
        .collect()
    }

    /// Record that the sale's keys leave Redis: only once it ended before `ended_before` and
    /// no stock return waits for it. Row-locked, so an edit racing it either commits first
    /// (and this sees the new `ends_at`) or finds the sale retired. Returns whether it did
    /// (or had).
    pub async fn mark_keys_retired(&self, id: i64, ended_before: DateTime<Utc>) -> sqlx::Result<bool> {
        let marked = sqlx::query_scalar!(
            r#"UPDATE promotions p SET keys_retired_at = COALESCE(p.keys_retired_at, now())
               WHERE p.id = $1 AND p.ends_at < $2
                 AND NOT EXISTS (SELECT 1 FROM stock_returns r WHERE r.promotion_id = p.id)
               RETURNING p.id"#,
            id,
            ended_before,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(marked.is_some())
    }

    /// Delete a promotion that has no orders. Returns whether a row went.
    pub async fn delete_unused(&self, id: i64) -> sqlx::Result<bool> {
        let result = sqlx::query!(
            "DELETE FROM promotions p
             WHERE p.id = $1 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.promotion_id = p.id)",
            id,
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
