//! Roles, users, plans, sessions and the audit log: `/api/rbac/*` and `/api/auth/sessions`.
//!
//! Every rule lives in [`AuthService`](crate::AuthService) (permission checks, "nobody grants a
//! role above their own", the last active admin, auditing of each change); these handlers only
//! parse, call it off the network threads and shape the answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::{ApiState, blocking};
use crate::audit::AuditEntry;
use crate::auth::{
    AuthError, BuoyScope, NewUser, Permission, Plan, PlanSpec, Role, Secret, SessionInfo, UserInfo,
    UserStatus,
};
use crate::http::{ApiError, Reply, Request};

/// Default page size of `GET /api/rbac/users` and `GET /api/rbac/audit-log`.
pub const RBAC_PAGE_DEFAULT: usize = 100;

/// A role and what it may do.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RoleAnswer {
    /// `admin`, `operator`, `analyst`, `customer` or `device`.
    role: &'static str,
    /// Rank: a caller may only grant or manage roles at or below their own.
    rank: u8,
    /// `resource:action` permissions.
    permissions: Vec<&'static str>,
}

/// Lists every role with its permissions.
#[utoipa::path(get, path = "/api/rbac/roles", tag = "rbac", security(("bearer" = [])),
    responses((status = 200, description = "Roles, lowest rank first", body = [RoleAnswer]),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing users:manage")))]
pub(crate) async fn roles(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let auth = &request.state().auth;
    auth.authorize(&caller, Permission::UsersManage)?;
    let table = auth.role_permissions()?;
    let answer: Vec<RoleAnswer> = Role::ALL
        .into_iter()
        .map(|role| RoleAnswer {
            role: role.as_str(),
            rank: role.rank(),
            permissions: table
                .get(&role)
                .map(|set| set.iter().map(|permission| permission.as_str()).collect())
                .unwrap_or_default(),
        })
        .collect();
    Reply::json(&answer)
}

/// An account as the API shows it (never the password hash).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct User {
    /// Id.
    id: String,
    /// Normalised email.
    email: String,
    /// Role.
    role: String,
    /// `active` or `disabled`.
    status: String,
    /// Plan id, if any.
    plan_id: Option<String>,
    /// Creation time, ms since the epoch.
    created_ms: u64,
    /// Last change, ms since the epoch.
    updated_ms: u64,
}

impl From<UserInfo> for User {
    fn from(info: UserInfo) -> Self {
        Self {
            id: info.id,
            email: info.email,
            role: info.role.to_string(),
            status: match info.status {
                UserStatus::Active => "active",
                UserStatus::Disabled => "disabled",
            }
            .to_owned(),
            plan_id: info.plan_id,
            created_ms: info.created_ms,
            updated_ms: info.updated_ms,
        }
    }
}

/// Paging of `GET /api/rbac/users`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsersPage {
    /// Only accounts with an id after this one (the last id of the previous page).
    after: Option<String>,
    /// Accounts per page, 1-1000 (default 100).
    limit: Option<usize>,
}

/// Lists accounts in id order.
#[utoipa::path(get, path = "/api/rbac/users", params(UsersPage), tag = "rbac", security(("bearer" = [])),
    responses((status = 200, description = "A page of accounts", body = [User]),
        (status = 400, description = "Invalid limit"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing users:manage")))]
pub(crate) async fn list_users(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let page: UsersPage = request.query()?;
    let auth = Arc::clone(&request.state().auth);
    let users = blocking(move || {
        Ok(auth.list_users(&caller, page.after.as_deref(), page.limit.unwrap_or(RBAC_PAGE_DEFAULT))?)
    })
    .await?;
    Reply::json(&users.into_iter().map(User::from).collect::<Vec<_>>())
}

/// A new account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUserBody {
    /// Email (trimmed and lower-cased).
    email: String,
    /// Initial password (at least 12 characters, not the email).
    password: String,
    /// Role: not above the caller's, never `device`.
    role: String,
    /// Plan id, if any.
    plan_id: Option<String>,
}

/// Creates an account.
#[utoipa::path(post, path = "/api/rbac/users", request_body = NewUserBody, tag = "rbac",
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = User),
        (status = 400, description = "Invalid field or weak password"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing users:manage, or a role above the caller's"),
        (status = 404, description = "No such plan"),
        (status = 409, description = "Email taken")))]
pub(crate) async fn create_user(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let body: NewUserBody = request.json().await?;
    // `device` parses; the service refuses it (after the permission check, audited).
    let role = parse_role(&body.role)?;
    let auth = Arc::clone(&request.state().auth);
    let new =
        NewUser { email: body.email, password: Secret::new(body.password), role, plan_id: body.plan_id };
    let user = blocking(move || Ok(auth.create_user(&caller, new)?)).await?;
    Ok(Reply::json(&User::from(user))?.status(StatusCode::CREATED))
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse::<Role>()
        .map_err(|_| ApiError::InvalidInput("role: one of admin, operator, analyst, customer".to_owned()))
}

/// Which account a path names: the caller's own always, others only with `users:manage`
/// (otherwise 404, so ids of other accounts cannot be probed).
fn other_account(request: &Request<ApiState>, caller: &crate::auth::Caller) -> Result<String, ApiError> {
    let id = request.param("id")?.to_owned();
    if id != caller.user_id() && request.state().auth.authorize(caller, Permission::UsersManage).is_err() {
        return Err(ApiError::NotFound("no such user".to_owned()));
    }
    Ok(id)
}

/// One account: the caller's own, or any with `users:manage`.
#[utoipa::path(get, path = "/api/rbac/users/{id}", tag = "rbac", security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account", body = User),
        (status = 401, description = "No valid access token"),
        (status = 404, description = "No such account (or not the caller's and no users:manage)")))]
pub(crate) async fn get_user(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let id = other_account(&request, &caller)?;
    let auth = Arc::clone(&request.state().auth);
    let user = blocking(move || Ok(auth.get_user(&caller, &id)?)).await?;
    Reply::json(&User::from(user))
}

/// A role change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleBody {
    /// The new role: not above the caller's, never `device`.
    role: String,
}

/// Changes an account's role (its access tokens end; it may refresh to get the new role).
#[utoipa::path(put, path = "/api/rbac/users/{id}/role", request_body = RoleBody, tag = "rbac",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account", body = User),
        (status = 400, description = "Unknown role, device, or the last active admin"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing users:manage, or a role above the caller's"),
        (status = 404, description = "No such account")))]
pub(crate) async fn set_role(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let id = request.param("id")?.to_owned();
    let body: RoleBody = request.json().await?;
    let role = parse_role(&body.role)?;
    let auth = Arc::clone(&request.state().auth);
    let user = blocking(move || Ok(auth.set_user_role(&caller, &id, role)?)).await?;
    Reply::json(&User::from(user))
}

/// A status change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    /// `active` or `disabled` (disabling ends every session and access token at once).
    status: String,
}

/// Enables or disables an account.
#[utoipa::path(put, path = "/api/rbac/users/{id}/status", request_body = StatusBody, tag = "rbac",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 200, description = "The account", body = User),
        (status = 400, description = "Unknown status, yourself, or the last active admin"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing users:manage, or an account above the caller's"),
        (status = 404, description = "No such account")))]
pub(crate) async fn set_status(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let id = request.param("id")?.to_owned();
    let body: StatusBody = request.json().await?;
    let status = match body.status.as_str() {
        "active" => UserStatus::Active,
        "disabled" => UserStatus::Disabled,
        _ => return Err(ApiError::InvalidInput("status: active or disabled".to_owned())),
    };
    let auth = Arc::clone(&request.state().auth);
    let user = blocking(move || Ok(auth.set_user_status(&caller, &id, status)?)).await?;
    Reply::json(&User::from(user))
}

/// A plan assignment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanAssignBody {
    /// The plan id, or `null` to remove the account's plan.
    plan_id: Option<String>,
}

/// Assigns a plan to an account (or removes it).
#[utoipa::path(put, path = "/api/rbac/users/{id}/plan", request_body = PlanAssignBody, tag = "rbac",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Account id")),
    responses((status = 204, description = "Assigned"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing plans:manage, or an account above the caller's"),
        (status = 404, description = "No such account or plan")))]
pub(crate) async fn assign_plan(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let id = request.param("id")?.to_owned();
    let body: PlanAssignBody = request.json().await?;
    let auth = Arc::clone(&request.state().auth);
    blocking(move || Ok(auth.assign_plan(&caller, &id, body.plan_id.as_deref())?)).await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// A plan as the API shows and takes it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanBody {
    /// Id, chosen by the server (in answers; refused on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// Display name, 1-128 bytes.
    name: String,
    /// Buoy ids covered, or `null` for every buoy.
    buoys: Option<Vec<String>>,
    /// Days of history visible (1-36500), or `null` for all.
    history_days: Option<u32>,
    /// Queries per UTC day, or `null` for unlimited.
    daily_query_quota: Option<u32>,
    /// Most rows per answer, or `null` for the server's cap.
    row_limit: Option<u64>,
}

impl From<Plan> for PlanBody {
    fn from(plan: Plan) -> Self {
        Self {
            id: Some(plan.id),
            name: plan.spec.name,
            buoys: match plan.spec.buoys {
                BuoyScope::All => None,
                BuoyScope::List(ids) => Some(ids),
            },
            history_days: plan.spec.history_days,
            daily_query_quota: plan.spec.daily_query_quota,
            row_limit: plan.spec.row_limit,
        }
    }
}

/// Lists the plans.
#[utoipa::path(get, path = "/api/rbac/plans", tag = "rbac", security(("bearer" = [])),
    responses((status = 200, description = "Every plan", body = [PlanBody]),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing plans:read")))]
pub(crate) async fn list_plans(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let auth = Arc::clone(&request.state().auth);
    let plans = blocking(move || Ok(auth.list_plans(&caller)?)).await?;
    Reply::json(&plans.into_iter().map(PlanBody::from).collect::<Vec<_>>())
}

/// Creates a plan.
#[utoipa::path(post, path = "/api/rbac/plans", request_body = PlanBody, tag = "rbac",
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = PlanBody),
        (status = 400, description = "Invalid field"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing plans:manage"),
        (status = 409, description = "Too many plans")))]
pub(crate) async fn create_plan(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let body: PlanBody = request.json().await?;
    if body.id.is_some() {
        return Err(ApiError::InvalidInput("id: chosen by the server".to_owned()));
    }
    let spec = PlanSpec {
        name: body.name,
        buoys: body.buoys.map_or(BuoyScope::All, BuoyScope::List),
        history_days: body.history_days,
        daily_query_quota: body.daily_query_quota,
        row_limit: body.row_limit,
    };
    let auth = Arc::clone(&request.state().auth);
    let plan = blocking(move || Ok(auth.create_plan(&caller, spec)?)).await?;
    Ok(Reply::json(&PlanBody::from(plan))?.status(StatusCode::CREATED))
}

/// Paging of `GET /api/rbac/audit-log`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only entries older than this `seq` (the `next_before_seq` of the previous page).
    before_seq: Option<u64>,
    /// Entries per page, 1-1000 (default 100).
    limit: Option<usize>,
}

/// A page of the audit log.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditAnswer {
    /// Entries, newest first, exactly as stored (with their hash chain).
    #[schema(value_type = Vec<Object>)]
    entries: Vec<AuditEntry>,
    /// Pass as `before_seq` for the next (older) page; `null` at the start of the log.
    next_before_seq: Option<u64>,
}

/// Reads the audit log, newest first.
#[utoipa::path(get, path = "/api/rbac/audit-log", params(AuditParams), tag = "rbac",
    security(("bearer" = [])),
    responses((status = 200, description = "A page of entries", body = AuditAnswer),
        (status = 400, description = "Invalid limit"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "Missing audit:read")))]
pub(crate) async fn audit_log(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let params: AuditParams = request.query()?;
    let limit = params.limit.unwrap_or(RBAC_PAGE_DEFAULT);
    if limit == 0 || limit > crate::audit::AUDIT_PAGE_ENTRIES_MAX {
        return Err(ApiError::InvalidInput("limit: 1-1000".to_owned()));
    }
    let auth = Arc::clone(&request.state().auth);
    let page = blocking(move || Ok(auth.audit_page(&caller, params.before_seq, limit)?)).await?;
    Reply::json(&AuditAnswer { entries: page.entries, next_before_seq: page.next_before_seq })
}

/// A live session.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// Session id (to revoke it).
    session_id: String,
    /// Login time, ms since the epoch.
    created_ms: u64,
    /// Last refresh, ms since the epoch.
    last_used_ms: u64,
    /// Expiry of the current refresh token, s since the epoch.
    expires_s: u64,
    /// Client IP at login.
    login_ip: String,
    /// Client IP at the last refresh.
    last_ip: String,
}

impl From<SessionInfo> for Session {
    fn from(info: SessionInfo) -> Self {
        Self {
            session_id: info.session_id,
            created_ms: info.created_ms,
            last_used_ms: info.last_used_ms,
            expires_s: info.expires_s,
            login_ip: info.login_ip,
            last_ip: info.last_ip,
        }
    }
}

/// The caller's live sessions.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Live sessions", body = [Session]),
        (status = 401, description = "No valid access token")))]
pub(crate) async fn sessions(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let auth = Arc::clone(&request.state().auth);
    let own = caller.user_id().to_owned();
    let list = blocking(move || Ok(auth.list_sessions(&caller, &own)?)).await?;
    Reply::json(&list.into_iter().map(Session::from).collect::<Vec<_>>())
}

/// Ends one session: the caller's own, or (with `users:manage`) one of an account not above
/// the caller's. Another account's session is 404 to a caller without `users:manage`.
#[utoipa::path(delete, path = "/api/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Ended"),
        (status = 401, description = "No valid access token"),
        (status = 403, description = "The owner ranks above the caller"),
        (status = 404, description = "No such session")))]
pub(crate) async fn revoke_session(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = super::state::account_caller(&request)?;
    let id = request.param("id")?.to_owned();
    let auth = Arc::clone(&request.state().auth);
    blocking(move || {
        let manager = auth.authorize(&caller, Permission::UsersManage).is_ok();
        if !manager && !auth.list_sessions(&caller, caller.user_id())?.iter().any(|s| s.session_id == id) {
            return Err(ApiError::NotFound("no such session".to_owned()));
        }
        match auth.revoke_session(&caller, &id) {
            Err(AuthError::NotFound { .. }) => Err(ApiError::NotFound("no such session".to_owned())),
            other => Ok(other?),
        }
    })
    .await?;
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}
