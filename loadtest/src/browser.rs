//! A browser-like client of BlueWave's pages: one keep-alive HTTPS connection (an
//! [`ApiClient`] without a bearer token) with a cookie jar, form posts that carry this site's
//! `Origin` and the CSRF token of the page they came from, as a browser's would. It knows the
//! sign-in flow (`GET /login` for the login CSRF cookie, `POST /login`, and `POST /login/mfa`
//! for an account with MFA).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::https::{
    ApiAnswer, ApiClient, ApiTarget, LOGIN_RETRIES_MAX, RETRY_AFTER_S_MAX, header_value, percent_encode,
    status_text,
};

/// Most cookies kept (the site sets three).
pub const COOKIES_MAX: usize = 16;
/// The `Origin` of form posts: the site itself (the server's certificate is for `localhost`).
const SITE_ORIGIN: &str = "https://localhost";
/// Where the CSRF token sits in a page's forms (maud writes the attributes in this order).
const CSRF_FIELD: &str = "name=\"csrf\" value=\"";
/// The session cookie's name (`bluewave_web::pages::SESSION_COOKIE`).
pub const SESSION_COOKIE: &str = "__Host-bluewave-session";

/// A signed-out or signed-in browser.
pub struct Browser {
    client: ApiClient,
    cookies: BTreeMap<String, String>,
    /// The session's CSRF token, once read from a signed-in page.
    csrf: String,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("cookies", &self.cookies.len()).finish_non_exhaustive()
    }
}

impl Browser {
    /// A browser with an empty jar; `source_ip` binds its connection's local end.
    pub fn new(target: ApiTarget, source_ip: Option<IpAddr>) -> Self {
        Self { client: ApiClient::new(target, source_ip), cookies: BTreeMap::new(), csrf: String::new() }
    }

    /// Whether the jar holds a session cookie.
    pub fn signed_in(&self) -> bool {
        self.cookies.contains_key(SESSION_COOKIE)
    }

    fn cookie_header(&self) -> Result<Option<(HeaderName, HeaderValue)>> {
        if self.cookies.is_empty() {
            return Ok(None);
        }
        let text = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        Ok(Some((hyper::header::COOKIE, header_value(&text)?)))
    }

    /// Keeps the answer's cookies (an empty value or `Max-Age=0` deletes one).
    fn remember(&mut self, answer: &ApiAnswer) -> Result<()> {
        for value in answer.headers.get_all(hyper::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else { continue };
            let expired = parts.any(|p| p.trim().eq_ignore_ascii_case("max-age=0"));
            if expired || value.is_empty() {
                self.cookies.remove(name);
            } else {
                if self.cookies.len() >= COOKIES_MAX && !self.cookies.contains_key(name) {
                    return Err(Error::api("cookies", format!("more than {COOKIES_MAX} cookies")));
                }
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Ok(())
    }

    /// `GET path` with the jar; the answer whatever its status.
    pub async fn get(&mut self, path: &str) -> Result<ApiAnswer> {
        let headers: Vec<_> = self.cookie_header()?.into_iter().collect();
        let answer = self.client.send(Method::GET, path, Bytes::new(), &headers).await?;
        self.remember(&answer)?;
        Ok(answer)
    }

    /// `GET path`, `200` expected; the page's CSRF token (if it has a form) becomes the one
    /// later posts carry.
    pub async fn page(&mut self, path: &str) -> Result<ApiAnswer> {
        let answer = self.get(path).await?;
        if answer.status != StatusCode::OK {
            // The path without its query string: errors are counted by their text.
            let route = path.split('?').next().unwrap_or(path);
            return Err(Error::api(route.to_owned(), status_text(&answer)));
        }
        if let Some(token) = csrf_token(&answer.body) {
            self.csrf = token;
        }
        Ok(answer)
    }

    /// `POST path` as a form of `fields` plus the CSRF token, with this site's `Origin`; a `503`
    /// (the server's password checks all busy) is waited out, at most [`LOGIN_RETRIES_MAX`] times.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<ApiAnswer> {
        let mut body = format!("csrf={}", percent_encode(&self.csrf));
        for (name, value) in fields {
            body.push('&');
            body.push_str(&percent_encode(name));
            body.push('=');
            body.push_str(&percent_encode(value));
        }
        let mut headers = vec![
            (hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded")),
            (hyper::header::ORIGIN, HeaderValue::from_static(SITE_ORIGIN)),
            (HeaderName::from_static("sec-fetch-site"), HeaderValue::from_static("same-origin")),
        ];
        headers.extend(self.cookie_header()?);
        let body = Bytes::from(body);
        let mut waits = 0;
        loop {
            let answer = self.client.send(Method::POST, path, body.clone(), &headers).await?;
            self.remember(&answer)?;
            // Every password check slot busy (sign-ins): wait as told, a bounded number of times.
            if answer.status == StatusCode::SERVICE_UNAVAILABLE && waits < LOGIN_RETRIES_MAX {
                waits += 1;
                let wait = answer.retry_after_s.unwrap_or(1).clamp(1, RETRY_AFTER_S_MAX);
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            return Ok(answer);
        }
    }

    /// `POST path`, a `303` expected; its `Location`.
    pub async fn post_redirect(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<String> {
        let answer = self.post(path, fields).await?;
        if answer.status != StatusCode::SEE_OTHER {
            return Err(Error::api(path.to_owned(), status_text(&answer)));
        }
        answer
            .headers
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::api(path.to_owned(), "303 without a Location"))
    }

    /// Signs in with `email` and `password`, answering the MFA step with `code` when the
    /// account asks for it (`None` for an account that must not ask).
    pub async fn sign_in(&mut self, email: &str, password: &str, code: Option<&str>) -> Result<()> {
        self.page("/login").await?;
        let next = self.post_redirect("/login", &[("email", email), ("password", password)]).await?;
        match (next.as_str(), code) {
            ("/account", None) => {}
            ("/login/mfa", Some(code)) => {
                let next = self.post_redirect("/login/mfa", &[("code", code)]).await?;
                if next != "/account" {
                    return Err(Error::api("/login/mfa", format!("redirected to {next}")));
                }
            }
            (other, _) => return Err(Error::api("/login", format!("redirected to {other}"))),
        }
        if !self.signed_in() {
            return Err(Error::api("/login", "no session cookie"));
        }
        Ok(())
    }
}

/// The first form's CSRF token in `html`.
pub fn csrf_token(html: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(html).ok()?;
    let start = text.find(CSRF_FIELD)? + CSRF_FIELD.len();
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_read_from_the_first_form() {
        let html =
            br#"<form><input type="hidden" name="csrf" value="abc_-1"></form><input name="csrf" value="x">"#;
        assert_eq!(csrf_token(html).as_deref(), Some("abc_-1"));
        assert_eq!(csrf_token(b"<p>no form</p>"), None);
    }

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(percent_encode("a b&c=d@e.f"), "a%20b%26c%3Dd%40e.f");
    }
}
