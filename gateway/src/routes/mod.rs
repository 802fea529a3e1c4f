//! The gateway's HTTP routes.

mod health;

use axum::routing::get;
use axum::Router;

use crate::startup::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}
