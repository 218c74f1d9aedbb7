//! The REST API: endpoints that join `auth`, the query layer and the engine to the router.
//!
//! Layout:
//! - `state`: [`ApiState`] (what every handler shares) and its [`Authenticator`] impl.
//! - `errors`: `From` impls turning auth, query and engine errors into [`ApiError`] — the one
//!   place where those errors become statuses.
//! - `account`: `/api/auth/register`, `/verify`, `/verify/resend`, `/password-reset/request`,
//!   `/password-reset`, `/email`, `/email/confirm`, `/password`, `/me`; and
//!   `DELETE /api/rbac/users/{id}/sessions` (an admin ends every session of an account).
//! - `auth`: `/api/auth/token`, `/refresh`, `/logout`, `/logout-all`; MFA: `/api/auth/mfa`
//!   (challenge + code), `/mfa/enrol`, `/mfa/confirm`, `/mfa/step-up`, `/mfa/disable`.
//! - `telemetry`: `GET|POST /api/telemetry`, `GET|DELETE /api/telemetry/{id}`,
//!   `POST /api/telemetry/delete` (range delete).
//! - `query`: `POST /api/query` (SQL, answer format from `Accept`, streamed).
//! - `buoys`: `/api/buoys`, `GET|PUT|DELETE /api/buoys/{id}` (delete = retire), device tokens.
//! - `rbac`: `/api/rbac/roles`, `/users`, `/plans`, `/audit-log`; `/api/auth/sessions`.
//! - `influx`: `POST /api/v2/write` and `POST /write` (InfluxDB line protocol into the engine).
//! - `idempotency`: the `Idempotency-Key` store of those writes (`idempotency.redb`).
//! - `line_protocol`: the InfluxDB line-protocol parser (measurement, escaped tags, numeric
//!   fields, timestamps by precision; per-line errors with line numbers).
//! - `time`: integer-ns or RFC 3339 times at the edge.
//! - `usage`: `GET /api/usage` (daily query usage against the plan's quota).
//!
//! Not implemented: `PUT /api/telemetry/{id}` (value corrections; see the `telemetry` module
//! for why the engine's ingest path cannot carry them safely yet).

mod account;
mod auth;
mod buoys;
mod errors;
mod idempotency;
mod influx;
mod line_protocol;
mod query;
mod rbac;
mod state;
mod telemetry;
mod time;
mod usage;

pub(crate) use account::spawn_reset_request;
pub(crate) use auth::password_slot;
pub use auth::{LOGIN_SLOT_WAIT_MS, LOGINS_WAITING_MAX, password_checks_max};
pub use buoys::{BUOY_NAME_BYTES_MAX, BUOY_STATUSES};
pub use idempotency::{
    IDEMPOTENCY_FILE_NAME, IDEMPOTENCY_KEY_BYTES_MAX, IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_TTL_S_DEFAULT,
    IDEMPOTENCY_KEYS_MAX_DEFAULT, IDEMPOTENCY_KEYS_PER_WRITER_MAX_DEFAULT, IDEMPOTENT_REPLAYED_HEADER,
    IdempotencyError, IdempotencyLimits, STORED_ANSWER_BYTES_MAX,
};
pub use influx::{
    BUOY_TAG, BuoySource, LINE_ERRORS_LISTED_MAX, LINE_PROTOCOL_BODY_BYTES_MAX, LINE_REASON_CHARS_MAX,
    LineProtocol, LineProtocolConfig,
};
pub use line_protocol::{
    BodyError, FIELDS_PER_LINE_MAX, FieldValue, LINE_BYTES_MAX, LINES_PER_BODY_MAX, Line, LineError,
    LineOutcome, Point, Precision, TAGS_PER_LINE_MAX, parse_body, parse_line,
};
pub use rbac::RBAC_PAGE_DEFAULT;
pub use state::{ApiState, DeviceRevoked, PERSONAL_TOKEN_REFUSAL, query_policy};
pub use telemetry::{READING_ID_CHARS_MAX, TELEMETRY_BODY_BYTES_MAX};
pub use time::TIME_TEXT_BYTES_MAX;
pub(crate) use time::{format_rfc3339 as format_time, parse_param as parse_time};

use crate::http::{ApiError, RouteOptions, Router, ServerError};

/// Time the query route waits beyond the longest query budget (`QueryConfig::timeout_max`)
/// before its own request timeout answers: 5 s.
pub const QUERY_ROUTE_MARGIN_MS: u64 = 5_000;

/// A router with every API endpoint over `state` (plus the framework's built-in routes).
pub fn api_router(state: ApiState) -> Result<Router<ApiState>, ServerError> {
    // The query route waits for a query's first chunk: its deadline is the longest query budget
    // plus a margin, so the query's own timeout (a typed `query_timeout`) always comes first.
    let query_budget_ms = u64::try_from(state.query.config().timeout_max().as_millis()).unwrap_or(u64::MAX);
    let query_route = RouteOptions {
        body_bytes_max: None,
        request_timeout_ms: Some(query_budget_ms.saturating_add(QUERY_ROUTE_MARGIN_MS)),
    };
    Router::new(state, "BlueWave", env!("CARGO_PKG_VERSION"))?
        .route::<auth::__path_token>(auth::token)?
        .route::<auth::__path_refresh>(auth::refresh)?
        .route::<auth::__path_logout>(auth::logout)?
        .route::<auth::__path_logout_all>(auth::logout_all)?
        .route::<auth::__path_mfa>(auth::mfa)?
        .route::<auth::__path_mfa_enrol>(auth::mfa_enrol)?
        .route::<auth::__path_mfa_confirm>(auth::mfa_confirm)?
        .route::<auth::__path_mfa_step_up>(auth::mfa_step_up)?
        .route::<auth::__path_mfa_disable>(auth::mfa_disable)?
        .route::<telemetry::__path_read>(telemetry::read)?
        .route_with::<telemetry::__path_ingest>(
            RouteOptions { body_bytes_max: Some(TELEMETRY_BODY_BYTES_MAX), request_timeout_ms: None },
            telemetry::ingest,
        )?
        .route_with::<influx::__path_write_v2>(
            RouteOptions { body_bytes_max: Some(LINE_PROTOCOL_BODY_BYTES_MAX), request_timeout_ms: None },
            influx::write_v2,
        )?
        .route_with::<influx::__path_write_v1>(
            RouteOptions { body_bytes_max: Some(LINE_PROTOCOL_BODY_BYTES_MAX), request_timeout_ms: None },
            influx::write_v1,
        )?
        .route::<telemetry::__path_get_one>(telemetry::get_one)?
        .route::<telemetry::__path_delete_one>(telemetry::delete_one)?
        .route::<telemetry::__path_correct_one>(telemetry::correct_one)?
        .route::<telemetry::__path_delete_range>(telemetry::delete_range)?
        .route_with::<query::__path_sql>(query_route, query::sql)?
        .route::<buoys::__path_list>(buoys::list)?
        .route::<buoys::__path_register>(buoys::register)?
        .route::<buoys::__path_get>(buoys::get)?
        .route::<buoys::__path_update>(buoys::update)?
        .route::<buoys::__path_retire>(buoys::retire)?
        .route::<buoys::__path_issue_token>(buoys::issue_token)?
        .route::<buoys::__path_list_tokens>(buoys::list_tokens)?
        .route::<buoys::__path_revoke_token>(buoys::revoke_token)?
        .route::<rbac::__path_sessions>(rbac::sessions)?
        .route::<rbac::__path_revoke_session>(rbac::revoke_session)?
        .route::<rbac::__path_roles>(rbac::roles)?
        .route::<rbac::__path_list_users>(rbac::list_users)?
        .route::<rbac::__path_create_user>(rbac::create_user)?
        .route::<rbac::__path_get_user>(rbac::get_user)?
        .route::<rbac::__path_set_role>(rbac::set_role)?
        .route::<rbac::__path_set_status>(rbac::set_status)?
        .route::<rbac::__path_assign_plan>(rbac::assign_plan)?
        .route::<rbac::__path_list_plans>(rbac::list_plans)?
        .route::<rbac::__path_create_plan>(rbac::create_plan)?
        .route::<rbac::__path_audit_log>(rbac::audit_log)?
        .route::<usage::__path_usage>(usage::usage)
        .and_then(account_routes)
        .and_then(crate::pages::routes)
}

/// The account endpoints (sign-up, one-time links, password and email changes, `me`, an
/// admin ending an account's sessions).
fn account_routes(router: Router<ApiState>) -> Result<Router<ApiState>, ServerError> {
    router
        .route::<account::__path_register>(account::register)?
        .route::<account::__path_verify>(account::verify)?
        .route::<account::__path_resend>(account::resend)?
        .route::<account::__path_reset_request>(account::reset_request)?
        .route::<account::__path_reset>(account::reset)?
        .route::<account::__path_change_email>(account::change_email)?
        .route::<account::__path_confirm_email>(account::confirm_email)?
        .route::<account::__path_change_password>(account::change_password)?
        .route::<account::__path_me>(account::me)?
        .route::<account::__path_end_user_sessions>(account::end_user_sessions)
}

/// Runs a blocking `AuthService` call (redb commits, argon2) off the network threads.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?
}
