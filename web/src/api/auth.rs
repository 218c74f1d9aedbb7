//! Login, refresh, logout: `/api/auth/*`. Argon2 and redb commits run on blocking threads so a
//! burst of logins cannot stall other requests; the login limiter answers 429 + `Retry-After`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::{ApiState, blocking};
use crate::auth::{Secret, TokenPair};
use crate::http::{ApiError, Reply, Request};

/// Credentials of `POST /api/auth/token`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// Account email.
    email: String,
    /// Account password.
    password: String,
}

/// A refresh token, for `POST /api/auth/refresh` and `POST /api/auth/logout`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshBody {
    /// The opaque refresh token from the last login or refresh (single use).
    refresh_token: String,
}

/// Tokens handed out by login and refresh.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenAnswer {
    /// JWT access token; send as `Authorization: Bearer <access_token>`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque refresh token (single use; rotated on every refresh).
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: u64,
}

impl From<TokenPair> for TokenAnswer {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token.expose().to_owned(),
            token_type: "Bearer",
            expires_in: pair.access_expires_in_s,
            refresh_token: pair.refresh_token.expose().to_owned(),
            refresh_expires_in: pair.refresh_expires_in_s,
        }
    }
}

/// Logs in with email and password.
#[utoipa::path(post, path = "/api/auth/token", request_body = LoginBody, tag = "auth",
    responses((status = 200, description = "Access (15 min) and refresh (7 days) tokens", body = TokenAnswer),
        (status = 401, description = "Invalid email or password"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn token(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: LoginBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let pair = blocking(move || Ok(auth.login(&body.email, &password, ip)?)).await?;
    Reply::json(&TokenAnswer::from(pair))
}

/// Trades a refresh token for a new pair (the old refresh token is spent; reusing it revokes
/// the whole session).
#[utoipa::path(post, path = "/api/auth/refresh", request_body = RefreshBody, tag = "auth",
    responses((status = 200, description = "A new token pair", body = TokenAnswer),
        (status = 401, description = "Refresh token invalid, expired or reused")))]
pub(crate) async fn refresh(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: RefreshBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let pair = blocking(move || Ok(auth.refresh(&body.refresh_token, ip)?)).await?;
    Reply::json(&TokenAnswer::from(pair))
}

/// Ends the session of a refresh token.
#[utoipa::path(post, path = "/api/auth/logout", request_body = RefreshBody, tag = "auth",
    responses((status = 204, description = "Session ended"),
        (status = 401, description = "Refresh token invalid")))]
pub(crate) async fn logout(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: RefreshBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.logout(&body.refresh_token, ip)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// Ends every session of the caller and invalidates their access tokens.
#[utoipa::path(post, path = "/api/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses((status = 204, description = "Every session ended"),
        (status = 401, description = "No valid access token")))]
pub(crate) async fn logout_all(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.logout_all(&caller)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}
