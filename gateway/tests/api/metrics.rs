//! `/metrics` scrapes cleanly with a Prometheus text-format parser and carries the
//! seckill series with fixed-cardinality labels.

use chrono::Duration as Span;

use crate::helpers::TestApp;

fn scrape(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text format")
        .samples
}

#[tokio::test]
async fn metrics_scrape_cleanly_and_count_outcomes_by_route() {
    let app = TestApp::spawn().await;
    let promotion_id = app.create_promotion(1, 1, -Span::seconds(1)).await["id"]
        .as_i64()
        .expect("id");
    assert_eq!(app.place(promotion_id, 1, "m1", 1).await.0, 202);
    assert_eq!(app.place(promotion_id, 2, "m2", 1).await.0, 409);

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("text");
    let samples = scrape(&text);
    let has = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .any(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    assert!(has(
        "seckill_http_requests_total",
        &[("route", "/api/seckill/:promotion_id/orders"), ("status", "202")]
    ));
    assert!(has("seckill_orders_total", &[("outcome", "accepted")]));
    assert!(has("seckill_orders_total", &[("outcome", "sold_out")]));
    assert!(has(
        "seckill_dependency_call_seconds_count",
        &[("dependency", "redis"), ("operation", "reserve")]
    ));
    assert!(has(
        "seckill_dependency_call_seconds_count",
        &[("dependency", "pulsar"), ("operation", "publish")]
    ));
    let accepted: f64 = samples
        .iter()
        .filter(|s| s.metric == "seckill_http_requests_total" && s.labels.get("status") == Some("202"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(accepted >= 1.0);
    // No label carries an id: every route label is a template.
    for s in samples
        .iter()
        .filter(|s| s.metric == "seckill_http_requests_total")
    {
        let route = s.labels.get("route").unwrap_or_default();
        assert!(
            !route.chars().any(|c| c.is_ascii_digit()),
            "route label with an id: {route}"
        );
    }
}
