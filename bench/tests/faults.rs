//! The fault suite in its reduced form (CI), on the shape production runs: three gateways
//! and two consumers processes on a private stack, the sale's traffic spread over the
//! gateways, apps retrying on another gateway. One small sale per fault: a gateway killed,
//! paused and paused past its worker-id lease; consumers killed; the broker killed and
//! paused; Redis and PostgreSQL paused, Redis also under a flood that the gateways shed;
//! operators pressing every stock button mid-sale; on a replicated Redis (the Cluster and
//! Sentinel passes), the sale's master paused past its failover (a split brain) and killed
//! while its replica lagged.
//! Every accepted order ends up persisted once, nothing is oversold, Redis' remaining +
//! reserved units equal the stock configured at the end.
//! Needs the workspace's gateway and consumers binaries (the test command builds them).

use std::time::Duration;

use bench::faults::{self, Binaries, Fault, FaultRow, FaultSettings};
use order_core::test_support::RedisKind;

/// What every row of every fault must show: its checks passed, nothing oversold, lost or
/// duplicated, every accepted order persisted.
fn the_invariants_hold(row: &FaultRow, table: &str) {
    assert!(
        row.failures.is_empty(),
        "{}: {:?}\n{table}",
        row.fault,
        row.failures
    );
    assert_eq!((row.oversold, row.lost, row.duplicated), (0, 0, 0), "{table}");
    assert_eq!(row.persisted, row.accepted, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_on_three_gateways_and_two_consumers_survive_crashes_and_pauses_without_loss() {
    // On `make test`'s cluster pass (REDIS_CLUSTER_NODES set) the deployment runs on a
    // Redis Cluster of its own (a replica per master), each sale on three shards, one node is
    // restarted, and the masters fail over; on its Sentinel pass, on a primary and a replica
    // under Sentinels, with the same failovers.
    let redis = order_core::test_support::redis_run();
    let cluster = redis == RedisKind::Cluster;
    let mut faults = vec![
        Fault::GatewayKill,
        Fault::GatewayPause,
        Fault::GatewayLeaseLapse,
        Fault::ConsumersKill,
        Fault::BrokerKill,
        Fault::BrokerPause,
        Fault::RedisPause,
        Fault::RedisPauseFlood,
        Fault::PostgresPause,
        Fault::AdminActions,
    ];
    if cluster {
        faults.push(Fault::RedisNodeRestart);
    }
    let settings = FaultSettings {
        faults: faults.clone(),
        seeds: vec![7],
        users: 600,
        stock: 150,
        rate: 100.0,
        duration: Duration::from_secs(4),
        // Mid-sale: about 85 of the 150 units are taken by then.
        fault_at: Duration::from_millis(1000),
        // Longer than the pulsar client's connection retries (about 1.5 s): the consumers
        // must subscribe again by themselves.
        outage: Duration::from_secs(3),
        writer_rows_per_sec: 60.0,
        gateways: 3,
        consumers: 2,
        redis,
        shards: if cluster { 3 } else { 1 },
    };
    let bins = Binaries::beside_current_exe().expect("gateway and consumers binaries");
    let rows = faults::run(bins, &settings).await.expect("the fault suite runs");
    let table = faults::table(&rows);
    assert_eq!(rows.len(), faults.len(), "{table}");
    for row in &rows {
        the_invariants_hold(row, &table);
        // The operators add 2 × 5 units.
        let configured = if row.fault == Fault::AdminActions.name() {
            160
        } else {
            150
        };
        assert!(row.accepted > 0 && row.accepted <= configured, "{table}");
        assert_eq!(row.requests, 400, "{table}");
    }
    // The gateway's outage must have been felt, or the fault did not land mid-sale.
    assert!(rows[0].errors > 0, "{table}");
    // Orders piled up behind the paused Redis past the gateways' limits: the rest were shed.
    let flood = rows
        .iter()
        .find(|r| r.fault == Fault::RedisPauseFlood.name())
        .expect("the flood row");
    assert!(
        flood.shed > 0,
        "{:?}, errors by cause {:?}\n{table}",
        flood.outcomes,
        flood.error_causes
    );
    eprintln!("{table}");
}

/// On a replicated Redis (the Cluster on `make test`'s Cluster pass, Sentinel on the others):
/// the master holding
/// the sale paused past its failover (a split brain) and killed while its replica lagged, on
/// a deployment of its own. The sale sits on one shard, so the fault hits all of it, and has
/// stock left after the fault, so it must sell again once rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_redis_that_fails_over_mid_sale_loses_and_oversells_nothing_and_sells_again() {
    // The run's replicated shape; on the single-node pass, Sentinel.
    let redis = match order_core::test_support::redis_run() {
        RedisKind::Node => RedisKind::Sentinel,
        kind => kind,
    };
    let faults = vec![Fault::RedisMasterPause, Fault::RedisFailoverLagging];
    let settings = FaultSettings {
        faults: faults.clone(),
        seeds: vec![7],
        users: 600,
        // About 90 are taken when the fault hits: most of the stock is sold after it.
        stock: 300,
        rate: 100.0,
        duration: Duration::from_secs(4),
        fault_at: Duration::from_millis(1000),
        // Past the failover timeout (1 s) and the election.
        outage: Duration::from_secs(3),
        writer_rows_per_sec: 60.0,
        gateways: 3,
        consumers: 2,
        redis,
        shards: 1,
    };
    let bins = Binaries::beside_current_exe().expect("gateway and consumers binaries");
    let rows = faults::run(bins, &settings).await.expect("the failovers run");
    let table = faults::table(&rows);
    assert_eq!(rows.len(), faults.len(), "{table}");
    for row in &rows {
        the_invariants_hold(row, &table);
        // 10 s is the target on an idle machine (docs/FAULTS.md); a loaded one gets slack.
        assert!(
            row.accepting_again_secs.is_some_and(|s| s < 30.0),
            "{}: {table}",
            row.fault
        );
    }
    // The promoted replica really lacked writes the old master had taken; none became an order.
    let lagging = rows
        .iter()
        .find(|r| r.fault == Fault::RedisFailoverLagging.name())
        .expect("the lagging row");
    assert!(lagging.writes_lost.is_some_and(|n| n > 0), "{table}");
    eprintln!("{table}");
}
