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

/// A background task that dies (a panic injected under the gateway's supervisor) turns
/// `/healthz` to 503 naming it, and stops the gateway with an error naming it.
#[tokio::test]
async fn a_background_task_that_panics_fails_health_and_stops_the_gateway() {
    let mut settings = TestApp::spawn().await.settings.clone();
    settings.gateway.port = 0;
    let mut app = gateway::startup::Application::build(settings)
        .await
        .expect("build");
    let base = format!("http://127.0.0.1:{}", app.port());
    let (fire, fired) = tokio::sync::oneshot::channel::<()>();
    app.supervise("injected", async move {
        let _ = fired.await;
        panic!("injected fault");
    });
    // Ignores shutdown: the gateway waits its 10 s grace for it, while /healthz still answers.
    app.supervise("slow to stop", std::future::pending());
    let shutdown = order_core::runtime::shutdown::Shutdown::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.subscribe()));
    // A fresh connection each time, as a probe makes: the server still accepts while the
    // other tasks stop.
    let healthz = || async {
        let response = reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz");
        (
            response.status().as_u16(),
            response.json::<Value>().await.expect("json"),
        )
    };
    assert_eq!(healthz().await.0, 200);
    fire.send(()).expect("the injected task waits");
    let body = order_core::test_support::poll_until(Duration::from_secs(5), "healthz to fail", || async {
        let (status, body) = healthz().await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["worker"], "injected", "{body}");
    let stopped = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stops after its grace")
        .expect("task");
    let error = format!("{:#}", stopped.expect_err("a task died: the gateway fails"));
    assert!(error.contains("injected fault"), "{error}");
}
