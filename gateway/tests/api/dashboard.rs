//! The live sale dashboard in a real headless Chromium (through ChromeDriver) at 1280×800,
//! on a deployment of two gateways: log in with the admin key, watch a flash sale driven by
//! the load bench over both gateways change the numbers, pause it from the page, see the
//! gateway answer `paused` (to the bench and to a buyer), and find the page's totals equal
//! to what the bench saw on both gateways together. A screenshot is kept in
//! target/test-artifacts/dashboard.png.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bench::flash_sale::{FlashSale, System};
use bench::loadgen::{Outcome, Pace};
use bench::target::{Target, WriterPace};
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
    let other = app.spawn_beside(|_| {}).await;
    let target = Arc::new(
        Target::new(
            &app.address,
            app.settings.auth.admin_key.clone(),
            app.settings.auth.jwt_secret.clone(),
            None,
            app.settings.database.clone(),
            app.settings.redis.clone(),
            WriterPace {
                max_rows_per_sec: 20_000.0,
                batch_size: 500,
            },
        )
        .with_gateways(vec![app.address.clone(), other.address.clone()]),
    );
    let promotion_id = target
        .create_promotion(100_000, 1)
        .await
        .expect("the bench creates the sale");
    let (_driver, port) = chromedriver().await;
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,800", format!("--user-data-dir={}", profile.display())],
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

    // The bench drives the sale: 100 tries/s by distinct buyers for 10 s, with retries.
    let sale = FlashSale {
        users: 50_000,
        stock: 100_000,
        per_user_limit: 1,
        connections: 8,
        pace: Pace::Fixed(100.0),
        duration: Duration::from_secs(10),
        retry_fraction: 0.05,
        again_fraction: 0.05,
        seed: 7,
        max_requests: 0,
        drain_timeout: Duration::ZERO,
        verify: false,
        app_retries: None,
    };
    let bench_run = tokio::spawn({
        let target = Arc::clone(&target);
        async move {
            sale.run(&target, "dashboard", &System::Gateway, Some(promotion_id))
                .await
        }
    });
    let reserved = format!("tr[data-promotion='{promotion_id}'] .reserved");
    let reserved_now = || async { text_of(&browser, &reserved).await?.parse::<u64>().ok() };
    let first = poll_until(
        Duration::from_secs(20),
        "the page to show reservations",
        || async { reserved_now().await.filter(|n| *n >= 20) },
    )
    .await;
    poll_until(
        Duration::from_secs(20),
        "the page to show more reservations",
        || async { reserved_now().await.filter(|n| *n >= first + 50) },
    )
    .await;
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
    let (status, body) = app.place(promotion_id, 900_000, "after-pause", 1).await;
    assert_eq!((status, error_code(&body)), (403, "paused"));
    let report = bench_run.await.expect("bench task").expect("the bench run");
    assert!(
        report.outcome(Outcome::Accepted) >= first + 50,
        "{:?}",
        report.outcomes
    );
    assert!(
        report.outcome(Outcome::Closed) > 0,
        "the bench saw the pause: {:?}",
        report.outcomes
    );
    assert_eq!(report.outcome(Outcome::Error), 0, "{:?}", report.outcomes);

    // The page adds up both gateways: its accepted and refused totals reach what the bench
    // was answered by the two together (each gateway flushes its counts once a second).
    let accepted = format!("tr[data-promotion='{promotion_id}'] .accepted");
    let refused = format!("tr[data-promotion='{promotion_id}'] .rejected");
    let answered_by_sale = report.outcome(Outcome::Accepted);
    // The bench's refusals, and the buyer's `paused` above.
    let refused_by_sale = 1
        + report.outcome(Outcome::Closed)
        + report.outcome(Outcome::SoldOut)
        + report.outcome(Outcome::LimitExceeded)
        + report.outcome(Outcome::RateLimited);
    let numbers = |css: String| {
        let browser = &browser;
        async move { text_of(browser, &css).await?.parse::<u64>().ok() }
    };
    poll_until(
        Duration::from_secs(20),
        "the page's totals to equal both gateways' answers",
        || async {
            let shown = (numbers(accepted.clone()).await?, numbers(refused.clone()).await?);
            (shown == (answered_by_sale, refused_by_sale)).then_some(())
        },
    )
    .await;
    let live_gateways = browser
        .find_all(Locator::Css("#instances li.gateway.live"))
        .await
        .expect("the deployment list");
    assert_eq!(live_gateways.len(), 2, "both gateways listed as live");
    // Everything fits 1280×800: the last button of the row is inside the window.
    let fits = browser
        .execute(
            &format!(
                "const button = document.querySelector(\"tr[data-promotion='{promotion_id}'] button.reconcile\"); \
                 const b = button.getBoundingClientRect(); \
                 const seen = document.elementFromPoint((b.left + b.right) / 2, (b.top + b.bottom) / 2); \
                 const cell = button.closest('td').getBoundingClientRect(); \
                 return seen === button && b.right <= cell.right && b.right <= window.innerWidth && b.bottom <= window.innerHeight \
                     && document.documentElement.scrollWidth <= window.innerWidth;"
            ),
            vec![],
        )
        .await
        .expect("measure the page");
    let png = browser.screenshot().await.expect("screenshot");
    let dir = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    std::fs::write(dir.join("dashboard.png"), png).expect("save the screenshot");
    assert_eq!(
        fits,
        json!(true),
        "the table and its Reconcile button fit 1280x800"
    );

    browser.close().await.expect("close the browser");
}
