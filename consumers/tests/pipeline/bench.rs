//! The load bench's flash sale against a real gateway and real consumers: every accepted
//! order reaches the database, the bench's invariant checks pass, its report and charts are
//! written, and the same checks fail when an accepted order is missing.

use std::collections::HashMap;
use std::time::Duration;

use bench::flash_sale::{FlashSale, System};
use bench::loadgen::{Outcome, Pace};
use bench::target::{Target, WriterPace};
use bench::verify::{self, Seen};
use order_core::test_support::{local_source, unique};

use crate::helpers::{consumers_source, spawn_consumers, spawn_gateway};

#[tokio::test]
async fn a_bench_flash_sale_is_persisted_whole_and_its_checks_catch_a_lost_order() {
    let app = spawn_gateway(local_source()).await;
    let pace = WriterPace {
        max_rows_per_sec: 400.0,
        batch_size: 50,
    };
    let consumers = spawn_consumers(
        consumers_source(&app, local_source())
            .with_var("APP_WRITER__MAX_ROWS_PER_SEC", "400")
            .with_var("APP_WRITER__INITIAL_ROWS_PER_SEC", "400")
            .with_var("APP_WRITER__BATCH_SIZE", "50"),
    )
    .await;
    let target = Target::new(
        &app.address,
        app.settings.auth.admin_key.clone(),
        app.settings.auth.jwt_secret.clone(),
        None,
        app.settings.database.clone(),
        app.settings.redis.clone(),
        pace,
    );
    let sale = FlashSale {
        users: 800,
        stock: 300,
        per_user_limit: 1,
        connections: 16,
        pace: Pace::Fixed(400.0),
        duration: Duration::from_secs(3),
        retry_fraction: 0.05,
        again_fraction: 0.10,
        seed: 42,
        max_requests: 0,
        drain_timeout: Duration::from_secs(60),
        verify: true,
        app_retries: None,
    };
    let report = sale
        .run(&target, "bench-e2e", &System::Gateway, None)
        .await
        .expect("the bench runs");

    let v = report.verification.as_ref().expect("the run was verified");
    assert!(v.ok(), "{}", v.summary());
    // 1,200 tries by 800 buyers for 300 units: the sale sells out, exactly.
    assert_eq!(report.requests, 1200);
    assert_eq!((v.accepted, v.persisted), (300, 300));
    assert!(report.outcome(Outcome::SoldOut) > 0, "{:?}", report.outcomes);
    assert_eq!(report.outcome(Outcome::Error), 0, "{:?}", report.outcomes);
    assert_eq!(v.stock_drift, Some(0));
    let pipeline = report.pipeline.as_ref().expect("pipeline figures");
    assert_eq!(pipeline.accepted_orders, 300);
    let inserted: f64 = pipeline.db_rows_per_sec.iter().map(|(_, n)| n).sum();
    assert_eq!(inserted, 300.0);

    let dir = std::env::temp_dir().join(unique("bench-report"));
    bench::report::write(&dir, &[&report]).expect("write the report");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json")).expect("JSON");
    assert_eq!(json[0]["verification"]["persisted"], 300);
    for chart in ["throughput", "latency", "db"] {
        let svg = std::fs::read_to_string(dir.join(format!("bench-e2e-{chart}.svg"))).expect("chart");
        assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{chart}");
    }

    // The same checks against the same database fail when an accepted order is missing.
    let db = app.pool();
    let promotion_id: i64 =
        sqlx::query_scalar("SELECT promotion_id FROM orders WHERE kind = 'seckill' LIMIT 1")
            .fetch_one(&db)
            .await
            .expect("the sale's promotion");
    let rows: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT user_id, request_id, id FROM orders WHERE promotion_id = $1")
            .bind(promotion_id)
            .fetch_all(&db)
            .await
            .expect("orders");
    let mut accepted: HashMap<(u64, String), i64> = rows
        .into_iter()
        .map(|(user, request, id)| ((user as u64, request), id))
        .collect();
    fn seen(promotion_id: i64, accepted: &HashMap<(u64, String), i64>) -> Seen<'_> {
        Seen {
            promotion_id,
            stock: 300,
            per_user_limit: 1,
            accepted,
            conflicting_answers: 0,
            client_errors: 0,
        }
    }
    let store = app.stock_store().await;
    let again = verify::gateway_sale(&db, &store, &seen(promotion_id, &accepted), pace)
        .await
        .expect("verify");
    assert!(again.ok(), "{}", again.summary());
    accepted.insert((1_000_000, "never-persisted".into()), 1);
    let broken = verify::gateway_sale(&db, &store, &seen(promotion_id, &accepted), pace)
        .await
        .expect("verify");
    assert_eq!(broken.lost, 1);
    assert!(!broken.ok());
    consumers.stop().await;
}
