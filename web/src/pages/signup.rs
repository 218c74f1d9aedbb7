//! Pages of the signed-out account flows: `GET|POST /signup`, and the one-time links —
//! `GET|POST /verify`, `GET|POST /reset-request`, `GET|POST /reset`, `GET|POST /email/confirm`.
//!
//! A link in a mail opens a `GET` page whose form posts the token back: following a link never
//! changes anything by itself (mail scanners fetch links), the `POST` does. Every form carries
//! the double-submit token of the login forms and passes the `Origin` / `Sec-Fetch-Site` check.

use std::sync::Arc;

use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::browser::{html, read_form, with_cookie};
use super::layout::{csrf_field, notice, page};
use super::login::{check_login_csrf, login_token};
use crate::api::{ApiState, blocking, password_slot};
use crate::auth::{AuthError, Secret};
use crate::http::{ApiError, Reply, Request};

#[derive(Deserialize)]
pub(crate) struct SignupForm {
    #[serde(default)]
    csrf: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct EmailForm {
    #[serde(default)]
    csrf: String,
    email: String,
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
pub(crate) struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    password: String,
}

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// A signed-out page with its double-submit token (and the cookie when it is new).
fn form_page(
    request: &Request<ApiState>,
    status: StatusCode,
    title: &str,
    content: impl FnOnce(&str) -> Markup,
) -> Result<Reply, ApiError> {
    let (token, set) = login_token(request)?;
    let reply = html(status, page(title, content(&token)));
    Ok(match set {
        Some(header) => with_cookie(reply, header),
        None => reply,
    })
}

fn signup_form(token: &str, message: Option<&str>) -> Markup {
    html! {
        (notice(message))
        form method="post" action="/signup" {
            (csrf_field(token))
            p { label { "Email " input type="email" name="email" autocomplete="username" required; } }
            p { label { "Password (at least 12 characters) " input type="password" name="password" autocomplete="new-password" minlength="12" required; } }
            button type="submit" { "Create account" }
        }
        p { a href="/login" { "Sign in instead" } }
    }
}

/// `GET /signup`.
pub(crate) async fn signup_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    form_page(&request, StatusCode::OK, "Create an account", |token| signup_form(token, None))
}

/// `POST /signup`: the same page says "check your mail" whether or not the address had an
/// account; a refused password or address shows the form again with the reason (400).
pub(crate) async fn signup_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: SignupForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let email = body.email;
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        match auth.register(&email, &password, ip) {
            Ok(()) => Ok(Ok(())),
            Err(e @ (AuthError::WeakPassword(_) | AuthError::InvalidInput { .. })) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    match outcome {
        Ok(()) => form_page(&request, StatusCode::OK, "Check your mail", |_| {
            html! { p { "We sent a link to your address. Follow it within 30 minutes to verify it; you can sign in meanwhile." }
            p { a href="/login" { "Sign in" } } }
        }),
        Err(reason) => form_page(&request, StatusCode::BAD_REQUEST, "Create an account", |token| {
            signup_form(token, Some(&reason))
        }),
    }
}

/// The page a mailed link opens: one button that posts the token (and, for a reset, the new
/// password).
fn link_form(action: &str, token: &str, csrf: &str, with_password: bool, message: Option<&str>) -> Markup {
    html! {
        (notice(message))
        form method="post" action=(action) {
            (csrf_field(csrf))
            input type="hidden" name="token" value=(token);
            @if with_password {
                p { label { "New password (at least 12 characters) " input type="password" name="password" autocomplete="new-password" minlength="12" required; } }
            }
            button type="submit" { "Continue" }
        }
    }
}

/// `GET /verify?token=…`.
pub(crate) async fn verify_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let query: TokenQuery = request.query()?;
    form_page(&request, StatusCode::OK, "Verify your address", |csrf| {
        link_form("/verify", &query.token, csrf, false, None)
    })
}

/// Runs a link action; its refusal as a page (400 for a bad link).
fn link_outcome(result: Result<(), AuthError>) -> Result<Result<(), String>, ApiError> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(
            e @ (AuthError::LinkInvalid
            | AuthError::WeakPassword(_)
            | AuthError::InvalidInput { .. }
            | AuthError::EmailTaken),
        ) => Ok(Err(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

fn done_or_refused(
    request: &Request<ApiState>,
    outcome: Result<(), String>,
    title: &str,
    done: &str,
) -> Result<Reply, ApiError> {
    match outcome {
        Ok(()) => form_page(request, StatusCode::OK, title, |_| {
            html! { p { (done) } p { a href="/login" { "Sign in" } } }
        }),
        Err(reason) => form_page(request, StatusCode::BAD_REQUEST, title, |_| {
            html! { (notice(Some(&reason))) }
        }),
    }
}

/// `POST /verify`.
pub(crate) async fn verify_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: TokenForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let outcome = blocking(move || link_outcome(auth.verify_email(&body.token, ip))).await?;
    done_or_refused(&request, outcome, "Verify your address", "Your address is verified.")
}

/// `GET /reset-request`: asks for the address to send a reset link to.
pub(crate) async fn reset_request_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    form_page(&request, StatusCode::OK, "Reset your password", |token| {
        html! {
            form method="post" action="/reset-request" {
                (csrf_field(token))
                p { label { "Email " input type="email" name="email" autocomplete="username" required; } }
                button type="submit" { "Send a reset link" }
            }
        }
    })
}

/// `POST /reset-request`: the same answer whether or not the address has an account.
pub(crate) async fn reset_request_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: EmailForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let auth = Arc::clone(&request.state().auth);
    crate::api::spawn_reset_request(auth, body.email, request.peer().ip())?;
    form_page(&request, StatusCode::OK, "Check your mail", |_| {
        html! { p { "If the address has an account, a reset link is on its way. It works once, for 30 minutes." } }
    })
}

/// `GET /reset?token=…`: the new-password form.
pub(crate) async fn reset_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let query: TokenQuery = request.query()?;
    form_page(&request, StatusCode::OK, "Choose a new password", |csrf| {
        link_form("/reset", &query.token, csrf, true, None)
    })
}

/// `POST /reset`: sets the password; every session of the account ends.
pub(crate) async fn reset_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: ResetForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let password = Secret::new(body.password);
    let token = body.token;
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        link_outcome(auth.reset_password(&token, &password, ip))
    })
    .await?;
    done_or_refused(
        &request,
        outcome,
        "Choose a new password",
        "Your password is changed, and every session of your account has ended.",
    )
}

/// `GET /email/confirm?token=…`.
pub(crate) async fn email_confirm_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let query: TokenQuery = request.query()?;
    form_page(&request, StatusCode::OK, "Confirm your new address", |csrf| {
        link_form("/email/confirm", &query.token, csrf, false, None)
    })
}

/// `POST /email/confirm`: the account's address becomes the new one.
pub(crate) async fn email_confirm_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let body: TokenForm = read_form(&mut request).await?;
    check_login_csrf(&request, &body.csrf)?;
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    let outcome = blocking(move || link_outcome(auth.confirm_email_change(&body.token, ip))).await?;
    done_or_refused(&request, outcome, "Confirm your new address", "Your sign-in address is changed.")
}
