//! Liveness (the process answers and its background tasks run) and readiness (Redis,
//! PostgreSQL and Pulsar answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use order_core::runtime::supervisor::HealthReport;
use std::sync::Arc;

use crate::state::OpsRoutes;
use crate::wire::reports::ReadinessBody;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses(
        (status = 200, description = "the process answers and every background task runs"),
        (status = 503, description = "a background task stopped (named, with its cause); the gateway is stopping"),
    ),
)]
pub async fn healthz(State(state): State<Arc<OpsRoutes>>) -> (StatusCode, Json<HealthReport>) {
    let report = state.health.report();
    let status = match report.failure {
        None => StatusCode::OK,
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(report))
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, body = ReadinessBody),
        (status = 503, body = ReadinessBody),
    ),
)]
pub async fn readyz(State(state): State<Arc<OpsRoutes>>) -> (StatusCode, Json<ReadinessBody>) {
    let report = state.deps.readiness().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report.into()))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    ),
)]
pub async fn metrics() -> String {
    order_core::runtime::metrics::install().render()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses(
        (status = 200, description = "this document"),
    ),
)]
pub async fn openapi(Extension(spec): Extension<ServedSpec>) -> Json<utoipa::openapi::OpenApi> {
    Json(spec.0.as_ref().clone())
}

/// The document `/openapi.json` serves, built once at start-up (`startup`, from `openapi`,
/// which lists this module's handlers: the handler takes it rather than importing it).
#[derive(Clone)]
pub struct ServedSpec(pub std::sync::Arc<utoipa::openapi::OpenApi>);

impl std::fmt::Debug for ServedSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServedSpec")
    }
}
