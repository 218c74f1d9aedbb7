//! Routes every server has: `/healthz`, `/metrics`, `/api/openapi.json` and the offline docs
//! page `/api/docs` with its embedded assets.

use http::{HeaderValue, Method, header};
use serde::Serialize;

use crate::http::error::{ApiError, ServerError};
use crate::http::reply::Reply;
use crate::http::request::Request;
use crate::http::router::Router;

/// Body of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: &'static str,
}

/// The docs page's Content-Security-Policy: its own script, style and the document fetch
/// (all same origin), nothing else — no inline code, no other origin.
const CSP_DOCS: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                        img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const DOCS_HTML: &str = include_str!("../../assets/docs.html");
const DOCS_JS: &str = include_str!("../../assets/docs.js");
const DOCS_CSS: &str = include_str!("../../assets/docs.css");

pub(crate) fn register<S: Send + Sync + 'static>(router: Router<S>) -> Result<Router<S>, ServerError> {
    router
        .route::<__path_healthz>(healthz)?
        .route::<__path_metrics>(metrics)?
        .route::<__path_openapi_json>(openapi_json)?
        .route::<__path_docs>(docs)?
        .hidden_route(Method::GET, "/api/docs/docs.js", docs_js)?
        .hidden_route(Method::GET, "/api/docs/docs.css", docs_css)
}

/// Liveness: the server accepts connections and answers requests.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The server is up", body = Health)))]
async fn healthz<S>(_request: Request<S>) -> Result<Reply, ApiError> {
    Reply::json(&Health { status: "ok" })
}

/// Every registered metric (HTTP, and whatever the application registered) in the OpenMetrics
/// text format Prometheus scrapes. Open to loopback clients; any other client sends the scrape
/// token of `[https] metrics_token_file` as a bearer token.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Metrics in OpenMetrics text format",
        content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "Not a loopback client, and no or a wrong scrape token"),
        (status = 403, description = "A token is needed from this client and none is configured")))]
async fn metrics<S>(request: Request<S>) -> Result<Reply, ApiError> {
    let config = &request.shared.config;
    metrics_access(
        request.peer().ip(),
        config.metrics_loopback_open,
        config.metrics_token_sha256.as_ref(),
        request.headers().get(header::AUTHORIZATION),
    )?;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &request.shared.registry)
        .map_err(|_| ApiError::internal("metrics encoding failed"))?;
    Ok(Reply::bytes("application/openmetrics-text; version=1.0.0; charset=utf-8", text))
}

/// Who may read `/metrics`: a loopback peer (an IPv4-mapped loopback address too) unless
/// `loopback_open` is off; any other peer only with the configured scrape token as
/// `Authorization: Bearer`.
fn metrics_access(
    peer: std::net::IpAddr,
    loopback_open: bool,
    token_sha256: Option<&[u8; 32]>,
    authorization: Option<&HeaderValue>,
) -> Result<(), ApiError> {
    if loopback_open && peer.to_canonical().is_loopback() {
        return Ok(());
    }
    let Some(want) = token_sha256 else {
        return Err(ApiError::Forbidden(
            "/metrics needs a scrape token from this client; set [https] metrics_token_file".to_owned(),
        ));
    };
    let presented = authorization
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized("/metrics needs the scrape token as a bearer token".to_owned())
        })?;
    use sha2::Digest as _;
    let got: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
    // Digests of a secret: comparing them leaks nothing about the token itself.
    if &got != want {
        return Err(ApiError::Unauthorized("wrong scrape token for /metrics".to_owned()));
    }
    Ok(())
}

/// This document: OpenAPI 3.1 of every API route, generated from the code.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi_json<S>(request: Request<S>) -> Result<Reply, ApiError> {
    Ok(Reply::bytes("application/json", request.shared.openapi_json.clone()))
}

/// A readable rendering of the OpenAPI document that works with no internet access.
#[utoipa::path(get, path = "/api/docs", tag = "operations",
    responses((status = 200, description = "The docs page", content_type = "text/html", body = String)))]
async fn docs<S>(_request: Request<S>) -> Result<Reply, ApiError> {
    Ok(Reply::bytes("text/html; charset=utf-8", DOCS_HTML)
        .header(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP_DOCS)))
}

async fn docs_js<S>(_request: Request<S>) -> Result<Reply, ApiError> {
    Ok(Reply::bytes("text/javascript; charset=utf-8", DOCS_JS))
}

async fn docs_css<S>(_request: Request<S>) -> Result<Reply, ApiError> {
    Ok(Reply::bytes("text/css; charset=utf-8", DOCS_CSS))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::IpAddr;

    use super::*;
    use crate::http::HttpConfig;

    fn sha(text: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(text.as_bytes()).into()
    }

    #[test]
    fn metrics_are_open_on_loopback_and_need_the_scrape_token_elsewhere() {
        let token = "0123456789abcdef0123456789abcdef";
        let want = sha(token);
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let wrong = HeaderValue::from_static("Bearer 0123456789abcdef0123456789abcdeX");
        let code = |r: Result<(), ApiError>| r.err().map(|e| e.code());
        for loopback in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            let peer: IpAddr = loopback.parse().unwrap();
            assert!(metrics_access(peer, true, None, None).is_ok(), "{loopback}");
            // Behind a local reverse proxy: loopback needs the token too.
            assert_eq!(code(metrics_access(peer, false, Some(&want), None)), Some("unauthorized"));
            assert_eq!(code(metrics_access(peer, false, Some(&want), Some(&bearer))), None);
        }
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(code(metrics_access(remote, true, None, Some(&bearer))), Some("forbidden"));
        assert_eq!(code(metrics_access(remote, true, Some(&want), None)), Some("unauthorized"));
        assert_eq!(code(metrics_access(remote, true, Some(&want), Some(&wrong))), Some("unauthorized"));
        assert_eq!(code(metrics_access(remote, true, Some(&want), Some(&bearer))), None);
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(code(metrics_access(mapped, true, Some(&want), None)), Some("unauthorized"));
    }

    #[test]
    fn a_scrape_token_is_long_visible_ascii() {
        let mut config = HttpConfig::default();
        assert!(config.set_metrics_token("short").is_err());
        assert!(config.set_metrics_token("0123456789abcdef 0123456789abcdef").is_err());
        config.set_metrics_token(" 0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(config.metrics_token_sha256, Some(sha("0123456789abcdef0123456789abcdef")));
    }
}
