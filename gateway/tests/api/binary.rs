//! The real `gateway` binary: it starts with the layered config, stops cleanly on SIGTERM,
//! refuses invalid config naming the key, and never prints its secrets.

use std::process::{Command, Stdio};
use std::time::Duration;

use order_core::test_support::{free_port, poll_until};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

fn config_dir() -> String {
    format!("{}/../config", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn sigterm_stops_the_binary_gracefully_and_secrets_stay_out_of_the_log() {
    let port = free_port();
    let jwt_secret = "binary-test-jwt-secret-abcdefghijklmnopqrstuvwxyz";
    let admin_key = "binary-test-admin-key-0123456789";
    let child = tokio::process::Command::new(GATEWAY)
        .env("APP_CONFIG_DIR", config_dir())
        .env("APP_GATEWAY__PORT", port.to_string())
        .env("APP_AUTH__JWT_SECRET", jwt_secret)
        .env("APP_AUTH__ADMIN_KEY", admin_key)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway binary");

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    poll_until(Duration::from_secs(60), "the binary to become ready", || async {
        let response = client.get(&url).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the binary exits within 15 s of SIGTERM")
        .expect("collect output");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "clean exit after SIGTERM: {:?}\n{log}",
        output.status
    );
    assert!(log.contains("gateway stopped"), "logs its shutdown: {log}");
    assert!(
        !log.contains(jwt_secret) && !log.contains(admin_key),
        "secrets leaked: {log}"
    );
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let output = Command::new(GATEWAY)
        .env("APP_CONFIG_DIR", config_dir())
        .env("APP_AUTH__JWT_SECRET", "too-short")
        .output()
        .expect("run the gateway binary");
    assert!(!output.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.jwt_secret"), "names the key: {stderr}");
    assert!(
        !stderr.contains("too-short"),
        "does not echo the secret: {stderr}"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id_and_order_id_on_every_line_of_a_request() {
    let port = free_port();
    let jwt_secret = "json-log-test-jwt-secret-abcdefghijklmnopqrstuvwxyz";
    let admin_key = "json-log-test-admin-key-0123456789";
    let child = tokio::process::Command::new(GATEWAY)
        .env("APP_CONFIG_DIR", config_dir())
        .env("APP_GATEWAY__PORT", port.to_string())
        .env("APP_AUTH__JWT_SECRET", jwt_secret)
        .env("APP_AUTH__ADMIN_KEY", admin_key)
        .env("APP_LOG__FORMAT", "json")
        .env(
            "APP_PULSAR__SECKILL_ORDERS_TOPIC",
            order_core::test_support::unique("json-logs"),
        )
        .env("RUST_LOG", "info,gateway=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway binary");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    poll_until(Duration::from_secs(60), "the binary to become ready", || async {
        let response = client.get(format!("{base}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;

    let now = chrono::Utc::now();
    let promo: serde_json::Value = client
        .post(format!("{base}/admin/promotions"))
        .bearer_auth(admin_key)
        .header("x-request-id", "admin-req-1")
        .json(&serde_json::json!({ "sku_id": "s", "title": "t", "price_cents": 100, "stock": 5, "per_user_limit": 1,
                                   "starts_at": now - chrono::Duration::seconds(1), "ends_at": now + chrono::Duration::hours(1) }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "77", "exp": now.timestamp() + 600 }),
        &jsonwebtoken::EncodingKey::from_secret(jwt_secret.as_bytes()),
    )
    .expect("token");
    let response = client
        .post(format!("{base}/api/seckill/{}/orders", promo["id"]))
        .bearer_auth(token)
        .header("x-request-id", "trace-me-123")
        .json(&serde_json::json!({ "quantity": 1, "request_id": "r1" }))
        .send()
        .await
        .expect("order");
    assert_eq!(response.headers()["x-request-id"], "trace-me-123", "echoed");
    let order: serde_json::Value = response.json().await.expect("json");
    let anonymous = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        anonymous.headers()["x-request-id"].len(),
        32,
        "a generated id when none was sent"
    );

    let pid = child.id().expect("running").to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("SIGTERM");
    let output = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("exits")
        .expect("output");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON line: {l}")))
        .collect();
    let reserved: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "reserved; publishing")
        .collect();
    assert_eq!(reserved.len(), 1, "{lines:?}");
    assert_eq!(reserved[0]["span"]["request_id"], "trace-me-123");
    assert_eq!(reserved[0]["span"]["order_id"], order["order_id"]);
    let created: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "promotion created")
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["span"]["request_id"], "admin-req-1");
}
