//! Pacing: inbound far above the configured rate, inserts stay at or under the cap (counted
//! per one-second window from the rows' commit times, with one batch of slack), and the
//! backlog drains once the flood ends.

use std::sync::Arc;
use std::time::Duration;

use order_core::test_support::local_source;

use crate::helpers::*;

const RATE: i64 = 40;

#[tokio::test]
async fn inserts_never_exceed_the_configured_rate_and_the_backlog_drains() {
    const ORDERS: i64 = 160;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let promotion_id = create_running(&app, ORDERS).await;
    // The flood is accepted before the writer starts: it all waits in Pulsar.
    let accepted = flash_sale(&app, promotion_id, ORDERS).await;
    assert_eq!(accepted.len() as i64, ORDERS);

    let rate = RATE.to_string();
    let consumers = spawn_consumers(
        consumers_source(&app, local_source())
            .with_var("APP_WRITER__MIN_ROWS_PER_SEC", &rate)
            .with_var("APP_WRITER__MAX_ROWS_PER_SEC", &rate)
            .with_var("APP_WRITER__INITIAL_ROWS_PER_SEC", &rate),
    )
    .await;
    let pool = app.pool();
    let rows = wait_for_rows(&pool, promotion_id, ORDERS as usize, Duration::from_secs(60)).await;
    assert_exactly(&rows, &accepted, 1999);

    let stamps = commit_stamps(&pool, promotion_id).await;
    let batch = RATE / 4; // the writer's batch limit at this rate
    let worst = busiest_second(&stamps) as i64;
    assert!(
        worst <= RATE + batch,
        "{worst} rows in one second; the cap is {RATE}/s (+{batch} slack)"
    );
    let span = stamps.last().expect("rows") - stamps.first().expect("rows");
    assert!(
        span >= (ORDERS - RATE - batch) as f64 / RATE as f64,
        "{ORDERS} rows in {span:.2} s is faster than {RATE}/s"
    );
    let status: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{}/status", consumers.port))
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["writer_rows_per_sec"].as_f64(), Some(RATE as f64));
    assert_eq!(status["rows_inserted"].as_u64(), Some(ORDERS as u64));
    consumers.stop().await;
}
