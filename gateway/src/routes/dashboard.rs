//! The live sale dashboard for operations staff: one HTML page (no build step, served from
//! the binary) that logs in with the admin key and polls the admin API every second.

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::Admin;
use crate::state::OpsRoutes;

const PAGE: &str = include_str!("../../static/dashboard.html");

/// The page itself holds no data; everything it shows comes from admin-key calls.
#[utoipa::path(
    get,
    path = "/admin/",
    tag = "admin",
    responses(
        (status = 200, description = "the dashboard page", content_type = "text/html"),
    ),
)]
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The consumers' `/status` (writer pace, counters), relayed for the dashboard.
#[utoipa::path(
    get,
    path = "/admin/pipeline",
    tag = "admin",
    security(("admin_key" = [])),
    responses(
        (status = 200, description = "`{available, status}` from the consumers"),
        (status = 401, body = crate::error::ErrorBody),
    ),
)]
pub async fn pipeline(_: Admin, State(state): State<Arc<OpsRoutes>>) -> Json<Value> {
    let fetched = async {
        state
            .http
            .get(&state.consumers_status_url)
            .send()
            .await?
            .error_for_status()?
            .json::<Value>()
            .await
    };
    Json(match fetched.await {
        Ok(status) => json!({ "available": true, "status": status }),
        Err(e) => json!({ "available": false, "error": e.to_string() }),
    })
}
