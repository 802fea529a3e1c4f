//! The writer's batch insert against a real PostgreSQL: a batch holding the same order twice
//! (the original message and the sweeper's republished copy, delivered together after a
//! consumer crash) or an order already written inserts each order once, with one item row;
//! an order that differs from what is stored under its id or request id is reported as a
//! conflict, never swallowed.

use std::time::Duration;

use chrono::Utc;
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use order_core::postgres::lazy_pool;
use order_core::postgres::persist::{insert_seckill_orders, Conflict, NewSeckillOrder, OrderFate};
use order_core::runtime::settings::DatabaseOnly;
use order_core::test_support::{fresh_database, local_source};

fn user(id: i64) -> UserId {
    UserId::parse(id).expect("a user")
}

fn request(id: &str) -> RequestId {
    RequestId::parse(id).expect("a request id")
}

fn order(id: i64, promotion_id: i64) -> NewSeckillOrder {
    NewSeckillOrder {
        order_id: OrderId(id),
        user_id: user(id),
        promotion_id: PromotionId::parse(promotion_id).expect("a sale"),
        sale: order_core::domain::shards::SaleShards::single(promotion_id),
        request_id: request(&format!("r{id}")),
        sku_id: "sku-1".into(),
        title: "Phone".into(),
        quantity: Quantity::parse(1).expect("one unit"),
        unit_price_cents: 1999,
        accepted_at: Utc::now(),
    }
}

async fn database_with_promotion() -> (sqlx::PgPool, i64) {
    let settings: DatabaseOnly = local_source().load().expect("settings");
    let pool = lazy_pool(&fresh_database(&settings.database).await.expect("fresh database")).expect("pool");
    let promotion_id: i64 = sqlx::query_scalar(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('sku-1', 'Phone', 1999, 10, now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("insert promotion");
    (pool, promotion_id)
}

#[tokio::test]
async fn duplicates_within_a_batch_and_across_batches_are_written_once() {
    let (pool, promotion_id) = database_with_promotion().await;
    let timeout = Duration::from_secs(900);

    let first = insert_seckill_orders(&pool, &[order(1, promotion_id), order(2, promotion_id)], timeout)
        .await
        .expect("first batch");
    assert_eq!(first, vec![OrderFate::Inserted; 2]);
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
    use OrderFate::{AlreadyStored, Inserted};
    assert_eq!(second, vec![Inserted, AlreadyStored, AlreadyStored, Inserted]);
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT o.id, count(i.*) FROM orders o LEFT JOIN order_items i ON i.order_id = o.id GROUP BY o.id ORDER BY o.id",
    )
    .fetch_all(&pool)
    .await
    .expect("orders");
    assert_eq!(rows, vec![(1, 1), (2, 1), (3, 1), (4, 1)]);
}

/// Two gateways minting the same id, or one request id given two order ids: the second
/// order must be reported, not dropped by `ON CONFLICT DO NOTHING` as if it were a copy.
#[tokio::test]
async fn an_order_that_differs_from_the_stored_one_is_a_conflict() {
    let (pool, promotion_id) = database_with_promotion().await;
    let timeout = Duration::from_secs(900);
    let stored = order(1, promotion_id);
    insert_seckill_orders(&pool, std::slice::from_ref(&stored), timeout)
        .await
        .expect("first batch");

    // Same id, another buyer.
    let same_id = NewSeckillOrder {
        user_id: user(2),
        request_id: request("r2"),
        ..order(1, promotion_id)
    };
    // Same buyer and request id, another order id.
    let same_request = NewSeckillOrder {
        order_id: OrderId(9),
        ..order(1, promotion_id)
    };
    // Two different orders under one id in one batch.
    let twin_a = order(5, promotion_id);
    let twin_b = NewSeckillOrder {
        user_id: user(6),
        request_id: request("r6"),
        ..order(5, promotion_id)
    };
    let fates = insert_seckill_orders(&pool, &[same_id, same_request, stored, twin_a, twin_b], timeout)
        .await
        .expect("batch");
    assert_eq!(
        fates,
        vec![
            OrderFate::Conflict(Conflict::IdTaken {
                user_id: 1,
                request_id: "r1".into()
            }),
            OrderFate::Conflict(Conflict::RequestTaken(OrderId(1))),
            OrderFate::AlreadyStored,
            OrderFate::Inserted,
            OrderFate::Conflict(Conflict::IdTaken {
                user_id: 5,
                request_id: "r5".into()
            }),
        ]
    );
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, user_id FROM orders ORDER BY id")
        .fetch_all(&pool)
        .await
        .expect("orders");
    assert_eq!(rows, vec![(1, 1), (5, 5)], "nothing overwritten");
}
