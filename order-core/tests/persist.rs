//! The writer's batch insert against a real PostgreSQL: a batch holding the same order twice
//! (the original message and the sweeper's republished copy, delivered together after a
//! consumer crash) or an order already written inserts each order once, with one item row.

use std::time::Duration;

use chrono::Utc;
use order_core::db::lazy_pool;
use order_core::ids::OrderId;
use order_core::persist::{insert_seckill_orders, NewSeckillOrder};
use order_core::settings::DatabaseOnly;
use order_core::test_support::{fresh_database, local_source};

fn order(id: i64, promotion_id: i64) -> NewSeckillOrder {
    NewSeckillOrder {
        order_id: OrderId(id),
        user_id: id,
        promotion_id,
        request_id: format!("r{id}"),
        sku_id: "sku-1".into(),
        title: "Phone".into(),
        quantity: 1,
        unit_price_cents: 1999,
        accepted_at: Utc::now(),
    }
}

#[tokio::test]
async fn duplicates_within_a_batch_and_across_batches_are_written_once() {
    let settings: DatabaseOnly = local_source().load().expect("settings");
    let pool = lazy_pool(&fresh_database(&settings.database).await.expect("fresh database")).expect("pool");
    let promotion_id: i64 = sqlx::query_scalar(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('sku-1', 'Phone', 1999, 10, now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("insert promotion");
    let timeout = Duration::from_secs(900);

    let first = insert_seckill_orders(&pool, &[order(1, promotion_id), order(2, promotion_id)], timeout)
        .await
        .expect("first batch");
    assert_eq!(first, 2);
    // Order 3 twice in one batch, order 1 again from the first batch.
    let batch = [
        order(3, promotion_id),
        order(1, promotion_id),
        order(3, promotion_id),
        order(4, promotion_id),
    ];
    let second = insert_seckill_orders(&pool, &batch, timeout)
        .await
        .expect("a batch with duplicates is written, not refused");
    assert_eq!(second, 2);
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT o.id, count(i.*) FROM orders o LEFT JOIN order_items i ON i.order_id = o.id GROUP BY o.id ORDER BY o.id",
    )
    .fetch_all(&pool)
    .await
    .expect("orders");
    assert_eq!(rows, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
}
