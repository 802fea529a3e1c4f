//! Liveness (the process answers) and readiness (Redis, PostgreSQL and Pulsar answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use order_core::readiness::ReadinessReport;
use serde_json::{json, Value};

use crate::startup::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<ReadinessReport>) {
    let report = state.deps.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
