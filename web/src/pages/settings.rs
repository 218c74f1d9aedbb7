//! Signed-in account settings: `GET|POST /account/password` (current password, new password,
//! and a box to end every other session), `GET|POST /account/email` (a link to the new
//! address), `POST /account/verify/resend`, and the browser step-up `POST /account/reauth`.
//!
//! Step-up in the browser: a sensitive action whose session is not fresh answers the
//! re-authentication form (401) instead of the action: the account's password, and its MFA code
//! when MFA is on. Passing it makes the session's `auth_time` now; the browser is then sent back
//! to the page it came from (one of [`REAUTH_RETURN_PAGES`]) to submit again.

use std::sync::Arc;

use http::StatusCode;
use maud::{Markup, html};
use serde::Deserialize;

use super::account::{CsrfCarrier, CsrfForm, require_session, session_form};
use super::browser::{html, see_other};
use super::layout::{csrf_field, notice, page};
use crate::api::{ApiState, blocking, password_slot};
use crate::auth::{AuthError, BrowserSession, Secret};
use crate::http::{ApiError, Reply, Request};

/// Pages a step-up may send the browser back to (anything else goes to `/account`).
pub const REAUTH_RETURN_PAGES: [&str; 3] = ["/account/password", "/account/email", "/account/mfa"];

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    /// A checked box sends `on`; an unchecked one sends nothing.
    #[serde(default)]
    end_others: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct EmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    new_email: String,
}

#[derive(Deserialize)]
pub(crate) struct ReauthForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    return_to: String,
}

macro_rules! csrf_carrier {
    ($($form:ty),*) => {$(
        impl CsrfCarrier for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        }
    )*};
}
csrf_carrier!(PasswordForm, EmailForm, ReauthForm);

fn password_form(token: &str, message: Option<&str>) -> Markup {
    html! {
        (notice(message))
        form method="post" action="/account/password" {
            (csrf_field(token))
            p { label { "Current password " input type="password" name="current_password" autocomplete="current-password" required; } }
            p { label { "New password (at least 12 characters) " input type="password" name="new_password" autocomplete="new-password" minlength="12" required; } }
            p { label { input type="checkbox" name="end_others" value="on" checked; " End every other session (other browsers and API sessions)" } }
            button type="submit" { "Change password" }
        }
    }
}

fn email_form(token: &str, message: Option<&str>) -> Markup {
    html! {
        (notice(message))
        form method="post" action="/account/email" {
            (csrf_field(token))
            p { label { "New address " input type="email" name="new_email" autocomplete="email" required; } }
            button type="submit" { "Send a confirmation link" }
        }
    }
}

/// The re-authentication form (401): password, and the MFA code when MFA is on.
async fn reauth_page(
    request: &Request<ApiState>,
    current: &BrowserSession,
    return_to: &str,
    message: &str,
) -> Result<Reply, ApiError> {
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let mfa_on = blocking(move || Ok(auth.mfa_enabled(&caller)?)).await?;
    let markup = html! {
        (notice(Some(message)))
        form method="post" action="/account/reauth" {
            (csrf_field(&current.csrf_token))
            input type="hidden" name="return_to" value=(return_to);
            p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
            @if mfa_on {
                p { label { "Code from your authenticator app, or a backup code "
                    input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required; } }
            }
            button type="submit" { "Confirm it is you" }
        }
    };
    Ok(html(StatusCode::UNAUTHORIZED, page("Confirm it is you", markup)))
}

const STEP_UP_MESSAGE: &str = "This change needs a recent sign-in. Confirm it is you, then submit it again.";

/// `GET /account/password`.
pub(crate) async fn password_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    Ok(html(StatusCode::OK, page("Change your password", password_form(&current.csrf_token, None))))
}

/// `POST /account/password`: the current password, fresh authentication (else the step-up
/// form), and the rules of a new password; with the box ticked, every other session ends.
pub(crate) async fn password_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (body, current) = match session_form::<PasswordForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let session = current.clone();
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        let old = Secret::new(body.current_password);
        let new = Secret::new(body.new_password);
        let end_others = body.end_others.as_deref() == Some("on");
        Ok(auth.change_password(&session.caller, &old, &new, end_others, Some(&session.key)))
    })
    .await?;
    let token = current.csrf_token.as_str();
    match outcome {
        Ok(ended) => {
            let markup = html! { p { "Your password is changed. Sessions ended: " (ended) "." } a href="/account" { "Back" } };
            Ok(html(StatusCode::OK, page("Change your password", markup)))
        }
        Err(AuthError::StepUpRequired { .. }) => {
            reauth_page(&request, &current, "/account/password", STEP_UP_MESSAGE).await
        }
        Err(AuthError::InvalidCredentials) => Ok(html(
            StatusCode::UNAUTHORIZED,
            page("Change your password", password_form(token, Some("The current password is wrong."))),
        )),
        Err(e @ (AuthError::WeakPassword(_) | AuthError::InvalidInput { .. })) => Ok(html(
            StatusCode::BAD_REQUEST,
            page("Change your password", password_form(token, Some(&e.to_string()))),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /account/email`.
pub(crate) async fn email_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    Ok(html(StatusCode::OK, page("Change your address", email_form(&current.csrf_token, None))))
}

/// `POST /account/email`: fresh authentication (else the step-up form); a link goes to the new
/// address, and the account switches when it is followed.
pub(crate) async fn email_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (body, current) = match session_form::<EmailForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let ip = request.peer().ip();
    let outcome = blocking(move || Ok(auth.request_email_change(&caller, &body.new_email, ip))).await?;
    match outcome {
        Ok(()) => {
            let markup = html! { p { "We sent a link to the new address. Your address changes when you follow it (within 30 minutes)." } a href="/account" { "Back" } };
            Ok(html(StatusCode::OK, page("Change your address", markup)))
        }
        Err(AuthError::StepUpRequired { .. }) => {
            reauth_page(&request, &current, "/account/email", STEP_UP_MESSAGE).await
        }
        Err(e @ AuthError::InvalidInput { .. }) => Ok(html(
            StatusCode::BAD_REQUEST,
            page("Change your address", email_form(&current.csrf_token, Some(&e.to_string()))),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `POST /account/reauth`: password (and MFA code when on) make the session fresh; back to the
/// page the step-up came from.
pub(crate) async fn reauth_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (body, current) = match session_form::<ReauthForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let back = REAUTH_RETURN_PAGES.into_iter().find(|page| *page == body.return_to).unwrap_or("/account");
    let auth = Arc::clone(&request.state().auth);
    let session = current.clone();
    let ip = request.peer().ip();
    let slot = password_slot().await?;
    let outcome = blocking(move || {
        let _slot = slot;
        let password = Secret::new(body.password);
        Ok(auth.reauthenticate_browser(&session, &password, body.code.as_deref(), ip))
    })
    .await?;
    match outcome {
        Ok(()) => Ok(see_other(back)),
        Err(AuthError::InvalidCredentials | AuthError::MfaCodeInvalid) => {
            reauth_page(&request, &current, back, "That did not match. Try again.").await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /account/verify/resend`: a new verification link.
pub(crate) async fn resend_submit(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (_, current) = match session_form::<CsrfForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let ip = request.peer().ip();
    blocking(move || Ok(auth.resend_verification(&current.caller, ip)?)).await?;
    let markup = html! { p { "A new link is on its way; the previous one no longer works." } a href="/account" { "Back" } };
    Ok(html(StatusCode::OK, page("Verify your address", markup)))
}
