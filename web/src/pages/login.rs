//! `GET|POST /login`, `GET|POST /login/mfa`, `POST /logout`.
//!
//! The login forms are CSRF-protected before any session exists: `GET /login` sets a random
//! `__Host-` cookie and puts the same value in the form (double submit), and every `POST`
//! also passes the `Origin` / `Sec-Fetch-Site` check. A successful login always makes a new
//! session id (and deletes the session the browser came with): no session fixation.

use std::sync::Arc;

use http::StatusCode;
use maud::html;
use serde::Deserialize;

use super::browser::{
    LOGIN_COOKIE, MFA_COOKIE, SESSION_COOKIE, check_csrf, check_origin, cookie, csrf_refused, html,
    mfa_cookie, read_form, same_token, see_other, session, session_cookie, set_cookie, user_agent,
    with_cookie,
};
use super::layout::{csrf_field, notice, page};
use crate::api::{ApiState, blocking, password_slot};
use crate::auth::{AuthError, BrowserLogin, Secret};
use crate::http::{ApiError, Reply, Request};

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The login CSRF token of the request, or a new one (with its `Set-Cookie`).
pub(super) fn login_token(
    request: &Request<ApiState>,
) -> Result<(String, Option<http::HeaderValue>), ApiError> {
    if let Some(token) = cookie(request, LOGIN_COOKIE).filter(|t| t.len() == 43) {
        return Ok((token.to_owned(), None));
    }
    let token = crate::auth::random_token_text().map_err(ApiError::from)?;
    let header = set_cookie(LOGIN_COOKIE, &token, None)?;
    Ok((token, Some(header)))
}

fn login_page(status: StatusCode, token: &str, message: Option<&str>) -> Reply {
    html(
        status,
        page(
            "Sign in",
            html! {
                (notice(message))
                form method="post" action="/login" {
                    (csrf_field(token))
                    p { label { "Email " input type="email" name="email" autocomplete="username" required; } }
                    p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
                    button type="submit" { "Sign in" }
                }
            },
        ),
    )
}

fn mfa_page(status: StatusCode, token: &str, message: Option<&str>) -> Reply {
    html(
        status,
        page(
            "Confirm sign-in",
            html! {
                (notice(message))
                form method="post" action="/login/mfa" {
                    (csrf_field(token))
                    p { label { "Code from your authenticator app, or a backup code "
                        input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required; } }
                    button type="submit" { "Confirm" }
                }
            },
        ),
    )
}

/// Checks a login form's double-submit token and origin.
pub(super) fn check_login_csrf(request: &Request<ApiState>, token: &str) -> Result<(), ApiError> {
    check_origin(request)?;
    match cookie(request, LOGIN_COOKIE) {
        Some(expected) if same_token(token, expected) => Ok(()),
        _ => Err(csrf_refused()),
    }
}

/// `GET /login`: the sign-in form (with a double-submit CSRF token).
pub(crate) async fn show_form(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (token, set) = login_token(&request)?;
    let reply = login_page(StatusCode::OK, &token, None);
    Ok(match set {
        Some(header) => with_cookie(reply, header),
        None => reply,
    })
}

/// `POST /login`: password check; a new session (303 to `/account`) or the MFA step.
pub(crate) async fn submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: LoginForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let previous = session(&request).await.ok().flatten();
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let agent = user_agent(&request);
    let password = Secret::new(body.password);
    let email = body.email;
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        match auth.browser_login(&email, &password, ip, &agent) {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(AuthError::InvalidCredentials) => Ok(Err(())),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    // Whatever the outcome, the session the browser came with ends here (no fixation).
    if let Some(old) = previous {
        let auth = Arc::clone(&request.state().auth);
        blocking(move || Ok(auth.end_browser_session(&old)?)).await?;
    }
    match outcome {
        Err(()) => Ok(login_page(StatusCode::UNAUTHORIZED, &body.csrf, Some("Invalid email or password."))),
        Ok(BrowserLogin::Session(new)) => {
            Ok(with_cookie(see_other("/account"), session_cookie(&new.cookie)?))
        }
        Ok(BrowserLogin::MfaRequired { challenge, .. }) => {
            Ok(with_cookie(see_other("/login/mfa"), mfa_cookie(&challenge)?))
        }
    }
}

/// `GET /login/mfa`: the code form of a pending MFA login.
pub(crate) async fn mfa_form(request: Request<ApiState>) -> Result<Reply, ApiError> {
    if cookie(&request, MFA_COOKIE).is_none() {
        return Ok(see_other("/login"));
    }
    let (token, set) = login_token(&request)?;
    let reply = mfa_page(StatusCode::OK, &token, None);
    Ok(match set {
        Some(header) => with_cookie(reply, header),
        None => reply,
    })
}

/// `POST /login/mfa`: answers the challenge; a new session on success.
pub(crate) async fn mfa_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: CodeForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let Some(challenge) = cookie(&request, MFA_COOKIE).map(str::to_owned) else {
        return Ok(see_other("/login"));
    };
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let agent = user_agent(&request);
    let code = body.code;
    let outcome = blocking(move || match auth.complete_browser_mfa(&challenge, &code, ip, &agent) {
        Ok(new) => Ok(Ok(new)),
        Err(AuthError::MfaCodeInvalid) => Ok(Err(false)),
        Err(AuthError::MfaChallengeInvalid) => Ok(Err(true)),
        Err(e) => Err(e.into()),
    })
    .await?;
    match outcome {
        Ok(new) => {
            let reply = with_cookie(see_other("/account"), session_cookie(&new.cookie)?);
            Ok(with_cookie(reply, set_cookie(MFA_COOKIE, "", Some(0))?))
        }
        Err(false) => Ok(mfa_page(StatusCode::UNAUTHORIZED, &body.csrf, Some("That code is not valid."))),
        Err(true) => Ok(with_cookie(see_other("/login"), set_cookie(MFA_COOKIE, "", Some(0))?)),
    }
}

/// `POST /logout`: deletes the session record; the cookie is cleared and dead.
pub(crate) async fn logout(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: CsrfForm = read_form(&mut request).await?;
    let Some(current) = session(&request).await? else { return Ok(see_other("/login")) };
    check_csrf(&request, &current, Some(&body.csrf))?;
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.end_browser_session(&current)?)).await?;
    Ok(with_cookie(see_other("/login"), set_cookie(SESSION_COOKIE, "", Some(0))?))
}
