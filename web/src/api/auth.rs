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
use crate::auth::{LoginOutcome, Secret, TokenPair};
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
pub(crate) async fn password_slot() -> Result<SemaphorePermit<'static>, ApiError> {
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

/// Logs in with email and password. An account with MFA answers a challenge instead of tokens:
/// send it with a code to `POST /api/auth/mfa`.
#[utoipa::path(post, path = "/api/auth/token", request_body = LoginBody, tag = "auth",
    responses((status = 200, description = "Access (15 min) and refresh (7 days) tokens, or an MFA challenge", body = LoginAnswer),
        (status = 401, description = "Invalid email or password"),
        (status = 429, description = "Too many attempts; see Retry-After"),
        (status = 503, description = "Too many logins in progress; see Retry-After")))]
pub(crate) async fn token(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: LoginBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        Ok(auth.login_start(&body.email, &password, ip)?)
    })
    .await?;
    match outcome {
        LoginOutcome::Tokens(pair) => Reply::json(&LoginAnswer::Tokens(TokenAnswer::from(pair))),
        LoginOutcome::MfaRequired { challenge, expires_in_s } => {
            Reply::json(&LoginAnswer::Mfa(MfaChallengeAnswer {
                mfa_required: true,
                mfa_challenge: challenge.expose().to_owned(),
                expires_in: expires_in_s,
            }))
        }
    }
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
    let caller = super::state::account_caller(&request)?;
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.logout_all(&caller)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// An MFA challenge: the password was right and the account has MFA.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct MfaChallengeAnswer {
    /// Always `true`.
    mfa_required: bool,
    /// Send it with a code to `POST /api/auth/mfa` (single use).
    mfa_challenge: String,
    /// Seconds the challenge stays valid.
    expires_in: u64,
}

/// What `POST /api/auth/token` answers: tokens, or an MFA challenge.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum LoginAnswer {
    /// No MFA on the account.
    Tokens(TokenAnswer),
    /// MFA on: answer the challenge.
    Mfa(MfaChallengeAnswer),
}

/// An MFA challenge and a code, for `POST /api/auth/mfa`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MfaBody {
    /// The challenge from `POST /api/auth/token`.
    challenge: String,
    /// A 6-digit TOTP code or a backup code (`xxxxx-xxxxx`).
    code: String,
}

/// An MFA code, for enrolment confirmation, step-up and disabling.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeBody {
    /// A 6-digit TOTP code (or, for step-up and disabling, a backup code).
    code: String,
}

/// An enrolment to scan.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct EnrolmentAnswer {
    /// The TOTP secret in base32 (for typing in).
    secret: String,
    /// The `otpauth://` URL the QR code holds.
    otpauth_url: String,
    /// The QR code, an SVG document rendered by the server.
    qr_svg: String,
}

/// Backup codes, shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BackupCodesAnswer {
    /// Ten single-use codes; only their hashes are kept.
    backup_codes: Vec<String>,
    /// A new access token of the caller's session: every access token issued before enrolment
    /// (this session's too) and every other session of the account ended. Absent when the
    /// caller's token named no live session (then log in again).
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    /// Seconds until `access_token` expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
}

/// A new access token of the same session.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AccessAnswer {
    /// JWT access token with a fresh `auth_time`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until it expires.
    expires_in: u64,
}

/// Answers a login's MFA challenge with a TOTP or backup code.
#[utoipa::path(post, path = "/api/auth/mfa", request_body = MfaBody, tag = "auth",
    responses((status = 200, description = "Access and refresh tokens", body = TokenAnswer),
        (status = 401, description = "Challenge unknown, expired or ended; or a wrong code"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn mfa(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: MfaBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let pair = blocking(move || Ok(auth.complete_mfa(&body.challenge, &body.code, ip)?)).await?;
    Reply::json(&TokenAnswer::from(pair))
}

/// Starts MFA enrolment: a new TOTP secret and its QR code (fresh authentication needed).
#[utoipa::path(post, path = "/api/auth/mfa/enrol", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The secret to scan", body = EnrolmentAnswer),
        (status = 401, description = "No valid access token, or not fresh (step_up_required)"),
        (status = 409, description = "MFA is already on")))]
pub(crate) async fn mfa_enrol(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.state().enrolling_caller(request.bearer()?)?;
    let auth = Arc::clone(&request.state().auth);
    let enrolment = blocking(move || Ok(auth.begin_mfa_enrolment(&caller)?)).await?;
    Reply::json(&EnrolmentAnswer {
        secret: enrolment.secret_base32.expose().to_owned(),
        otpauth_url: enrolment.otpauth_url.expose().to_owned(),
        qr_svg: enrolment.qr_svg,
    })
}

/// Confirms MFA enrolment with a first code; answers the backup codes (shown once) and a new
/// access token of this session (every other session of the account ends).
#[utoipa::path(post, path = "/api/auth/mfa/confirm", request_body = CodeBody, tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "MFA is on", body = BackupCodesAnswer),
        (status = 401, description = "Wrong code, no valid access token, or not fresh"),
        (status = 404, description = "No enrolment started"),
        (status = 409, description = "MFA is already on")))]
pub(crate) async fn mfa_confirm(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.state().enrolling_caller(request.bearer()?)?;
    let body: CodeBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let confirmed = blocking(move || Ok(auth.confirm_mfa_enrolment_session(&caller, &body.code)?)).await?;
    Reply::json(&BackupCodesAnswer {
        backup_codes: confirmed.backup_codes.iter().map(|c| c.expose().to_owned()).collect(),
        access_token: confirmed.access.as_ref().map(|(token, _)| token.expose().to_owned()),
        expires_in: confirmed.access.as_ref().map(|(_, expires_in)| *expires_in),
    })
}

/// Step-up: an MFA code makes the session's authentication fresh; answers a new access token.
#[utoipa::path(post, path = "/api/auth/mfa/step-up", request_body = CodeBody, tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "A fresh access token of the same session", body = AccessAnswer),
        (status = 401, description = "Wrong code or no valid access token"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn mfa_step_up(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let body: CodeBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let (token, expires_in) = blocking(move || Ok(auth.step_up_mfa(&caller, &body.code, ip)?)).await?;
    Reply::json(&AccessAnswer { access_token: token.expose().to_owned(), token_type: "Bearer", expires_in })
}

/// Turns MFA off (a current code and fresh authentication needed).
#[utoipa::path(post, path = "/api/auth/mfa/disable", request_body = CodeBody, tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "MFA is off"),
        (status = 401, description = "Wrong code, no valid access token, or not fresh"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn mfa_disable(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let body: CodeBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.disable_mfa(&caller, &body.code, ip)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}
