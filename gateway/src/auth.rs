//! Who is calling: app users by JWT (HS256, `sub` = user id), operations staff by admin key.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use order_core::domain::ids::UserId;
use secrecy::ExposeSecret;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::settings::AuthSettings;

/// Verifies user tokens and the admin key; built once at start.
#[derive(Clone)]
pub struct Authenticator {
    jwt_key: DecodingKey,
    validation: Validation,
    admin_key: Vec<u8>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Self {
        // The algorithm is pinned: a token that names another one (or `none`) is refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
        }
        Self {
            jwt_key: DecodingKey::from_secret(settings.jwt_secret.expose_secret().as_bytes()),
            validation,
            admin_key: settings.admin_key.expose_secret().as_bytes().to_vec(),
        }
    }

    pub fn user_id(&self, token: &str) -> Result<UserId, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.jwt_key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        ApiError::unauthorized("token_expired", "the token has expired")
                    }
                    _ => ApiError::unauthorized("invalid_token", "the token is not valid"),
                }
            })?;
        match data
            .claims
            .sub
            .parse::<i64>()
            .ok()
            .and_then(|id| UserId::parse(id).ok())
        {
            Some(id) => Ok(id),
            None => Err(ApiError::unauthorized(
                "invalid_token",
                "the token's subject is not a user id",
            )),
        }
    }

    pub fn is_admin_key(&self, presented: &str) -> bool {
        // Constant time, so response timing does not reveal how much of the key matched.
        presented.as_bytes().ct_eq(&self.admin_key).into()
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    bearer_token(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("missing_token", "send Authorization: Bearer <token>"))
}

/// The token of `Authorization: Bearer <token>`, when there is one.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A state that holds the gateway's `Authenticator`: what the `User` and `Admin` extractors
/// need of it (the state's type stays in `state`, which builds on this module).
pub trait HasAuthenticator {
    fn authenticator(&self) -> &Authenticator;
}

/// An app user, authenticated by JWT.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub id: UserId,
}

impl<S: HasAuthenticator + Send + Sync> FromRequestParts<S> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let id = state.authenticator().user_id(bearer(parts)?)?;
        Ok(User { id })
    }
}

/// Operations staff, authenticated by the admin key.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl<S: HasAuthenticator + Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if state.authenticator().is_admin_key(bearer(parts)?) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized(
                "invalid_admin_key",
                "the admin key is not valid",
            ))
        }
    }
}
