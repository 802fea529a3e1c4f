//! Readiness follows the dependencies: stopping one turns `/readyz` red for it alone, and
//! starting it again turns it green, without restarting the gateway. Uses a private stack so
//! other tests keep theirs.

use std::time::Duration;

use order_core::test_support::{poll_until, PrivateStack};
use serde_json::Value;

use crate::helpers::TestApp;

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn wait_for_readiness(app: &TestApp, want: impl Fn(u16, &Value) -> bool, what: &str) -> Value {
    poll_until(Duration::from_secs(30), what, || async {
        let (status, body) = readiness(app).await;
        want(status, &body).then_some(body)
    })
    .await
}

#[tokio::test]
async fn readyz_goes_red_when_a_dependency_stops_and_green_when_it_returns() {
    let stack = PrivateStack::start().expect("start a private stack");
    let app = TestApp::spawn_with(stack.source()).await;
    wait_for_readiness(&app, |s, _| s == 200, "all ready").await;

    for part in ["pulsar", "redis", "postgres"] {
        let check = if part == "postgres" { "database" } else { part };
        stack.stop_part(part).expect("stop the dependency");
        let body = wait_for_readiness(
            &app,
            |s, b| s == 503 && b["checks"][check]["ready"] == false,
            &format!("{check} reported not ready"),
        )
        .await;
        assert_eq!(body["ready"], false);
        assert!(
            body["checks"][check]["error"].is_string(),
            "the report says why: {body}"
        );
        for other in ["redis", "database", "pulsar"]
            .into_iter()
            .filter(|o| *o != check)
        {
            assert_eq!(
                body["checks"][other]["ready"], true,
                "{other} is unaffected: {body}"
            );
        }

        stack.start_part(part).expect("restart the dependency");
        wait_for_readiness(&app, |s, _| s == 200, &format!("{check} ready again")).await;
    }
}
