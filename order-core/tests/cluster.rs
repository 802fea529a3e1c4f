//! On a Redis Cluster (the three masters of `scripts/stack.sh start redis-cluster`): calls that
//! touch several sales at once, each sale on its own node, go through without a cross-slot
//! command, and a sale's shards land on different nodes.

use chrono::Utc;
use order_core::domain::ids::OrderIdGenerator;
use order_core::domain::lifecycle::OrderStatus;
use order_core::domain::promotion::Promotion;
use order_core::domain::shards::{key_slot, SaleShards};
use order_core::redis::deployment::DeploymentStore;
use order_core::redis::stock::{IfStarted, PersistedOrder, ReserveOutcome, StockStore};
use order_core::runtime::settings::RedisOnly;
use order_core::test_support::{cluster_source, random_promotion_id, random_worker_id, reserve_in, unique};

/// Which of the cluster's masters serves a slot, by asking it (`CLUSTER SHARDS` would do too).
async fn node_of(conn: &mut order_core::redis::RedisConnection, slot: u16) -> u16 {
    let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .expect("CLUSTER SLOTS");
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => *n as u16,
        other => panic!("a number: {other:?}"),
    };
    // Each range: [from, to, [master host, port, id, …], [replica host, port, id, …], …].
    let range = ranges
        .into_iter()
        .find(|r| (int(&r[0])..=int(&r[1])).contains(&slot))
        .expect("every slot is served");
    match &range[2] {
        redis::Value::Array(master) => int(&master[1]),
        other => panic!("a master: {other:?}"),
    }
}

fn promotion(id: i64, stock: i64, shards: u16) -> Promotion {
    Promotion {
        id,
        ..order_core::test_support::running_promotion(stock, 1, shards)
    }
}

#[tokio::test]
async fn sales_on_different_nodes_are_read_and_written_together() {
    let settings: RedisOnly = cluster_source().load().expect("settings");
    let mut conn = order_core::redis::connect(&settings.redis)
        .await
        .expect("cluster");
    assert!(conn.is_cluster());
    let store = StockStore::new(conn.clone());

    // One single-shard sale per node.
    let mut sales: Vec<Promotion> = Vec::new();
    let mut ports = std::collections::HashSet::new();
    while sales.len() < 3 {
        let id = random_promotion_id();
        let port = node_of(&mut conn, key_slot(format!("{{promo:{id}}}").as_bytes())).await;
        if ports.insert(port) {
            sales.push(promotion(id, 5, 1));
        }
    }
    for p in &sales {
        store.sync(p, IfStarted::LoadJustCreated).await.expect("load");
    }
    let ids = OrderIdGenerator::new(random_worker_id());
    let mut persisted = Vec::new();
    for p in &sales {
        let order_id = ids.next_id();
        let outcome = reserve_in(&store, p.sale(), 7, "r", 1, order_id)
            .await
            .expect("reserve");
        assert!(matches!(outcome, ReserveOutcome::Reserved { .. }), "{outcome:?}");
        persisted.push(PersistedOrder {
            sale: p.sale(),
            order_id,
            status: OrderStatus::PendingPayment,
            user_id: order_core::domain::ids::UserId::parse(7).expect("a user"),
            total_cents: 100,
            expires_at_ms: None,
            created_at_ms: Utc::now().timestamp_millis(),
        });
    }
    let all: Vec<SaleShards> = sales.iter().map(|p| p.sale()).collect();
    let live = store.live_stock(&all).await.expect("live stock of three nodes");
    assert!(live.iter().all(|l| l.map(|l| l.remaining) == Some(4)), "{live:?}");
    let snapshots = store
        .snapshots(&all, &[None, None, None])
        .await
        .expect("snapshots");
    assert!(snapshots.iter().all(|s| s.is_some()));
    store
        .mark_persisted(&persisted)
        .await
        .expect("markers on three nodes");
    for p in &sales {
        assert_eq!(store.pending_count(p.sale()).await.expect("pending"), 0);
    }
    let deployment = DeploymentStore::new(conn.clone(), &unique("cluster"));
    let counts: Vec<(i64, &'static str, u64)> = sales.iter().map(|p| (p.id, "accepted", 1)).collect();
    deployment
        .set_counts("gw-a", &counts)
        .await
        .expect("counts on three nodes");
    assert_eq!(
        deployment
            .counts(sales[2].id, "gw-b")
            .await
            .expect("counts")
            .get("accepted"),
        Some(&1)
    );
    for p in &sales {
        store.forget_promotion(p.sale()).await.expect("cleanup");
    }
}

#[tokio::test]
async fn the_shards_of_a_sale_are_served_by_different_nodes() {
    let settings: RedisOnly = cluster_source().load().expect("settings");
    let mut conn = order_core::redis::connect(&settings.redis)
        .await
        .expect("cluster");
    let sale = SaleShards::new(random_promotion_id(), 3).expect("shards");
    let mut ports = std::collections::HashSet::new();
    for shard in sale.shards() {
        ports.insert(node_of(&mut conn, key_slot(format!("{{{}}}", shard.tag()).as_bytes())).await);
    }
    assert_eq!(ports.len(), 3, "three shards on three nodes: {ports:?}");
}
