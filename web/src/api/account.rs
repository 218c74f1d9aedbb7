//! Accounts for people over the API: self-registration, the one-time-link flows (email
//! verification, password reset, email change), password change, `GET /api/auth/me`, and an
//! admin ending every session of an account. The rules live in `AuthService`; these handlers
//! parse, run it off the network threads and shape the answer.
//!
//! Answers that must not tell whether an account exists (`register`, `password-reset/request`)
//! are the same `202` either way. A reset request's work (lookup, link, mail) runs after the
//! answer is sent, so its timing does not tell either.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::{ApiState, blocking, password_slot};
use crate::auth::Secret;
use crate::http::{ApiError, Reply, Request};

/// Email and password of `POST /api/auth/register`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    /// The address to sign in with (a verification link goes there).
    email: String,
    /// At least 12 characters, not the email, not one of the 10,000 most common passwords.
    password: String,
}

/// What an accepted request answers.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// `mail_sent`: look in the mailbox (the same answer whether or not an account exists).
    status: &'static str,
}

const MAIL_SENT: Accepted = Accepted { status: "mail_sent" };

fn accepted() -> Result<Reply, ApiError> {
    Ok(Reply::json(&MAIL_SENT)?.status(StatusCode::ACCEPTED))
}

/// Opens a customer account (unverified until the link in the mail is followed). The answer is
/// the same when the email already has an account (its owner gets a notice instead).
#[utoipa::path(post, path = "/api/auth/register", request_body = RegisterBody, tag = "auth",
    responses((status = 202, description = "A verification link was mailed", body = Accepted),
        (status = 400, description = "Invalid email, or a password the rules refuse"),
        (status = 429, description = "Too many attempts; see Retry-After"),
        (status = 503, description = "Too many password checks in progress; see Retry-After")))]
pub(crate) async fn register(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: RegisterBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let slot = password_slot().await?;
    blocking(move || {
        let _slot = slot;
        Ok(auth.register(&body.email, &password, ip)?)
    })
    .await?;
    accepted()
}

/// A one-time link's token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    /// The `token` parameter of the link.
    token: String,
}

/// Follows an email-verification link.
#[utoipa::path(post, path = "/api/auth/verify", request_body = TokenBody, tag = "auth",
    responses((status = 204, description = "The email is verified"),
        (status = 400, description = "Link invalid, used or expired (`link_invalid`)"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn verify(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: TokenBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.verify_email(&body.token, ip)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// Mails the caller a new verification link (the previous one stops working).
#[utoipa::path(post, path = "/api/auth/verify/resend", tag = "auth", security(("bearer" = [])),
    responses((status = 202, description = "A new link was mailed", body = Accepted),
        (status = 400, description = "Already verified"),
        (status = 401, description = "No valid access token")))]
pub(crate) async fn resend(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.resend_verification(&caller, ip)?)).await?;
    accepted()
}

/// An email, for `POST /api/auth/password-reset/request`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailBody {
    /// The account's address.
    email: String,
}

/// Asks for a password-reset link. Always `202`; only an existing, active account gets mail.
#[utoipa::path(post, path = "/api/auth/password-reset/request", request_body = EmailBody, tag = "auth",
    responses((status = 202, description = "If the account exists, a reset link was mailed", body = Accepted),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn reset_request(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: EmailBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    spawn_reset_request(auth, body.email, ip)?;
    accepted()
}

/// Checks the client's limit, then runs the reset request after the answer (same timing for
/// every address). Used by the API and the page.
pub(crate) fn spawn_reset_request(
    auth: Arc<crate::AuthService>,
    email: String,
    ip: std::net::IpAddr,
) -> Result<(), ApiError> {
    auth.check_request_limit(ip)?;
    tokio::task::spawn_blocking(move || {
        if let Err(error) = auth.request_password_reset(&email, ip) {
            tracing::error!(%error, "password reset request failed");
        }
    });
    Ok(())
}

/// A reset link's token and the new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// The `token` parameter of the link.
    token: String,
    /// The new password (same rules as at sign-up).
    password: String,
}

/// Follows a password-reset link: the password changes and every session of the account ends.
#[utoipa::path(post, path = "/api/auth/password-reset", request_body = ResetBody, tag = "auth",
    responses((status = 204, description = "Password changed; every session ended"),
        (status = 400, description = "Link invalid, used or expired (`link_invalid`), or a refused password"),
        (status = 429, description = "Too many attempts; see Retry-After")))]
pub(crate) async fn reset(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: ResetBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let slot = password_slot().await?;
    blocking(move || {
        let _slot = slot;
        Ok(auth.reset_password(&body.token, &password, ip)?)
    })
    .await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// The new address of `POST /api/auth/email`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEmailBody {
    /// The address to move the account to.
    new_email: String,
}

/// Asks to change the caller's address (fresh authentication needed): a link goes to the new
/// address; the account switches when it is followed.
#[utoipa::path(post, path = "/api/auth/email", request_body = NewEmailBody, tag = "auth",
    security(("bearer" = [])),
    responses((status = 202, description = "A confirmation link was mailed to the new address", body = Accepted),
        (status = 400, description = "Invalid or unchanged address"),
        (status = 401, description = "No valid access token, or not fresh (step_up_required)")))]
pub(crate) async fn change_email(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let body: NewEmailBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.request_email_change(&caller, &body.new_email, ip)?)).await?;
    accepted()
}

/// Follows an email-change link: the account's address becomes the new one.
#[utoipa::path(post, path = "/api/auth/email/confirm", request_body = TokenBody, tag = "auth",
    responses((status = 204, description = "The address changed"),
        (status = 400, description = "Link invalid, used or expired (`link_invalid`)"),
        (status = 409, description = "Another account took the address meanwhile")))]
pub(crate) async fn confirm_email(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: TokenBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.confirm_email_change(&body.token, ip)?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// A password change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    /// The current password.
    current_password: String,
    /// The new password.
    new_password: String,
    /// End every other session of the account (this one goes on).
    #[serde(default)]
    end_other_sessions: bool,
}

/// How many sessions an action ended.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionsEnded {
    /// Refresh families and browser sessions ended.
    sessions_ended: u64,
}

/// Changes the caller's password (current password and fresh authentication needed), and on
/// request ends every other session of the account.
#[utoipa::path(post, path = "/api/auth/password", request_body = PasswordBody, tag = "auth",
    security(("bearer" = [])),
    responses((status = 200, description = "Password changed", body = SessionsEnded),
        (status = 400, description = "A refused new password"),
        (status = 401, description = "Wrong current password, no valid access token, or not fresh (step_up_required)")))]
pub(crate) async fn change_password(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let body: PasswordBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    let slot = password_slot().await?;
    let ended = blocking(move || {
        let _slot = slot;
        let current = Secret::new(body.current_password);
        let new = Secret::new(body.new_password);
        Ok(auth.change_password(&caller, &current, &new, body.end_other_sessions, None)?)
    })
    .await?;
    Reply::json(&SessionsEnded { sessions_ended: ended })
}

/// Who the caller is.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    /// Account id.
    user_id: String,
    /// Address.
    email: String,
    /// Role.
    role: String,
    /// The plan in force (a subscription's when the account has one), if any.
    plan_id: Option<String>,
    /// False until the address is verified: the account may sign in but not buy or query.
    email_verified: bool,
}

/// The caller's identity, with the `email_verified` fact the storefront checks.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller", body = Me),
        (status = 401, description = "No valid access token")))]
pub(crate) async fn me(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    // The plan in force now (a subscription's, when the account has one), not the one the
    // access token was issued with.
    let auth = Arc::clone(&request.state().auth);
    let grant_of = caller.clone();
    let plan_id = blocking(move || Ok(auth.policy_grant(&grant_of)?.plan_id)).await?;
    Reply::json(&Me {
        user_id: caller.user_id().to_owned(),
        email: caller.email().to_owned(),
        role: caller.role().to_string(),
        plan_id,
        email_verified: caller.email_verified(),
    })
}

/// Ends every session of an account (`users:manage`, fresh authentication; not an account
/// ranked above the caller's): refresh families, their access tokens, browser sessions.
#[utoipa::path(delete, path = "/api/rbac/users/{id}/sessions", tag = "rbac", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "Every session ended", body = SessionsEnded),
        (status = 401, description = "No valid access token, or not fresh (step_up_required)"),
        (status = 403, description = "Missing users:manage, or the account ranks above the caller"),
        (status = 404, description = "No such user")))]
pub(crate) async fn end_user_sessions(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let id = request.param("id")?.to_owned();
    let auth = Arc::clone(&request.state().auth);
    let ended = blocking(move || Ok(auth.end_user_sessions(&caller, &id)?)).await?;
    Reply::json(&SessionsEnded { sessions_ended: ended })
}
