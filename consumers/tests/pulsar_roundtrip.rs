//! The patched pulsar crate against pulsar-lite: everything published is consumed through a
//! Shared subscription (unpatched, consumers receive nothing: the crate insists on the
//! optional frame checksum that pulsar-lite omits).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumers::settings::Settings;
use futures::StreamExt;
use order_core::bus;
use order_core::test_support::{local_source, unique};
use pulsar::consumer::Consumer;
use pulsar::producer::ProducerOptions;
use pulsar::{SubType, TokioExecutor};

const N: usize = 2_000;

/// Take messages from `consumer` (acking each) until `seen` counts all `N` between both
/// consumers or `deadline` passes; what this consumer took. Each consumer drains on its own:
/// one with nothing left must not hold up the other.
async fn drain(
    mut consumer: Consumer<String, TokioExecutor>,
    seen: Arc<AtomicUsize>,
    deadline: Instant,
) -> Vec<String> {
    let mut mine = Vec::new();
    while seen.load(Ordering::SeqCst) < N && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            Ok(Some(Ok(msg))) => {
                mine.push(msg.deserialize().expect("utf-8 payload"));
                consumer.ack(&msg).await.expect("ack");
                seen.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Some(Err(e))) => panic!("consumer error: {e}"),
            Ok(None) => panic!("consumer stream ended"),
            Err(_) => {}
        }
    }
    mine
}

#[tokio::test]
async fn every_published_message_is_consumed_once_through_a_shared_subscription() {
    let settings: Settings = local_source().load().expect("settings");
    let client = bus::connect(&settings.pulsar)
        .await
        .expect("connect to pulsar-lite");
    let topic = settings.pulsar.topic(&unique("roundtrip"));

    // Two consumers on one Shared subscription, subscribed before anything is published.
    let mut consumers = Vec::new();
    for i in 0..2 {
        let consumer: Consumer<String, TokioExecutor> = client
            .consumer()
            .with_topic(&topic)
            .with_subscription("roundtrip")
            .with_subscription_type(SubType::Shared)
            .with_consumer_name(format!("roundtrip-{i}"))
            .build()
            .await
            .expect("subscribe");
        consumers.push(consumer);
    }

    let mut producer = client
        .producer()
        .with_topic(&topic)
        .with_options(ProducerOptions {
            batch_size: Some(100),
            batch_timeout: Some(Duration::from_millis(5)),
            ..Default::default()
        })
        .build()
        .await
        .expect("create producer");
    let mut receipts = Vec::with_capacity(N);
    for i in 0..N {
        receipts.push(
            producer
                .send_non_blocking(format!("msg-{i}"))
                .await
                .expect("enqueue"),
        );
    }
    producer.send_batch().await.expect("flush the last batch");
    for receipt in receipts {
        receipt.await.expect("broker receipt");
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = Arc::new(AtomicUsize::new(0));
    let drained: Vec<_> = consumers
        .into_iter()
        .map(|consumer| tokio::spawn(drain(consumer, Arc::clone(&seen), deadline)))
        .collect();
    let mut taken = Vec::new();
    for task in drained {
        taken.push(task.await.expect("a consumer's task"));
    }
    let (first, second) = (&taken[0], &taken[1]);
    assert_eq!(
        first.len() + second.len(),
        N,
        "consumed {} of {N} messages within 60 s",
        first.len() + second.len()
    );

    let all: Vec<String> = first.iter().chain(second).cloned().collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), N, "no message delivered twice");
    let expected: HashSet<String> = (0..N).map(|i| format!("msg-{i}")).collect();
    assert_eq!(distinct.len(), N);
    assert!(
        all.iter().all(|m| expected.contains(m)),
        "only published messages arrive"
    );
    assert!(
        !first.is_empty() && !second.is_empty(),
        "a Shared subscription spreads messages over both consumers ({} / {})",
        first.len(),
        second.len()
    );
}
