//! The Lua scripts against a real Redis: concurrent reserves never oversell or exceed the
//! per-user limit, releases happen exactly once, warm-up keeps what was sold.

use chrono::{Duration, Utc};
use order_core::ids::{OrderId, OrderIdGenerator};
use order_core::promotion::Promotion;
use order_core::settings::RedisOnly;
use order_core::stock::{ReleaseOutcome, ReserveOutcome, StockStore};
use order_core::test_support::{local_source, random_promotion_id, random_worker_id};

async fn store() -> StockStore {
    let settings: RedisOnly = local_source().load().expect("settings");
    StockStore::new(
        order_core::redis_store::connect(&settings.redis)
            .await
            .expect("redis"),
    )
}

fn promotion(stock: i64, per_user_limit: i32) -> Promotion {
    let now = Utc::now();
    Promotion {
        id: random_promotion_id(),
        sku_id: "sku".into(),
        title: "t".into(),
        price_cents: 100,
        stock,
        per_user_limit,
        starts_at: now - Duration::seconds(5),
        ends_at: now + Duration::hours(1),
        paused: false,
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test]
async fn concurrent_reserves_take_exactly_the_stock_and_releases_return_it_once() {
    let store = store().await;
    let p = promotion(50, 2);
    store.warmup(&p).await.expect("warmup");
    let ids = std::sync::Arc::new(OrderIdGenerator::new(random_worker_id()));

    // 120 users × 2 attempts of 1 unit, all at once, plus one retry each of the first attempt.
    let mut tasks = Vec::new();
    for user in 1..=120i64 {
        for attempt in ["a", "b", "a"] {
            let (store, ids) = (store.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                (
                    user,
                    attempt,
                    store
                        .reserve(p.id, user, attempt, 1, ids.next_id())
                        .await
                        .expect("reserve"),
                )
            }));
        }
    }
    let mut reserved: Vec<(i64, OrderId)> = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (user, _, ReserveOutcome::Reserved { order_id, .. }) => reserved.push((user, order_id)),
            (_, _, ReserveOutcome::Duplicate { .. } | ReserveOutcome::SoldOut) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reserved.len(), 50, "never more than the stock");
    assert_eq!(
        store.live_stock(&[p.id]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        0
    );
    for (user, _) in &reserved {
        assert!(store.units_held(p.id, *user).await.expect("held") <= 2);
    }

    // Warm-up again (e.g. a rule edit) keeps remaining at 0.
    assert_eq!(store.warmup(&p).await.expect("warmup"), 0);

    // Release every order twice, concurrently: each returns its unit exactly once.
    let mut releases = Vec::new();
    for (_, order_id) in reserved.iter().chain(reserved.iter()) {
        let (store, order_id) = (store.clone(), *order_id);
        releases.push(tokio::spawn(async move {
            store.release(p.id, order_id, false).await.expect("release")
        }));
    }
    let mut released = 0;
    for r in releases {
        if let ReleaseOutcome::Released { .. } = r.await.expect("task") {
            released += 1;
        }
    }
    assert_eq!(released, 50);
    assert_eq!(
        store.live_stock(&[p.id]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        50
    );
    assert_eq!(store.reservation_count(p.id).await.expect("count"), 0);
    store.forget_promotion(p.id).await.expect("cleanup");
}

#[tokio::test]
async fn outcomes_map_every_return_code() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut p = promotion(1, 1);
    assert_eq!(
        store
            .reserve(p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::NotLoaded
    );
    p.paused = true;
    store.warmup(&p).await.expect("warmup");
    assert_eq!(
        store
            .reserve(p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Paused
    );
    store.set_paused(p.id, false).await.expect("resume");
    assert_eq!(
        store
            .reserve(p.id, 1, "r", 2, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::LimitExceeded
    );
    let first = ids.next_id();
    assert!(matches!(
        store.reserve(p.id, 1, "r", 1, first).await.expect("reserve"),
        ReserveOutcome::Reserved { remaining: 0, .. }
    ));
    assert_eq!(
        store
            .reserve(p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Duplicate { order_id: first }
    );
    assert_eq!(
        store
            .reserve(p.id, 2, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::SoldOut
    );
    assert_eq!(store.add_stock(p.id, 2).await.expect("add"), Some(2));
    assert!(matches!(
        store
            .reserve(p.id, 2, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { .. }
    ));

    // Releasing with forget_request lets the same request id reserve again.
    assert!(matches!(
        store.release(p.id, first, true).await.expect("release"),
        ReleaseOutcome::Released { .. }
    ));
    assert!(matches!(
        store
            .reserve(p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { .. }
    ));
    store.forget_promotion(p.id).await.expect("cleanup");

    let mut future = promotion(1, 1);
    future.starts_at = Utc::now() + Duration::hours(1);
    future.ends_at = future.starts_at + Duration::hours(1);
    store.warmup(&future).await.expect("warmup");
    assert_eq!(
        store
            .reserve(future.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::NotStarted
    );
    store.forget_promotion(future.id).await.expect("cleanup");

    let mut past = promotion(1, 1);
    past.starts_at = Utc::now() - Duration::hours(2);
    past.ends_at = Utc::now() - Duration::hours(1);
    store.warmup(&past).await.expect("warmup");
    assert_eq!(
        store
            .reserve(past.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Ended
    );
    store.forget_promotion(past.id).await.expect("cleanup");
}

#[tokio::test]
async fn keys_of_an_older_promotion_with_the_same_id_are_dropped_at_warmup() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let old = promotion(1, 1);
    store.warmup(&old).await.expect("warmup");
    assert!(matches!(
        store
            .reserve(old.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { remaining: 0, .. }
    ));

    // Same id, another row (the database was recreated; Redis kept its data).
    let mut new = promotion(5, 1);
    new.id = old.id;
    new.created_at = old.created_at + Duration::seconds(1);
    assert_eq!(store.warmup(&new).await.expect("warmup"), 5);
    assert_eq!(store.reservation_count(new.id).await.expect("count"), 0);
    assert!(matches!(
        store
            .reserve(new.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { remaining: 4, .. }
    ));
    assert_eq!(
        store.warmup(&new).await.expect("same promotion again"),
        4,
        "keeps what was sold"
    );
    store.forget_promotion(new.id).await.expect("cleanup");
}
