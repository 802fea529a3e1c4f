//! Sale tokens at the gateway: handing them out after the sale's challenge, and checking the
//! one an order carries (`X-Sale-Token`). The token and puzzle arithmetic is in
//! `order_core::domain::sale_access`; this is the HTTP side: timing, per-user issuance limits
//! and the external verifier.
//!
//! Every gateway signs with the same key (`auth.sale_token_secret`), so a token from one is
//! good on all, and checking one costs an HMAC, no I/O.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use order_core::domain::promotion::Promotion;
use order_core::domain::sale_access::{AccessRefusal, Challenge, SaleKey};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::sale_counters::SaleRejection;
use crate::settings::SaleTokenSettings;

/// The header an order carries its sale token in.
pub const SALE_TOKEN_HEADER: &str = "x-sale-token";

/// A token handed to a buyer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub expires_ms: i64,
}

/// The challenge as an app sees it (the verifier's URL is not shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeView {
    None,
    ProofOfWork {
        puzzle: String,
        difficulty: u8,
        expires_ms: i64,
    },
    Webhook,
}

/// What the external verifier is sent, and what it answers.
#[derive(Debug, Serialize)]
struct VerifierQuestion<'a> {
    promotion_id: i64,
    user_id: i64,
    solution: &'a str,
}

#[derive(Debug, Deserialize)]
struct VerifierAnswer {
    success: bool,
}

pub struct SaleTokens {
    key: SaleKey,
    lead: chrono::Duration,
    ttl_ms: i64,
    puzzle_ttl_ms: i64,
    verifier: reqwest::Client,
    /// Calls to external verifiers in flight (a countdown crowd must not open a socket each).
    verifier_calls: tokio::sync::Semaphore,
    /// Whether the last verifier call failed (failures are logged once per streak).
    verifier_failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for SaleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaleTokens")
            .field("lead", &self.lead)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

fn ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl SaleTokens {
    pub fn new(secret: &secrecy::SecretString, settings: &SaleTokenSettings) -> anyhow::Result<Self> {
        Ok(Self {
            key: SaleKey::new(secret.expose_secret().as_bytes()),
            lead: chrono::Duration::seconds(i64::try_from(settings.lead_secs).unwrap_or(i64::MAX / 1000)),
            ttl_ms: ms(settings.ttl_secs),
            puzzle_ttl_ms: ms(settings.puzzle_ttl_secs),
            // A verifier answers; it does not send the buyer's data on elsewhere.
            verifier: reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.verifier_timeout_ms))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            verifier_calls: tokio::sync::Semaphore::new(settings.max_verifier_calls),
            verifier_failing: Default::default(),
        })
    }

    /// An order for a sale that requires a token: the header's token must be this buyer's
    /// for this sale, unexpired.
    pub fn check_order(
        &self,
        headers: &HeaderMap,
        promotion_id: i64,
        user_id: i64,
        now_ms: i64,
    ) -> Result<(), SaleRejection> {
        let token = headers
            .get(SALE_TOKEN_HEADER)
            .ok_or(SaleRejection::TokenRequired)?
            .to_str()
            .map_err(|_| SaleRejection::TokenInvalid)?;
        self.key
            .verify_token(token, promotion_id, user_id, now_ms)
            .map_err(SaleRejection::of_token)
    }

    /// Tokens are handed out from `lead` before the start: earlier is 403 `too_early`.
    fn open_for_tokens(
        &self,
        promotion: &Promotion,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ApiError> {
        let from = promotion.starts_at - self.lead;
        if now < from {
            let wait = ((from - now).num_milliseconds().max(1) as u64).div_ceil(1000);
            return Err(ApiError::forbidden(
                "too_early",
                format!("sale tokens are handed out from {}", from.to_rfc3339()),
            )
            .retry_after(wait));
        }
        Ok(())
    }

    /// What this buyer must pass to get a token for this sale.
    pub fn challenge(
        &self,
        promotion: &Promotion,
        user_id: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ChallengeView, ApiError> {
        self.open_for_tokens(promotion, now)?;
        Ok(match &promotion.access.challenge {
            Challenge::None => ChallengeView::None,
            Challenge::Webhook { .. } => ChallengeView::Webhook,
            Challenge::ProofOfWork { difficulty } => {
                let expires_ms = now.timestamp_millis() + self.puzzle_ttl_ms;
                ChallengeView::ProofOfWork {
                    puzzle: self
                        .key
                        .issue_puzzle(promotion.id, user_id, expires_ms, *difficulty),
                    difficulty: *difficulty,
                    expires_ms,
                }
            }
        })
    }

    /// Hand out a token once the buyer passed the sale's challenge.
    pub async fn issue(
        &self,
        promotion: &Promotion,
        user_id: i64,
        answer: ChallengeAnswer,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<IssuedToken, ApiError> {
        self.open_for_tokens(promotion, now)?;
        let now_ms = now.timestamp_millis();
        match &promotion.access.challenge {
            Challenge::None => {}
            Challenge::ProofOfWork { difficulty } => {
                let (Some(puzzle), Some(solution)) = (answer.puzzle.as_deref(), answer.solution.as_deref())
                else {
                    return Err(challenge_required(
                        "send the puzzle from GET /api/seckill/{promotion_id}/challenge and its solution",
                    ));
                };
                let nonce: u64 = solution.parse().map_err(|_| {
                    ApiError::unprocessable("invalid_solution", "solution must be a decimal nonce")
                })?;
                self.key
                    .verify_solution(puzzle, nonce, promotion.id, user_id, *difficulty, now_ms)
                    .map_err(|refusal| match refusal {
                        AccessRefusal::Expired => {
                            ApiError::forbidden("challenge_expired", "the puzzle has expired; get a new one")
                        }
                        AccessRefusal::Forged => ApiError::forbidden(
                            "challenge_failed",
                            "not a puzzle this service gave this buyer for this sale",
                        ),
                        AccessRefusal::Unsolved => {
                            ApiError::forbidden("challenge_failed", "the solution does not solve the puzzle")
                        }
                    })?;
            }
            Challenge::Webhook { url } => {
                let Some(solution) = answer.solution.as_deref() else {
                    return Err(challenge_required("send the verifier's response as solution"));
                };
                if !self.ask_verifier(url, promotion.id, user_id, solution).await? {
                    return Err(ApiError::forbidden(
                        "challenge_failed",
                        "the verifier refused the solution",
                    ));
                }
            }
        }
        let expires_ms = now_ms + self.ttl_ms;
        Ok(IssuedToken {
            token: self.key.mint_token(promotion.id, user_id, expires_ms),
            expires_ms,
        })
    }

    /// POST the answer to the sale's verifier; it says yes or no. Slow, down or answering
    /// anything else: 503 `verifier_unavailable` (the buyer may try again), logged once per
    /// streak and without the URL (it may carry the service's key); too many calls in
    /// flight: 503 `verifier_busy`. Redirects are not followed.
    async fn ask_verifier(
        &self,
        url: &str,
        promotion_id: i64,
        user_id: i64,
        solution: &str,
    ) -> Result<bool, ApiError> {
        let Ok(_slot) = self.verifier_calls.try_acquire() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "verifier_busy",
                "too many challenges are being checked right now; try again",
            )
            .retry_after(1));
        };
        let asked = async {
            let response = self
                .verifier
                .post(url)
                .json(&VerifierQuestion {
                    promotion_id,
                    user_id,
                    solution,
                })
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            response
                .json::<VerifierAnswer>()
                .await
                .map_err(|e| format!("not a {{\"success\": bool}} answer: {}", e.without_url()))
        };
        let answer = asked.await;
        let was_failing = self
            .verifier_failing
            .swap(answer.is_err(), std::sync::atomic::Ordering::Relaxed);
        match answer {
            Ok(answer) => {
                if was_failing {
                    tracing::info!(promotion_id, "the sale's challenge verifier answers again");
                }
                Ok(answer.success)
            }
            Err(e) => {
                if !was_failing {
                    tracing::warn!(promotion_id, error = %e, "the sale's challenge verifier failed; buyers are asked to retry");
                }
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "verifier_unavailable",
                    "the challenge could not be checked right now; try again",
                )
                .retry_after(1))
            }
        }
    }
}

/// The app's answer to the challenge (both absent for `none`).
#[derive(Debug, Clone, Default)]
pub struct ChallengeAnswer {
    pub puzzle: Option<String>,
    pub solution: Option<String>,
}

fn challenge_required(what: &str) -> ApiError {
    ApiError::forbidden(
        "challenge_required",
        format!("this sale asks for a challenge before a token: {what}"),
    )
}
