//! `bluewave-web`: the hyper HTTPS front (REST API, auth, shop and subscription pages).
//!
//! Layout:
//! - `http`: the HTTPS server framework — rustls listener (HTTP/1.1 + HTTP/2), `matchit`
//!   router with typed handlers, [`ApiError`] → JSON answers in one place, body limits,
//!   timeouts, graceful shutdown, `/healthz`, `/metrics`, `/api/openapi.json`, `/api/docs`.
//! - `auth`: identity and tokens (argon2id accounts in `accounts.redb`, EdDSA JWT access and
//!   device tokens, rotating refresh tokens, brute-force limits), roles and permissions, plans
//!   ([`AuthService`] is the entry point).
//! - `mail`: outgoing mail behind the [`Mailer`] trait — an outbox directory of `.eml` files
//!   (default) or SMTP through `lettre` (STARTTLS or TLS, rustls).
//! - `shop`: the storefront's core in `<data-dir>/shop.redb` — products, stock, carts, the
//!   order state machine, checkout, payments (provider trait, test mode, signed webhooks),
//!   invoices, data subscriptions (the source of their subscribers' plans)
//!   ([`shop_api::ShopService`]).
//! - `audit`: the append-only, hash-chained audit log in `<data-dir>/audit/` ([`AuditLog`]).
//!
//! - `api`: the REST endpoints joining `auth`, the query layer and the engine to the router
//!   ([`api_router`] over an [`ApiState`]): `/api/auth/*`, `/api/telemetry` (and by reading
//!   id, range deletes), `/api/v2/write` and `/write` (InfluxDB line protocol), `/api/query`, `/api/buoys`, device tokens, `/api/rbac/*`, `/api/usage`.
//! - `pages`: server-rendered pages for people (login with its MFA step, account and
//!   sessions, MFA enrolment; the metrics dashboard with its CSV export and live SSE stream,
//!   personal API tokens, query usage, the account overview; hashed static assets) on browser
//!   sessions with CSRF protection; added by [`api_router`].
//!
//! **Not implemented:** `PUT /api/telemetry/{id}` (value corrections: the engine's ingest path
//! has no safe `batch_seq` for a server-made write; see the `api::telemetry` module).
//!
//! # Examples
//!
//! Auth, as a library:
//!
//! ```no_run
//! use bluewave_web::{AuthConfig, AuthService, Secret};
//!
//! # fn main() -> Result<(), bluewave_web::AuthError> {
//! let auth = AuthService::open(std::path::Path::new("./bluewave-data"), AuthConfig::default())?;
//! auth.ensure_first_admin("admin@example.org", Some(Secret::new("correct horse battery staple")))?;
//! let pair = auth.login("admin@example.org", &Secret::new("correct horse battery staple"), [127, 0, 0, 1].into())?;
//! let caller = auth.verify_access_token(pair.access_token.expose())?;
//! auth.authorize(&caller, bluewave_web::Permission::UsersManage)?;
//! # Ok(())
//! # }
//! ```
//!
//! An endpoint on the HTTPS framework:
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

mod api;
mod audit;
mod auth;
mod http;
mod mail;
mod pages;
mod shop;

/// The InfluxDB line-protocol parser (`api::line_protocol`).
pub mod line_protocol {
    pub use crate::api::{
        BodyError, FIELDS_PER_LINE_MAX, FieldValue, LINE_BYTES_MAX, LINES_PER_BODY_MAX, Line, LineError,
        LineOutcome, Point, Precision, TAGS_PER_LINE_MAX, parse_body, parse_line,
    };
}
pub use api::{
    ApiState, BUOY_NAME_BYTES_MAX, BUOY_STATUSES, BUOY_TAG, BuoySource, DeviceRevoked, IDEMPOTENCY_FILE_NAME,
    IDEMPOTENCY_KEY_BYTES_MAX, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_TTL_S_DEFAULT,
    IDEMPOTENCY_KEYS_MAX_DEFAULT, IDEMPOTENCY_KEYS_PER_WRITER_MAX_DEFAULT, IDEMPOTENT_REPLAYED_HEADER,
    IdempotencyError, IdempotencyLimits, LINE_ERRORS_LISTED_MAX, LINE_PROTOCOL_BODY_BYTES_MAX,
    LINE_REASON_CHARS_MAX, LOGIN_SLOT_WAIT_MS, LOGINS_WAITING_MAX, LineProtocol, LineProtocolConfig,
    PERSONAL_TOKEN_REFUSAL, RBAC_PAGE_DEFAULT, READING_ID_CHARS_MAX, STORED_ANSWER_BYTES_MAX,
    TELEMETRY_BODY_BYTES_MAX, TIME_TEXT_BYTES_MAX, api_router, password_checks_max,
};
// The Postgres front (`bluewave-pg`) builds a caller's query policy through the same path.
pub use api::query_policy;
pub use audit::{
    AUDIT_DETAILS_BYTES_MAX, AUDIT_FIELD_BYTES_MAX, AUDIT_FILE_NAME, AUDIT_FORMAT_VERSION,
    AUDIT_LINE_BYTES_MAX, AUDIT_PAGE_ENTRIES_MAX, AuditEntry, AuditError, AuditEvent, AuditLog, AuditPage,
    AuditResult, OpenReport, VerifyReport, verify_file,
};
pub use auth::*;
pub use mail::{
    MAIL_BODY_BYTES_MAX, MAIL_SUBJECT_BYTES_MAX, Mail, MailConfig, MailError, MailTransport, Mailer,
    OUTBOX_DIR_NAME, OUTBOX_FILES_MAX, OutboxMailer, SMTP_STARTTLS_PORT, SMTP_TIMEOUT_MS, SMTP_TLS_PORT,
    SmtpMailer, SmtpSecurity, SmtpSettings, open_mailer,
};
/// Adds the storefront's pages, static assets and payment webhook to a router (after
/// [`api_router`]).
pub use pages::shop::routes as shop_routes;
pub use pages::{
    ASSET_CACHE_CONTROL, BUCKETS_TARGET_MAX, BUOYS_SELECTED_MAX, CROSS_SITE_REFUSAL, DASHBOARD_CSP,
    LATEST_WINDOW_S, LIVE_HEADROOM_DIVISOR, LIVE_KEEPALIVE_S, LIVE_LOOKBACK_S, LIVE_POLL_MS,
    LIVE_ROWS_PER_POLL_MAX, LIVE_STREAM_LIFETIME_S, LIVE_STREAMS_MAX, LIVE_STREAMS_PER_ACCOUNT_MAX,
    METRICS_SELECTED_MAX, RANGE_S_MAX,
};
pub use pages::{CSRF_HEADER, LOGIN_COOKIE, MFA_COOKIE, PAGE_CSP, REAUTH_RETURN_PAGES, SESSION_COOKIE};
pub use pages::{SHOP_CSP, UPLOAD_BODY_BYTES_MAX};
/// The shop (`shop.redb`): catalogue, carts, orders, payments, invoices.
pub mod shop_api {
    pub use crate::shop::*;
}

pub use crate::http::{
    ApiError, Authenticator, Body, BoxError, ErrorBody, HEADER_BYTES_MIN, Handler, HandlerFuture, Health,
    HttpConfig, HttpServer, METRICS_TOKEN_CHARS_MIN, Reply, Request, RouteInfo, RouteOptions, Router,
    ServerError, ShutdownSummary, StepUpHint, TlsIdentity,
};
/// Types of the `http` crate that appear in this API.
pub use ::http::{HeaderName, HeaderValue, Method, StatusCode, header};
/// The Prometheus registry `/metrics` serves; register the application's collectors into it.
pub use prometheus_client::registry::Registry;
/// DER certificate and key types of [`TlsIdentity`].
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
