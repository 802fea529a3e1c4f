//! The Lua scripts against a real Redis: concurrent reserves never oversell or exceed the
//! per-user limit, releases happen exactly once, warm-up keeps what was sold.

use chrono::{Duration, Utc};
use order_core::domain::ids::{OrderId, OrderIdGenerator, UserId};

fn user(id: i64) -> UserId {
    UserId::parse(id).expect("a user")
}
use order_core::domain::promotion::Promotion;
use order_core::redis::stock::{IfStarted, ReleaseOutcome, ReserveOutcome, StockStore, SyncOutcome};
use order_core::runtime::settings::RedisOnly;
use order_core::test_support::{local_source, random_promotion_id, random_worker_id};

async fn store() -> StockStore {
    let settings: RedisOnly = local_source().load().expect("settings");
    StockStore::new(order_core::redis::connect(&settings.redis).await.expect("redis"))
}

fn promotion(stock: i64, per_user_limit: i32) -> Promotion {
    order_core::test_support::running_promotion(stock, per_user_limit, 1)
}

/// Load a promotion as the request that created it does; returns remaining.
async fn load(store: &StockStore, p: &Promotion) -> i64 {
    store
        .sync(p, IfStarted::LoadJustCreated)
        .await
        .expect("sync")
        .remaining()
        .expect("loaded")
}

/// The next revision of a row, as a database write makes it.
fn written(p: &mut Promotion, change: impl FnOnce(&mut Promotion)) -> Promotion {
    change(p);
    p.revision += 1;
    p.clone()
}

#[tokio::test]
async fn concurrent_reserves_take_exactly_the_stock_and_releases_return_it_once() {
    let store = store().await;
    let p = promotion(50, 2);
    load(&store, &p).await;
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
                    order_core::test_support::reserve(&store, p.id, user, attempt, 1, ids.next_id())
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
        store.live_stock(&[p.sale()]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        0
    );
    for (user, _) in &reserved {
        assert!(store.units_held(p.sale(), self::user(*user)).await.expect("held") <= 2);
    }

    // Warm-up again (the same revision) keeps remaining at 0.
    assert_eq!(load(&store, &p).await, 0);

    // Release every order twice, concurrently: each returns its unit exactly once.
    let mut releases = Vec::new();
    let sale = p.sale();
    for (user, order_id) in reserved.iter().chain(reserved.iter()) {
        let (store, user, order_id) = (store.clone(), self::user(*user), *order_id);
        releases.push(tokio::spawn(async move {
            store.release(sale, user, order_id).await.expect("release")
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
        store.live_stock(&[p.sale()]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        50
    );
    assert_eq!(store.reservation_count(p.sale()).await.expect("count"), 0);
    store.forget_promotion(p.sale()).await.expect("cleanup");
}

#[tokio::test]
async fn outcomes_map_every_return_code() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut p = promotion(1, 1);
    assert_eq!(
        order_core::test_support::reserve(&store, p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::NotLoaded
    );
    p.paused = true;
    load(&store, &p).await;
    assert_eq!(
        order_core::test_support::reserve(&store, p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Paused
    );
    let resumed = written(&mut p, |p| p.paused = false);
    store.sync(&resumed, IfStarted::Refuse).await.expect("resume");
    assert_eq!(
        order_core::test_support::reserve(&store, p.id, 1, "r", 2, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::LimitExceeded
    );
    let first = ids.next_id();
    assert!(matches!(
        order_core::test_support::reserve(&store, p.id, 1, "r", 1, first)
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { remaining: 0, .. }
    ));
    match order_core::test_support::reserve(&store, p.id, 1, "r", 1, ids.next_id())
        .await
        .expect("reserve")
    {
        ReserveOutcome::Duplicate {
            order_id,
            reservation: Some(r),
            pending: true,
        } => assert_eq!(
            (order_id, r.user_id.get(), r.quantity.get(), r.request_id.as_str()),
            (first, 1, 1, "r")
        ),
        other => panic!("expected the first attempt's pending order, got {other:?}"),
    }
    assert_eq!(
        order_core::test_support::reserve(&store, p.id, 2, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::SoldOut
    );
    let added = written(&mut p, |p| p.stock += 2);
    assert_eq!(
        store.sync(&added, IfStarted::Refuse).await.expect("add"),
        SyncOutcome::Applied { remaining: 2 }
    );
    assert!(matches!(
        order_core::test_support::reserve(&store, p.id, 2, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { .. }
    ));

    // A released order (cancelled in the database) keeps its request id: a retry gets
    // that order back, never a second one; the sale reopens with a new epoch.
    let before = store.snapshots(&[p.sale()], &[None]).await.expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert!(matches!(
        store.release(p.sale(), user(1), first).await.expect("release"),
        ReleaseOutcome::Released { .. }
    ));
    assert_eq!(
        store.release(p.sale(), user(1), first).await.expect("release"),
        ReleaseOutcome::NothingToRelease,
        "at most once"
    );
    assert!(matches!(
        order_core::test_support::reserve(&store, p.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Duplicate { order_id, reservation: None, pending: false } if order_id == first
    ));
    let after = store.snapshots(&[p.sale()], &[None]).await.expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert_ne!(before.epoch, after.epoch, "a release reopens the sale");
    store.forget_promotion(p.sale()).await.expect("cleanup");

    let mut future = promotion(1, 1);
    future.starts_at = Utc::now() + Duration::hours(1);
    future.ends_at = future.starts_at + Duration::hours(1);
    load(&store, &future).await;
    assert_eq!(
        order_core::test_support::reserve(&store, future.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::NotStarted
    );
    store.forget_promotion(future.sale()).await.expect("cleanup");

    let mut past = promotion(1, 1);
    past.starts_at = Utc::now() - Duration::hours(2);
    past.ends_at = Utc::now() - Duration::hours(1);
    load(&store, &past).await;
    assert_eq!(
        order_core::test_support::reserve(&store, past.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Ended
    );
    store.forget_promotion(past.sale()).await.expect("cleanup");
}

#[tokio::test]
async fn keys_of_an_older_promotion_with_the_same_id_are_dropped_at_warmup() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let old = promotion(1, 1);
    load(&store, &old).await;
    assert!(matches!(
        order_core::test_support::reserve(&store, old.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { remaining: 0, .. }
    ));

    // Same id, another row (the database was recreated; Redis kept its data).
    let mut new = promotion(5, 1);
    new.id = old.id;
    new.created_at = old.created_at + Duration::seconds(1);
    assert_eq!(load(&store, &new).await, 5);
    assert_eq!(store.reservation_count(new.sale()).await.expect("count"), 0);
    assert!(matches!(
        order_core::test_support::reserve(&store, new.id, 1, "r", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved { remaining: 4, .. }
    ));
    assert_eq!(load(&store, &new).await, 4, "keeps what was sold");
    store.forget_promotion(new.sale()).await.expect("cleanup");
}

/// A closed sale's buyer list is final for its epoch: sent once, then only when the epoch
/// moves (stock added or returned, resumed, reloaded).
#[tokio::test]
async fn a_closed_sale_snapshot_carries_its_final_buyers_until_the_epoch_moves() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut p = promotion(2, 1);
    load(&store, &p).await;
    let open = store.snapshots(&[p.sale()], &[None]).await.expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert!(!open.closed && open.buyers.is_empty(), "{open:?}");
    for user in [11, 12] {
        order_core::test_support::reserve(&store, p.id, user, "r", 1, ids.next_id())
            .await
            .expect("reserve");
    }
    let closed = store.snapshots(&[p.sale()], &[None]).await.expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert!(closed.closed);
    let mut buyers = closed.buyers.clone();
    buyers.sort();
    assert_eq!(buyers, vec![11, 12]);
    let again = store
        .snapshots(&[p.sale()], &[Some(closed.epoch.clone())])
        .await
        .expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert!(again.closed && again.buyers.is_empty(), "nothing new to send");

    let added = written(&mut p, |p| p.stock += 1);
    store.sync(&added, IfStarted::Refuse).await.expect("add stock");
    let reopened = store
        .snapshots(&[p.sale()], &[Some(closed.epoch.clone())])
        .await
        .expect("snapshot")[0]
        .clone()
        .expect("loaded");
    assert!(!reopened.closed);
    assert_ne!(reopened.epoch, closed.epoch);
    store.forget_promotion(p.sale()).await.expect("cleanup");
}

#[tokio::test]
async fn the_shared_writer_pace_grants_a_burst_then_makes_writers_wait() {
    let settings: order_core::runtime::settings::RedisOnly = local_source().load().expect("settings");
    let conn = order_core::redis::connect(&settings.redis).await.expect("redis");
    let scope = format!("test-{}", random_promotion_id());
    let pace = order_core::redis::global_pace::GlobalPace::new(conn.clone(), &scope, 100.0, 10);
    let other_writer = order_core::redis::global_pace::GlobalPace::new(conn, &scope, 100.0, 10);
    assert_eq!(pace.try_acquire(10).await.expect("pace"), None, "one burst");
    let wait = other_writer
        .try_acquire(10)
        .await
        .expect("pace")
        .expect("the bucket is shared: the other writer waits");
    assert!(
        wait > std::time::Duration::ZERO && wait <= std::time::Duration::from_millis(100),
        "{wait:?}"
    );
}

/// The Redis-loss case: a started sale that Redis does not hold may have sold units, so
/// nothing but its creator (nothing sold yet) or a repair may load it.
#[tokio::test]
async fn a_started_sale_missing_from_redis_is_never_loaded_afresh() {
    let store = store().await;
    let p = promotion(5, 1);
    assert_eq!(
        store.sync(&p, IfStarted::Refuse).await.expect("sync"),
        SyncOutcome::StartedNotLoaded
    );
    assert_eq!(
        store.live_stock_of(p.sale()).await.expect("live"),
        None,
        "still not loaded"
    );

    let mut future = promotion(5, 1);
    future.starts_at = Utc::now() + Duration::hours(1);
    future.ends_at = future.starts_at + Duration::hours(1);
    assert_eq!(
        store.sync(&future, IfStarted::Refuse).await.expect("sync"),
        SyncOutcome::Loaded { remaining: 5 },
        "a sale that has not started had nothing sold"
    );
    store.forget_promotion(future.sale()).await.expect("cleanup");
}

/// An edit reaching Redis after units were reserved (Redis' clock started the sale while
/// the edit was on its way) moves remaining by the stock difference: reserved units stay
/// reserved, and stock below them is refused.
#[tokio::test]
async fn a_new_stock_moves_remaining_by_the_difference_and_never_below_the_reserved() {
    let store = store().await;
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut p = promotion(10, 1);
    load(&store, &p).await;
    for user in 1..=3 {
        order_core::test_support::reserve(&store, p.id, user, "r", 1, ids.next_id())
            .await
            .expect("reserve");
    }
    let edited = written(&mut p, |p| p.stock = 8);
    assert_eq!(
        store.sync(&edited, IfStarted::Refuse).await.expect("sync"),
        SyncOutcome::Applied { remaining: 5 },
        "8 configured, 3 reserved"
    );
    let too_low = written(&mut p, |p| p.stock = 2);
    assert_eq!(
        store.sync(&too_low, IfStarted::Refuse).await.expect("sync"),
        SyncOutcome::BelowReserved { remaining: 5 }
    );
    let live = store
        .live_stock_of(p.sale())
        .await
        .expect("live")
        .expect("loaded");
    assert_eq!(live.remaining, 5, "a refused revision changes nothing");
    store.forget_promotion(p.sale()).await.expect("cleanup");
}

/// A caller holding an older read of the row (a warm-up racing an edit, pause or add-stock)
/// changes nothing: it can neither resume a paused sale nor count added units again.
#[tokio::test]
async fn an_older_revision_changes_nothing() {
    let store = store().await;
    let mut p = promotion(10, 1);
    let stale = p.clone();
    load(&store, &p).await;
    let added = written(&mut p, |p| p.stock += 5);
    assert_eq!(
        store.sync(&added, IfStarted::Refuse).await.expect("add"),
        SyncOutcome::Applied { remaining: 15 }
    );
    let paused = written(&mut p, |p| p.paused = true);
    store.sync(&paused, IfStarted::Refuse).await.expect("pause");
    for old in [&stale, &added] {
        assert_eq!(
            store.sync(old, IfStarted::Refuse).await.expect("stale"),
            SyncOutcome::Current { remaining: 15 }
        );
    }
    let live = store
        .live_stock_of(p.sale())
        .await
        .expect("live")
        .expect("loaded");
    assert_eq!((live.remaining, live.paused), (15, true));
    store.forget_promotion(p.sale()).await.expect("cleanup");
}

/// A sale on three shards whose buyers all belong to shard 0, all at once: stock moves to
/// shard 0 until every unit is sold, and each shard's books balance.
#[tokio::test]
async fn buyers_of_one_shard_buy_every_unit_of_a_sale_on_three_shards() {
    let store = store().await;
    let mut p = promotion(30, 1);
    p.shards = 3;
    load(&store, &p).await;
    let sale = p.sale();
    let ids = std::sync::Arc::new(OrderIdGenerator::new(random_worker_id()));
    let crowd: Vec<i64> = (1..).filter(|u| sale.shard_of(*u).index == 0).take(45).collect();
    let tasks: Vec<_> = crowd
        .iter()
        .map(|&user| {
            let (store, ids) = (store.clone(), ids.clone());
            tokio::spawn(async move {
                order_core::test_support::reserve_in(&store, sale, user, "r", 1, ids.next_id())
                    .await
                    .expect("reserve")
            })
        })
        .collect();
    let mut sold = 0;
    for task in tasks {
        match task.await.expect("task") {
            ReserveOutcome::Reserved { .. } => sold += 1,
            ReserveOutcome::SoldOut => {}
            other => panic!("{other:?}"),
        }
    }
    let shards: Vec<_> = store
        .shard_stocks(sale)
        .await
        .expect("shards")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(sold, 30, "{shards:?}");
    assert!(shards.iter().all(|s| s.remaining == 0), "{shards:?}");
    assert_eq!(shards[0].got, 20, "{shards:?}");
    assert_eq!(store.reservation_count(sale).await.expect("count"), 30);
    store.forget_promotion(sale).await.expect("cleanup");
}
