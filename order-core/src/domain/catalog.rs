//! The catalog for normal checkout (SKUs with price and stock) and coupons (templates and
//! the grants users hold).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::domain::pricing::{Coupon, CouponRule, PricedSku};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct Sku {
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: String,
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: String,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: i64,
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: i64,
}

impl Sku {
    pub fn priced(&self) -> PricedSku {
        PricedSku {
            sku_id: self.id.clone(),
            title: self.title.clone(),
            unit_price_cents: self.price_cents,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Invalid(&'static str),
}

/// A SKU id: 1 to 64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_sku_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Sku {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if !valid_sku_id(&self.id) {
            return Err(CatalogError::Invalid("id must be 1 to 64 of A-Z a-z 0-9 - _ ."));
        }
        check_title(&self.title)?;
        check_price(self.price_cents)?;
        check_stock(self.stock)
    }
}

fn check_title(title: &str) -> Result<(), CatalogError> {
    if title.trim().is_empty() || title.chars().count() > 200 {
        return Err(CatalogError::Invalid("title must be 1 to 200 characters"));
    }
    Ok(())
}

fn check_price(price_cents: i64) -> Result<(), CatalogError> {
    if !(0..=crate::domain::promotion::MAX_PRICE_CENTS).contains(&price_cents) {
        return Err(CatalogError::Invalid("price_cents out of range"));
    }
    Ok(())
}

fn check_stock(stock: i64) -> Result<(), CatalogError> {
    if !(0..=crate::domain::promotion::MAX_STOCK).contains(&stock) {
        return Err(CatalogError::Invalid("stock out of range"));
    }
    Ok(())
}

/// A SKU edit: only the fields given are written. Checkouts change `stock` concurrently, so
/// writing back a stock value read before the edit would undo their decrements (or their
/// cancellations' returns).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuChanges {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    pub title: Option<String>,
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    pub price_cents: Option<i64>,
    /// Sets the count outright (a stock take), whatever checkouts took meanwhile.
    #[schema(minimum = 0, maximum = 10_000_000)]
    pub stock: Option<i64>,
}

impl SkuChanges {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        if let Some(price_cents) = self.price_cents {
            check_price(price_cents)?;
        }
        if let Some(stock) = self.stock {
            check_stock(stock)?;
        }
        Ok(())
    }
}

/// Insert a SKU; `false` when the id exists.
pub async fn insert_sku(pool: &PgPool, sku: &Sku) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO skus (id, title, price_cents, stock) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&sku.id)
    .bind(&sku.title)
    .bind(sku.price_cents)
    .bind(sku.stock)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_sku(pool: &PgPool, id: &str) -> sqlx::Result<Option<Sku>> {
    sqlx::query_as("SELECT id, title, price_cents, stock FROM skus WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Write the given fields of a SKU in one statement; the row as it is afterwards, or `None`
/// when there is no such SKU.
pub async fn update_sku(pool: &PgPool, id: &str, changes: &SkuChanges) -> sqlx::Result<Option<Sku>> {
    sqlx::query_as(
        "UPDATE skus SET title = COALESCE($2, title), price_cents = COALESCE($3, price_cents),
             stock = COALESCE($4, stock), updated_at = now()
         WHERE id = $1 RETURNING id, title, price_cents, stock",
    )
    .bind(id)
    .bind(changes.title.as_deref().map(str::trim))
    .bind(changes.price_cents)
    .bind(changes.stock)
    .fetch_optional(pool)
    .await
}

pub async fn skus_by_id(conn: impl sqlx::PgExecutor<'_>, ids: &[String]) -> sqlx::Result<Vec<Sku>> {
    sqlx::query_as("SELECT id, title, price_cents, stock FROM skus WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(conn)
        .await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, ToSchema)]
pub struct CouponTemplate {
    pub id: i64,
    pub code: String,
    pub kind: String,
    pub amount_off_cents: Option<i64>,
    pub percent_off: Option<i32>,
    pub max_discount_cents: Option<i64>,
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

/// The create-template body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponTemplateInput {
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    pub code: String,
    /// `fixed` (with `amount_off_cents`) or `percent` (with `percent_off`).
    #[schema(pattern = "^(fixed|percent)$")]
    pub kind: String,
    #[schema(minimum = 1)]
    pub amount_off_cents: Option<i64>,
    #[schema(minimum = 1, maximum = 100)]
    pub percent_off: Option<i32>,
    #[schema(minimum = 1)]
    pub max_discount_cents: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub min_spend_cents: i64,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

impl CouponTemplateInput {
    pub fn validate(&self) -> Result<(), CatalogError> {
        if self.code.trim().is_empty() || self.code.chars().count() > 64 {
            return Err(CatalogError::Invalid("code must be 1 to 64 characters"));
        }
        match (self.kind.as_str(), self.amount_off_cents, self.percent_off) {
            ("fixed", Some(a), None) if a > 0 => {}
            ("percent", None, Some(p)) if (1..=100).contains(&p) => {}
            _ => {
                return Err(CatalogError::Invalid(
                    "kind fixed needs amount_off_cents > 0; kind percent needs percent_off 1..100",
                ))
            }
        }
        if self.max_discount_cents.is_some_and(|m| m <= 0) || self.min_spend_cents < 0 {
            return Err(CatalogError::Invalid(
                "max_discount_cents > 0 and min_spend_cents >= 0",
            ));
        }
        if self.valid_until <= self.valid_from {
            return Err(CatalogError::Invalid("valid_until must be after valid_from"));
        }
        Ok(())
    }
}

impl CouponTemplate {
    pub fn coupon(&self) -> Coupon {
        let rule = match (self.amount_off_cents, self.percent_off) {
            (Some(amount_off_cents), _) => CouponRule::Fixed { amount_off_cents },
            (None, percent) => CouponRule::Percent {
                percent_off: i64::from(percent.unwrap_or(0)),
                max_discount_cents: self.max_discount_cents,
            },
        };
        Coupon {
            rule,
            min_spend_cents: self.min_spend_cents,
            valid_from: self.valid_from,
            valid_until: self.valid_until,
        }
    }
}

const TEMPLATE_COLUMNS: &str =
    "id, code, kind, amount_off_cents, percent_off, max_discount_cents, min_spend_cents, valid_from, valid_until";

/// `None` when the code is taken.
pub async fn insert_coupon_template(
    pool: &PgPool,
    t: &CouponTemplateInput,
) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as(&format!(
        "INSERT INTO coupon_templates (code, kind, amount_off_cents, percent_off, max_discount_cents, min_spend_cents, valid_from, valid_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (code) DO NOTHING RETURNING {TEMPLATE_COLUMNS}"
    ))
    .bind(t.code.trim())
    .bind(&t.kind)
    .bind(t.amount_off_cents)
    .bind(t.percent_off)
    .bind(t.max_discount_cents)
    .bind(t.min_spend_cents)
    .bind(t.valid_from)
    .bind(t.valid_until)
    .fetch_optional(pool)
    .await
}

pub async fn coupon_template(pool: &PgPool, id: i64) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as(&format!(
        "SELECT {TEMPLATE_COLUMNS} FROM coupon_templates WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Grant one coupon of `template_id` to each user; returns the grant ids.
pub async fn grant_coupons(pool: &PgPool, template_id: i64, user_ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "INSERT INTO coupon_grants (template_id, user_id, reason)
         SELECT $1, u, 'admin:' || gen_random_uuid() FROM UNNEST($2::BIGINT[]) AS u RETURNING id",
    )
    .bind(template_id)
    .bind(user_ids)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct HeldCoupon {
    pub grant_id: i64,
    pub status: String,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub template: CouponTemplate,
}

/// A user's coupons, newest first.
pub async fn coupons_of(pool: &PgPool, user_id: i64) -> sqlx::Result<Vec<HeldCoupon>> {
    sqlx::query_as(
        "SELECT g.id AS grant_id, g.status, t.id, t.code, t.kind, t.amount_off_cents, t.percent_off,
                t.max_discount_cents, t.min_spend_cents, t.valid_from, t.valid_until
         FROM coupon_grants g JOIN coupon_templates t ON t.id = g.template_id
         WHERE g.user_id = $1 ORDER BY g.id DESC LIMIT 200",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// The template of a grant the user holds and may still use.
pub async fn usable_coupon(
    conn: impl sqlx::PgExecutor<'_>,
    grant_id: i64,
    user_id: i64,
) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as(
        "SELECT t.id, t.code, t.kind, t.amount_off_cents, t.percent_off, t.max_discount_cents, t.min_spend_cents,
                t.valid_from, t.valid_until
         FROM coupon_grants g JOIN coupon_templates t ON t.id = g.template_id
         WHERE g.id = $1 AND g.user_id = $2 AND g.status = 'available'",
    )
    .bind(grant_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await
}
