//! The consumers process: it connects to all three dependencies, reports readiness, and
//! stops when shutdown fires.

use std::time::Duration;

use consumers::settings::Settings;
use consumers::startup::Application;
use order_core::runtime::shutdown::Shutdown;
use order_core::test_support::{fresh_database, local_source};
use serde_json::Value;

/// A consumers process of its own: port 0, its own topics (a shared topic carries whatever
/// earlier runs left on it), analytics directory and database.
async fn build_app() -> Application {
    let mut settings: Settings = local_source()
        .with_var("APP_CONSUMERS__PORT", "0")
        .with_var(
            "APP_PULSAR__SECKILL_ORDERS_TOPIC",
            order_core::test_support::unique("seckill-orders"),
        )
        .with_var(
            "APP_PULSAR__ORDER_EVENTS_TOPIC",
            order_core::test_support::unique("order-events"),
        )
        .with_var(
            "APP_POST_PAYMENT__ANALYTICS_DIR",
            std::env::temp_dir()
                .join(order_core::test_support::unique("analytics"))
                .display()
                .to_string(),
        )
        .load()
        .expect("settings");
    settings.database = fresh_database(&settings.database).await.expect("fresh database");
    Application::build(settings).await.expect("build consumers")
}

#[tokio::test]
async fn consumers_report_ready_and_stop_on_shutdown() {
    let app = build_app().await;
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = Shutdown::new();
    let handle = tokio::spawn(app.run_until_stopped(shutdown.subscribe()));

    let client = reqwest::Client::new();
    let response = client.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    for dep in ["redis", "database", "pulsar"] {
        assert_eq!(body["checks"][dep]["ready"], true, "{dep}: {body}");
    }
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("stops within 10 s")
        .expect("task")
        .expect("clean shutdown");
}

/// A worker that dies (here a task that panics, injected under the process's supervisor)
/// turns `/healthz` to 503 naming it, and stops the process with an error that names it:
/// no process that looks alive while one of its workers is gone.
#[tokio::test]
async fn a_worker_that_panics_fails_health_and_stops_the_process() {
    let mut app = build_app().await;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (fire, fired) = tokio::sync::oneshot::channel::<()>();
    app.supervise("injected", async move {
        let _ = fired.await;
        panic!("injected fault");
    });
    // Ignores shutdown: the process waits its 10 s grace for it, while /healthz still answers.
    app.supervise("slow to stop", std::future::pending());
    let shutdown = Shutdown::new();
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
    fire.send(()).expect("the injected worker waits");
    let body = order_core::test_support::poll_until(Duration::from_secs(5), "healthz to fail", || async {
        let (status, body) = healthz().await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(
        (body["worker"].as_str(), body["cause"].as_str()),
        (Some("injected"), Some("panicked: injected fault")),
        "{body}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(20), handle)
        .await
        .expect("stops after its grace")
        .expect("task");
    let error = format!("{:#}", stopped.expect_err("a worker died: the process fails"));
    assert!(error.contains("injected"), "{error}");
}
