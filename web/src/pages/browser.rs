//! Cookies, the CSRF checks, form bodies and page answers.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::api::ApiState;
use crate::auth::{BrowserSession, Secret};
use crate::http::{ApiError, Reply, Request};

/// The session cookie: a random id (the store keeps its SHA-256). `__Host-`: Secure, no
/// Domain, Path=/ — no subdomain or plain-HTTP page can set or shadow it.
pub const SESSION_COOKIE: &str = "__Host-bluewave-session";
/// The login forms' double-submit CSRF cookie (there is no session before login).
pub const LOGIN_COOKIE: &str = "__Host-bluewave-login";
/// The pending MFA challenge of a browser login (5 minutes).
pub const MFA_COOKIE: &str = "__Host-bluewave-mfa";
/// The header that carries a session's CSRF token for `fetch` requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Content-Security-Policy of every page: nothing loads (no script, no style, no frame), forms
/// post only to this origin, and no page may be framed.
pub const PAGE_CSP: &str = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Longest form body read, bytes.
const FORM_BYTES_MAX: usize = 16 * 1024;
/// Seconds the MFA cookie lives (the challenge's own lifetime).
const MFA_COOKIE_MAX_AGE_S: u64 = crate::auth::MFA_CHALLENGE_TTL_S;

/// The refusal of every failed CSRF check (one answer, whatever failed).
pub(crate) fn csrf_refused() -> ApiError {
    ApiError::Forbidden("CSRF check failed".to_owned())
}

/// The value of cookie `name`, if the request carries it once.
pub(crate) fn cookie<'r>(request: &'r Request<ApiState>, name: &str) -> Option<&'r str> {
    let mut found = None;
    for value in request.headers().get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((key, value)) = pair.trim().split_once('=')
                && key == name
            {
                if found.is_some() {
                    return None; // two cookies of one name: a shadowing attempt, use neither
                }
                found = Some(value);
            }
        }
    }
    found
}

/// A `Set-Cookie` value for a `__Host-` cookie (`max_age_s == Some(0)` deletes it).
pub(crate) fn set_cookie(name: &str, value: &str, max_age_s: Option<u64>) -> Result<HeaderValue, ApiError> {
    let mut text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_s {
        text.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&text).map_err(ApiError::internal)
}

/// The `Origin` / `Sec-Fetch-Site` check of a state-changing request: an `Origin` must be
/// `https://<Host>` (or `null` with `Sec-Fetch-Site: same-origin`: a browser's own form post
/// under `Referrer-Policy: no-referrer`); a `Sec-Fetch-Site` must be `same-origin` (or `none`:
/// typed by the user).
pub(crate) fn check_origin(request: &Request<ApiState>) -> Result<(), ApiError> {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().map_err(|_| csrf_refused())?;
        if site != "same-origin" && site != "none" {
            return Err(csrf_refused());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // Pages answer `Referrer-Policy: no-referrer`, and under it browsers send
        // `Origin: null` on their own form posts; the browser-set `Sec-Fetch-Site: same-origin`
        // then vouches for the origin (and the synchronizer token is still required).
        let same_origin = headers.get("sec-fetch-site").is_some_and(|site| site == "same-origin");
        if origin == "null" && same_origin {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| request.uri().authority().map(|a| a.as_str()))
            .ok_or_else(csrf_refused)?;
        if origin.to_str().map_err(|_| csrf_refused())? != format!("https://{host}") {
            return Err(csrf_refused());
        }
    }
    Ok(())
}

/// Constant-time comparison of two tokens.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        && !a.is_empty()
}

/// Reads an `application/x-www-form-urlencoded` body into `T`.
pub(crate) async fn read_form<T: DeserializeOwned>(request: &mut Request<ApiState>) -> Result<T, ApiError> {
    const FORM: &str = "application/x-www-form-urlencoded";
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(FORM));
    if !is_form {
        return Err(ApiError::UnsupportedMediaType { expected: FORM });
    }
    let bytes: Bytes = request.bytes().await?;
    if bytes.len() > FORM_BYTES_MAX {
        return Err(ApiError::PayloadTooLarge { limit_bytes: FORM_BYTES_MAX as u64 });
    }
    serde_urlencoded::from_bytes(&bytes).map_err(|e| ApiError::InvalidInput(format!("form: {e}")))
}

/// The browser session of the request's cookie. A request that also carries an
/// `Authorization` header is refused: an endpoint takes one kind of credential, never both.
pub(crate) async fn session(request: &Request<ApiState>) -> Result<Option<BrowserSession>, ApiError> {
    if request.headers().contains_key(header::AUTHORIZATION) {
        return Err(ApiError::InvalidInput(
            "pages take the session cookie only; send a bearer token to /api instead".to_owned(),
        ));
    }
    let Some(cookie) = cookie(request, SESSION_COOKIE).map(str::to_owned) else { return Ok(None) };
    let auth = std::sync::Arc::clone(&request.state().auth);
    crate::api::blocking(move || match auth.browser_session(&cookie) {
        Ok(session) => Ok(Some(session)),
        Err(crate::auth::AuthError::Token(_)) => Ok(None),
        Err(e) => Err(e.into()),
    })
    .await
}

/// The session of a state-changing request, with its CSRF checks passed: origin, then the
/// token from the form (`csrf`) or the `X-CSRF-Token` header.
pub(crate) fn check_csrf(
    request: &Request<ApiState>,
    session: &BrowserSession,
    form_token: Option<&str>,
) -> Result<(), ApiError> {
    check_origin(request)?;
    let header_token = request.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match form_token.filter(|t| !t.is_empty()).or(header_token) {
        Some(token) if same_token(token, &session.csrf_token) => Ok(()),
        _ => Err(csrf_refused()),
    }
}

/// An HTML page answer with the page CSP (the pipeline adds HSTS, nosniff, Referrer-Policy,
/// X-Frame-Options and `Cache-Control: no-store`).
pub(crate) fn html(status: StatusCode, markup: maud::Markup) -> Reply {
    Reply::bytes("text/html; charset=utf-8", markup.into_string())
        .status(status)
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP))
}

/// A `303 See Other` to `location` (after a `POST`).
pub(crate) fn see_other(location: &'static str) -> Reply {
    Reply::empty().status(StatusCode::SEE_OTHER).header(header::LOCATION, HeaderValue::from_static(location))
}

/// Adds a `Set-Cookie` to `reply` (several may be added).
pub(crate) fn with_cookie(mut reply: Reply, value: HeaderValue) -> Reply {
    reply.response.headers_mut().append(header::SET_COOKIE, value);
    reply
}

/// The `Set-Cookie` of a new session id.
pub(crate) fn session_cookie(cookie: &Secret) -> Result<HeaderValue, ApiError> {
    set_cookie(SESSION_COOKIE, cookie.expose(), None)
}

/// The `Set-Cookie` of a pending MFA challenge.
pub(crate) fn mfa_cookie(challenge: &Secret) -> Result<HeaderValue, ApiError> {
    set_cookie(MFA_COOKIE, challenge.expose(), Some(MFA_COOKIE_MAX_AGE_S))
}

/// The client's `User-Agent` (empty when absent or not text).
pub(crate) fn user_agent(request: &Request<ApiState>) -> String {
    request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}
