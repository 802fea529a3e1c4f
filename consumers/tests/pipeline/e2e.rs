//! A flash sale through the gateway with consumers running: exactly the stock becomes
//! order rows, each matching its 202, and the promotion reconciles.

use std::sync::Arc;
use std::time::Duration;

use order_core::test_support::local_source;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn every_accepted_order_becomes_exactly_one_row() {
    const STOCK: i64 = 30;
    let app = Arc::new(spawn_gateway(local_source()).await);
    let consumers = spawn_consumers(consumers_source(&app, local_source())).await;
    let promotion_id = create_running(&app, STOCK).await;

    let accepted = flash_sale(&app, promotion_id, 4 * STOCK).await;
    assert_eq!(accepted.len() as i64, STOCK);

    let pool = app.pool();
    let rows = wait_for_rows(&pool, promotion_id, STOCK as usize, Duration::from_secs(30)).await;
    assert_exactly(&rows, &accepted, 1999);
    assert!(rows.iter().all(|r| r.status == "pending_payment"));

    // Once persisted, the buyer sees the database's state.
    let (order_id, user) = accepted.iter().next().expect("an order");
    let view: Value = app
        .client
        .get(format!("{}/api/orders/{order_id}", app.address))
        .bearer_auth(app.token(*user))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["status"], "pending_payment");

    // Stats and reconciliation agree.
    let stats: Value = app
        .admin(Method::GET, &format!("/admin/promotions/{promotion_id}/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (stats["persisted"].as_i64(), stats["remaining"].as_i64()),
        (Some(STOCK), Some(0))
    );
    assert_eq!(stats["reserved"].as_i64(), Some(STOCK));
    assert!(
        stats["this_gateway"]["rejections"]["sold_out"]
            .as_u64()
            .expect("count")
            > 0
    );
    let report: Value = app
        .admin(
            Method::POST,
            &format!("/admin/promotions/{promotion_id}/reconcile"),
        )
        .send()
        .await
        .expect("reconcile")
        .json()
        .await
        .expect("json");
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["drift"], 0);

    // The consumers' metrics scrape cleanly and count the rows written.
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", consumers.port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let samples = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text format")
        .samples;
    let rows = samples
        .iter()
        .find(|s| s.metric == "seckill_writer_rows_inserted_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .expect("rows inserted counter");
    assert!(rows >= STOCK as f64, "{rows}");
    assert!(samples.iter().any(|s| s.metric == "seckill_writer_rows_per_sec"));
    assert!(samples
        .iter()
        .any(|s| s.metric == "seckill_writer_batch_rows_count"));
    consumers.stop().await;
}

#[tokio::test]
async fn reconciliation_detects_and_repairs_drift() {
    let app = Arc::new(spawn_gateway(local_source()).await);
    let consumers = spawn_consumers(consumers_source(&app, local_source())).await;
    let promotion_id = create_running(&app, 10).await;
    let accepted = flash_sale(&app, promotion_id, 4).await;
    let pool = app.pool();
    wait_for_rows(&pool, promotion_id, 4, Duration::from_secs(30)).await;
    consumers.stop().await;

    // Drift, as after a lost Redis write: remaining off by 3 and one reservation gone.
    let stock = app.stock_store().await;
    let lost = *accepted.keys().next().expect("order");
    let mut conn = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("redis");
    let keys = order_core::redis::stock::PromotionKeys::new(promotion_id);
    redis::cmd("HINCRBY")
        .arg(&keys.meta)
        .arg("remaining")
        .arg(3)
        .query_async::<()>(&mut conn)
        .await
        .expect("drift");
    redis::cmd("HDEL")
        .arg(&keys.reservations)
        .arg(lost.0)
        .query_async::<()>(&mut conn)
        .await
        .expect("drift");

    let reconcile = |repair: bool| {
        let app = Arc::clone(&app);
        async move {
            app.admin(
                Method::POST,
                &format!("/admin/promotions/{promotion_id}/reconcile?repair={repair}"),
            )
            .send()
            .await
            .expect("reconcile")
            .json::<Value>()
            .await
            .expect("json")
        }
    };
    let report = reconcile(false).await;
    assert_eq!(report["consistent"], false);
    assert_eq!(
        report["drift"], -2,
        "remaining +3, one reservation (1 unit) missing: {report}"
    );
    assert_eq!(report["orders_missing_in_redis"][0], lost.0.to_string());
    assert_eq!(
        stock.live_stock(&[promotion_id]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        9,
        "only reported"
    );

    let repaired = reconcile(true).await;
    assert_eq!(repaired["consistent"], true, "{repaired}");
    assert_eq!(repaired["repaired"]["restored"], 1);
    assert_eq!(
        stock.live_stock(&[promotion_id]).await.expect("live")[0]
            .expect("loaded")
            .remaining,
        6
    );
}
