//! Liveness, readiness and graceful shutdown on the shared local stack.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_reports_each_dependency_ready() {
    let app = TestApp::spawn().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["ready"], true, "{body}");
    for dep in ["redis", "database", "pulsar"] {
        assert_eq!(body["checks"][dep]["ready"], true, "{dep}: {body}");
    }
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), app.handle)
        .await
        .expect("the server stops within 10 s")
        .expect("server task")
        .expect("clean shutdown");
    let after = app.client.get(format!("{}/healthz", app.address)).send().await;
    assert!(after.is_err(), "nothing listens after shutdown");
}
