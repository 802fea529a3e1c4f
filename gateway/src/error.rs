//! API errors: `{"error":{"code":"sold_out","message":"…"}}` with the right status.
//!
//! Handlers return `ApiError` for everything a client can cause (4xx, with a stable code).
//! A dependency's failure becomes 503 `unavailable` with Retry-After when a retry may
//! succeed (it is down, slow or overloaded), and 500 `internal_error` without it when it
//! cannot (a bug: a query or script that fails as written, an unexpected reply): a client
//! must not retry a bug forever. Either carries its cause, which `log_failures` (middleware)
//! logs once per response with the route; nothing is logged where the error is built.
//! Nothing a client sends can produce a panic or a 500.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// What failed and why (never sent to the client; logged by `log_failures`).
    cause: Option<Failure>,
}

/// The cause of a 5xx, carried from the handler to the logging middleware in the
/// response's extensions.
#[derive(Debug, Clone)]
pub struct Failure {
    pub context: &'static str,
    /// The error with its chain (`{:#}`).
    pub error: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            cause: None,
        }
    }

    /// Tell the client when to try again (503, 429).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 413 `body_too_large`, wherever the body limit is hit.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body too large",
        )
    }

    /// 503 `overloaded`: the gateway shed a seckill order before doing anything for it.
    /// Nothing was reserved; the same request id may be sent again after Retry-After.
    /// Not logged per request (a flood would log every one; the metrics count them).
    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the sale is busy right now; retry with the same request_id",
        )
        .retry_after(1)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests; retry later",
            )
        }
    }

    /// A call to a dependency failed: 503 (retry) when the failure is transient, else 500.
    pub fn dependency<E>(context: &'static str, error: E) -> Self
    where
        E: order_core::runtime::transient::Transient + std::fmt::Display,
    {
        if error.is_transient() {
            Self::unavailable(context, error)
        } else {
            Self::internal(context, error)
        }
    }

    /// A dependency is unavailable right now: tell the client to retry.
    pub fn unavailable(context: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            retry_after_secs: Some(1),
            cause: Some(Failure {
                context,
                error: format!("{error:#}"),
            }),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "temporarily unavailable; retry later",
            )
        }
    }

    /// A bug: retrying cannot help, so no Retry-After.
    pub fn internal(context: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            cause: Some(Failure {
                context,
                error: format!("{error:#}"),
            }),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "an internal error occurred; it was logged",
            )
        }
    }
}

/// Log every response that carries a failure, once, with its route and cause (the request
/// id comes from the surrounding span).
pub async fn log_failures(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if let Some(failure) = response.extensions().get::<Failure>() {
        tracing::error!(
            status = response.status().as_u16(),
            %method,
            path,
            error = %failure.error,
            "{}",
            failure.context
        );
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(cause);
        }
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The error body every 4xx/5xx carries (for the OpenAPI spec).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `sold_out`, `limit_exceeded`, `invalid_body`, …
    pub code: String,
    pub message: String,
}
