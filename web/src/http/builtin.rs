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
/// text format Prometheus scrapes.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in OpenMetrics text format",
        content_type = "application/openmetrics-text", body = String)))]
async fn metrics<S>(request: Request<S>) -> Result<Reply, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &request.shared.registry)
        .map_err(|_| ApiError::internal("metrics encoding failed"))?;
    Ok(Reply::bytes("application/openmetrics-text; version=1.0.0; charset=utf-8", text))
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
