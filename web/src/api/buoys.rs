//! The buoy registry (`/api/buoys`) and device tokens (`/api/buoys/{id}/device-tokens`,
//! `/api/device-tokens/{jti}`). Readers see only the buoys of their plan: any other id answers
//! 404, exactly like an unregistered one.
//!
//! The engine's catalog cannot remove a buoy (its readings and dedup state stay keyed by it),
//! so `DELETE /api/buoys/{id}` retires it: status `retired`, every device token of it revoked
//! (open QUIC connections closed, next HELLO refused), JSON ingest and new device tokens for it
//! refused with 409. Its readings stay readable; a retired buoy can be set `active` again with
//! `PUT`, which needs new device tokens.

use std::sync::Arc;

use bluewave_engine::{BuoyId, BuoyInfo};
use serde::{Deserialize, Serialize};

use crate::StatusCode;
use crate::api::{ApiState, blocking};
use crate::audit::AuditEvent;
use crate::auth::{Caller, DeviceTokenInfo, Permission};
use crate::http::{ApiError, Reply, Request};

/// Longest buoy name, bytes.
pub const BUOY_NAME_BYTES_MAX: usize = 128;
/// Statuses a buoy may have.
pub const BUOY_STATUSES: [&str; 3] = ["active", "maintenance", "retired"];

/// A buoy as the API shows and takes it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Buoy {
    /// Id: 1-64 chars of `[A-Za-z0-9_.-]`.
    id: String,
    /// Human name, 1-128 bytes.
    name: String,
    /// Latitude, degrees (-90..=90).
    lat: Option<f64>,
    /// Longitude, degrees (-180..=180).
    lng: Option<f64>,
    /// `active`, `maintenance` or `retired`.
    status: String,
}

impl From<BuoyInfo> for Buoy {
    fn from(info: BuoyInfo) -> Self {
        Self {
            id: info.id.to_string(),
            name: info.name,
            lat: info.latitude,
            lng: info.longitude,
            status: info.status,
        }
    }
}

impl Buoy {
    fn into_info(self) -> Result<BuoyInfo, ApiError> {
        let id = BuoyId::new(&self.id).map_err(|error| ApiError::InvalidInput(error.to_string()))?;
        let name = self.name.trim();
        if name.is_empty() || name.len() > BUOY_NAME_BYTES_MAX || name.chars().any(char::is_control) {
            return Err(ApiError::InvalidInput("name: 1-128 bytes, no control characters".to_owned()));
        }
        if self.lat.is_some_and(|lat| !(-90.0..=90.0).contains(&lat)) {
            return Err(ApiError::InvalidInput("lat: -90..=90 degrees".to_owned()));
        }
        if self.lng.is_some_and(|lng| !(-180.0..=180.0).contains(&lng)) {
            return Err(ApiError::InvalidInput("lng: -180..=180 degrees".to_owned()));
        }
        if !BUOY_STATUSES.contains(&self.status.as_str()) {
            return Err(ApiError::InvalidInput("status: active, maintenance or retired".to_owned()));
        }
        let mut info = BuoyInfo::new(&id);
        info.name = name.to_owned();
        info.latitude = self.lat;
        info.longitude = self.lng;
        info.status = self.status;
        Ok(info)
    }
}

/// The registered buoy `id` if the caller's plan covers it; 404 otherwise (same answer for
/// "not registered" and "not yours").
async fn visible_buoy(state: &ApiState, caller: &Caller, id: &str) -> Result<BuoyInfo, ApiError> {
    let policy = state.policy(caller).await?;
    let not_found = || ApiError::NotFound("no such buoy".to_owned());
    if !policy.buoys.allows(id) {
        return Err(not_found());
    }
    state.engine.buoys().into_iter().find(|buoy| &*buoy.id == id).ok_or_else(not_found)
}

/// Lists the buoys the caller may see.
#[utoipa::path(get, path = "/api/buoys", tag = "buoys", security(("bearer" = [])),
    responses((status = 200, description = "Buoys, sorted by id", body = [Buoy]),
        (status = 403, description = "Missing buoys:read")))]
pub(crate) async fn list(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state();
    state.auth.authorize(&caller, Permission::BuoysRead)?;
    let policy = state.policy(&caller).await?;
    let buoys: Vec<Buoy> = state
        .engine
        .buoys()
        .into_iter()
        .filter(|buoy| policy.buoys.allows(&buoy.id))
        .map(Buoy::from)
        .collect();
    Reply::json(&buoys)
}

/// Registers a buoy so it may write.
#[utoipa::path(post, path = "/api/buoys", request_body = Buoy, tag = "buoys", security(("bearer" = [])),
    responses((status = 201, description = "Registered", body = Buoy),
        (status = 400, description = "Invalid field"),
        (status = 403, description = "Missing buoys:manage"),
        (status = 409, description = "Already registered")))]
pub(crate) async fn register(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::BuoysManage)?;
    let body: Buoy = request.json().await?;
    let info = body.into_info()?;
    if state.engine.buoys().iter().any(|buoy| buoy.id == info.id) {
        return Err(ApiError::Conflict(format!("buoy {} is already registered", info.id)));
    }
    let answer = Buoy::from(info.clone());
    let engine = Arc::clone(&state.engine);
    let auth = Arc::clone(&state.auth);
    let actor = format!("user:{}", caller.user_id());
    blocking(move || {
        let target = format!("buoy:{}", info.id);
        engine.register_buoy(info)?;
        auth.audit_log()
            .append(AuditEvent::new(actor, "buoys.register", target, "ok"))
            .map(drop)
            .map_err(ApiError::internal)
    })
    .await?;
    Ok(Reply::json(&answer)?.status(StatusCode::CREATED))
}

/// One buoy.
#[utoipa::path(get, path = "/api/buoys/{id}", tag = "buoys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Buoy id")),
    responses((status = 200, description = "The buoy", body = Buoy),
        (status = 404, description = "No such buoy (or outside the caller's plan)")))]
pub(crate) async fn get(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state();
    state.auth.authorize(&caller, Permission::BuoysRead)?;
    let buoy = visible_buoy(state, &caller, request.param("id")?).await?;
    Reply::json(&Buoy::from(buoy))
}

/// The editable fields of a buoy (`PUT /api/buoys/{id}`; the id is the path's).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuoyUpdate {
    /// Human name, 1-128 bytes.
    name: String,
    /// Latitude, degrees (-90..=90).
    lat: Option<f64>,
    /// Longitude, degrees (-180..=180).
    lng: Option<f64>,
    /// `active`, `maintenance` or `retired` (retiring revokes the buoy's device tokens).
    status: String,
}

/// Revokes every live device token of `buoy` and closes its open ingest connections; returns
/// how many tokens were revoked.
async fn revoke_buoy_tokens(state: &ApiState, caller: &Caller, buoy: &str) -> Result<usize, ApiError> {
    let auth = Arc::clone(&state.auth);
    let (caller, owned) = (caller.clone(), buoy.to_owned());
    let revoked = blocking(move || {
        let live: Vec<String> = auth
            .list_device_tokens(&caller, Some(&owned))?
            .into_iter()
            .filter(|token| token.revoked_ms.is_none())
            .map(|token| token.jti)
            .collect();
        for jti in &live {
            auth.revoke_device_token(&caller, jti)?;
        }
        Ok(live.len())
    })
    .await?;
    if let Some(hook) = &state.on_device_revoked {
        let closed = hook(buoy);
        tracing::info!(buoy, revoked, closed, "buoy retired: device tokens revoked, connections closed");
    }
    Ok(revoked)
}

/// Stores `info` in the engine's registry.
async fn set_info(state: &ApiState, info: BuoyInfo) -> Result<(), ApiError> {
    let engine = Arc::clone(&state.engine);
    blocking(move || Ok(engine.register_buoy(info)?)).await
}

/// Stores `after` in the engine's registry and audits the change from `before`.
async fn store_update(
    state: &ApiState,
    caller: &Caller,
    action: &'static str,
    before: BuoyInfo,
    after: BuoyInfo,
    tokens_revoked: usize,
) -> Result<(), ApiError> {
    let engine = Arc::clone(&state.engine);
    let auth = Arc::clone(&state.auth);
    let actor = format!("user:{}", caller.user_id());
    blocking(move || {
        let target = format!("buoy:{}", after.id);
        let details = serde_json::json!({
            "before": { "name": before.name, "lat": before.latitude, "lng": before.longitude,
                "status": before.status },
            "after": { "name": after.name, "lat": after.latitude, "lng": after.longitude,
                "status": after.status },
            "device_tokens_revoked": tokens_revoked,
        });
        engine.register_buoy(after)?;
        auth.audit_log()
            .append(AuditEvent::new(actor, action, target, "ok").with_details(details))
            .map(drop)
            .map_err(ApiError::internal)
    })
    .await
}

/// Updates a buoy's name, location and status.
#[utoipa::path(put, path = "/api/buoys/{id}", request_body = BuoyUpdate, tag = "buoys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Buoy id")),
    responses((status = 200, description = "The updated buoy", body = Buoy),
        (status = 400, description = "Invalid field"),
        (status = 403, description = "Missing buoys:manage"),
        (status = 404, description = "No such buoy")))]
pub(crate) async fn update(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::BuoysManage)?;
    let before = visible_buoy(&state, &caller, request.param("id")?).await?;
    let body: BuoyUpdate = request.json().await?;
    let after = Buoy {
        id: before.id.to_string(),
        name: body.name,
        lat: body.lat,
        lng: body.lng,
        status: body.status,
    }
    .into_info()?;
    let revoked = if after.status == "retired" && before.status != "retired" {
        // Retired first, so no token can be issued between the revocation and the status.
        set_info(&state, after.clone()).await?;
        revoke_buoy_tokens(&state, &caller, &after.id).await?
    } else {
        0
    };
    let answer = Buoy::from(after.clone());
    store_update(&state, &caller, "buoys.update", before, after, revoked).await?;
    Reply::json(&answer)
}

/// Retires a buoy (the engine keeps every buoy it has seen): status `retired`, its device
/// tokens revoked and its open ingest connections closed. Its readings stay.
#[utoipa::path(delete, path = "/api/buoys/{id}", tag = "buoys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Buoy id")),
    responses((status = 204, description = "Retired (or already retired)"),
        (status = 403, description = "Missing buoys:manage"),
        (status = 404, description = "No such buoy")))]
pub(crate) async fn retire(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::BuoysManage)?;
    let before = visible_buoy(&state, &caller, request.param("id")?).await?;
    let mut after = before.clone();
    after.status = "retired".to_owned();
    // Retired first, so no token can be issued between the revocation and the status.
    set_info(&state, after.clone()).await?;
    let revoked = revoke_buoy_tokens(&state, &caller, &before.id).await?;
    if before.status != "retired" || revoked > 0 {
        store_update(&state, &caller, "buoys.retire", before, after, revoked).await?;
    }
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}

/// Options of a new device token.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssueBody {
    /// Lifetime, s (default and maximum: the server's device token lifetime, 1 year).
    ttl_s: Option<u64>,
}

/// A device token's record.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceToken {
    /// Token id, used to revoke.
    jti: String,
    /// The buoy it speaks for.
    buoy_id: String,
    /// Issue time, s since the epoch.
    issued_s: u64,
    /// Expiry, s since the epoch.
    expires_s: u64,
    /// `user:<id>` of the issuer.
    issued_by: String,
    /// Revocation time, ms since the epoch, if revoked.
    revoked_ms: Option<u64>,
}

impl From<DeviceTokenInfo> for DeviceToken {
    fn from(info: DeviceTokenInfo) -> Self {
        Self {
            jti: info.jti,
            buoy_id: info.buoy_id,
            issued_s: info.issued_s,
            expires_s: info.expires_s,
            issued_by: info.issued_by,
            revoked_ms: info.revoked_ms,
        }
    }
}

/// A freshly issued device token: the JWT is shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IssuedAnswer {
    /// The JWT to configure on the buoy (HELLO token).
    token: String,
    /// Its record.
    #[serde(flatten)]
    record: DeviceToken,
}

/// Issues a device token for a registered buoy.
#[utoipa::path(post, path = "/api/buoys/{id}/device-tokens", tag = "buoys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Buoy id")), request_body = IssueBody,
    responses((status = 201, description = "Issued", body = IssuedAnswer),
        (status = 403, description = "Missing devices:manage"),
        (status = 404, description = "No such buoy"),
        (status = 409, description = "The buoy is retired")))]
pub(crate) async fn issue_token(mut request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::DevicesManage)?;
    let buoy = visible_buoy(&state, &caller, request.param("id")?).await?;
    if buoy.status == "retired" {
        return Err(ApiError::Conflict(format!("buoy {} is retired", buoy.id)));
    }
    let body: IssueBody = request.json().await?;
    let auth = Arc::clone(&state.auth);
    let issued = blocking(move || Ok(auth.issue_device_token(&caller, &buoy.id, body.ttl_s)?)).await?;
    let answer = IssuedAnswer { token: issued.token.expose().to_owned(), record: issued.info.into() };
    Ok(Reply::json(&answer)?.status(StatusCode::CREATED))
}

/// Lists a buoy's device tokens (revoked ones too).
#[utoipa::path(get, path = "/api/buoys/{id}/device-tokens", tag = "buoys", security(("bearer" = [])),
    params(("id" = String, Path, description = "Buoy id")),
    responses((status = 200, description = "Token records (never the tokens)", body = [DeviceToken]),
        (status = 403, description = "Missing devices:manage"),
        (status = 404, description = "No such buoy")))]
pub(crate) async fn list_tokens(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::DevicesManage)?;
    let buoy = visible_buoy(&state, &caller, request.param("id")?).await?;
    let auth = Arc::clone(&state.auth);
    let tokens = blocking(move || Ok(auth.list_device_tokens(&caller, Some(&buoy.id))?)).await?;
    let tokens: Vec<DeviceToken> = tokens.into_iter().map(DeviceToken::from).collect();
    Reply::json(&tokens)
}

/// Revokes a device token: its next HELLO is refused `DEVICE_REVOKED`, and the buoy's open
/// ingest connections are closed.
#[utoipa::path(delete, path = "/api/device-tokens/{jti}", tag = "buoys", security(("bearer" = [])),
    params(("jti" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked (or already revoked)"),
        (status = 403, description = "Missing devices:manage"),
        (status = 404, description = "No such token")))]
pub(crate) async fn revoke_token(request: Request<ApiState>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    let state = request.state().clone();
    state.auth.authorize(&caller, Permission::DevicesManage)?;
    let jti = request.param("jti")?.to_owned();
    let auth = Arc::clone(&state.auth);
    let buoy = blocking(move || {
        let buoy = auth
            .list_device_tokens(&caller, None)?
            .into_iter()
            .find(|token| token.jti == jti)
            .map(|token| token.buoy_id)
            .ok_or_else(|| ApiError::NotFound("no such device token".to_owned()))?;
        auth.revoke_device_token(&caller, &jti)?;
        Ok(buoy)
    })
    .await?;
    if let Some(hook) = &state.on_device_revoked {
        let closed = hook(&buoy);
        tracing::info!(buoy = %buoy, closed, "device token revoked; open ingest connections closed");
    }
    Ok(Reply::empty().status(StatusCode::NO_CONTENT))
}
