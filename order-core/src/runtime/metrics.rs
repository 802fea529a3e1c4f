//! Prometheus metrics: one recorder per process, rendered at `/metrics`.
//!
//! Labels are fixed-cardinality (routes as templates, outcomes and reasons from closed
//! sets); never user ids, order ids or raw paths.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: 100 µs … 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];
const BATCH_BUCKETS: [f64; 10] = [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

/// Install the recorder (once per process; later calls return the same handle).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &BATCH_BUCKETS))
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test process): keep ours for rendering.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Time a dependency call: `seckill_dependency_call_seconds{dependency, operation}`.
pub async fn timed<T>(
    dependency: &'static str,
    operation: &'static str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("seckill_dependency_call_seconds", "dependency" => dependency, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}
