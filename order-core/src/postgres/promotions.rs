//! The `promotions` table: every write bumps `revision`, and edits are guarded by the
//! revision they were based on.

use chrono::Utc;
use sqlx::PgPool;

use crate::domain::promotion::{Promotion, PromotionFields, MAX_STOCK};

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
            Promotion,
            "INSERT INTO promotions (sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision",
            f.sku_id,
            f.title,
            f.price_cents,
            f.stock,
            f.per_user_limit,
            f.starts_at,
            f.ends_at,
        )
        .fetch_one(&self.pool)
        .await
    }

    pub async fn get(&self, id: i64) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            Promotion,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision
             FROM promotions WHERE id = $1",
            id,
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Newest first, keyset-paginated by id.
    pub async fn list(&self, before_id: Option<i64>, limit: i64) -> sqlx::Result<Vec<Promotion>> {
        sqlx::query_as!(
            Promotion,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision
             FROM promotions WHERE ($1::BIGINT IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
            before_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Promotions that have not ended long ago: what gateways keep in their local cache.
    pub async fn list_current(&self, ended_within: chrono::Duration) -> sqlx::Result<Vec<Promotion>> {
        sqlx::query_as!(
            Promotion,
            "SELECT id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                    created_at, updated_at, revision
             FROM promotions WHERE ends_at > $1 ORDER BY id",
            Utc::now() - ended_within,
        )
        .fetch_all(&self.pool)
        .await
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
            Promotion,
            "UPDATE promotions SET sku_id = $2, title = $3, price_cents = $4, stock = $5, per_user_limit = $6,
                 starts_at = $7, ends_at = $8, updated_at = now(), revision = revision + 1
             WHERE id = $1 AND revision = $9
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision",
            id,
            f.sku_id,
            f.title,
            f.price_cents,
            f.stock,
            f.per_user_limit,
            f.starts_at,
            f.ends_at,
            seen_revision,
        )
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn set_paused(&self, id: i64, paused: bool) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            Promotion,
            "UPDATE promotions SET paused = $2, updated_at = now(), revision = revision + 1
             WHERE id = $1
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision",
            id,
            paused,
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Add units to the configured stock (`None`: no such promotion, or the sum would pass
    /// `MAX_STOCK`).
    pub async fn add_stock(&self, id: i64, units: i64) -> sqlx::Result<Option<Promotion>> {
        sqlx::query_as!(
            Promotion,
            "UPDATE promotions SET stock = stock + $2, updated_at = now(), revision = revision + 1
             WHERE id = $1 AND stock + $2 <= $3
             RETURNING id, sku_id, title, price_cents, stock, per_user_limit, starts_at, ends_at, paused,
                       created_at, updated_at, revision",
            id,
            units,
            MAX_STOCK,
        )
        .fetch_optional(&self.pool)
        .await
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
