//! Login, refresh, logout: `/api/auth/*`. Argon2 and redb commits run on blocking threads so a
//! burst of logins cannot stall other requests; the login limiter answers 429 + `Retry-After`.
//!
//! Password checks also take one of a few process-wide slots ([`password_checks_max`]): each
//! argon2id check costs ~19 MiB and tens of ms of a core, so a login flood (from many
//! addresses, past the per-IP limiter) may use at most those cores and that memory. A login
//! waits up to [`LOGIN_SLOT_WAIT_MS`] for a slot, with at most [`LOGINS_WAITING_MAX`] waiting;
//! beyond either it answers 503 + `Retry-After` at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::{ApiState, blocking};
use crate::auth::{Secret, TokenPair};
use crate::http::{ApiError, Reply, Request};

/// Logins waiting for a password-check slot at most; one more answers 503 at once.
pub const LOGINS_WAITING_MAX: usize = 64;

/// Longest wait of a login for a password-check slot, ms; then 503 + `Retry-After: 1`.
pub const LOGIN_SLOT_WAIT_MS: u64 = 2_000;

/// Password checks (argon2id) running at once in this process: half the machine's cores, at
/// least one, so logins never take every core from the other requests.
pub fn password_checks_max() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

struct PasswordSlots {
    running: Semaphore,
    waiting: AtomicUsize,
}

/// Process-wide (the CPU and memory they guard are the process's, whatever the router).
static PASSWORD_SLOTS: OnceLock<PasswordSlots> = OnceLock::new();

/// A password-check slot, or 503 when the waiting room is full or the wait runs out.
async fn password_slot() -> Result<SemaphorePermit<'static>, ApiError> {
    let slots = PASSWORD_SLOTS.get_or_init(|| PasswordSlots {
        running: Semaphore::new(password_checks_max()),
        waiting: AtomicUsize::new(0),
    });
    if let Ok(permit) = slots.running.try_acquire() {
        return Ok(permit);
    }
    let busy = || ApiError::Unavailable { retry_after_s: 1 };
    if slots.waiting.fetch_add(1, Ordering::AcqRel) >= LOGINS_WAITING_MAX {
        slots.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(busy());
    }
    let waited =
        tokio::time::timeout(Duration::from_millis(LOGIN_SLOT_WAIT_MS), slots.running.acquire()).await;
    slots.waiting.fetch_sub(1, Ordering::AcqRel);
    match waited {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

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
        (status = 429, description = "Too many attempts; see Retry-After"),
        (status = 503, description = "Too many logins in progress; see Retry-After")))]
pub(crate) async fn token(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: LoginBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let slot = password_slot().await?;
    let pair = blocking(move || {
        let _slot = slot;
        Ok(auth.login(&body.email, &password, ip)?)
    })
    .await?;
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
