//! The patched pulsar crate against pulsar-lite: everything published is consumed through a
//! Shared subscription (unpatched, consumers receive nothing: the crate insists on the
//! optional frame checksum that pulsar-lite omits).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use consumers::settings::Settings;
use futures::StreamExt;
use order_core::bus;
use order_core::test_support::{local_source, unique};
use pulsar::consumer::Consumer;
use pulsar::producer::ProducerOptions;
use pulsar::{SubType, TokioExecutor};

const N: usize = 2_000;

async fn next_batch(consumer: &mut Consumer<String, TokioExecutor>, seen: &mut Vec<String>) {
    match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
        Ok(Some(Ok(msg))) => {
            seen.push(msg.deserialize().expect("utf-8 payload"));
            consumer.ack(&msg).await.expect("ack");
        }
        Ok(Some(Err(e))) => panic!("consumer error: {e}"),
        Ok(None) => panic!("consumer stream ended"),
        Err(_) => {}
    }
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

    let (mut first, mut second) = (Vec::new(), Vec::new());
    let (mut c0, mut c1) = {
        let mut it = consumers.into_iter();
        (it.next().expect("consumer 0"), it.next().expect("consumer 1"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() + second.len() < N {
        assert!(
            Instant::now() < deadline,
            "consumed only {} of {N} messages",
            first.len() + second.len()
        );
        tokio::join!(next_batch(&mut c0, &mut first), next_batch(&mut c1, &mut second));
    }

    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
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
