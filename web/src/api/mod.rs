//! The REST API: endpoints that join `auth`, the query layer and the engine to the router.
//!
//! Layout:
//! - `state`: [`ApiState`] (what every handler shares) and its [`Authenticator`] impl.
//! - `errors`: `From` impls turning auth, query and engine errors into [`ApiError`] — the one
//!   place where those errors become statuses.
//! - `auth`: `/api/auth/token`, `/refresh`, `/logout`, `/logout-all`.
//! - `telemetry`: `GET|POST /api/telemetry`.
//! - `query`: `POST /api/query` (SQL, answer format from `Accept`, streamed).
//! - `buoys`: `/api/buoys`, `/api/buoys/{id}`, device tokens.
//!
//! Not implemented yet: `GET|PUT|DELETE /api/telemetry/{id}`, `PUT|DELETE /api/buoys/{id}`,
//! `/api/rbac/*` (issue 4).

mod auth;
mod buoys;
mod errors;
mod query;
mod state;
mod telemetry;

pub use buoys::{BUOY_NAME_BYTES_MAX, BUOY_STATUSES};
pub use state::{ApiState, DeviceRevoked};
pub use telemetry::TELEMETRY_BODY_BYTES_MAX;

use crate::http::{ApiError, RouteOptions, Router, ServerError};

/// A router with every API endpoint over `state` (plus the framework's built-in routes).
pub fn api_router(state: ApiState) -> Result<Router<ApiState>, ServerError> {
    Router::new(state, "BlueWave", env!("CARGO_PKG_VERSION"))?
        .route::<auth::__path_token>(auth::token)?
        .route::<auth::__path_refresh>(auth::refresh)?
        .route::<auth::__path_logout>(auth::logout)?
        .route::<auth::__path_logout_all>(auth::logout_all)?
        .route::<telemetry::__path_read>(telemetry::read)?
        .route_with::<telemetry::__path_ingest>(
            RouteOptions { body_bytes_max: Some(TELEMETRY_BODY_BYTES_MAX), request_timeout_ms: None },
            telemetry::ingest,
        )?
        .route::<query::__path_sql>(query::sql)?
        .route::<buoys::__path_list>(buoys::list)?
        .route::<buoys::__path_register>(buoys::register)?
        .route::<buoys::__path_get>(buoys::get)?
        .route::<buoys::__path_issue_token>(buoys::issue_token)?
        .route::<buoys::__path_list_tokens>(buoys::list_tokens)?
        .route::<buoys::__path_revoke_token>(buoys::revoke_token)
}

/// Runs a blocking `AuthService` call (redb commits, argon2) off the network threads.
async fn blocking<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?
}
