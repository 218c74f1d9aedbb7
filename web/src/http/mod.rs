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
pub use config::{HEADER_BYTES_MIN, HttpConfig};
pub use error::{ApiError, BoxError, ErrorBody, ServerError};
pub use reply::Reply;
pub use request::{Authenticator, Request};
pub use router::{Handler, HandlerFuture, RouteInfo, RouteOptions, Router};
pub use server::{HttpServer, ShutdownSummary, TlsIdentity};
