//! `GET /account` (identity, MFA state, sessions with revoke buttons), session revocation, and
//! MFA enrolment (`GET /account/mfa`, `POST /account/mfa/enrol`, `POST /account/mfa/confirm`).

use std::sync::Arc;

use http::StatusCode;
use maud::{PreEscaped, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::browser::{check_csrf, html, read_form, see_other, session, session_cookie, with_cookie};
use super::layout::{button_form, csrf_field, notice, page};
use crate::api::{ApiState, blocking};
use crate::auth::{AuthError, BrowserSession};
use crate::http::{ApiError, Reply, Request};

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    /// `browser` or `api` (defaults let the CSRF check run before the shape is judged).
    #[serde(default)]
    kind: String,
    #[serde(default)]
    id: String,
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub(crate) struct CodeForm {
    #[serde(default)]
    csrf: String,
    code: String,
}

/// The session of a page request, or the redirect to `/login`.
pub(crate) async fn require_session(
    request: &Request<ApiState>,
) -> Result<Result<BrowserSession, Reply>, ApiError> {
    Ok(session(request).await?.ok_or_else(|| see_other("/login")))
}

/// A form that carries the session's CSRF token in its `csrf` field.
pub(crate) trait CsrfCarrier: DeserializeOwned {
    fn csrf(&self) -> &str;
}

impl CsrfCarrier for RevokeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfCarrier for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfCarrier for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// A form posted by a signed-in browser: the body read first (its limits apply before any
/// store read), then the session found and the form's CSRF token checked. The inner `Err` is
/// the redirect to `/login` for a request without a live session.
pub(crate) async fn session_form<F: CsrfCarrier>(
    request: &mut Request<ApiState>,
) -> Result<Result<(F, BrowserSession), Reply>, ApiError> {
    let form: F = read_form(request).await?;
    let current = match require_session(request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(Err(redirect)),
    };
    check_csrf(request, &current, Some(form.csrf()))?;
    Ok(Ok((form, current)))
}

/// `GET /account`.
pub(crate) async fn show(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    if current.caller.mfa_enrolment_required() {
        return Ok(see_other("/account/mfa"));
    }
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let (browsers, families, backup_left, mfa_on) = blocking(move || {
        let browsers = auth.list_browser_sessions(&caller)?;
        let families = auth.list_sessions(&caller, caller.user_id())?;
        let backup_left = auth.backup_codes_left(&caller)?;
        let mfa_on = auth.mfa_enabled(&caller)?;
        Ok((browsers, families, backup_left, mfa_on))
    })
    .await?;
    let token = current.csrf_token.as_str();
    let caller = &current.caller;
    let markup = html! {
        p { "Signed in as " strong { (caller.email()) } " (" (caller.role().to_string()) ")." }
        @if !caller.email_verified() {
            p role="alert" data-fact="email-unverified" { "Your address is not verified yet: follow the link we mailed you to buy or query." }
            (button_form("/account/verify/resend", "Send a new link", token, &[]))
        }
        p { a href="/account/password" { "Change password" } " · " a href="/account/email" { "Change address" } }
        h2 { "Two-step sign-in" }
        p { @if mfa_on { "On. Backup codes left: " (backup_left) "." }
            @else { "Off. " a href="/account/mfa" { "Turn it on" } } }
        h2 { "Browser sessions" }
        table {
            thead { tr { th { "Started" } th { "Last seen" } th { "IP" } th { "Browser" } th {} } }
            tbody {
                @for s in &browsers {
                    tr data-session=(s.key) {
                        td { (s.created_s) } td { (s.last_seen_s) } td { (s.ip) } td { (s.user_agent) }
                        td { @if s.key == current.key { "this session" }
                             @else { (button_form("/account/sessions/revoke", "End", token, &[("kind", "browser"), ("id", &s.key)])) } }
                    }
                }
            }
        }
        h2 { "API sessions" }
        table {
            thead { tr { th { "Started" } th { "Last used" } th { "IP at login" } th { "Last IP" } th {} } }
            tbody {
                @for f in &families {
                    tr data-session=(f.session_id) {
                        td { (f.created_ms / 1_000) } td { (f.last_used_ms / 1_000) } td { (f.login_ip) } td { (f.last_ip) }
                        td { (button_form("/account/sessions/revoke", "End", token, &[("kind", "api"), ("id", &f.session_id)])) }
                    }
                }
            }
        }
        (button_form("/account/sessions/revoke-others", "End every other session", token, &[]))
        (button_form("/logout", "Sign out", token, &[]))
    };
    Ok(html(StatusCode::OK, page("Your account", markup)))
}

/// `POST /account/sessions/revoke`: ends one of the caller's own sessions.
pub(crate) async fn revoke(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (body, current) = match session_form::<RevokeForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    blocking(move || {
        let result = match body.kind.as_str() {
            "browser" => auth.revoke_browser_session(&caller, &body.id),
            "api"
                if auth.list_sessions(&caller, caller.user_id())?.iter().any(|s| s.session_id == body.id) =>
            {
                auth.revoke_session(&caller, &body.id)
            }
            "api" => Err(AuthError::NotFound { kind: "session" }),
            _ => return Err(ApiError::InvalidInput("kind: browser or api".to_owned())),
        };
        Ok(result?)
    })
    .await?;
    Ok(see_other("/account"))
}

/// `POST /account/sessions/revoke-others`: ends every session but this one.
pub(crate) async fn revoke_others(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (_, current) = match session_form::<CsrfForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.revoke_other_sessions(&current.caller, &current.key)?)).await?;
    Ok(see_other("/account"))
}

/// `GET /account/mfa`: MFA state, and the form that starts enrolment (a `POST`: starting it
/// changes state).
pub(crate) async fn mfa_page(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let current = match require_session(&request).await? {
        Ok(s) => s,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let enabled = blocking(move || Ok(auth.mfa_enabled(&caller)?)).await?;
    let markup = html! {
        @if current.caller.mfa_enrolment_required() {
            (notice(Some("Your role requires two-step sign-in: turn it on to continue.")))
        }
        @if enabled { p { "Two-step sign-in is on." } }
        @else {
            p { "Scan a QR code with an authenticator app, then type its first code." }
            (button_form("/account/mfa/enrol", "Start", &current.csrf_token, &[]))
        }
    };
    Ok(html(StatusCode::OK, page("Two-step sign-in", markup)))
}

/// `POST /account/mfa/enrol`: a new secret; the page shows its QR code (SVG rendered by the
/// server, inline: no script, nothing loaded) and the confirmation form.
pub(crate) async fn mfa_enrol(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (_, current) = match session_form::<CsrfForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let caller = current.caller.clone();
    let enrolment = blocking(move || Ok(auth.begin_mfa_enrolment(&caller)?)).await?;
    // The SVG comes from the QR encoder (no user text in it but the escaped otpauth URL's
    // modules); the XML declaration is dropped for inline use.
    let svg = enrolment.qr_svg.split_once("?>").map_or(enrolment.qr_svg.as_str(), |(_, rest)| rest);
    let markup = html! {
        figure { (PreEscaped(svg)) figcaption { "Secret: " code { (enrolment.secret_base32.expose()) } } }
        form method="post" action="/account/mfa/confirm" {
            (csrf_field(&current.csrf_token))
            p { label { "First code " input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required; } }
            button type="submit" { "Turn on" }
        }
    };
    Ok(html(StatusCode::OK, page("Scan this code", markup)))
}

/// `POST /account/mfa/confirm`: turns MFA on, shows the backup codes once, and gives the
/// session a new id (a privilege change: the enrol-only state ends).
pub(crate) async fn mfa_confirm(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let (body, current) = match session_form::<CodeForm>(&mut request).await? {
        Ok(form) => form,
        Err(redirect) => return Ok(redirect),
    };
    let auth = Arc::clone(&request.state().auth);
    let outcome = blocking(move || match auth.confirm_mfa_enrolment_session(&current.caller, &body.code) {
        Ok(done) => {
            let rotated = auth.rotate_browser_session(&current, Some(done.valid_after_ms))?;
            Ok(Ok((done.backup_codes, rotated)))
        }
        Err(AuthError::MfaCodeInvalid) => Ok(Err(())),
        Err(e) => Err(e.into()),
    })
    .await?;
    let Ok((codes, rotated)) = outcome else {
        let markup =
            html! { (notice(Some("That code is not valid. Start again."))) a href="/account/mfa" { "Back" } };
        return Ok(html(StatusCode::UNAUTHORIZED, page("Two-step sign-in", markup)));
    };
    let markup = html! {
        p { "Two-step sign-in is on. Keep these backup codes somewhere safe: each works once, and they are shown only now." }
        ul { @for code in &codes { li { code { (code.expose()) } } } }
        a href="/account" { "Continue" }
    };
    Ok(with_cookie(html(StatusCode::OK, page("Backup codes", markup)), session_cookie(&rotated.cookie)?))
}
