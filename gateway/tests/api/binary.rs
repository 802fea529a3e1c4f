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
