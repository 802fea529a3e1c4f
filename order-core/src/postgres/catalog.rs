//! The catalog tables: `skus`, `coupon_templates` and the `coupon_grants` users hold.

use sqlx::PgPool;

use crate::domain::catalog::{CouponTemplate, CouponTemplateInput, HeldCoupon, Sku, SkuChanges};
use crate::postgres::stored;

/// Insert a SKU; `false` when the id exists.
pub async fn insert_sku(pool: &PgPool, sku: &Sku) -> sqlx::Result<bool> {
    let r = sqlx::query!(
        "INSERT INTO skus (id, title, price_cents, stock) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        sku.id,
        sku.title,
        sku.price_cents,
        sku.stock,
    )
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_sku(pool: &PgPool, id: &str) -> sqlx::Result<Option<Sku>> {
    sqlx::query_as!(
        Sku,
        "SELECT id, title, price_cents, stock FROM skus WHERE id = $1",
        id
    )
    .fetch_optional(pool)
    .await
}

/// Write the given fields of a SKU in one statement; the row as it is afterwards, or `None`
/// when there is no such SKU.
pub async fn update_sku(pool: &PgPool, id: &str, changes: &SkuChanges) -> sqlx::Result<Option<Sku>> {
    sqlx::query_as!(
        Sku,
        "UPDATE skus SET title = COALESCE($2, title), price_cents = COALESCE($3, price_cents),
             stock = COALESCE($4, stock), updated_at = now()
         WHERE id = $1 RETURNING id, title, price_cents, stock",
        id,
        changes.title.as_deref().map(str::trim),
        changes.price_cents,
        changes.stock,
    )
    .fetch_optional(pool)
    .await
}

pub async fn skus_by_id(conn: impl sqlx::PgExecutor<'_>, ids: &[String]) -> sqlx::Result<Vec<Sku>> {
    sqlx::query_as!(
        Sku,
        "SELECT id, title, price_cents, stock FROM skus WHERE id = ANY($1)",
        ids
    )
    .fetch_all(conn)
    .await
}

/// `None` when the code is taken.
pub async fn insert_coupon_template(
    pool: &PgPool,
    t: &CouponTemplateInput,
) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as!(
        CouponTemplate,
        "INSERT INTO coupon_templates (code, kind, amount_off_cents, percent_off, max_discount_cents, min_spend_cents,
                                       valid_from, valid_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (code) DO NOTHING
         RETURNING id, code, kind, amount_off_cents, percent_off, max_discount_cents, min_spend_cents, valid_from,
                   valid_until",
        t.code.trim(),
        t.kind,
        t.amount_off_cents,
        t.percent_off,
        t.max_discount_cents,
        t.min_spend_cents,
        t.valid_from,
        t.valid_until,
    )
    .fetch_optional(pool)
    .await
}

pub async fn coupon_template(pool: &PgPool, id: i64) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as!(
        CouponTemplate,
        "SELECT id, code, kind, amount_off_cents, percent_off, max_discount_cents, min_spend_cents, valid_from,
                valid_until
         FROM coupon_templates WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await
}

/// Grant one coupon of `template_id` to each user; returns the grant ids.
pub async fn grant_coupons(pool: &PgPool, template_id: i64, user_ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar!(
        "INSERT INTO coupon_grants (template_id, user_id, reason)
         SELECT $1, u, 'admin:' || gen_random_uuid() FROM UNNEST($2::BIGINT[]) AS u RETURNING id",
        template_id,
        user_ids,
    )
    .fetch_all(pool)
    .await
}

/// A user's coupons, newest first.
pub async fn coupons_of(pool: &PgPool, user_id: i64) -> sqlx::Result<Vec<HeldCoupon>> {
    let rows = sqlx::query!(
        "SELECT g.id AS grant_id, g.status, t.id, t.code, t.kind, t.amount_off_cents, t.percent_off,
                t.max_discount_cents, t.min_spend_cents, t.valid_from, t.valid_until
         FROM coupon_grants g JOIN coupon_templates t ON t.id = g.template_id
         WHERE g.user_id = $1 ORDER BY g.id DESC LIMIT 200",
        user_id,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(HeldCoupon {
                grant_id: r.grant_id,
                status: stored(&r.status)?,
                template: CouponTemplate {
                    id: r.id,
                    code: r.code,
                    kind: r.kind,
                    amount_off_cents: r.amount_off_cents,
                    percent_off: r.percent_off,
                    max_discount_cents: r.max_discount_cents,
                    min_spend_cents: r.min_spend_cents,
                    valid_from: r.valid_from,
                    valid_until: r.valid_until,
                },
            })
        })
        .collect()
}

/// The template of a grant the user holds and may still use.
pub async fn usable_coupon(
    conn: impl sqlx::PgExecutor<'_>,
    grant_id: i64,
    user_id: i64,
) -> sqlx::Result<Option<CouponTemplate>> {
    sqlx::query_as!(
        CouponTemplate,
        "SELECT t.id, t.code, t.kind, t.amount_off_cents, t.percent_off, t.max_discount_cents, t.min_spend_cents,
                t.valid_from, t.valid_until
         FROM coupon_grants g JOIN coupon_templates t ON t.id = g.template_id
         WHERE g.id = $1 AND g.user_id = $2 AND g.status = 'available'",
        grant_id,
        user_id,
    )
    .fetch_optional(conn)
    .await
}
