//! `bluewave-web`: the hyper HTTPS front (REST API, auth, shop and subscription pages).
//!
//! Layout:
//! - `http`: the HTTPS server framework — rustls listener (HTTP/1.1 + HTTP/2), `matchit`
//!   router with typed handlers, [`ApiError`] → JSON answers in one place, body limits,
//!   timeouts, graceful shutdown, `/healthz`, `/metrics`, `/api/openapi.json`, `/api/docs`.
//!
//! The API endpoints (telemetry, query, buoys, auth) are not wired yet.
//!
//! # Example
//!
//! ```no_run
//! use bluewave_web::{ApiError, HttpConfig, HttpServer, Registry, Reply, Request, Router, TlsIdentity};
//!
//! /// Greets the caller.
//! #[utoipa::path(get, path = "/api/hello", responses((status = 200, description = "A greeting")))]
//! async fn hello(_request: Request<()>) -> Result<Reply, ApiError> {
//!     Reply::json(&"hello")
//! }
//!
//! # async fn run(identity: TlsIdentity) -> Result<(), bluewave_web::ServerError> {
//! let router = Router::new((), "BlueWave", "0.1.0")?.route::<__path_hello>(hello)?;
//! let addr = "127.0.0.1:8443".parse().expect("valid address");
//! let server = HttpServer::bind(addr, identity, HttpConfig::default(), router, Registry::default()).await?;
//! // Serves until the future completes (wire it to SIGTERM / Ctrl-C in the binary).
//! server.serve(std::future::pending::<()>()).await;
//! # Ok(())
//! # }
//! ```

mod http;

pub use crate::http::{
    ApiError, Authenticator, Body, BoxError, ErrorBody, HEADER_BYTES_MIN, Handler, HandlerFuture, Health,
    HttpConfig, HttpServer, Reply, Request, RouteInfo, RouteOptions, Router, ServerError, ShutdownSummary,
    TlsIdentity,
};
/// Types of the `http` crate that appear in this API.
pub use ::http::{HeaderName, HeaderValue, Method, StatusCode, header};
/// The Prometheus registry `/metrics` serves; register the application's collectors into it.
pub use prometheus_client::registry::Registry;
/// DER certificate and key types of [`TlsIdentity`].
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
