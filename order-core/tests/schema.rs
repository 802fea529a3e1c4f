//! The migrations against a real PostgreSQL: they apply to a fresh database, re-run as a
//! no-op, and the constraints later issues rely on hold.

use order_core::postgres::{lazy_pool, MIGRATOR};
use order_core::runtime::settings::DatabaseOnly;
use order_core::test_support::{fresh_database, local_source};
use sqlx::PgPool;

async fn fresh_pool() -> PgPool {
    let settings: DatabaseOnly = local_source().load().expect("settings");
    let db = fresh_database(&settings.database).await.expect("fresh database");
    lazy_pool(&db).expect("pool")
}

async fn insert_promotion(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('sku-1', 'Phone', 1999, 10, now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("insert promotion")
}

#[tokio::test]
async fn migrations_create_the_tables_and_rerun_as_no_op() {
    let pool = fresh_pool().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .expect("list tables");
    assert_eq!(
        tables,
        [
            "coupon_grants",
            "coupon_templates",
            "loyalty_ledger",
            "notifications",
            "order_items",
            "orders",
            "outbox",
            "payments",
            "processed_events",
            "promotions",
            "refunds",
            "shipments",
            "skus",
            "stock_returns"
        ]
    );
    MIGRATOR.run(&pool).await.expect("second run is a no-op");
}

#[tokio::test]
async fn a_promotion_must_end_after_it_starts() {
    let pool = fresh_pool().await;
    let err = sqlx::query(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('sku-1', 'Phone', 1999, 10, now(), now() - interval '1 minute')",
    )
    .execute(&pool)
    .await
    .expect_err("ends_at before starts_at must be rejected");
    assert!(err.to_string().contains("check constraint"), "{err}");
}

#[tokio::test]
async fn a_seckill_request_id_is_unique_per_promotion_and_user() {
    let pool = fresh_pool().await;
    let promo = insert_promotion(&pool).await;
    let insert = |id: i64, user: i64| {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents)
             VALUES ($1, $2, 'seckill', $3, 'req-1', 'pending_payment', 1999, 1999)",
        )
        .bind(id)
        .bind(user)
        .bind(promo)
        .execute(&pool)
    };
    insert(1, 42).await.expect("first order");
    insert(2, 43)
        .await
        .expect("another user may reuse the request id");
    let err = insert(3, 42)
        .await
        .expect_err("same user, promotion and request id");
    assert!(err.to_string().contains("orders_seckill_request"), "{err}");
}

#[tokio::test]
async fn an_order_kind_matches_its_promotion() {
    let pool = fresh_pool().await;
    let err = sqlx::query(
        "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, total_cents)
         VALUES (1, 1, 'seckill', 'r', 'pending_payment', 1, 1)",
    )
    .execute(&pool)
    .await
    .expect_err("a seckill order needs its promotion");
    assert!(err.to_string().contains("check constraint"), "{err}");
}
