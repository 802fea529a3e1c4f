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
        let value = match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(JsonRejection::JsonDataError(e)) => with_integral_numbers(&bytes)
                .ok_or_else(|| json_rejection(JsonRejection::JsonDataError(e)))?,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        // PostgreSQL text cannot hold NUL: refused here rather than failing a write.
        if escapes_nul(&bytes) {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "strings must not contain NUL (\\u0000)",
            ));
        }
        Ok(ApiJson(value))
    }
}

/// The largest magnitude below which every integer is exactly an `f64`.
const EXACT_F64_INTEGERS: f64 = 9_007_199_254_740_992.0;

/// A body refused for its types, read once more with integral numbers (`64.0`, `1e2`) as
/// integers: JSON Schema, and so the spec, counts them as integers; serde does not. Only
/// numbers an `f64` holds exactly are converted. `None` when nothing changes or it still
/// does not fit `T`.
pub fn with_integral_numbers<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
    let mut value: serde_json::Value = serde_json::from_slice(json).ok()?;
    if !integers_from_integral_floats(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// Rewrites integral floats as integers in place; whether any was.
fn integers_from_integral_floats(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT_F64_INTEGERS => {
                *value = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            integers_from_integral_floats(item) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, field| {
            integers_from_integral_floats(field) | changed
        }),
        _ => false,
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
    use super::{escapes_nul, with_integral_numbers};

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Counts {
        n: i64,
        items: Vec<u32>,
    }

    #[test]
    fn integral_floats_read_as_integers_and_the_rest_stay_refused() {
        let read = |json: &str| with_integral_numbers::<Counts>(json.as_bytes());
        assert_eq!(
            read(r#"{"n": 64.0, "items": [1e2, 3]}"#),
            Some(Counts {
                n: 64,
                items: vec![100, 3]
            })
        );
        assert_eq!(
            read(r#"{"n": -0.0, "items": []}"#),
            Some(Counts { n: 0, items: vec![] })
        );
        assert_eq!(read(r#"{"n": 64.5, "items": []}"#), None, "not integral");
        assert_eq!(
            read(r#"{"n": 1e300, "items": []}"#),
            None,
            "beyond exact f64 integers"
        );
        assert_eq!(read(r#"{"n": 1, "items": [2]}"#), None, "nothing to convert");
        assert_eq!(
            read(r#"{"n": 1.0, "items": [-1.0]}"#),
            None,
            "still the wrong type"
        );
    }

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
