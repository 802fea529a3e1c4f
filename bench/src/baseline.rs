//! The baseline: the flash sale done the way the old system did it, so every report shows our
//! gateway against the architecture it replaces. Each request verifies the same JWT, then in
//! one database transaction decrements stock with a guarded UPDATE, checks the buyer's limit
//! and inserts the order. Every buyer of a sale queues on one hot row.
//!
//! It answers in the gateway's shapes (202 `{"order_id"}`, 409 `sold_out`/`limit_exceeded`),
//! so the same workload and verification apply. Bench-only tables, created on start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bench_baseline_promotions (
    id             BIGSERIAL PRIMARY KEY,
    remaining      BIGINT NOT NULL CHECK (remaining >= 0),
    per_user_limit INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_baseline_orders (
    id           BIGSERIAL PRIMARY KEY,
    promotion_id BIGINT NOT NULL REFERENCES bench_baseline_promotions (id),
    user_id      BIGINT NOT NULL,
    request_id   TEXT NOT NULL,
    quantity     INTEGER NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (promotion_id, user_id, request_id)
);
CREATE INDEX IF NOT EXISTS bench_baseline_orders_buyer ON bench_baseline_orders (promotion_id, user_id);
";

struct Baseline {
    db: PgPool,
    jwt: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

#[derive(Deserialize)]
struct OrderBody {
    quantity: i32,
    request_id: String,
}

#[derive(Deserialize)]
struct NewPromotion {
    stock: i64,
    per_user_limit: i32,
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": code } })),
    )
        .into_response()
}

/// Serve until killed (the bench runs it as a child process, like the gateway).
pub async fn serve(addr: SocketAddr, db: PgPool, jwt_secret: &SecretString) -> anyhow::Result<()> {
    sqlx::raw_sql(SCHEMA)
        .execute(&db)
        .await
        .context("create the baseline tables")?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.required_spec_claims = ["exp", "sub"].iter().map(|s| (*s).to_owned()).collect();
    let state = Arc::new(Baseline {
        db,
        jwt: jsonwebtoken::DecodingKey::from_secret(jwt_secret.expose_secret().as_bytes()),
        validation,
    });
    let app = axum::Router::new()
        .route("/baseline/promotions", post(create))
        .route("/api/seckill/{id}/orders", post(place))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await.context("bind")?;
    axum::serve(listener, app).await.context("serve")
}

async fn create(State(s): State<Arc<Baseline>>, Json(p): Json<NewPromotion>) -> Response {
    match sqlx::query_scalar::<_, i64>(
        "INSERT INTO bench_baseline_promotions (remaining, per_user_limit) VALUES ($1, $2) RETURNING id",
    )
    .bind(p.stock)
    .bind(p.per_user_limit)
    .fetch_one(&s.db)
    .await
    {
        Ok(id) => (StatusCode::CREATED, Json(json!({ "id": id }))).into_response(),
        Err(_) => error(StatusCode::BAD_REQUEST, "invalid_promotion"),
    }
}

async fn place(
    State(s): State<Arc<Baseline>>,
    Path(promotion_id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<OrderBody>,
) -> Response {
    let user = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| jsonwebtoken::decode::<Claims>(t, &s.jwt, &s.validation).ok())
        .and_then(|t| t.claims.sub.parse::<i64>().ok());
    let Some(user) = user else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    if body.quantity < 1 {
        return error(StatusCode::BAD_REQUEST, "invalid_quantity");
    }
    match place_in_transaction(&s.db, promotion_id, user, &body).await {
        Ok(Placed::Order(id)) => (
            StatusCode::ACCEPTED,
            Json(json!({ "order_id": id.to_string(), "status": "queued" })),
        )
            .into_response(),
        Ok(Placed::SoldOut) => error(StatusCode::CONFLICT, "sold_out"),
        Ok(Placed::LimitExceeded) => error(StatusCode::CONFLICT, "limit_exceeded"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

enum Placed {
    Order(i64),
    SoldOut,
    LimitExceeded,
}

async fn existing_order(
    tx: &mut sqlx::PgConnection,
    promotion_id: i64,
    user: i64,
    request_id: &str,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM bench_baseline_orders WHERE promotion_id = $1 AND user_id = $2 AND request_id = $3",
    )
    .bind(promotion_id)
    .bind(user)
    .bind(request_id)
    .fetch_optional(tx)
    .await
}

async fn place_in_transaction(
    db: &PgPool,
    promotion_id: i64,
    user: i64,
    body: &OrderBody,
) -> sqlx::Result<Placed> {
    let mut tx = db.begin().await?;
    if let Some(id) = existing_order(&mut tx, promotion_id, user, &body.request_id).await? {
        return Ok(Placed::Order(id));
    }
    // The guarded decrement takes the sale's row lock: every buyer after it waits here.
    let limit: Option<i32> = sqlx::query_scalar(
        "UPDATE bench_baseline_promotions SET remaining = remaining - $2
         WHERE id = $1 AND remaining >= $2 RETURNING per_user_limit",
    )
    .bind(promotion_id)
    .bind(i64::from(body.quantity))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(limit) = limit else {
        return Ok(Placed::SoldOut);
    };
    // A retry racing its original: under the row lock, the original has committed.
    if let Some(id) = existing_order(&mut tx, promotion_id, user, &body.request_id).await? {
        return Ok(Placed::Order(id));
    }
    let held: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::BIGINT FROM bench_baseline_orders WHERE promotion_id = $1 AND user_id = $2",
    )
    .bind(promotion_id)
    .bind(user)
    .fetch_one(&mut *tx)
    .await?;
    if held + i64::from(body.quantity) > i64::from(limit) {
        return Ok(Placed::LimitExceeded);
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO bench_baseline_orders (promotion_id, user_id, request_id, quantity)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(promotion_id)
    .bind(user)
    .bind(&body.request_id)
    .bind(body.quantity)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Placed::Order(id))
}

/// Create a baseline sale through the server at `base`; returns its id.
pub async fn create_promotion(base: &str, stock: i64, per_user_limit: u32) -> anyhow::Result<i64> {
    let response = reqwest::Client::new()
        .post(format!("{base}/baseline/promotions"))
        .json(&json!({ "stock": stock, "per_user_limit": per_user_limit }))
        .send()
        .await
        .context("create a baseline promotion")?;
    anyhow::ensure!(
        response.status().is_success(),
        "baseline promotion: {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await.context("baseline promotion body")?;
    body["id"].as_i64().context("baseline promotion id")
}
