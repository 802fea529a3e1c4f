//! Years of orders against a real PostgreSQL: monthly partitions created ahead, the request-id
//! rules holding across months, a month archived to its file and dropped (and its orders
//! still found by id), and the event tables pruned by age.

use std::io::Read;

use chrono::{DateTime, Utc};
use order_core::domain::ids::{OrderId, PromotionId, Quantity, RequestId, UserId};
use order_core::domain::order_months::OrderMonth;
use order_core::postgres::lazy_pool;
use order_core::postgres::order_data::{
    archive_file, archive_month, create_partitions_ahead, find_archived, live_months, prune_older_than,
    PrunedTable,
};
use order_core::postgres::persist::{insert_seckill_orders, Conflict, NewSeckillOrder, OrderFate};
use order_core::runtime::settings::DatabaseOnly;
use order_core::test_support::{fresh_database, local_source, unique};
use sqlx::PgPool;

async fn database() -> PgPool {
    let settings: DatabaseOnly = local_source().load().expect("settings");
    lazy_pool(&fresh_database(&settings.database).await.expect("fresh database")).expect("pool")
}

async fn promotion(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO promotions (sku_id, title, price_cents, stock, starts_at, ends_at)
         VALUES ('sku-1', 'Phone', 1999, 10, now(), now() + interval '1 hour') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("insert promotion")
}

fn month(year: i32, m: u32) -> OrderMonth {
    OrderMonth::new(year, m).expect("a month")
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("a timestamp")
}

/// The `n`-th order id of a month (ids a few milliseconds apart).
fn id_in(m: OrderMonth, n: i64) -> i64 {
    m.first_id() + (n + 1) * 4096 * 1000
}

fn seckill_order(id: i64, promotion_id: i64, user_id: i64, request_id: &str) -> NewSeckillOrder {
    NewSeckillOrder {
        order_id: OrderId(id),
        user_id: UserId::parse(user_id).expect("a user"),
        promotion_id: PromotionId::parse(promotion_id).expect("a sale"),
        sale: order_core::domain::shards::SaleShards::single(promotion_id),
        request_id: RequestId::parse(request_id).expect("a request id"),
        sku_id: "sku-1".into(),
        title: "Phone".into(),
        quantity: Quantity::parse(1).expect("one unit"),
        unit_price_cents: 1999,
        accepted_at: Utc::now(),
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::test]
async fn partitions_are_created_ahead_once_and_an_order_needs_its_month() {
    let pool = database().await;
    let now = at("2027-06-15T12:00:00Z");
    let beyond = month(2027, 10);
    let insert_in = |m: OrderMonth| {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, total_cents)
             VALUES ($1, 1, 'checkout', $2, 'pending_payment', 1, 1)",
        )
        .bind(id_in(m, 0))
        .bind(m.to_string())
        .execute(&pool)
    };
    let err = insert_in(beyond)
        .await
        .expect_err("no partition holds October 2027 yet");
    assert!(err.to_string().contains("no partition"), "{err}");

    let created = create_partitions_ahead(&pool, now, 3)
        .await
        .expect("create ahead");
    assert!(
        created >= 4,
        "June to September 2027 were missing, created {created}"
    );
    let live = live_months(&pool).await.expect("months");
    for m in 6..=9 {
        assert!(live.contains(&month(2027, m)), "2027-{m:02} in {live:?}");
    }
    assert!(!live.contains(&beyond), "only three months ahead: {live:?}");
    assert_eq!(
        create_partitions_ahead(&pool, now, 3).await.expect("again"),
        0,
        "idempotent"
    );
    insert_in(month(2027, 9))
        .await
        .expect("September has its partition");
    insert_in(beyond).await.expect_err("October still has none");

    // Each order sits in the partition of the month its id was minted in.
    let partition: String = sqlx::query_scalar("SELECT tableoid::regclass::TEXT FROM orders WHERE id = $1")
        .bind(id_in(month(2027, 9), 0))
        .fetch_one(&pool)
        .await
        .expect("the order");
    assert_eq!(partition, "orders_y2027m09");
}

#[tokio::test]
async fn a_seckill_request_is_one_order_across_months() {
    let pool = database().await;
    let promotion_id = promotion(&pool).await;
    let (march, may) = (month(2026, 3), month(2026, 5));
    let first = seckill_order(id_in(march, 0), promotion_id, 7, "req-1");
    let fates = insert_seckill_orders(
        &pool,
        std::slice::from_ref(&first),
        std::time::Duration::from_secs(900),
    )
    .await
    .expect("insert");
    assert_eq!(fates, vec![OrderFate::Inserted]);

    // The same request under another id, two months later: a conflict, not a second order.
    let again = seckill_order(id_in(may, 0), promotion_id, 7, "req-1");
    let fates = insert_seckill_orders(
        &pool,
        std::slice::from_ref(&again),
        std::time::Duration::from_secs(900),
    )
    .await
    .expect("insert");
    assert_eq!(
        fates,
        vec![OrderFate::Conflict(Conflict::RequestTaken(first.order_id))]
    );
    // Both in one batch (first copy offered, the other judged), and a redelivered copy.
    let other = seckill_order(id_in(march, 1), promotion_id, 8, "req-2");
    let other_later = seckill_order(id_in(may, 1), promotion_id, 8, "req-2");
    let fates = insert_seckill_orders(
        &pool,
        &[other.clone(), other_later, first.clone()],
        std::time::Duration::from_secs(900),
    )
    .await
    .expect("insert");
    assert_eq!(
        fates,
        vec![
            OrderFate::Inserted,
            OrderFate::Conflict(Conflict::RequestTaken(other.order_id)),
            OrderFate::AlreadyStored,
        ]
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await, 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM order_items").await, 2);

    // A direct insert (any path) meets the same rule, under the index's name.
    let err = sqlx::query(
        "INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents, total_cents)
         VALUES ($1, 7, 'seckill', $2, 'req-1', 'pending_payment', 1999, 1999)",
    )
    .bind(id_in(month(2026, 9), 0))
    .bind(promotion_id)
    .execute(&pool)
    .await
    .expect_err("req-1 is taken in March");
    assert!(err.to_string().contains("orders_seckill_request"), "{err}");
}

#[tokio::test]
async fn a_checkout_request_is_one_order_across_months() {
    let pool = database().await;
    let insert = |id: i64, user: i64| {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, total_cents)
             VALUES ($1, $2, 'checkout', 'basket-1', 'pending_payment', 1, 1)",
        )
        .bind(id)
        .bind(user)
        .execute(&pool)
    };
    insert(id_in(month(2026, 2), 0), 5).await.expect("first");
    insert(id_in(month(2026, 2), 1), 6)
        .await
        .expect("another user may use the same request id");
    let err = insert(id_in(month(2026, 8), 0), 5)
        .await
        .expect_err("same user and request id, another month");
    assert!(err.to_string().contains("orders_checkout_request"), "{err}");
    // A deleted order gives its key back; a key never changes.
    let err = sqlx::query("UPDATE orders SET request_id = 'basket-2' WHERE user_id = 5")
        .execute(&pool)
        .await
        .expect_err("the request key is fixed");
    assert!(err.to_string().contains("cannot change"), "{err}");
    sqlx::query("DELETE FROM orders WHERE user_id = 5")
        .execute(&pool)
        .await
        .expect("delete");
    insert(id_in(month(2026, 8), 0), 5)
        .await
        .expect("the key was released with its order");
}

/// `n` completed orders of user `100 + i % 3` in `m`, one item each.
async fn fill_month(pool: &PgPool, m: OrderMonth, n: i64) {
    sqlx::query(
        "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, total_cents, created_at)
         SELECT $1 + g * 4096, 100 + g % 3, 'checkout', $4 || '-' || g, 'completed', 500 + g, 500 + g, $2
         FROM generate_series(0, $3 - 1) g",
    )
    .bind(m.first_id() + 4096)
    .bind(m.starts_at())
    .bind(n)
    .bind(m.to_string())
    .execute(pool)
    .await
    .expect("orders");
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents)
         SELECT id, 1, 'sku-1', 'Phone', 1, total_cents FROM orders WHERE id >= $1 AND id < $2",
    )
    .bind(m.first_id())
    .bind(m.end_id())
    .execute(pool)
    .await
    .expect("items");
}

#[tokio::test]
async fn archiving_a_month_exports_it_then_drops_it_and_its_orders_are_still_found() {
    let pool = database().await;
    let dir = std::env::temp_dir().join(unique("archive-test"));
    let (feb, mar) = (month(2026, 2), month(2026, 3));
    fill_month(&pool, feb, 2_500).await;
    fill_month(&pool, mar, 10).await;
    let kept_id = mar.first_id() + 4096;
    let archived_id = feb.first_id() + 4096 * 1235; // order 1234: user 100 + 1234 % 3 = 101

    let done = archive_month(&pool, &dir, feb)
        .await
        .expect("archive")
        .expect("February had partitions");
    assert_eq!(done.orders, 2_500);
    assert_eq!(done.file, archive_file(&dir, feb));

    // The file: every order once, in id order, with its item, readable as one gzip stream.
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&done.file).expect("archive file"))
        .read_to_string(&mut text)
        .expect("gzip");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2_500);
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order");
    assert_eq!(lines[0]["items"][0]["sku_id"], "sku-1");
    assert_eq!(lines[0]["status"], "completed");

    // The database: February's partitions, keys and rows are gone; March is untouched.
    let gone: bool = sqlx::query_scalar(
        "SELECT to_regclass('orders_y2026m02') IS NULL AND to_regclass('order_items_y2026m02') IS NULL",
    )
    .fetch_one(&pool)
    .await
    .expect("regclass");
    assert!(gone, "February's partitions are dropped");
    assert!(!live_months(&pool).await.expect("months").contains(&feb));
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await, 10);
    assert_eq!(count(&pool, "SELECT count(*) FROM order_request_keys").await, 10);
    assert_eq!(
        count(
            &pool,
            "SELECT orders FROM order_archives WHERE month = '2026-02-01'"
        )
        .await,
        2_500
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM order_archive_chunks WHERE month = '2026-02-01'"
        )
        .await,
        2,
        "2,500 orders make two chunks"
    );

    // Found by id from the archive, for its owner only.
    let view = find_archived(&pool, &dir, OrderId(archived_id), 101)
        .await
        .expect("read the archive")
        .expect("the archived order");
    assert!(view.archived);
    assert_eq!(
        (view.status.as_str(), view.total_cents),
        ("completed", 500 + 1234)
    );
    assert!(find_archived(&pool, &dir, OrderId(archived_id), 100)
        .await
        .expect("read")
        .is_none());
    assert!(find_archived(&pool, &dir, OrderId(archived_id + 1), 101)
        .await
        .expect("read")
        .is_none());
    assert!(
        find_archived(&pool, &dir, OrderId(kept_id), 100)
            .await
            .expect("read")
            .is_none(),
        "a live order is not in the archive"
    );

    // An archived month is neither archived again nor created again.
    assert_eq!(archive_month(&pool, &dir, feb).await.expect("again"), None);
    create_partitions_ahead(&pool, at("2026-02-10T00:00:00Z"), 1)
        .await
        .expect("create");
    assert!(!live_months(&pool).await.expect("months").contains(&feb));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn retention_prunes_only_rows_older_than_the_cutoff() {
    let pool = database().await;
    sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at)
         SELECT 'points', 'old-' || g, now() - interval '40 days' FROM generate_series(1, 12) g
         UNION ALL SELECT 'points', 'new-' || g, now() - interval '1 day' FROM generate_series(1, 3) g",
    )
    .execute(&pool)
    .await
    .expect("events");
    sqlx::query(
        "INSERT INTO notifications (user_id, order_id, template, payload, created_at)
         SELECT 1, g, 'paid', '{}'::jsonb, now() - interval '200 days' FROM generate_series(1, 4) g
         UNION ALL SELECT 1, 100 + g, 'paid', '{}'::jsonb, now() FROM generate_series(1, 2) g",
    )
    .execute(&pool)
    .await
    .expect("notifications");
    let cutoff = Utc::now() - chrono::Duration::days(30);
    // Batches of 5: three statements for twelve rows.
    let pruned = prune_older_than(&pool, PrunedTable::ProcessedEvents, cutoff, 5, 10)
        .await
        .expect("prune");
    assert_eq!(pruned, 12);
    let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY event_id")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(left, vec!["new-1", "new-2", "new-3"]);
    let pruned = prune_older_than(&pool, PrunedTable::Notifications, cutoff, 100, 10)
        .await
        .expect("prune");
    assert_eq!(pruned, 4);
    assert_eq!(count(&pool, "SELECT count(*) FROM notifications").await, 2);
}
