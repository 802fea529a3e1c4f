//! Extractors that turn bad input into `ApiError`s with stable codes instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: 400 `malformed_json`, 422 `invalid_body`, 415 `unsupported_media_type`,
/// 413 `body_too_large`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The body is in memory already (the body-deadline middleware read it whole).
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|_| ApiError::body_too_large())?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
        match axum::Json::<T>::from_request(req, state).await {
            // PostgreSQL text cannot hold NUL: refused here rather than failing a write.
            Ok(_) if escapes_nul(&bytes) => Err(ApiError::unprocessable(
                "invalid_body",
                "strings must not contain NUL (\\u0000)",
            )),
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// Whether a JSON text spells a NUL character (`\u0000`, the backslash not itself escaped).
fn escapes_nul(json: &[u8]) -> bool {
    json.windows(6)
        .enumerate()
        .any(|(i, w)| w == b"\\u0000" && json[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0)
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::unprocessable("invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(),
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// A numeric id in the path: 400 `invalid_id` otherwise.
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_id", e.body_text()))?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(PathId(id)),
            _ => Err(ApiError::bad_request("invalid_id", "ids are positive integers")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escapes_nul;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(escapes_nul(br#"{"a":"x\u0000y"}"#));
        assert!(escapes_nul(br#"{"a":"x\\\u0000y"}"#), "a backslash, then NUL");
        assert!(
            !escapes_nul(br#"{"a":"x\\u0000y"}"#),
            "a backslash, then the text u0000"
        );
        assert!(!escapes_nul(br#"{"a":"plain \u0001"}"#));
    }
}
