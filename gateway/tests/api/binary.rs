//! The real `gateway` binary: it starts with the layered config, stops cleanly on SIGTERM,
//! refuses invalid config naming the key, never prints its secrets, and its JSON logs carry
//! the request id and order id. Its command line: `--help` and `--version` answer and exit,
//! `migrate` applies the schema and exits, and a second copy fails on the port before it
//! connects to anything.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use order_core::test_support::{poll_until, unique};
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway");

fn config_dir() -> String {
    format!("{}/../config", env!("CARGO_MANIFEST_DIR"))
}

/// The gateway binary on a port it picks itself (port 0, read back from its "listening"
/// log line), so parallel tests never race for a port, and on a database of its own (unless
/// the test names one), so no other test's sale is in its view. Collects stdout and stderr.
pub(crate) struct Binary {
    pub(crate) child: tokio::process::Child,
    pub(crate) port: u16,
    output: Arc<Mutex<String>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Binary {
    pub(crate) async fn start(env: &[(&str, &str)]) -> Self {
        let mut cmd = tokio::process::Command::new(GATEWAY);
        if !env.iter().any(|(k, _)| *k == "APP_DATABASE__URL") {
            let base: order_core::runtime::settings::DatabaseOnly =
                order_core::test_support::local_source().load().expect("settings");
            let own = order_core::test_support::fresh_database(&base.database)
                .await
                .expect("a fresh database");
            cmd.env("APP_DATABASE__URL", own.url.expose_secret());
        }
        cmd.env("APP_CONFIG_DIR", config_dir())
            .env("APP_GATEWAY__PORT", "0")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the gateway binary");
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, mut port_rx) = tokio::sync::mpsc::unbounded_channel();
        let streams: [Box<dyn AsyncRead + Send + Unpin>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        let mut readers = Vec::new();
        for stream in streams {
            let (output, port_tx) = (Arc::clone(&output), port_tx.clone());
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("gateway listening") {
                        let _ = port_tx.send(line.clone());
                    }
                    let mut out = output.lock().expect("lock");
                    out.push_str(&line);
                    out.push('\n');
                }
            }));
        }
        let line = tokio::time::timeout(Duration::from_secs(60), port_rx.recv())
            .await
            .expect("the binary logs that it listens")
            .expect("a listening line");
        let after = &line[line.find("port").expect("a port field") + 4..];
        let port: String = after
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        Self {
            child,
            port: port.parse().expect("a port number"),
            output,
            readers,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) async fn wait_ready(&self, client: &reqwest::Client) {
        let url = self.url("/readyz");
        poll_until(Duration::from_secs(60), "the binary to become ready", || async {
            let response = client.get(&url).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    /// SIGTERM, wait for the exit, and return the exit status with everything printed.
    /// SIGSTOP / SIGCONT: the process hangs, then runs on as if nothing happened.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub(crate) async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("running").to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("send SIGTERM");
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the binary exits within 15 s of SIGTERM")
            .expect("exit status");
        for reader in self.readers {
            let _ = reader.await;
        }
        let output = self.output.lock().expect("lock").clone();
        (status, output)
    }
}

#[tokio::test]
async fn sigterm_stops_the_binary_gracefully_and_secrets_stay_out_of_the_log() {
    let jwt_secret = "binary-test-jwt-secret-abcdefghijklmnopqrstuvwxyz";
    let admin_key = "binary-test-admin-key-0123456789";
    let sale_token_secret = "binary-test-sale-token-secret-abcdefghijklmnopqrstuvwxyz";
    let binary = Binary::start(&[
        ("APP_AUTH__JWT_SECRET", jwt_secret),
        ("APP_AUTH__ADMIN_KEY", admin_key),
        ("APP_AUTH__SALE_TOKEN_SECRET", sale_token_secret),
        ("RUST_LOG", "debug"),
    ])
    .await;
    binary.wait_ready(&reqwest::Client::new()).await;
    let (status, log) = binary.stop().await;
    assert!(status.success(), "clean exit after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("gateway stopped"), "logs its shutdown: {log}");
    assert!(
        !log.contains(jwt_secret) && !log.contains(admin_key) && !log.contains(sale_token_secret),
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
    let jwt_secret = "json-log-test-jwt-secret-abcdefghijklmnopqrstuvwxyz";
    let admin_key = "json-log-test-admin-key-0123456789";
    let topic = unique("json-logs");
    let binary = Binary::start(&[
        ("APP_AUTH__JWT_SECRET", jwt_secret),
        ("APP_AUTH__ADMIN_KEY", admin_key),
        ("APP_LOG__FORMAT", "json"),
        ("APP_PULSAR__SECKILL_ORDERS_TOPIC", &topic),
        ("RUST_LOG", "info,gateway=debug,order_core::app=debug"),
    ])
    .await;
    let client = reqwest::Client::new();
    binary.wait_ready(&client).await;

    let now = chrono::Utc::now();
    let promo: serde_json::Value = client
        .post(binary.url("/admin/promotions"))
        .bearer_auth(admin_key)
        .header("x-request-id", "admin-req-1")
        .json(&serde_json::json!({ "sku_id": "s", "title": "t", "price_cents": 100, "stock": 5, "per_user_limit": 1,
                                   "requires_token": false, "starts_at": now - chrono::Duration::seconds(1), "ends_at": now + chrono::Duration::hours(1) }))
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
        .post(binary.url(&format!("/api/seckill/{}/orders", promo["id"])))
        .bearer_auth(token)
        .header("x-request-id", "trace-me-123")
        .json(&serde_json::json!({ "quantity": 1, "request_id": "r1" }))
        .send()
        .await
        .expect("order");
    assert_eq!(response.headers()["x-request-id"], "trace-me-123", "echoed");
    let order: serde_json::Value = response.json().await.expect("json");
    let anonymous = client.get(binary.url("/healthz")).send().await.expect("healthz");
    assert_eq!(
        anonymous.headers()["x-request-id"].len(),
        32,
        "a generated id when none was sent"
    );

    let (status, log) = binary.stop().await;
    assert!(status.success(), "{log}");
    let lines: Vec<serde_json::Value> = log
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

async fn run_to_exit(args: &[&str], env: &[(&str, &str)], limit: Duration) -> std::process::Output {
    order_core::test_support::run_to_exit(GATEWAY, args, env, limit).await
}

/// Dependencies nobody listens on: a binary that tried them would wait out its start-up
/// deadline (30 s) before failing.
const NOWHERE: [(&str, &str); 3] = [
    ("REDIS_URL", "redis://127.0.0.1:1"),
    ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere"),
    ("PULSAR_URL", "pulsar://127.0.0.1:1"),
];

#[tokio::test]
async fn help_and_version_answer_and_exit_without_starting_anything() {
    let help = run_to_exit(&["--help"], &NOWHERE, Duration::from_secs(10)).await;
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for expected in [
        "Usage: gateway",
        "migrate",
        "--config",
        "APP_AUTH__SALE_TOKEN_SECRET",
        "DATABASE_URL",
    ] {
        assert!(text.contains(expected), "--help mentions {expected}: {text}");
    }
    let version = run_to_exit(&["--version"], &NOWHERE, Duration::from_secs(10)).await;
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let typo = run_to_exit(&["--hepl"], &NOWHERE, Duration::from_secs(10)).await;
    assert_eq!(typo.status.code(), Some(2), "a usage error");
}

#[tokio::test]
async fn a_second_copy_fails_on_the_port_before_it_connects_to_anything() {
    let first = Binary::start(&[]).await;
    let port = first.port.to_string();
    let mut env = NOWHERE.to_vec();
    env.push(("APP_GATEWAY__PORT", &port));
    let started = std::time::Instant::now();
    let second = run_to_exit(&[], &env, Duration::from_secs(20)).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("bind the gateway"), "fails on the port: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast: {:?}",
        started.elapsed()
    );
    let (status, _) = first.stop().await;
    assert!(status.success(), "the first copy runs on untouched");
}

#[tokio::test]
async fn migrate_applies_the_schema_and_serving_an_unmigrated_database_is_refused() {
    let base: gateway::settings::Settings =
        order_core::test_support::local_source().load().expect("settings");
    let empty = order_core::test_support::empty_database(&base.database)
        .await
        .expect("an empty database");
    let url = secrecy::ExposeSecret::expose_secret(&empty.url).to_owned();
    let env = [
        ("APP_DATABASE__URL", url.as_str()),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("PULSAR_URL", "pulsar://127.0.0.1:1"),
    ];
    // Without startup.migrate, serving on a schema this build does not expect is refused.
    let serve_env = [
        ("APP_DATABASE__URL", url.as_str()),
        ("APP_STARTUP__MIGRATE", "false"),
        ("APP_GATEWAY__PORT", "0"),
    ];
    let refused = run_to_exit(&[], &serve_env, Duration::from_secs(60)).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("run `gateway migrate`"), "{stderr}");

    let first = run_to_exit(&["migrate"], &env, Duration::from_secs(60)).await;
    let log = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let applied = order_core::postgres::MIGRATOR.iter().count();
    assert!(log.contains(&format!("applied={applied}")), "{log}");
    let db = order_core::postgres::lazy_pool(&empty).expect("pool");
    let promotions: i64 = sqlx::query_scalar("SELECT count(*) FROM promotions")
        .fetch_one(&db)
        .await
        .expect("the schema exists");
    assert_eq!(promotions, 0);
    let again = run_to_exit(&["migrate"], &env, Duration::from_secs(60)).await;
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("applied=0"),
        "nothing left to apply"
    );
}

#[tokio::test]
async fn a_clean_start_logs_no_warning() {
    let binary = Binary::start(&[("APP_PULSAR__SECKILL_ORDERS_TOPIC", &unique("quiet"))]).await;
    binary.wait_ready(&reqwest::Client::new()).await;
    let started = binary.output.lock().expect("lock").clone();
    let noisy: Vec<&str> = started
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "a clean start warned: {noisy:#?}");
    assert!(started.contains("gateway listening"), "{started}");
    let (status, _) = binary.stop().await;
    assert!(status.success());
}

#[tokio::test]
async fn a_starting_gateway_holds_its_port_and_turns_clients_away_until_it_can_serve() {
    let port = order_core::test_support::free_port().to_string();
    // Redis unreachable: the gateway waits for it (up to 30 s) with its port bound.
    let mut starting = tokio::process::Command::new(GATEWAY)
        .env("APP_CONFIG_DIR", config_dir())
        .env("APP_GATEWAY__PORT", &port)
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .env_remove("REDIS_CLUSTER_NODES")
        .env_remove("REDIS_SENTINEL_NODES")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the gateway binary");
    let mut lines = BufReader::new(starting.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Redis not reachable yet") {
                return;
            }
        }
        panic!("the gateway stopped before waiting for Redis");
    })
    .await
    .expect("the gateway waits for Redis");
    // A client is turned away at once (the connection closes), not left waiting.
    let asked = std::time::Instant::now();
    let answer = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(answer.is_err(), "no answer while starting: {answer:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "turned away at once: {:?}",
        asked.elapsed()
    );
    let second = run_to_exit(&[], &[("APP_GATEWAY__PORT", &port)], Duration::from_secs(20)).await;
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("Address already in use"),
        "the port is held: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    starting.start_kill().expect("stop the starting gateway");
}
