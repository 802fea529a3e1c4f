//! Failures of a dependency: a bug (a call that fails as written) is a 500 without
//! Retry-After, so clients do not retry it forever; an outage stays a 503 with it.

use chrono::Duration as Span;
use order_core::redis::stock::SaleKeys;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn a_script_that_fails_as_written_is_a_500_without_retry_after() {
    let app = TestApp::spawn().await;
    let id = app.create_promotion(5, 1, Span::hours(1)).await["id"]
        .as_i64()
        .expect("id");
    let warmup = format!("/admin/promotions/{id}/warmup");
    assert_eq!(
        app.admin(Method::POST, &warmup)
            .send()
            .await
            .expect("warm-up")
            .status(),
        200
    );
    // A meta hash whose stock is not a number: sync_promotion.lua's arithmetic fails on it
    // every time (a bug to fix, not an outage to wait out).
    let mut redis = order_core::redis::connect(&app.settings.redis)
        .await
        .expect("redis");
    redis::cmd("HSET")
        .arg(SaleKeys::new(id).meta)
        .arg("stock")
        .arg("not-a-number")
        .arg("revision")
        .arg(0)
        .query_async::<()>(&mut redis)
        .await
        .expect("corrupt the meta hash");

    let response = app.admin(Method::POST, &warmup).send().await.expect("warm-up");
    assert_eq!(response.status(), 500);
    assert!(
        response.headers().get("retry-after").is_none(),
        "a bug is not retryable"
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_code(&body), "internal_error", "{body}");
    assert!(
        !body.to_string().contains("arithmetic"),
        "the cause is logged, not sent: {body}"
    );
}
