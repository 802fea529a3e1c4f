//! `GET /api/seckill/{promotion_id}/challenge` and `POST /api/seckill/{promotion_id}/token`:
//! how an app gets the sale token an order needs (see `crate::sale_tokens`).
//!
//! An app asks for the challenge while the countdown runs (from `sale_tokens.lead_secs`
//! before the start), passes it (solves the puzzle, or shows its captcha and sends the
//! response), gets a token, and sends it as `X-Sale-Token` with its orders.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

use crate::auth::User;
use crate::error::ApiResult;
use crate::extract::{ApiJson, PathId};
use crate::sale_counters::SaleEvent;
use crate::sale_tokens::{ChallengeAnswer, ChallengeView};
use crate::state::SeckillRoutes;

/// What to pass before a token: `none` (ask for the token right away), `proof_of_work`
/// (find a decimal `nonce` such that SHA-256 of `puzzle + ":" + nonce` starts with
/// `difficulty` zero bits, then send `puzzle` and `solution`), or `webhook` (show the
/// platform's captcha and send its response as `solution`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengeOffer {
    #[schema(pattern = "^(none|proof_of_work|webhook)$")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub puzzle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u8>,
    /// The puzzle must be solved before this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleTokenRequest {
    /// The puzzle from the challenge (`proof_of_work`).
    #[serde(default)]
    #[schema(max_length = 200)]
    pub puzzle: Option<String>,
    /// The nonce that solves it (`proof_of_work`, decimal), or the captcha response
    /// (`webhook`).
    #[serde(default)]
    #[schema(max_length = 4096)]
    pub solution: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SaleToken {
    /// Send it as the `X-Sale-Token` header of every order for this sale.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/api/seckill/{promotion_id}/challenge",
    tag = "seckill",
    security(("user_jwt" = [])),
    params(("promotion_id" = i64, Path, description = "numeric id", minimum = 1)),
    responses(
        (status = 200, body = ChallengeOffer),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 403, description = "`too_early`: tokens are handed out from `sale_tokens.lead_secs` before the start (Retry-After)", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited (Retry-After)", body = crate::error::ErrorBody),
        crate::responses::UserFailures,
    ),
)]
pub async fn get_challenge(
    State(state): State<Arc<SeckillRoutes>>,
    PathId(promotion_id): PathId,
    user: User,
) -> ApiResult<Json<ChallengeOffer>> {
    state.limits.check_user(user.id.get())?;
    let entry = state.current_sale(promotion_id).await?;
    let view = state
        .sale_tokens
        .challenge(&entry.promotion, user.id.get(), state.cache.clock.now())?;
    Ok(Json(match view {
        ChallengeView::None => ChallengeOffer {
            kind: "none",
            puzzle: None,
            difficulty: None,
            expires_at: None,
        },
        ChallengeView::Webhook => ChallengeOffer {
            kind: "webhook",
            puzzle: None,
            difficulty: None,
            expires_at: None,
        },
        ChallengeView::ProofOfWork {
            puzzle,
            difficulty,
            expires_ms,
        } => ChallengeOffer {
            kind: "proof_of_work",
            puzzle: Some(puzzle),
            difficulty: Some(difficulty),
            expires_at: Some(at(expires_ms)),
        },
    }))
}

#[utoipa::path(
    post,
    path = "/api/seckill/{promotion_id}/token",
    tag = "seckill",
    security(("user_jwt" = [])),
    params(("promotion_id" = i64, Path, description = "numeric id", minimum = 1)),
    request_body = SaleTokenRequest,
    responses(
        (status = 200, body = SaleToken),
        (status = 400, description = "malformed request", body = crate::error::ErrorBody),
        (status = 403, description = "`too_early` (Retry-After), `challenge_required` (the sale's challenge was not answered), `challenge_failed`, `challenge_expired`", body = crate::error::ErrorBody),
        (status = 404, description = "not found", body = crate::error::ErrorBody),
        (status = 413, description = "body too large", body = crate::error::ErrorBody),
        (status = 415, description = "not JSON", body = crate::error::ErrorBody),
        (status = 422, description = "invalid body or field (`invalid_solution`: not a decimal nonce)", body = crate::error::ErrorBody),
        (status = 429, description = "rate limited: a buyer may ask `sale_tokens.per_user` times on each gateway (Retry-After)", body = crate::error::ErrorBody),
        (status = 500, description = "internal_error: a bug (not retryable; logged with its cause)", body = crate::error::ErrorBody),
        (status = 503, description = "`verifier_unavailable` (the sale's external verifier did not answer), `verifier_busy` (too many checks in flight), `unavailable`; retry after Retry-After", body = crate::error::ErrorBody),
    ),
)]
pub async fn issue_sale_token(
    State(state): State<Arc<SeckillRoutes>>,
    PathId(promotion_id): PathId,
    user: User,
    ApiJson(body): ApiJson<SaleTokenRequest>,
) -> ApiResult<Json<SaleToken>> {
    let entry = state.current_sale(promotion_id).await?;
    let issued = async {
        state.limits.check_user(user.id.get())?;
        state.limits.check_token_request(user.id.get())?;
        let answer = ChallengeAnswer {
            puzzle: body.puzzle,
            solution: body.solution,
        };
        let now = state.cache.clock.now();
        state
            .sale_tokens
            .issue(&entry.promotion, user.id.get(), answer, now)
            .await
    }
    .await;
    // Every refusal the buyer caused (rate limits included) is counted against the sale.
    let outcome = match &issued {
        Ok(_) => {
            state.counters.count(promotion_id, SaleEvent::TokenIssued);
            "issued"
        }
        Err(e) => {
            if e.status.is_client_error() {
                state.counters.count(promotion_id, SaleEvent::TokenRefused);
            }
            e.code
        }
    };
    metrics::counter!("sale_tokens_total", "outcome" => outcome).increment(1);
    let issued = issued?;
    Ok(Json(SaleToken {
        token: issued.token,
        expires_at: at(issued.expires_ms),
    }))
}
