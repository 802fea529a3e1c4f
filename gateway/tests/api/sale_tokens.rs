//! Anti-bot sale tokens on a deployment of two gateways: a script without a token is refused
//! with a clear code while apps that fetched theirs (on either gateway) buy the whole stock;
//! the proof-of-work challenge with a real solver; an external verifier on a local server;
//! when tokens are handed out, how long they last, and how often one buyer may ask.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use chrono::Duration as Span;
use hyper::header::HeaderValue;
use order_core::test_support::poll_until;
use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};

/// A sale created as an operator would, with only the fields they must give.
async fn create_sale(app: &TestApp, stock: i64, starts_in: Span, extra: Value) -> Value {
    let starts_at = chrono::Utc::now() + starts_in;
    let mut body = json!({
        "sku_id": "sku-phone", "title": "Phone flash sale", "price_cents": 1999,
        "stock": stock, "starts_at": starts_at, "ends_at": starts_at + Span::hours(1),
    });
    for (k, v) in extra.as_object().expect("an object") {
        body[k] = v.clone();
    }
    let response = app
        .admin(reqwest::Method::POST, "/admin/promotions")
        .json(&body)
        .send()
        .await
        .expect("create the sale");
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    user: i64,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(app.token(user));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /api/seckill/{id}/challenge` for a buyer.
async fn challenge_for(app: &TestApp, promotion_id: i64, user: i64) -> (u16, Value) {
    let path = format!("/api/seckill/{promotion_id}/challenge");
    call(app, reqwest::Method::GET, &path, user, None).await
}

/// `POST /api/seckill/{id}/token` for a buyer with an answer to the challenge.
async fn ask_token(app: &TestApp, promotion_id: i64, user: i64, answer: Value) -> (u16, Value) {
    let path = format!("/api/seckill/{promotion_id}/token");
    call(app, reqwest::Method::POST, &path, user, Some(answer)).await
}

/// An order with whatever sale token the caller has (`None`: a script that has none).
async fn order(
    app: &TestApp,
    promotion_id: i64,
    user: i64,
    request_id: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/api/seckill/{promotion_id}/orders", app.address))
        .bearer_auth(app.token(user))
        .json(&json!({ "quantity": 1, "request_id": request_id }));
    if let Some(token) = token {
        request = request.header("X-Sale-Token", token);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// What an app does: the challenge, answered by a real solver when it is proof of work.
async fn fetch_token(app: &TestApp, promotion_id: i64, user: i64) -> String {
    let auth = HeaderValue::from_str(&format!("Bearer {}", app.token(user))).expect("header");
    bench::target::fetch_sale_token(&app.client, &app.address, &auth, promotion_id)
        .await
        .expect("an app gets its sale token")
}

#[tokio::test]
async fn a_script_without_tokens_is_refused_while_apps_with_tokens_buy_everything() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside(|_| {}).await;
    let stock = 20;
    let sale = create_sale(&a, stock, -Span::seconds(1), json!({})).await;
    assert_eq!(
        sale["requires_token"],
        json!(true),
        "on by default for new sales: {sale}"
    );
    assert_eq!(sale["challenge"], json!({ "kind": "none" }));
    let id = sale["id"].as_i64().expect("id");

    // The script: many buyers, no token, a made-up token, a token of someone else.
    for user in 1000..1040 {
        let (status, body) = order(&b, id, user, &format!("bot-{user}"), None).await;
        assert_eq!(
            (status, error_code(&body)),
            (403, "sale_token_required"),
            "{body}"
        );
    }
    let (status, body) = order(
        &a,
        id,
        1000,
        "bot-forged",
        Some("st1.99999999999999.00112233445566778899aabbccddeeff"),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "sale_token_invalid"));
    let someone_elses = fetch_token(&a, id, 1).await;
    let (status, body) = order(&a, id, 1001, "bot-borrowed", Some(&someone_elses)).await;
    assert_eq!((status, error_code(&body)), (403, "sale_token_invalid"));

    // The apps: a token from one gateway is good on the other.
    for user in 1..=stock {
        let token = fetch_token(if user % 2 == 0 { &a } else { &b }, id, user).await;
        let on = if user % 2 == 0 { &b } else { &a };
        let (status, body) = order(on, id, user, &format!("app-{user}"), Some(&token)).await;
        assert_eq!(status, 202, "user {user}: {body}");
    }
    let (status, body) = order(
        &a,
        id,
        stock + 1,
        "late",
        Some(&fetch_token(&a, id, stock + 1).await),
    )
    .await;
    assert_eq!((status, error_code(&body)), (409, "sold_out"));
    let stats = a.stats(id).await.expect("stats");
    assert_eq!(stats["remaining"], json!(0));
    // Both gateways' refusals, added up (each flushes once a second).
    poll_until(Duration::from_secs(10), "the deployment's totals", || async {
        let stats = a.stats(id).await?;
        let d = &stats["deployment"];
        (d["accepted"] == json!(stock)
            && d["rejections"]["sale_token_required"] == json!(40)
            && d["rejections"]["sale_token_invalid"] == json!(2)
            && d["tokens_issued"] == json!(stock + 2))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_sale_without_tokens_keeps_the_old_behaviour_and_tokens_can_be_turned_on_mid_sale() {
    let a = TestApp::spawn().await;
    let b = a.spawn_beside(|s| s.seckill.cache_refresh_ms = 100).await;
    let sale = create_sale(&a, 10, -Span::seconds(1), json!({ "requires_token": false })).await;
    let id = sale["id"].as_i64().expect("id");
    let (status, body) = order(&b, id, 1, "plain", None).await;
    assert_eq!(status, 202, "{body}");

    let response = a
        .admin(reqwest::Method::PATCH, &format!("/admin/promotions/{id}"))
        .json(&json!({ "requires_token": true, "challenge": { "kind": "proof_of_work", "difficulty": 8 } }))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200, "a running sale may turn tokens on");
    // The other gateway follows on its next refresh.
    poll_until(Duration::from_secs(10), "gateway B to require tokens", || async {
        let (status, body) = order(&b, id, 2, "after-patch", None).await;
        (status == 403 && error_code(&body) == "sale_token_required").then_some(())
    })
    .await;
}

#[tokio::test]
async fn proof_of_work_is_solved_by_a_real_solver_and_wrong_answers_are_refused() {
    let app = TestApp::spawn().await;
    let sale = create_sale(
        &app,
        10,
        -Span::seconds(1),
        json!({ "challenge": { "kind": "proof_of_work", "difficulty": 12 } }),
    )
    .await;
    let id = sale["id"].as_i64().expect("id");

    let (status, challenge) = challenge_for(&app, id, 7).await;
    assert_eq!(status, 200);
    assert_eq!(
        (challenge["kind"].as_str(), challenge["difficulty"].as_u64()),
        (Some("proof_of_work"), Some(12))
    );
    let puzzle = challenge["puzzle"].as_str().expect("a puzzle").to_owned();

    let (status, body) = ask_token(&app, id, 7, json!({})).await;
    assert_eq!((status, error_code(&body)), (403, "challenge_required"));
    // A nonce that does not solve it (the solver's answer, moved on until one fails).
    let nonce = order_core::domain::sale_access::solve_puzzle(&puzzle).expect("solvable");
    let wrong = (0..)
        .find(|n| !order_core::domain::sale_access::solves(&puzzle, *n))
        .expect("a wrong nonce");
    let (status, body) = ask_token(
        &app,
        id,
        7,
        json!({ "puzzle": puzzle, "solution": wrong.to_string() }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "challenge_failed"), "{body}");
    // Someone else's solved puzzle is not this buyer's.
    let (status, body) = ask_token(
        &app,
        id,
        8,
        json!({ "puzzle": puzzle, "solution": nonce.to_string() }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (403, "challenge_failed"));
    let (status, body) = ask_token(
        &app,
        id,
        7,
        json!({ "puzzle": puzzle, "solution": "not-a-number" }),
    )
    .await;
    assert_eq!((status, error_code(&body)), (422, "invalid_solution"));

    let (status, body) = ask_token(
        &app,
        id,
        7,
        json!({ "puzzle": puzzle, "solution": nonce.to_string() }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().expect("a token");
    let (status, body) = order(&app, id, 7, "solved", Some(token)).await;
    assert_eq!(status, 202, "{body}");
    // And the bench's app does the same end to end.
    let token = fetch_token(&app, id, 9).await;
    assert_eq!(order(&app, id, 9, "bench-app", Some(&token)).await.0, 202);
}

/// A captcha service's check, on a local port: yes for `human`, no otherwise; it records
/// what it was asked.
async fn verifier() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let router = Router::new().route(
        "/verify",
        post({
            let asked = Arc::clone(&asked);
            move |Json(question): Json<Value>| async move {
                let human = question["solution"] == json!("human");
                asked.lock().expect("lock").push(question);
                Json(json!({ "success": human }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/verify", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve the verifier");
    });
    (url, asked, server)
}

#[tokio::test]
async fn an_external_verifier_decides_who_gets_a_token() {
    let app = TestApp::spawn().await;
    let (url, asked, server) = verifier().await;
    let sale = create_sale(
        &app,
        10,
        -Span::seconds(1),
        json!({ "challenge": { "kind": "webhook", "url": url } }),
    )
    .await;
    let id = sale["id"].as_i64().expect("id");

    let (status, challenge) = challenge_for(&app, id, 3).await;
    assert_eq!((status, challenge["kind"].as_str()), (200, Some("webhook")));
    assert!(
        challenge.get("url").is_none(),
        "the verifier's address is not shown: {challenge}"
    );

    let (status, body) = ask_token(&app, id, 3, json!({ "solution": "bot" })).await;
    assert_eq!((status, error_code(&body)), (403, "challenge_failed"));
    let (status, body) = ask_token(&app, id, 3, json!({ "solution": "human" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        order(&app, id, 3, "verified", body["token"].as_str()).await.0,
        202
    );
    let questions = asked.lock().expect("lock").clone();
    assert_eq!(questions.len(), 2);
    assert_eq!(
        questions[1],
        json!({ "promotion_id": id, "user_id": 3, "solution": "human" })
    );

    // The verifier gone: the buyer is asked to try again, not refused.
    server.abort();
    let _ = server.await;
    let (status, body) = ask_token(&app, id, 4, json!({ "solution": "human" })).await;
    assert_eq!((status, error_code(&body)), (503, "verifier_unavailable"));
}

#[tokio::test]
async fn tokens_are_handed_out_from_the_lead_before_the_start_expire_and_are_limited_per_buyer() {
    let app = TestApp::spawn_with(
        crate::helpers::generous_limits(order_core::test_support::local_source())
            .with_var("APP_SALE_TOKENS__TTL_SECS", "2")
            .with_var("APP_SALE_TOKENS__PER_USER__PER_SECOND", "0.1")
            .with_var("APP_SALE_TOKENS__PER_USER__BURST", "3"),
    )
    .await;
    let lead = app.settings.sale_tokens.lead_secs as i64;
    let later = create_sale(&app, 10, Span::seconds(lead + 600), json!({})).await["id"]
        .as_i64()
        .expect("id");
    let response = app
        .client
        .post(format!("{}/api/seckill/{later}/token", app.address))
        .bearer_auth(app.token(1))
        .json(&json!({}))
        .send()
        .await
        .expect("reach the gateway");
    assert_eq!(response.status(), 403);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((600..=610).contains(&retry_after), "{retry_after}");
    assert_eq!(error_code(&response.json().await.expect("json")), "too_early");
    let soon = create_sale(&app, 10, Span::seconds(lead / 2), json!({})).await["id"]
        .as_i64()
        .expect("id");
    let (status, _) = ask_token(&app, soon, 1, json!({})).await;
    assert_eq!(status, 200, "within the lead: handed out during the countdown");

    let open = create_sale(&app, 10, -Span::seconds(1), json!({})).await["id"]
        .as_i64()
        .expect("id");
    let token = fetch_token(&app, open, 2).await;
    let (status, held) = order(&app, open, 2, "held", Some(&token)).await;
    assert_eq!(status, 202, "{held}");
    // While the token lasts a second try is over the buyer's limit; once it lapsed, refused
    // for the token.
    poll_until(Duration::from_secs(10), "the token to expire", || async {
        let (status, body) = order(&app, open, 2, "another", Some(&token)).await;
        (status == 403 && error_code(&body) == "sale_token_expired").then_some(())
    })
    .await;
    // A retry of the order the buyer holds still gets it with the lapsed token (a 202 is a
    // promise, and the first answer may have been lost).
    let (status, again) = order(&app, open, 2, "held", Some(&token)).await;
    assert_eq!((status, &again["order_id"]), (202, &held["order_id"]), "{again}");

    // Tokens are handed out after the end too (a retry may need a fresh one).
    let now = chrono::Utc::now();
    let short = create_sale(
        &app,
        10,
        -Span::seconds(1),
        json!({ "ends_at": now + Span::seconds(2) }),
    )
    .await["id"]
        .as_i64()
        .expect("id");
    poll_until(Duration::from_secs(10), "the short sale to end", || async {
        let view: Value = app
            .get(&format!("/api/promotions/{short}"))
            .await
            .json()
            .await
            .ok()?;
        (view["state"] == "ended").then_some(())
    })
    .await;
    assert_eq!(ask_token(&app, short, 3, json!({})).await.0, 200);

    // Burst 3 per buyer, then 429 (another buyer is not affected).
    let ask = |user| ask_token(&app, open, user, json!({}));
    for _ in 0..3 {
        assert_eq!(ask(5).await.0, 200);
    }
    let (status, body) = ask(5).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
    assert_eq!(ask(6).await.0, 200);
}
