//! The migrations against a real PostgreSQL: they apply to a fresh database, re-run as a
//! no-op, and the constraints later issues rely on hold.

use order_core::postgres::{lazy_pool, MIGRATOR};
use order_core::runtime::settings::DatabaseOnly;
use order_core::test_support::{empty_database, fresh_database, local_source};
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
    // Tables and partitioned tables, without their partitions (one per month).
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> '_sqlx_migrations' ORDER BY 1",
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
            "order_archive_chunks",
            "order_archives",
            "order_items",
            "order_request_keys",
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

/// The partitioning migration on a database that already holds orders: every row moves into
/// its month's partition, each order gets its request key, and the references survive.
#[tokio::test]
async fn the_partitioning_migration_keeps_existing_orders() {
    let settings: DatabaseOnly = local_source().load().expect("settings");
    let pool = lazy_pool(&empty_database(&settings.database).await.expect("empty database")).expect("pool");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let (before, partitioning): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().as_ref() < "20261207000001")
    });
    let run = |file: &std::path::Path| {
        let sql = std::fs::read_to_string(file).expect("read a migration");
        let pool = pool.clone();
        async move {
            sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .expect("apply a migration")
        }
    };
    for file in &before {
        run(file).await;
    }
    let promotion = insert_promotion(&pool).await;
    // Orders of three months (ids carry their month), an item, a stock return, a shipment.
    let ids: [i64; 3] = [5 << 22, (60 * 86_400_000_i64) << 22, (200 * 86_400_000_i64) << 22];
    for (n, id) in ids.iter().enumerate() {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents)
             VALUES ($1, $2, 'seckill', $3, 'r', 'paid', 1999, 1999)",
        )
        .bind(id)
        .bind(n as i64 + 1)
        .bind(promotion)
        .execute(&pool)
        .await
        .expect("an existing order");
        sqlx::query(
            "INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents)
             VALUES ($1, 1, 'sku-1', 'Phone', 1, 1999)",
        )
        .bind(id)
        .execute(&pool)
        .await
        .expect("its item");
    }
    sqlx::query("INSERT INTO stock_returns (order_id, promotion_id) VALUES ($1, $2)")
        .bind(ids[0])
        .bind(promotion)
        .execute(&pool)
        .await
        .expect("a stock return");
    sqlx::query("INSERT INTO shipments (order_id) VALUES ($1)")
        .bind(ids[1])
        .execute(&pool)
        .await
        .expect("a shipment");

    for file in &partitioning {
        run(file).await;
    }
    let placed: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, tableoid::regclass::TEXT FROM orders ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("orders");
    assert_eq!(
        placed,
        vec![
            (ids[0], "orders_y2026m01".to_owned()),
            (ids[1], "orders_y2026m03".to_owned()),
            (ids[2], "orders_y2026m07".to_owned()),
        ]
    );
    let counted = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect(sql)
        }
    };
    assert_eq!(counted("SELECT count(*) FROM order_items").await, 3);
    assert_eq!(counted("SELECT count(*) FROM order_request_keys").await, 3);
    assert_eq!(counted("SELECT count(*) FROM stock_returns").await, 1);
    assert_eq!(counted("SELECT count(*) FROM shipments").await, 1);
    // The request rule holds for the moved rows.
    let err = sqlx::query(
        "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents)
         VALUES ($1, 1, 'seckill', $2, 'r', 'paid', 1999, 1999)",
    )
    .bind((100 * 86_400_000_i64) << 22)
    .bind(promotion)
    .execute(&pool)
    .await
    .expect_err("user 1 already holds request r");
    assert!(err.to_string().contains("orders_seckill_request"), "{err}");
}
