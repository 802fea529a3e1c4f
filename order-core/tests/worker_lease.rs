//! Worker-id leases against a real Redis: live gateways never share a worker id, an
//! insisted-on id held by a live gateway is refused, and a gateway that stops renewing (a
//! paused process) stops minting before its successor can start, whose ids all come later.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use order_core::domain::ids::OrderId;
use order_core::redis::worker_lease::{LeaseError, LeaseSettings, WorkerLease};
use order_core::runtime::settings::RedisOnly;
use order_core::runtime::shutdown::Shutdown;
use order_core::test_support::{local_source, poll_until, unique};

async fn lease(ttl_ms: u64, worker_id: Option<u16>) -> Result<Arc<WorkerLease>, LeaseError> {
    let settings: RedisOnly = local_source().load().expect("settings");
    let conn = order_core::redis::connect(&settings.redis).await.expect("redis");
    WorkerLease::acquire(
        conn,
        unique("gateway"),
        LeaseSettings {
            ttl: Duration::from_millis(ttl_ms),
            worker_id,
            replicas: settings.redis.replicas_acked(),
            replica_timeout: Duration::from_millis(settings.redis.durability.replica_timeout_ms),
        },
    )
    .await
}

#[tokio::test]
async fn gateways_starting_together_lease_distinct_worker_ids() {
    let leases = futures::future::join_all((0..8).map(|_| lease(5000, None))).await;
    let ids: Vec<u16> = leases
        .iter()
        .map(|l| l.as_ref().expect("a lease").worker_id().expect("held"))
        .collect();
    let distinct: HashSet<u16> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}

#[tokio::test]
async fn an_insisted_on_worker_id_held_by_a_live_gateway_is_refused() {
    let first = lease(1000, None).await.expect("a lease");
    let shutdown = Shutdown::new();
    first.spawn_renewal(shutdown.subscribe());
    let id = first.worker_id().expect("held");
    // Waits out one lease length, during which the first keeps renewing.
    let second = lease(1000, Some(id)).await;
    assert!(
        matches!(second, Err(LeaseError::Taken(taken)) if taken == id),
        "{second:?}"
    );
    assert!(first.mint().is_ok(), "the live holder keeps minting");
    shutdown.trigger();
}

#[tokio::test]
async fn a_lease_that_is_not_renewed_stops_minting_and_its_successor_mints_later_ids() {
    // No renewal task: what a gateway stopped with SIGSTOP looks like from Redis.
    let paused = lease(1000, None).await.expect("a lease");
    let id = paused.worker_id().expect("held");
    let mut minted: Vec<OrderId> = Vec::new();
    poll_until(Duration::from_secs(5), "minting to stop", || {
        let result = paused.mint();
        if let Ok(order_id) = result {
            minted.push(order_id);
        }
        async move { result.is_err().then_some(()) }
    })
    .await;
    assert!(!minted.is_empty());

    let successor = lease(1000, Some(id)).await.expect("the expired id is free again");
    assert_eq!(successor.worker_id(), Some(id));
    let newest = *minted.iter().max().expect("ids");
    for _ in 0..1000 {
        let order_id = successor.mint().expect("the successor mints");
        assert!(
            order_id > newest,
            "{order_id} is not after the paused holder's {newest}"
        );
    }
    assert!(paused.mint().is_err(), "the paused holder still does not mint");
}
