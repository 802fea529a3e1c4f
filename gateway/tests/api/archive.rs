//! An order of a month past the retention, archived and dropped from the database, is still
//! answered by `GET /api/orders/{id}` on every gateway of the deployment: from its month's
//! archive file, marked `archived`, to its owner only.

use gateway::test_support::TestApp;
use order_core::domain::order_months::OrderMonth;
use order_core::postgres::order_data::archive_month;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn an_archived_order_is_answered_from_its_archive() {
    let app = TestApp::spawn().await;
    let second = app.spawn_beside(|_| {}).await;
    let third = app.spawn_beside(|_| {}).await;
    let pool = app.pool();
    let feb = OrderMonth::new(2026, 2).expect("a month");
    let archived_id = feb.first_id() + 4096 * 5_000;
    let live_id = OrderMonth::new(2026, 4).expect("a month").first_id() + 4096;
    for (id, request) in [(archived_id, "old-basket"), (live_id, "new-basket")] {
        sqlx::query(
            "INSERT INTO orders (id, user_id, kind, request_id, status, subtotal_cents, total_cents, created_at)
             VALUES ($1, 21, 'checkout', $2, 'completed', 4200, 4200, '2026-02-01T00:00:05Z')",
        )
        .bind(id)
        .bind(request)
        .execute(&pool)
        .await
        .expect("insert an order");
    }
    let get = |id: i64, user: i64| {
        let request = app
            .client
            .get(format!("{}/api/orders/{id}", app.address))
            .bearer_auth(app.token(user));
        async move {
            let response = request.send().await.expect("get");
            let status = response.status();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, before) = get(archived_id, 21).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        before.get("archived"),
        None,
        "a live order is not marked: {before}"
    );

    archive_month(&pool, &app.settings.archive.dir, feb)
        .await
        .expect("archive")
        .expect("February had partitions");
    let still_in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
        .bind(archived_id)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(still_in_db, 0, "the order left the database");

    for gateway in [&app, &second, &third] {
        let response = gateway
            .client
            .get(format!("{}/api/orders/{archived_id}", gateway.address))
            .bearer_auth(gateway.token(21))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), StatusCode::OK);
        let after: Value = response.json().await.expect("json");
        assert_eq!(after["archived"], true, "{after}");
        assert_eq!(after["order_id"], archived_id.to_string());
        for field in ["status", "kind", "total_cents", "created_at"] {
            assert_eq!(after[field], before[field], "{field} is answered as it was");
        }
    }
    let (status, body) = get(archived_id, 22).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another user's archived order: {body}"
    );
    assert_eq!(body["error"]["code"], "order_not_found");
    let (status, live) = get(live_id, 21).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(live.get("archived"), None, "April stays in the database: {live}");
    std::fs::remove_dir_all(&app.settings.archive.dir).ok();
}
