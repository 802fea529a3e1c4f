//! The live sale dashboard in a real headless Chromium (through ChromeDriver): log in with
//! the admin key, watch a running sale's numbers change, pause it from the page, and see
//! the gateway answer `paused`. A screenshot is kept in target/test-artifacts/.

use std::process::Stdio;
use std::time::Duration;

use chrono::Duration as Span;
use fantoccini::{ClientBuilder, Locator};
use order_core::test_support::{free_port, poll_until, unique, workspace_root};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::{error_code, TestApp};

async fn chromedriver() -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver (scripts/setup.sh installs chromium-driver)");
    poll_until(Duration::from_secs(20), "chromedriver to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    (child, port)
}

async fn text_of(browser: &fantoccini::Client, css: &str) -> Option<String> {
    browser.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

#[tokio::test]
async fn operators_watch_a_sale_live_and_pause_it_from_the_dashboard() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(1000, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    let (_driver, port) = chromedriver().await;
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1500,900", format!("--user-data-dir={}", profile.display())],
        }),
    );
    let browser = ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a headless Chromium session");

    browser
        .goto(&format!("{}/admin/", app.address))
        .await
        .expect("open the dashboard");
    browser
        .find(Locator::Css("#admin-key"))
        .await
        .expect("login form")
        .send_keys(app.settings.auth.admin_key.expose_secret())
        .await
        .expect("type the key");
    browser
        .find(Locator::Css("#login"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("log in");

    let reserved = format!("tr[data-promotion='{promotion_id}'] .reserved");
    for (from, to) in [(1, 10), (11, 25)] {
        for user in from..=to {
            assert_eq!(app.place(promotion_id, user, "r", 1).await.0, 202);
        }
        let want = to.to_string();
        poll_until(
            Duration::from_secs(20),
            &format!("the page to show {want} reserved"),
            || async { (text_of(&browser, &reserved).await.as_deref() == Some(want.as_str())).then_some(()) },
        )
        .await;
    }
    let state = format!("tr[data-promotion='{promotion_id}'] .state");
    assert_eq!(text_of(&browser, &state).await.as_deref(), Some("active"));

    browser
        .find(Locator::Css(&format!(
            "tr[data-promotion='{promotion_id}'] button.pause"
        )))
        .await
        .expect("pause button")
        .click()
        .await
        .expect("pause");
    poll_until(
        Duration::from_secs(20),
        "the page to show the sale paused",
        || async { (text_of(&browser, &state).await.as_deref() == Some("paused")).then_some(()) },
    )
    .await;
    let (status, body) = app.place(promotion_id, 500, "after-pause", 1).await;
    assert_eq!((status, error_code(&body)), (403, "paused"));

    let png = browser.screenshot().await.expect("screenshot");
    let dir = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    std::fs::write(dir.join("dashboard.png"), png).expect("save the screenshot");
    browser.close().await.expect("close the browser");
}
