//! The consumers process: it connects to all three dependencies, reports readiness, and
//! stops when shutdown fires; its binary answers --help and --version, and a second copy
//! fails on the port before it touches anything.

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

async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let limit = Duration::from_secs(20);
    order_core::test_support::run_to_exit(env!("CARGO_BIN_EXE_consumers"), args, env, limit).await
}

#[tokio::test]
async fn a_second_copy_fails_on_its_port_before_it_subscribes_to_anything() {
    // The health port is held (by this test, as a running copy would hold it).
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("address").port().to_string();
    // Dependencies nobody listens on: a copy that tried them first would wait 30 s.
    let env = [
        ("APP_CONSUMERS__PORT", port.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere"),
        ("PULSAR_URL", "pulsar://127.0.0.1:1"),
    ];
    let started = std::time::Instant::now();
    let output = run_binary(&[], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("bind the consumers' health listener"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );

    let help = run_binary(&["--help"], &env).await;
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: consumers"));
    let version = run_binary(&["--version"], &env).await;
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("consumers {}", env!("CARGO_PKG_VERSION"))
    );
}
