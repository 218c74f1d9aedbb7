//! What every API handler shares, and how a bearer token becomes a [`Caller`].

use std::sync::Arc;

use bluewave_engine::Engine;
use bluewave_query::{AccessPolicy, QueryService};

use crate::auth::{AuthError, AuthService, BuoyScope, Caller};
use crate::http::{ApiError, Authenticator};

/// Called after a device token is revoked, with the buoy it belonged to, so the binary can
/// close the buoy's open QUIC connections (web knows nothing of `wire`). Returns how many
/// connections were closed.
pub type DeviceRevoked = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// The application state of the API router.
#[derive(Clone)]
pub struct ApiState {
    /// Accounts, tokens, RBAC, plans, audit.
    pub auth: Arc<AuthService>,
    /// SQL and typed reads (on its own runtime).
    pub query: Arc<QueryService>,
    /// The storage engine (JSON ingest, buoy registry).
    pub engine: Arc<Engine>,
    /// Settings and idempotency keys of the line-protocol writes.
    pub line_protocol: Arc<crate::api::LineProtocol>,
    /// Hook run after a device token is revoked; `None` when no ingest server runs.
    pub on_device_revoked: Option<DeviceRevoked>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl Authenticator for ApiState {
    type Caller = Caller;

    /// An access-token check: one signature verification and one read of the account record
    /// (role, status, `valid_after`), cheap enough for the request's task.
    /// A caller whose role requires MFA and who has none yet is refused here (403): only the
    /// enrolment endpoints take such a token ([`ApiState::enrolling_caller`]).
    /// A personal API token (`bwp_…`) is checked against the store instead (one read; its use
    /// is noted in memory, and the noted uses are written at most once a minute by a blocking
    /// task, never here).
    fn authenticate(&self, bearer: &str) -> Result<Caller, ApiError> {
        let caller = if bearer.starts_with(crate::auth::API_TOKEN_PREFIX) {
            let caller = self.auth.verify_api_token(bearer)?;
            if let Ok(runtime) = tokio::runtime::Handle::try_current()
                && self.auth.api_token_uses_due()
            {
                let auth = Arc::clone(&self.auth);
                runtime.spawn_blocking(move || {
                    if let Err(error) = auth.flush_api_token_uses() {
                        tracing::warn!(%error, "writing the last use of personal API tokens failed");
                    }
                });
            }
            caller
        } else {
            self.auth.verify_access_token(bearer)?
        };
        if caller.mfa_enrolment_required() {
            return Err(AuthError::MfaEnrolmentRequired.into());
        }
        Ok(caller)
    }
}

/// Why a personal API token is refused on account and session management.
pub const PERSONAL_TOKEN_REFUSAL: &str = "a personal API token is for data access (queries, telemetry reads, usage); manage sessions and accounts signed in";

/// The caller of an account or session management endpoint (`/api/auth/*` past login,
/// `/api/rbac/*`): as [`crate::http::Request::caller`], but a caller authenticated by a
/// personal API token is refused (403 `forbidden`, [`PERSONAL_TOKEN_REFUSAL`]).
pub(crate) fn account_caller(request: &crate::http::Request<ApiState>) -> Result<Caller, ApiError> {
    let caller = request.caller()?;
    if caller.is_personal_token() {
        return Err(ApiError::Forbidden(PERSONAL_TOKEN_REFUSAL.to_owned()));
    }
    Ok(caller)
}

impl ApiState {
    /// The caller of an MFA enrolment endpoint: any valid access token, including one of an
    /// account that must enrol before anything else.
    pub(crate) fn enrolling_caller(&self, bearer: &str) -> Result<Caller, ApiError> {
        Ok(self.auth.verify_access_token(bearer)?)
    }

    /// The caller's query policy, from their role and plan (`AuthService::policy_grant`), with
    /// the served-query limits of the query configuration (time budget of the plan, stall
    /// limit, memory pool, table-function rows: `QueryConfig::limit_policy`).
    pub(crate) async fn policy(&self, caller: &Caller) -> Result<AccessPolicy, ApiError> {
        let auth = Arc::clone(&self.auth);
        let query = Arc::clone(&self.query);
        let caller = caller.clone();
        super::blocking(move || Ok(query_policy(&auth, &query, &caller)?)).await
    }

    /// Counts one query against the caller's daily quota (429 when used up).
    pub(crate) async fn count_query(&self, caller: &Caller) -> Result<(), ApiError> {
        let auth = Arc::clone(&self.auth);
        let caller = caller.clone();
        super::blocking(move || Ok(auth.record_query(&caller)?)).await
    }
}

/// The query policy of `caller`, from their role and plan (`AuthService::policy_grant`), with
/// the served-query limits of `query`'s configuration (`QueryConfig::limit_policy`). The one
/// path by which every front (`POST /api/query`, the Postgres wire protocol) builds it.
/// Blocking (a read of the accounts store): call it off the async threads.
pub fn query_policy(
    auth: &AuthService,
    query: &QueryService,
    caller: &Caller,
) -> Result<AccessPolicy, AuthError> {
    let grant = auth.policy_grant(caller)?;
    let mut policy = match grant.buoys {
        BuoyScope::All => AccessPolicy::unrestricted(),
        BuoyScope::List(ids) => AccessPolicy::restricted(ids, None),
    };
    policy.earliest_ts = grant.earliest_ts_ns;
    if let Some(rows_max) = grant.max_rows {
        policy.rows_max = rows_max;
    }
    query.config().limit_policy(&mut policy, grant.plan_id.as_deref());
    Ok(policy)
}
