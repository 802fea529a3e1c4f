//! Redis in its production shape, replicated and failing over, against private stacks (a
//! Cluster with a replica per master, or a primary and a replica under Sentinel: the run's
//! shape, Sentinel on the single-node pass), through the calls production makes:
//! - a reservation is confirmed only once a replica holds it;
//! - the connection leaves a master that stopped answering for the replica promoted in its
//!   place, while the old one is still paused;
//! - a node restarted from an old append-only file fences its sales, and the recovery rebuilds
//!   them from every order they accepted (the database's and the broker's): the sale sells
//!   exactly what is left;
//! - the writers' shared pace does not grant again what a lost write had granted;
//! - a worker id whose node changed history is not handed out again for one lease length.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use order_core::app::recovery::{SaleHealth, SaleRecovery};
use order_core::bus::{JsonProducer, TopicReader};
use order_core::domain::ids::{OrderId, OrderIdGenerator, Quantity, RequestId, UserId};
use order_core::domain::promotion::{Promotion, PromotionFields};
use order_core::domain::reservation::Reservation;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::durability::{Claim, Confirmation, Confirmer};
use order_core::redis::global_pace::GlobalPace;
use order_core::redis::stock::{IfStarted, ReserveOutcome, SaleKeys, StockStore};
use order_core::redis::worker_lease::{LeaseSettings, WorkerLease};
use order_core::runtime::settings::{DatabaseOnly, PulsarOnly, PulsarSettings, RedisOnly, RedisSettings};
use order_core::test_support::{
    fresh_database, poll_until, random_worker_id, redis_run, reserve, running_promotion, unique,
    PrivateStack, RedisKind,
};

/// The run's replicated shape; on the single-node pass, Sentinel.
fn replicated() -> RedisKind {
    match redis_run() {
        RedisKind::Node => RedisKind::Sentinel,
        kind => kind,
    }
}

async fn stack(kind: RedisKind) -> PrivateStack {
    tokio::task::spawn_blocking(move || PrivateStack::start_on(kind))
        .await
        .expect("join")
        .expect("a private stack")
}

fn redis_settings(stack: &PrivateStack) -> RedisSettings {
    let settings: RedisOnly = stack.source().load().expect("settings");
    settings.redis
}

async fn connect(settings: &RedisSettings) -> order_core::redis::RedisConnection {
    order_core::redis::connect(settings)
        .await
        .expect("connect to Redis")
}

/// The production confirmer: a connection of its own, the configured replicas.
async fn confirmer(settings: &RedisSettings) -> Confirmer {
    Confirmer::new(
        connect(settings).await,
        settings.replicas_acked(),
        Duration::from_millis(500),
    )
}

/// Block on a stack script without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> anyhow::Result<T>) -> T {
    tokio::task::block_in_place(f).expect("stack action")
}

async fn wait_for_another_master(stack: &PrivateStack, key: &str, old: &str) -> Duration {
    let started = Instant::now();
    poll_until(Duration::from_secs(30), "a replica to be promoted", || async {
        let now = tokio::task::block_in_place(|| stack.master_part(key)).unwrap_or_default();
        (!now.is_empty() && now != old).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_is_confirmed_only_once_a_replica_holds_it() {
    let stack = stack(replicated()).await;
    let settings = redis_settings(&stack);
    assert_eq!(settings.replicas_acked(), 1);
    let store = StockStore::new(connect(&settings).await);
    let confirmer = confirmer(&settings).await;
    let p = running_promotion(10, 1, 1);
    store.sync(&p, IfStarted::LoadJustCreated).await.expect("load");
    let shard = p.sale().shard(0);
    let ids = OrderIdGenerator::new(random_worker_id());

    let first = ids.next_id();
    reserve(&store, p.id, 1, "r1", 1, first).await.expect("reserve");
    assert_eq!(
        confirmer
            .confirm(shard, first, Claim::New)
            .await
            .expect("confirm"),
        Confirmation::Confirmed
    );

    let key = SaleKeys::of(shard).meta;
    let replica = blocking(|| stack.replica_part(&key));
    blocking(|| stack.pause_part(&replica));
    let second = ids.next_id();
    let outcome = reserve(&store, p.id, 2, "r2", 1, second).await.expect("reserve");
    assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "{outcome:?}");
    assert_eq!(
        confirmer
            .confirm(shard, second, Claim::New)
            .await
            .expect("confirm"),
        Confirmation::Unreplicated { acked: 0 },
        "only the master holds it"
    );
    // An order id no node ever reserved is not confirmed either.
    blocking(|| stack.resume_part(&replica));
    assert_eq!(
        confirmer
            .confirm(shard, ids.next_id(), Claim::Held)
            .await
            .expect("confirm"),
        Confirmation::Missing
    );
    // The retry of the second order is confirmed once the replica has it.
    let confirmed = poll_until(Duration::from_secs(10), "the replica to catch up", || async {
        let c = confirmer
            .confirm(shard, second, Claim::Held)
            .await
            .expect("confirm");
        (c == Confirmation::Confirmed).then_some(c)
    })
    .await;
    assert_eq!(confirmed, Confirmation::Confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_leave_a_paused_master_for_its_promoted_replica_before_it_comes_back() {
    let stack = stack(replicated()).await;
    let settings = redis_settings(&stack);
    let store = StockStore::new(connect(&settings).await);
    let p = running_promotion(10, 1, 1);
    store.sync(&p, IfStarted::LoadJustCreated).await.expect("load");
    let ids = OrderIdGenerator::new(random_worker_id());
    reserve(&store, p.id, 1, "r1", 1, ids.next_id())
        .await
        .expect("reserve");

    let key = SaleKeys::new(p.id).meta;
    let master = blocking(|| stack.master_part(&key));
    let paused_for = Duration::from_secs(15);
    blocking(|| stack.pause_part(&master));
    let paused_at = Instant::now();
    // The sale is read again: calls to the paused master time out, then go to the replica
    // promoted in its place. (It takes writes again only once it has a replica of its own,
    // the old master back: a write is confirmed on a replica or not at all.)
    let answered_after = loop {
        if let Ok(Some(stock)) = store.live_stock_of(p.sale()).await {
            assert_eq!(stock.remaining, 9);
            break paused_at.elapsed();
        }
        assert!(
            paused_at.elapsed() < paused_for,
            "still waiting for the paused master"
        );
    };
    blocking(|| stack.resume_part(&master));
    assert!(
        answered_after < paused_for - Duration::from_secs(3),
        "answered {answered_after:?} after the pause, the master paused for {paused_for:?}"
    );
    // Writes again once the old master is the new one's replica.
    poll_until(
        Duration::from_secs(20),
        "a reservation on the new master",
        || async {
            matches!(
                reserve(&store, p.id, 2, "r2", 1, ids.next_id()).await,
                Ok(ReserveOutcome::Reserved { .. })
            )
            .then_some(())
        },
    )
    .await;
}

/// The consumers' recovery, built as the consumers build it, on `stack`.
async fn recovery(stack: &PrivateStack, topic: &str) -> (SaleRecovery, sqlx::PgPool, Arc<JsonProducer>) {
    let redis = redis_settings(stack);
    let db: DatabaseOnly = stack.source().load().expect("settings");
    let pool = order_core::postgres::lazy_pool(&fresh_database(&db.database).await.expect("database"))
        .expect("pool");
    let pulsar: PulsarOnly = stack.source().load().expect("settings");
    let pulsar: PulsarSettings = pulsar.pulsar;
    let client = order_core::bus::connect(&pulsar).await.expect("pulsar");
    let producer = JsonProducer::new(&client, pulsar.topic(topic), None, Duration::from_secs(5))
        .await
        .expect("producer");
    let recovery = SaleRecovery {
        db: pool.clone(),
        stock: StockStore::new(connect(&redis).await),
        confirmer: confirmer(&redis).await,
        reader: TopicReader::new(client, pulsar.topic(topic)),
        read_deadline: Duration::from_secs(30),
    };
    (recovery, pool, Arc::new(producer))
}

async fn running_sale(pool: &sqlx::PgPool, stock: i64) -> Promotion {
    let now = Utc::now();
    PromotionRepo::new(pool.clone())
        .insert(&PromotionFields {
            sku_id: "sku".into(),
            title: "t".into(),
            price_cents: 100,
            stock,
            per_user_limit: 1,
            starts_at: now - chrono::Duration::seconds(1),
            ends_at: now + chrono::Duration::hours(1),
            access: Default::default(),
            shards: 1,
        })
        .await
        .expect("insert the sale")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_from_an_old_append_only_file_fences_its_sale_until_it_is_rebuilt_from_its_orders() {
    const STOCK: i64 = 10;
    let stack = stack(RedisKind::Node).await;
    let (recovery, pool, producer) = recovery(&stack, &unique("orders")).await;
    let store = recovery.stock.clone();
    let p = running_sale(&pool, STOCK).await;
    store.sync(&p, IfStarted::LoadJustCreated).await.expect("load");
    let shard = p.sale().shard(0);
    let now_ms = || async { store.redis_time_ms().await.ok() };

    // What the node will come back with: the sale loaded, nothing sold (the append-only
    // files as they are now; a clean stop flushes them).
    blocking(|| stack.stop_part("redis"));
    let saved = std::env::temp_dir().join(unique("old-aof"));
    copy_dir(&stack.redis_dir().join("appendonlydir"), &saved);
    blocking(|| stack.start_part("redis"));
    // A restart is a new history: the sale is fenced until rebuilt (nothing to read yet).
    let health = poll_until(Duration::from_secs(10), "Redis back", || async {
        recovery.health(&p, now_ms().await?).await.ok()
    })
    .await;
    assert!(matches!(health, SaleHealth::Fenced { .. }), "{health:?}");
    recovery.recover(&p, &[]).await.expect("recover");
    let now = now_ms().await.expect("clock");
    assert_eq!(
        recovery.health(&p, now).await.expect("health"),
        SaleHealth::Healthy
    );

    // Three orders are accepted: reserved, confirmed, published (none persisted yet).
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut accepted: Vec<OrderId> = Vec::new();
    for user in 1..=3 {
        let id = ids.next_id();
        reserve(&store, p.id, user, &format!("r{user}"), 1, id)
            .await
            .expect("reserve");
        assert_eq!(
            recovery
                .confirmer
                .confirm(shard, id, Claim::New)
                .await
                .expect("confirm"),
            Confirmation::Confirmed
        );
        let event = Reservation {
            order_id: id,
            user_id: UserId::parse(user).expect("a user"),
            quantity: Quantity::parse(1).expect("one unit"),
            reserved_at_ms: Utc::now().timestamp_millis(),
            request_id: RequestId::parse(format!("r{user}")).expect("a request id"),
        }
        .accepted_event(&p);
        producer.publish(&event).await.expect("publish");
        accepted.push(id);
    }

    // The node crashes and comes back from the old files: the three reservations are gone.
    blocking(|| stack.kill_part("redis"));
    std::fs::remove_dir_all(stack.redis_dir().join("appendonlydir")).expect("drop the newer files");
    copy_dir(&saved, &stack.redis_dir().join("appendonlydir"));
    blocking(|| stack.start_part("redis"));
    let health = poll_until(Duration::from_secs(10), "Redis back", || async {
        recovery.health(&p, now_ms().await?).await.ok()
    })
    .await;
    assert!(matches!(health, SaleHealth::Fenced { .. }), "{health:?}");
    assert_eq!(
        store
            .live_stock_of(p.sale())
            .await
            .expect("live")
            .expect("loaded")
            .remaining,
        STOCK,
        "the node lost the three units it had sold"
    );
    // Fenced: nobody buys what the node believes is left.
    assert_eq!(
        reserve(&store, p.id, 50, "r50", 1, ids.next_id())
            .await
            .expect("reserve"),
        ReserveOutcome::Recovering
    );

    let recovered = recovery.recover(&p, &[]).await.expect("recover");
    assert_eq!(
        (recovered.from_broker, recovered.queued, recovered.stored),
        (3, 3, 0)
    );
    assert_eq!(recovered.repair.remaining, STOCK - 3);
    // The three buyers' retries get their orders back; then exactly what is left sells.
    for (user, id) in (1..=3).zip(&accepted) {
        match reserve(&store, p.id, user, &format!("r{user}"), 1, ids.next_id())
            .await
            .expect("reserve")
        {
            ReserveOutcome::Duplicate {
                order_id, pending, ..
            } => {
                assert_eq!((order_id, pending), (*id, true));
            }
            other => panic!("{other:?}"),
        }
    }
    let mut sold = 0;
    for user in 100..120 {
        match reserve(&store, p.id, user, "late", 1, ids.next_id())
            .await
            .expect("reserve")
        {
            ReserveOutcome::Reserved { .. } => sold += 1,
            ReserveOutcome::SoldOut => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sold, STOCK - 3);
    let _ = std::fs::remove_dir_all(saved);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_pace_does_not_grant_again_what_a_lost_write_had_granted() {
    let stack = stack(replicated()).await;
    let settings = redis_settings(&stack);
    let scope = unique("pace");
    let pace = GlobalPace::new(connect(&settings).await, &scope, 100.0, 10);
    // A first grant records the bucket's history on both nodes.
    assert_eq!(pace.try_acquire(10).await.expect("pace"), None);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let key = format!("seckill:pace:{scope}");
    let master = blocking(|| stack.master_part(&key));
    let replica = blocking(|| stack.replica_part(&key));
    blocking(|| stack.pause_part(&replica));
    // A full burst, granted on the master only.
    assert_eq!(pace.try_acquire(10).await.expect("pace"), None);
    blocking(|| stack.kill_part(&master));
    blocking(|| stack.resume_part(&replica));
    wait_for_another_master(&stack, &key, &master).await;
    // The old master comes back as a replica: the new one takes writes again.
    blocking(|| stack.start_part(&master));
    blocking(|| stack.wait_part("redis"));
    let wait = poll_until(
        Duration::from_secs(20),
        "the promoted replica to answer",
        || async { pace.try_acquire(10).await.ok() },
    )
    .await;
    assert!(
        wait.is_some(),
        "the burst spent before the failover was granted again"
    );
}

/// A gateway starting while a replica lags is not refused its worker id: a take the replicas
/// did not confirm in time does not count (nothing is minted on it), nor does one a master
/// refuses without its replica (`NOREPLICAS`, on the Cluster once the lag passes
/// `min-replicas-max-lag`); it is asked for again until they catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_taken_while_a_replica_lags_is_leased_once_the_replica_catches_up() {
    let stack = stack(replicated()).await;
    let settings = redis_settings(&stack);
    let replica_timeout = Duration::from_millis(300);
    let worker_id = random_worker_id();
    let key = format!("seckill:worker:{worker_id}");
    let replica = blocking(|| stack.replica_part(&key));
    blocking(|| stack.pause_part(&replica));
    let confirmations = confirmer(&settings).await;
    let acquiring = tokio::spawn(WorkerLease::acquire(
        confirmations.connection(),
        unique("lagging"),
        LeaseSettings {
            ttl: Duration::from_secs(15),
            worker_id: Some(worker_id),
            replicas: settings.replicas_acked(),
            replica_timeout,
        },
    ));
    let master = connect(&settings).await;
    poll_until(Duration::from_secs(10), "the take on the master", || {
        let mut master = master.clone();
        let key = key.clone();
        async move {
            let holder: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut master).await.ok()?;
            holder.map(|_| ())
        }
    })
    .await;
    // Until the master refuses writes without its replica (past `min-replicas-max-lag`):
    // every take since went unconfirmed, then was refused.
    let probe = format!("{{{key}}}:probe");
    poll_until(Duration::from_secs(20), "the master to refuse writes", || {
        let mut master = master.clone();
        let probe = probe.clone();
        async move {
            let refused = redis::cmd("SET")
                .arg(&probe)
                .arg(1)
                .query_async::<()>(&mut master)
                .await
                .err()?;
            (refused.code() == Some("NOREPLICAS")).then_some(())
        }
    })
    .await;
    assert!(
        !acquiring.is_finished(),
        "no lease (and no failed start) while only the master holds it"
    );
    blocking(|| stack.resume_part(&replica));
    let lease = acquiring
        .await
        .expect("join")
        .expect("the worker id, once the replica has it");
    assert_eq!(lease.worker_id(), Some(worker_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_id_whose_node_changed_history_is_not_handed_out_for_one_lease_length() {
    let stack = stack(replicated()).await;
    let settings = redis_settings(&stack);
    // Long enough to outlast the failover below: the first holder still mints after it.
    let ttl = Duration::from_secs(12);
    let lease_settings = |worker_id| LeaseSettings {
        ttl,
        worker_id,
        replicas: settings.replicas_acked(),
        replica_timeout: Duration::from_millis(500),
    };
    let confirmations = confirmer(&settings).await;
    let first = WorkerLease::acquire(confirmations.connection(), unique("a"), lease_settings(None))
        .await
        .expect("a lease");
    let id = first.worker_id().expect("held");
    // Its gateway is paused (no renewal) while the lease's master fails over, and the
    // promoted replica lacks the lease (lost with the old history: dropped here, as a
    // replica that missed the write would).
    let key = format!("seckill:worker:{id}");
    let master = blocking(|| stack.master_part(&key));
    blocking(|| stack.kill_part(&master));
    wait_for_another_master(&stack, &key, &master).await;
    blocking(|| stack.start_part(&master));
    blocking(|| stack.wait_part("redis"));
    let mut conn = connect(&settings).await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("DEL");
    assert!(
        first.mint().is_ok(),
        "the first holder still believes in its lease"
    );

    let second = poll_until(
        Duration::from_secs(60),
        "the worker id, once its quarantine is over",
        || async {
            WorkerLease::acquire(confirmations.connection(), unique("b"), lease_settings(Some(id)))
                .await
                .ok()
        },
    )
    .await;
    assert!(
        first.mint().is_err(),
        "two gateways would mint with worker id {id}"
    );
    let minted: HashSet<OrderId> = (0..100).map(|_| second.mint().expect("mint")).collect();
    assert_eq!(minted.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_sale_missing_from_redis_reads_as_lost_and_a_loaded_one_as_healthy() {
    let stack = stack(replicated()).await;
    let (recovery, pool, _) = recovery(&stack, &unique("orders")).await;
    let p = running_sale(&pool, 5).await;
    let now_ms = recovery.stock.redis_time_ms().await.expect("clock");
    assert_eq!(
        recovery.health(&p, now_ms).await.expect("health"),
        SaleHealth::Lost
    );
    recovery
        .stock
        .sync(&p, IfStarted::LoadJustCreated)
        .await
        .expect("load");
    assert_eq!(
        recovery.health(&p, now_ms).await.expect("health"),
        SaleHealth::Healthy
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_sale_missing_from_redis_is_left_alone() {
    let stack = stack(replicated()).await;
    let (recovery, pool, _) = recovery(&stack, &unique("orders")).await;
    let now = Utc::now();
    let repo = PromotionRepo::new(pool.clone());
    let p = repo
        .insert(&PromotionFields {
            sku_id: "sku".into(),
            title: "t".into(),
            price_cents: 100,
            stock: 5,
            per_user_limit: 1,
            starts_at: now - chrono::Duration::hours(3),
            ends_at: now - chrono::Duration::hours(2),
            access: Default::default(),
            shards: 1,
        })
        .await
        .expect("insert the sale");
    let now_ms = recovery.stock.redis_time_ms().await.expect("clock");
    assert_eq!(
        recovery.health(&p, now_ms).await.expect("health"),
        SaleHealth::Lost
    );
    assert!(repo
        .mark_keys_retired(p.id, now - chrono::Duration::hours(1))
        .await
        .expect("retire"));
    // Its keys left Redis on purpose: nothing rebuilds them.
    assert_eq!(
        recovery.health(&p, now_ms).await.expect("health"),
        SaleHealth::Retired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_shard_lends_none_of_its_stock_to_the_other_shards() {
    let settings: RedisOnly = order_core::test_support::local_source().load().expect("settings");
    let store = StockStore::new(connect(&settings.redis).await);
    let confirmer = confirmer(&settings.redis).await;
    let p = running_promotion(3, 1, 3);
    store.sync(&p, IfStarted::LoadJustCreated).await.expect("load");
    let sale = p.sale();
    // Shard 1's data was verified in another Redis history (as after a failover): the first
    // check on its node fences it.
    let mut conn = connect(&settings.redis).await;
    let _: () = redis::cmd("HSET")
        .arg(SaleKeys::of(sale.shard(1)).meta)
        .arg("history")
        .arg("0000000000000000000000000000000000000000")
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let check = confirmer.check(sale.shard(1)).await.expect("check");
    assert!(
        matches!(
            check.history,
            order_core::redis::durability::ShardHistory::Fenced { .. }
        ),
        "{check:?}"
    );
    // Buyers of shard 0 take its unit, then shard 2's (lent); shard 1's stays where it is.
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut outcomes = Vec::new();
    for user in (1..).filter(|u| sale.shard_of(*u) == sale.shard(0)).take(3) {
        let outcome = order_core::test_support::reserve_in(&store, sale, user, "r", 1, ids.next_id())
            .await
            .expect("reserve");
        outcomes.push(matches!(outcome, ReserveOutcome::Reserved { .. }));
    }
    assert_eq!(outcomes, vec![true, true, false]);
    let shards = store.shard_stocks(sale).await.expect("shards");
    assert_eq!(shards[1].expect("loaded").remaining, 1, "{shards:?}");
    store.forget_promotion(sale).await.expect("cleanup");
}
