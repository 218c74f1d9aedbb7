//! The HTTPS server framework: TLS listener, router, request/response types, the error →
//! answer mapping, metrics and the OpenAPI document.
//!
//! Layout (follows a request):
//! - `server`: listener, TLS (ALPN h2 + http/1.1), connection limit, timeouts, graceful shutdown.
//! - `pipeline`: path check, routing, handler deadline, security headers, metrics, access log.
//! - `router`: `matchit` routes registered from `#[utoipa::path]` annotations.
//! - `request` / `reply` / `body`: what a handler reads and returns (JSON, query, streams).
//! - `error`: [`ApiError`] → status + `{"error", "message"}`; [`ServerError`] for start-up.
//! - `metrics`: the HTTP series in the application's Prometheus registry.
//! - `builtin`: `/healthz`, `/metrics`, `/api/openapi.json`, `/api/docs`.
//! - `config`: [`HttpConfig`], every limit with its default.
//!
//! Adding an endpoint (what the telemetry, query, buoy and auth routes will look like):
//! 1. write `async fn name(mut request: Request<App>) -> Result<Reply, ApiError>` with a
//!    `#[utoipa::path(...)]` annotation (method, path, params, request body, responses,
//!    `security(("bearer" = []))` when it needs a token);
//! 2. inside: `request.caller()?` (the application's [`Authenticator`]), `request.param("id")?`,
//!    `request.query::<Filters>()?`, `request.json::<Body>().await?`; answer with
//!    `Reply::json(&value)`, or `Reply::stream(content_type, stream)` for large results;
//! 3. register it: `router.route::<__path_name>(name)?`, or `route_with` and [`RouteOptions`]
//!    for a larger body limit or a longer deadline. The OpenAPI document follows by itself.

mod body;
mod builtin;
mod config;
mod error;
mod metrics;
mod pipeline;
mod reply;
mod request;
mod router;
mod server;

pub use body::Body;
pub use builtin::Health;
pub use config::{HEADER_BYTES_MIN, HttpConfig, METRICS_TOKEN_CHARS_MIN};
pub use error::{ApiError, BoxError, ErrorBody, ServerError, StepUpHint};
pub use reply::Reply;
pub use request::{Authenticator, Request};
pub use router::{Handler, HandlerFuture, RouteInfo, RouteOptions, Router};
pub use server::{HttpServer, ShutdownSummary, TlsIdentity};
