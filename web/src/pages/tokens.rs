//! Personal API tokens in the browser: `GET /account/tokens` (the list, with created,
//! last-used, expiry and revoke buttons; the issue form), `POST /account/tokens` (issues one
//! and shows it once) and `POST /account/tokens/revoke`. Issuing needs a recent sign-in (the
//! fresh-auth gate); the service refuses staff accounts.

use std::sync::Arc;

use http::StatusCode;
use maud::html;
use serde::Deserialize;

use super::browser::{check_csrf, html, read_form, see_other, session};
use super::layout::{button_form, csrf_field, notice, page};
use crate::api::{ApiState, blocking, format_time};
use crate::auth::{API_TOKEN_TTL_DAYS, ApiTokenInfo, AuthError, BrowserSession};
use crate::http::{ApiError, Reply, Request};

#[derive(Deserialize)]
pub(crate) struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ttl_days: u32,
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

fn ms_text(ms: u64) -> String {
    format_time(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1_000_000))
}

/// The body, then the session, then its CSRF token (as `account::session_form`).
async fn signed_in_form<F: for<'de> Deserialize<'de>>(
    request: &mut Request<ApiState>,
    csrf: impl Fn(&F) -> &str,
) -> Result<Result<(F, BrowserSession), Reply>, ApiError> {
    let form: F = read_form(request).await?;
    let Some(current) = session(request).await? else { return Ok(Err(see_other("/login"))) };
    check_csrf(request, &current, Some(csrf(&form)))?;
    Ok(Ok((form, current)))
}

fn token_table(tokens: &[ApiTokenInfo], csrf: &str) -> maud::Markup {
    html! {
        table class="tokens" {
            caption { "Your personal API tokens" }
            thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Last used" }
                th scope="col" { "Expires" } th scope="col" { "State" } th {} } }
            tbody {
                @for t in tokens {
                    tr data-token=(t.id) {
                        td { (t.name) } td { (ms_text(t.created_ms)) }
                        td { @if let Some(used) = t.last_used_ms { (ms_text(used)) } @else { "never" } }
                        td { (ms_text(t.expires_ms)) }
                        td { @if t.revoked_ms.is_some() { "revoked" } @else if t.expired { "expired" } @else { "active" } }
                        td { @if t.revoked_ms.is_none() {
                            (button_form("/account/tokens/revoke", "Revoke", csrf, &[("id", &t.id)]))
                        } }
                    }
                }
            }
        }
    }
}

/// `GET /account/tokens`.
pub(crate) async fn show(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let Some(current) = session(&request).await? else { return Ok(see_other("/login")) };
    if current.caller.mfa_enrolment_required() {
        return Ok(see_other("/account/mfa"));
    }
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let tokens = blocking(move || Ok(auth.list_api_tokens(&caller)?)).await?;
    let csrf = current.csrf_token.as_str();
    let markup = html! {
        p { "A personal token lets a script read data as you, under your plan: send it as "
            code { "Authorization: Bearer <token>" } " to the API (for example " code { "/api/telemetry" } ")." }
        (token_table(&tokens, csrf))
        h2 { "Issue a token" }
        p { "Issuing a token needs a sign-in within the last few minutes; the token is shown once." }
        form method="post" action="/account/tokens" {
            (csrf_field(csrf))
            p { label { "Name " input type="text" name="name" required maxlength="64" autocomplete="off"; } }
            p { label { "Valid for " select name="ttl_days" {
                @for days in API_TOKEN_TTL_DAYS { option value=(days) selected[days == 90] { (days) " days" } }
            } } }
            button type="submit" { "Issue" }
        }
        p { a href="/account/overview" { "Back to your account" } }
    };
    Ok(html(StatusCode::OK, page("API tokens", markup)))
}

/// `POST /account/tokens`: issues a token and shows it once.
pub(crate) async fn issue(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (form, current) = match signed_in_form::<IssueForm>(&mut request, |f| &f.csrf).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let issued = blocking(move || match auth.issue_api_token(&caller, &form.name, form.ttl_days) {
        Ok(issued) => Ok(Ok(issued)),
        Err(AuthError::StepUpRequired { .. }) => Ok(Err(())),
        Err(other) => Err(other.into()),
    })
    .await?;
    let Ok(issued) = issued else {
        let markup = html! {
            (notice(Some("Issuing a token needs a recent sign-in. Sign in again, then issue it.")))
            p { a href="/login" { "Sign in again" } }
        };
        return Ok(html(StatusCode::FORBIDDEN, page("API tokens", markup)));
    };
    let markup = html! {
        p { "Your new token " strong { (issued.info.name) } ". Copy it now: it is shown only once, and the server keeps only a hash of it." }
        p { code id="new-token" { (issued.token.expose()) } }
        p { "It expires " (ms_text(issued.info.expires_ms)) "." }
        p { a href="/account/tokens" { "Back to your tokens" } }
    };
    Ok(html(StatusCode::OK, page("Token issued", markup)))
}

/// `POST /account/tokens/revoke`.
pub(crate) async fn revoke(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (form, current) = match signed_in_form::<RevokeForm>(&mut request, |f| &f.csrf).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.revoke_api_token(&current.caller, &form.id)?)).await?;
    Ok(see_other("/account/tokens"))
}
