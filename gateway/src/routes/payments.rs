//! `POST /api/payments/callback`: the payment provider tells us money arrived.
//!
//! The signature is checked over the raw body before anything is parsed
//! (`X-Signature: hex(HMAC-SHA256(callback secret, body))`, compared in constant time),
//! a missing or stale `timestamp` (signed with the body) is refused, and the callback is
//! applied once per provider payment id, so a replay inside the window changes nothing.
//! Money for an order that cannot take it (cancelled, already paid) is recorded with a
//! refund due, never dropped.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use hmac::{Hmac, Mac};
use order_core::domain::checkout::CallbackOutcome;
use secrecy::ExposeSecret;
use sha2::Sha256;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::state::CheckoutRoutes;
use crate::wire::checkout::PaymentCallbackBody;

pub const SIGNATURE_HEADER: &str = "x-signature";

/// `hex(HMAC-SHA256(secret, body))`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(expected) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// What a verified callback did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CallbackReply {
    /// `applied`, `duplicate` (this payment id was processed before), `refund_due` (the
    /// order cannot take the money: recorded for refund) or `ignored` (not a success).
    pub result: &'static str,
}

#[utoipa::path(
    post,
    path = "/api/payments/callback",
    tag = "payments",
    params(("X-Signature" = String, Header, description = "hex(HMAC-SHA256(callback secret, raw body))")),
    request_body = PaymentCallbackBody,
    responses(
        (status = 200, body = CallbackReply),
        (status = 401, description = "missing or invalid credentials", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 413, description = "body too large", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field", body = crate::error::ErrorBody),
        (status = 500, description = "internal_error: a bug (not retryable; logged with its cause)", body = crate::error::ErrorBody),
        (status = 503, description = "a dependency is unavailable; retry after Retry-After", body = crate::error::ErrorBody),
    ),
)]
pub async fn payment_callback(
    State(state): State<Arc<CheckoutRoutes>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<CallbackReply>)> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing_signature", "send X-Signature"))?;
    if !verify(
        state.payments.callback_secret.expose_secret().as_bytes(),
        &body,
        signature,
    ) {
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "the signature does not match the body",
        ));
    }
    let callback = serde_json::from_slice::<PaymentCallbackBody>(&body)
        .or_else(|e| crate::extract::with_integral_numbers(&body).ok_or(e))
        .map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?
        .into_domain();
    let Some(ts) = callback.timestamp else {
        return Err(ApiError::unauthorized(
            "missing_timestamp",
            "a callback must carry its signing time (timestamp, Unix seconds)",
        ));
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > state.payments.max_callback_age_secs {
        return Err(ApiError::unauthorized(
            "stale_callback",
            "the callback's timestamp is outside the replay window",
        ));
    }
    if callback.status != "succeeded" {
        return Ok((StatusCode::OK, Json(CallbackReply { result: "ignored" })));
    }
    // Stored as they come: a provider's id must fit a text column, an amount a refund row.
    let id_ok = (1..=128).contains(&callback.payment_id.len()) && !callback.payment_id.contains('\0');
    if !id_ok || callback.amount_cents <= 0 {
        return Err(ApiError::unprocessable(
            "invalid_body",
            "payment_id must be 1 to 128 characters without NUL, amount_cents positive",
        ));
    }
    let outcome = state
        .checkout
        .apply_payment(state.cache.as_ref(), &callback)
        .await
        .map_err(|e| ApiError::dependency("apply a payment callback", e))?;
    tracing::info!(payment_id = %callback.payment_id, order_id = %callback.order_id, ?outcome, "payment callback");
    match outcome {
        CallbackOutcome::AmountMismatch => Err(ApiError::unprocessable(
            "amount_mismatch",
            "the amount differs from the order's total; recorded for refund",
        )),
        CallbackOutcome::UnknownOrder => Err(ApiError::not_found(
            "order_not_found",
            "no such order; recorded for refund",
        )),
        CallbackOutcome::Applied { .. } => Ok((StatusCode::OK, Json(CallbackReply { result: "applied" }))),
        CallbackOutcome::Duplicate => Ok((StatusCode::OK, Json(CallbackReply { result: "duplicate" }))),
        CallbackOutcome::RefundDue => Ok((StatusCode::OK, Json(CallbackReply { result: "refund_due" }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_key_and_body() {
        let sig = sign(b"key", b"{\"a\":1}");
        assert!(verify(b"key", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":2}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"key", b"{\"a\":1}", "not-hex"));
        assert!(!verify(b"key", b"{\"a\":1}", ""));
    }
}
