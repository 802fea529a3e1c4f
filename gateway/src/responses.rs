//! The failures any route of a kind may answer besides its own outcomes, as response sets
//! the handlers' OpenAPI annotations name. Apart from `openapi`, which lists the handlers, so
//! that handlers never import the module that imports them.

use crate::error::ErrorBody;

/// What any admin route may answer besides its own outcomes.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // Only read by the spec generator.
pub enum AdminFailures {
    #[response(status = 401, description = "missing or invalid admin key")]
    Unauthorized(ErrorBody),
    #[response(
        status = 500,
        description = "internal_error: a bug (not retryable; logged with its cause)"
    )]
    Internal(ErrorBody),
    #[response(
        status = 503,
        description = "a dependency is unavailable; retry after Retry-After"
    )]
    Unavailable(ErrorBody),
}

/// What any user route may answer besides its own outcomes.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // Only read by the spec generator.
pub enum UserFailures {
    #[response(status = 401, description = "missing, invalid or expired user token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 500,
        description = "internal_error: a bug (not retryable; logged with its cause)"
    )]
    Internal(ErrorBody),
    #[response(
        status = 503,
        description = "a dependency is unavailable; retry after Retry-After"
    )]
    Unavailable(ErrorBody),
}

/// What any checkout route may answer besides its own outcomes (checkout has its own
/// concurrency limit: `busy`).
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)] // Only read by the spec generator.
pub enum CheckoutFailures {
    #[response(status = 401, description = "missing, invalid or expired user token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 500,
        description = "internal_error: a bug (not retryable; logged with its cause)"
    )]
    Internal(ErrorBody),
    #[response(
        status = 503,
        description = "a dependency is unavailable, or checkout is busy (`busy`); retry after Retry-After"
    )]
    Unavailable(ErrorBody),
}
