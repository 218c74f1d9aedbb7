//! [`AuthService`]: the one entry point of the auth module. Each method takes what an endpoint
//! has (credentials, the client IP, a verified [`Caller`]) and writes an audit entry for every
//! state change it makes.
//!
//! Blocking: every method does synchronous disk I/O (redb commits with fsync, audit appends with
//! fsync), and `login`, `create_user`, `change_password` and `ensure_first_admin` run argon2id
//! (~19 MiB, tens of ms of one core). Call them from a blocking pool
//! (`tokio::task::spawn_blocking`), never directly on an async worker.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Bound;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{AuthError, AuthResult, DeviceRefusal, TokenRefusal};
use super::keys::{self, KeyGrace, KeyRecord, KeySet, KeyUse, SIGNING_KEYS_MAX};
use super::limit::{LoginLimiter, LoginLimits};
use super::password::{self, PasswordParams, Verified};
use super::plan::{PLANS_MAX, Plan, PlanSpec, PolicyGrant, grant_for};
use super::rbac::{Permission, Role};
use super::secret::{Secret, random_id, random_password, random_token};
use super::store::{
    self, ACCOUNTS_FORMAT_VERSION, DEVICE_TOKENS, DeviceRecord, EMAILS, FAMILIES, FamilyRecord, META,
    META_FORMAT_VERSION, PLANS, QUERY_USAGE, REFRESH_TOKENS, ROLE_PERMISSIONS, RefreshRecord, Revocation,
    SIGNING_KEYS, USER_FAMILIES, USERS, UserRecord, UserStatus,
};
use super::token::{self, Expect, TYP_ACCESS, TYP_DEVICE, TokenClaims};
use crate::audit::{AuditEvent, AuditLog, AuditPage};

/// File name of the accounts store in the data dir.
pub const ACCOUNTS_FILE_NAME: &str = "accounts.redb";
/// Default access token lifetime: 15 minutes.
pub const ACCESS_TTL_S_DEFAULT: u64 = 15 * 60;
/// Default refresh token lifetime: 7 days (each rotation starts a new 7 days).
pub const REFRESH_TTL_S_DEFAULT: u64 = 7 * 24 * 3_600;
/// Default (and longest) device token lifetime: 1 year.
pub const DEVICE_TTL_S_DEFAULT: u64 = 365 * 24 * 3_600;
/// Shortest device token lifetime an operator may ask for.
pub const DEVICE_TTL_S_MIN: u64 = 60;
/// Longest email, in bytes (RFC 5321 path limit).
pub const EMAIL_BYTES_MAX: usize = 254;
/// Most accounts in the store.
pub const USERS_MAX: u64 = 1_000_000;
/// Most live sessions per account. A login beyond it ends the account's least recently used
/// session (recorded in the audit log) instead of refusing the owner.
pub const SESSIONS_PER_USER_MAX: usize = 32;
/// Most rotations in one session; then the owner must log in again.
pub const ROTATIONS_PER_SESSION_MAX: u32 = 10_000;
/// Most device token records kept (revoked and expired ones are purged).
pub const DEVICE_TOKENS_MAX: u64 = 1_000_000;
/// Most users one [`AuthService::list_users`] page returns.
pub const USERS_PAGE_MAX: usize = 1_000;
/// Refusal reason of a refresh token that is not on record.
const UNKNOWN_TOKEN: &str = "unknown token";
/// Longest refresh token accepted before hashing (ours are 43 chars).
const REFRESH_TOKEN_BYTES_MAX: usize = 128;

/// Settings of the auth module.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of access tokens.
    pub api_audience: String,
    /// `aud` of device tokens.
    pub device_audience: String,
    /// Access token lifetime, s.
    pub access_ttl_s: u64,
    /// Refresh token lifetime, s.
    pub refresh_ttl_s: u64,
    /// Default and longest device token lifetime, s.
    pub device_ttl_s: u64,
    /// argon2id cost of new hashes; stored hashes with other costs are rehashed at login.
    pub password_params: PasswordParams,
    /// Brute-force limits.
    pub login_limits: LoginLimits,
}

/// Longest access token lifetime a config may set: 1 hour (they cannot be revoked one by one).
pub const ACCESS_TTL_S_MAX: u64 = 3_600;
/// Longest refresh token lifetime a config may set: 90 days.
pub const REFRESH_TTL_S_MAX: u64 = 90 * 24 * 3_600;
/// Longest device token lifetime a config may set: 5 years.
pub const DEVICE_TTL_S_MAX: u64 = 5 * 365 * 24 * 3_600;

impl AuthConfig {
    /// Checks the settings: lifetimes within their bounds, names non-empty, and distinct
    /// audiences for access and device tokens (so neither can stand in for the other even if
    /// the `typ` check were lost).
    pub fn validate(&self) -> AuthResult<()> {
        let bad =
            |field: &'static str, reason: &str| Err(AuthError::InvalidInput { field, reason: reason.into() });
        if !(1..=ACCESS_TTL_S_MAX).contains(&self.access_ttl_s) {
            return bad("access_ttl_s", "1-3600");
        }
        if !(1..=REFRESH_TTL_S_MAX).contains(&self.refresh_ttl_s) {
            return bad("refresh_ttl_s", "1 s - 90 days");
        }
        if !(DEVICE_TTL_S_MIN..=DEVICE_TTL_S_MAX).contains(&self.device_ttl_s) {
            return bad("device_ttl_s", "60 s - 5 years");
        }
        if self.issuer.is_empty() || self.api_audience.is_empty() || self.device_audience.is_empty() {
            return bad("issuer", "issuer and audiences must be non-empty");
        }
        if self.api_audience == self.device_audience {
            return bad("device_audience", "must differ from api_audience");
        }
        Ok(())
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "bluewave".into(),
            api_audience: "bluewave-api".into(),
            device_audience: "bluewave-ingest".into(),
            access_ttl_s: ACCESS_TTL_S_DEFAULT,
            refresh_ttl_s: REFRESH_TTL_S_DEFAULT,
            device_ttl_s: DEVICE_TTL_S_DEFAULT,
            password_params: PasswordParams::OWASP,
            login_limits: LoginLimits::default(),
        }
    }
}

/// A verified caller: built only by [`AuthService::verify_access_token`], so holding one proves
/// the token checked out. Role and plan are read from the store at verification (a demotion
/// applies at once), not trusted from the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    user_id: String,
    email: String,
    role: Role,
    plan_id: Option<String>,
    token_id: String,
    expires_s: u64,
}

impl Caller {
    /// The account's id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }
    /// The account's email.
    pub fn email(&self) -> &str {
        &self.email
    }
    /// The account's current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The account's current plan.
    pub fn plan_id(&self) -> Option<&str> {
        self.plan_id.as_deref()
    }
    /// The access token's `jti`.
    pub fn token_id(&self) -> &str {
        &self.token_id
    }
    /// The access token's expiry, s since the epoch.
    pub fn expires_s(&self) -> u64 {
        self.expires_s
    }
    fn actor(&self) -> String {
        format!("user:{}", self.user_id)
    }
}

/// What login and refresh hand back.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The JWT access token (send as `Authorization: Bearer`).
    pub access_token: Secret,
    /// Seconds until the access token expires.
    pub access_expires_in_s: u64,
    /// The opaque refresh token (single use).
    pub refresh_token: Secret,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in_s: u64,
    /// The session (refresh family) id, for listing and revoking sessions.
    pub session_id: String,
    /// The account's id.
    pub user_id: String,
}

/// A user as shown to admins (no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Id.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: UserStatus,
    /// Plan.
    pub plan_id: Option<String>,
    /// Creation time, ms.
    pub created_ms: u64,
    /// Last change, ms.
    pub updated_ms: u64,
}

/// What an admin fills in to create an account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Email (normalised: trimmed, lower case).
    pub email: String,
    /// Initial password (rules in the `password` module doc).
    pub password: Secret,
    /// Role; not above the creator's, never `device`.
    pub role: Role,
    /// Plan, if any.
    pub plan_id: Option<String>,
}

/// A session as listed to its owner or an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session (refresh family) id.
    pub session_id: String,
    /// Owner.
    pub user_id: String,
    /// Login time, ms.
    pub created_ms: u64,
    /// Last refresh, ms.
    pub last_used_ms: u64,
    /// Expiry of the current refresh token, s.
    pub expires_s: u64,
    /// Client IP at login.
    pub login_ip: String,
    /// Client IP at the last refresh.
    pub last_ip: String,
}

/// A freshly issued device token.
#[derive(Debug, Clone)]
pub struct IssuedDeviceToken {
    /// The JWT to configure on the buoy (shown once).
    pub token: Secret,
    /// Its record.
    pub info: DeviceTokenInfo,
}

/// A device token's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTokenInfo {
    /// Token id (`jti`), used to revoke.
    pub jti: String,
    /// Buoy id (`sub`).
    pub buoy_id: String,
    /// Issue time, s.
    pub issued_s: u64,
    /// Expiry, s.
    pub expires_s: u64,
    /// `user:<id>` of the operator who issued it.
    pub issued_by: String,
    /// Revocation time, ms.
    pub revoked_ms: Option<u64>,
}

/// Outcome of [`AuthService::ensure_first_admin`].
#[derive(Debug, Clone)]
pub enum FirstAdmin {
    /// An admin account already exists; nothing changed.
    AlreadyPresent,
    /// An admin was created.
    Created {
        /// Its id.
        user_id: String,
        /// Its email.
        email: String,
        /// The generated password when none was given: show it to the operator once, never log it.
        generated_password: Option<Secret>,
    },
}

struct Inner {
    config: AuthConfig,
    db: Database,
    keys_dir: PathBuf,
    keys: RwLock<KeySet>,
    grace: KeyGrace,
    audit: AuditLog,
    limiter: LoginLimiter,
    role_permissions: RwLock<BTreeMap<Role, BTreeSet<Permission>>>,
    /// A hash of a random password with the current parameters: unknown accounts are verified
    /// against it so their answer takes as long as a wrong password.
    dummy_hash: String,
}

/// The auth module. Cheap to clone (shared state); `Send + Sync`.
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService").field("keys_dir", &self.inner.keys_dir).finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_s() -> u64 {
    now_ms() / 1_000
}

fn sha256_hex(s: &str) -> String {
    crate::audit::hex(&Sha256::digest(s.as_bytes()))
}

/// Trims and lower-cases an email and checks its shape (one `@`, non-empty parts, no spaces or
/// control characters, ≤ [`EMAIL_BYTES_MAX`] bytes).
pub fn normalize_email(email: &str) -> AuthResult<String> {
    let email = email.trim().to_lowercase();
    let bad = |reason: &str| Err(AuthError::InvalidInput { field: "email", reason: reason.into() });
    if email.is_empty() || email.len() > EMAIL_BYTES_MAX {
        return bad("1-254 bytes");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("no spaces or control characters");
    }
    match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
            Ok(email)
        }
        _ => bad("want local@domain"),
    }
}

impl AuthService {
    /// Opens (creating on first run) `accounts.redb`, the signing keys in `keys/` and the audit
    /// log in `audit/` under `data_dir`.
    pub fn open(data_dir: &Path, config: AuthConfig) -> AuthResult<Self> {
        config.validate()?;
        std::fs::create_dir_all(data_dir).map_err(|source| AuthError::KeyIo {
            op: "create data dir",
            path: data_dir.to_path_buf(),
            source,
        })?;
        let (audit, report) = AuditLog::open(&data_dir.join("audit"))?;
        let accounts_path = data_dir.join(ACCOUNTS_FILE_NAME);
        let db = Database::create(&accounts_path)?;
        // Password hashes and session records: readable by the service user only.
        std::fs::set_permissions(&accounts_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| AuthError::KeyIo { op: "chmod", path: accounts_path.clone(), source })?;
        let keys_dir = data_dir.join("keys");
        keys::ensure_dir(&keys_dir)?;
        let grace = KeyGrace {
            access_s: config.access_ttl_s.saturating_add(token::LEEWAY_S),
            device_s: config.device_ttl_s.saturating_add(token::LEEWAY_S),
        };
        let role_permissions = init_tables(&db)?;
        let dummy_hash = password::hash_password(&random_password()?, config.password_params)?;
        let limiter = LoginLimiter::new(config.login_limits);
        let service = Self {
            inner: Arc::new(Inner {
                config,
                db,
                keys_dir,
                keys: RwLock::new(KeySet { keys: Vec::new() }),
                grace,
                audit,
                limiter,
                role_permissions: RwLock::new(role_permissions),
                dummy_hash,
            }),
        };
        if report.torn_tail_bytes > 0 {
            service.audit(
                AuditEvent::new("system", "audit.torn_tail_cut", "-", "ok")
                    .with_details(json!({ "bytes": report.torn_tail_bytes })),
            )?;
        }
        service.load_keys()?;
        service.purge_expired()?;
        Ok(service)
    }

    /// The audit log (for paging by the HTTP layer after [`AuthService::authorize`], and verify).
    pub fn audit_log(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// The directory holding the signing keys.
    pub fn keys_dir(&self) -> &Path {
        &self.inner.keys_dir
    }

    /// The settings in force.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    fn audit(&self, event: AuditEvent) -> AuthResult<()> {
        self.inner.audit.append(event)?;
        Ok(())
    }

    // ----- keys -------------------------------------------------------------------------------

    /// Loads the key list, deletes keys past their grace, and generates the first key.
    fn load_keys(&self) -> AuthResult<()> {
        let now = now_s();
        let dir = &self.inner.keys_dir;
        let mut loaded = Vec::new();
        let mut expired = Vec::new();
        {
            let txn = self.inner.db.begin_read()?;
            let table = txn.open_table(SIGNING_KEYS)?;
            for item in table.iter()? {
                let (k, v) = item?;
                let record: KeyRecord = store::decode("signing_keys", k.value(), v.value())?;
                let aged_out =
                    record.retired_s.is_some_and(|r| now > r.saturating_add(self.inner.grace.max_s()));
                if aged_out {
                    expired.push(k.value().to_owned());
                } else {
                    loaded.push(keys::load(dir, k.value(), record)?);
                }
            }
        }
        if !expired.is_empty() {
            let txn = self.inner.db.begin_write()?;
            {
                let mut table = txn.open_table(SIGNING_KEYS)?;
                for kid in &expired {
                    table.remove(kid.as_str())?;
                }
            }
            txn.commit()?;
            for kid in &expired {
                keys::delete(dir, kid)?;
            }
            self.audit(
                AuditEvent::new("system", "keys.expired_removed", "-", "ok")
                    .with_details(json!({ "kids": expired })),
            )?;
        }
        let mut set = KeySet { keys: loaded };
        if set.active().is_none() {
            let key = keys::generate(dir, now)?;
            let txn = self.inner.db.begin_write()?;
            store::put(&mut txn.open_table(SIGNING_KEYS)?, &key.kid, &key.record)?;
            txn.commit()?;
            self.audit(AuditEvent::new("system", "keys.generate", format!("key:{}", key.kid), "ok"))?;
            set.keys.push(key);
        }
        let known: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
        keys::remove_stray_files(dir, &known)?;
        *self.inner.keys.write().map_err(|_| AuthError::Poisoned)? = set;
        Ok(())
    }

    /// Creates a new signing key and retires the current one (it keeps verifying for the token
    /// lifetimes). Needs `rbac:manage`. Returns the new key id.
    pub fn rotate_signing_key(&self, caller: &Caller) -> AuthResult<String> {
        self.require(caller, Permission::RbacManage, "keys.rotate")?;
        let now = now_s();
        let mut set = self.inner.keys.write().map_err(|_| AuthError::Poisoned)?;
        let grace = self.inner.grace.max_s();
        let live = set.keys.iter().filter(|k| k.record.retired_s.is_none_or(|r| now <= r + grace)).count();
        if live >= SIGNING_KEYS_MAX {
            return Err(AuthError::LimitReached { what: "signing keys", max: SIGNING_KEYS_MAX as u64 });
        }
        let key = keys::generate(&self.inner.keys_dir, now)?;
        let txn = self.inner.db.begin_write()?;
        let mut retired = Vec::new();
        {
            let mut table = txn.open_table(SIGNING_KEYS)?;
            for old in set.keys.iter_mut().filter(|k| k.record.retired_s.is_none()) {
                old.record.retired_s = Some(now);
                store::put(&mut table, &old.kid, &old.record)?;
                retired.push(old.kid.clone());
            }
            store::put(&mut table, &key.kid, &key.record)?;
        }
        txn.commit()?;
        let kid = key.kid.clone();
        set.keys.push(key);
        drop(set);
        self.audit(
            AuditEvent::new(caller.actor(), "keys.rotate", format!("key:{kid}"), "ok")
                .with_details(json!({ "retired": retired })),
        )?;
        Ok(kid)
    }

    // ----- accounts ---------------------------------------------------------------------------

    /// Creates the first admin when no admin exists. With `password == None` a random one is
    /// generated and returned (once; it is never logged). Idempotent.
    pub fn ensure_first_admin(&self, email: &str, password: Option<Secret>) -> AuthResult<FirstAdmin> {
        if self.count_role(Role::Admin)? > 0 {
            return Ok(FirstAdmin::AlreadyPresent);
        }
        let email = normalize_email(email)?;
        let (password, generated) = match password {
            Some(p) => (p, false),
            None => (Secret::new(random_password()?), true),
        };
        let user = self.insert_user(&email, &password, Role::Admin, None)?;
        self.audit(
            AuditEvent::new("system", "users.bootstrap_admin", format!("user:{}", user.id), "ok")
                .with_details(json!({ "email": email, "password_generated": generated })),
        )?;
        Ok(FirstAdmin::Created { user_id: user.id, email, generated_password: generated.then_some(password) })
    }

    fn count_role(&self, role: Role) -> AuthResult<u64> {
        let txn = self.inner.db.begin_read()?;
        count_active(&txn.open_table(USERS)?, role)
    }

    fn insert_user(
        &self,
        email: &str,
        password: &Secret,
        role: Role,
        plan_id: Option<String>,
    ) -> AuthResult<UserRecord> {
        if role == Role::Device {
            return Err(AuthError::InvalidInput {
                field: "role",
                reason: "device is for device tokens only".into(),
            });
        }
        password::check_password_rules(password.expose(), email)?;
        let hash = password::hash_password(password.expose(), self.inner.config.password_params)?;
        let now = now_ms();
        let user = UserRecord {
            id: random_id()?,
            email: email.to_owned(),
            password_hash: hash,
            role,
            status: UserStatus::Active,
            plan_id,
            valid_after_ms: 0,
            created_ms: now,
            updated_ms: now,
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            if users.len()? >= USERS_MAX {
                return Err(AuthError::LimitReached { what: "accounts", max: USERS_MAX });
            }
            let mut emails = txn.open_table(EMAILS)?;
            if emails.get(email)?.is_some() {
                return Err(AuthError::EmailTaken);
            }
            if let Some(plan) = &user.plan_id
                && txn.open_table(PLANS)?.get(plan.as_str())?.is_none()
            {
                return Err(AuthError::NotFound { kind: "plan" });
            }
            store::put(&mut users, &user.id, &user)?;
            store::put(&mut emails, email, &user.id)?;
        }
        txn.commit()?;
        Ok(user)
    }

    /// Creates an account. Needs `users:manage`; the role may not be above the caller's.
    pub fn create_user(&self, caller: &Caller, new: NewUser) -> AuthResult<UserInfo> {
        self.require(caller, Permission::UsersManage, "users.create")?;
        if new.role.rank() > caller.role.rank() {
            self.audit(
                AuditEvent::new(caller.actor(), "users.create", "-", "denied")
                    .with_details(json!({ "reason": "role escalation", "role": new.role })),
            )?;
            return Err(AuthError::RoleEscalation { role: new.role.to_string() });
        }
        let email = normalize_email(&new.email)?;
        let user = self.insert_user(&email, &new.password, new.role, new.plan_id)?;
        self.audit(
            AuditEvent::new(caller.actor(), "users.create", format!("user:{}", user.id), "ok")
                .with_details(json!({ "email": email, "role": user.role, "plan": user.plan_id })),
        )?;
        Ok(user_info(&user))
    }

    /// One account. Needs `users:manage`, or to be that account.
    pub fn get_user(&self, caller: &Caller, user_id: &str) -> AuthResult<UserInfo> {
        if user_id != caller.user_id {
            self.authorize(caller, Permission::UsersManage)?;
        }
        let txn = self.inner.db.begin_read()?;
        let user: UserRecord = store::get(&txn.open_table(USERS)?, "users", user_id)?
            .ok_or(AuthError::NotFound { kind: "user" })?;
        Ok(user_info(&user))
    }

    /// Accounts in id order after `after_id`, at most `limit` (≤ [`USERS_PAGE_MAX`]). Needs
    /// `users:manage`.
    pub fn list_users(
        &self,
        caller: &Caller,
        after_id: Option<&str>,
        limit: usize,
    ) -> AuthResult<Vec<UserInfo>> {
        self.authorize(caller, Permission::UsersManage)?;
        if limit == 0 || limit > USERS_PAGE_MAX {
            return Err(AuthError::InvalidInput { field: "limit", reason: "1-1000".into() });
        }
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(USERS)?;
        let start = after_id.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for item in table.range::<&str>((start, Bound::Unbounded))?.take(limit) {
            let (k, v) = item?;
            out.push(user_info(&store::decode("users", k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Changes an account's role. Needs `users:manage`; neither the account's current role nor
    /// the new one may be above the caller's; the last active admin cannot be demoted. The
    /// account's access tokens are invalidated (its sessions may refresh to get the new role).
    pub fn set_user_role(&self, caller: &Caller, user_id: &str, role: Role) -> AuthResult<UserInfo> {
        self.require(caller, Permission::UsersManage, "users.set_role")?;
        if role == Role::Device {
            return Err(AuthError::InvalidInput {
                field: "role",
                reason: "device is for device tokens only".into(),
            });
        }
        let (before, after) = self.update_user(
            caller,
            user_id,
            "users.set_role",
            |user| {
                if user.role == Role::Admin && role != Role::Admin {
                    return Ok(Some("last admin"));
                }
                user.role = role;
                Ok(None)
            },
            Some(role),
        )?;
        self.audit(
            AuditEvent::new(caller.actor(), "users.set_role", format!("user:{user_id}"), "ok")
                .with_details(json!({ "from": before.role, "to": after.role })),
        )?;
        Ok(user_info(&after))
    }

    /// Enables or disables an account. Needs `users:manage` and a rank not below the account's;
    /// you cannot disable yourself or the last active admin. Disabling ends every session and
    /// access token of the account at once.
    pub fn set_user_status(
        &self,
        caller: &Caller,
        user_id: &str,
        status: UserStatus,
    ) -> AuthResult<UserInfo> {
        self.require(caller, Permission::UsersManage, "users.set_status")?;
        if user_id == caller.user_id && status == UserStatus::Disabled {
            return Err(AuthError::InvalidInput {
                field: "status",
                reason: "cannot disable yourself".into(),
            });
        }
        let (before, after) = self.update_user(
            caller,
            user_id,
            "users.set_status",
            |user| {
                if user.role == Role::Admin && status == UserStatus::Disabled {
                    return Ok(Some("last admin"));
                }
                user.status = status;
                Ok(None)
            },
            None,
        )?;
        let revoked = if status == UserStatus::Disabled {
            self.revoke_all_families(user_id, "account disabled")?
        } else {
            0
        };
        self.audit(
            AuditEvent::new(caller.actor(), "users.set_status", format!("user:{user_id}"), "ok")
                .with_details(
                    json!({ "from": before.status, "to": after.status, "sessions_revoked": revoked }),
                ),
        )?;
        Ok(user_info(&after))
    }

    /// Applies `change` to `user_id` in one transaction after the rank checks, bumping
    /// `valid_after_ms`. `change` returns `Some("last admin")` when the change would demote or
    /// disable an admin; it is refused if that admin is the last active one.
    fn update_user(
        &self,
        caller: &Caller,
        user_id: &str,
        action: &str,
        change: impl FnOnce(&mut UserRecord) -> AuthResult<Option<&'static str>>,
        new_role: Option<Role>,
    ) -> AuthResult<(UserRecord, UserRecord)> {
        let txn = self.inner.db.begin_write()?;
        let result;
        {
            let mut users = txn.open_table(USERS)?;
            let before: UserRecord =
                store::get(&users, "users", user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            let refused_role = if before.role.rank() > caller.role.rank() {
                Some(before.role)
            } else {
                new_role.filter(|r| r.rank() > caller.role.rank())
            };
            if let Some(role) = refused_role {
                drop(users);
                txn.abort()?;
                self.audit(
                    AuditEvent::new(caller.actor(), action, format!("user:{user_id}"), "denied")
                        .with_details(json!({ "reason": "role escalation", "role": role })),
                )?;
                return Err(AuthError::RoleEscalation { role: role.to_string() });
            }
            let mut after = before.clone();
            // Counted inside this write transaction, so two concurrent demotions cannot both
            // pass the check.
            if change(&mut after)?.is_some()
                && before.status == UserStatus::Active
                && count_active(&users, Role::Admin)? <= 1
            {
                return Err(AuthError::InvalidInput {
                    field: "user",
                    reason: "the last active admin must stay".into(),
                });
            }
            after.updated_ms = now_ms();
            after.valid_after_ms = after.updated_ms + 1;
            store::put(&mut users, user_id, &after)?;
            result = (before, after);
        }
        txn.commit()?;
        Ok(result)
    }

    /// Changes the caller's own password (current one required, argon2 runs twice). Every
    /// session and access token of the account ends; the caller logs in again.
    pub fn change_password(&self, caller: &Caller, current: &Secret, new: &Secret) -> AuthResult<()> {
        let user = self.user_record(&caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        if password::verify_password(
            current.expose(),
            &user.password_hash,
            self.inner.config.password_params,
        )? == Verified::No
        {
            self.audit(AuditEvent::new(caller.actor(), "users.change_password", caller.actor(), "denied"))?;
            return Err(AuthError::InvalidCredentials);
        }
        password::check_password_rules(new.expose(), &user.email)?;
        let hash = password::hash_password(new.expose(), self.inner.config.password_params)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", &caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            user.password_hash = hash;
            user.updated_ms = now_ms();
            user.valid_after_ms = user.updated_ms + 1;
            store::put(&mut users, &caller.user_id, &user)?;
        }
        txn.commit()?;
        let revoked = self.revoke_all_families(&caller.user_id, "password changed")?;
        self.audit(
            AuditEvent::new(caller.actor(), "users.change_password", caller.actor(), "ok")
                .with_details(json!({ "sessions_revoked": revoked })),
        )
    }

    fn user_record(&self, user_id: &str) -> AuthResult<Option<UserRecord>> {
        let txn = self.inner.db.begin_read()?;
        store::get(&txn.open_table(USERS)?, "users", user_id)
    }

    // ----- login, refresh, logout ---------------------------------------------------------------

    /// Exchanges credentials for a token pair. Unknown account, wrong password and disabled
    /// account all give [`AuthError::InvalidCredentials`] after the same argon2 work. Limits
    /// ([`AuthError::RateLimited`]) are checked first, per `client_ip` and per account.
    pub fn login(&self, email: &str, password: &Secret, client_ip: IpAddr) -> AuthResult<TokenPair> {
        let actor = format!("ip:{client_ip}");
        // An oversized email cannot be an account: skip lower-casing megabytes of input.
        let account =
            if email.len() > EMAIL_BYTES_MAX * 4 { String::new() } else { email.trim().to_lowercase() };
        // At most EMAIL_BYTES_MAX bytes (cut on a char boundary): the limiter key and the audit
        // target of an unknown account stay within their bounds whatever was typed.
        let mut cut = account.len().min(EMAIL_BYTES_MAX);
        while !account.is_char_boundary(cut) {
            cut -= 1;
        }
        let account_key = account.get(..cut).unwrap_or_default().to_owned();
        // Refusals by the limiter are not audited (they change nothing and would let a flood
        // turn into one fsync per request); they are logged, without the password.
        if let Err(e) = self
            .inner
            .limiter
            .check_ip(client_ip)
            .and_then(|()| self.inner.limiter.check_account(&account_key))
        {
            // Debug formatting escapes control characters: typed input cannot forge log lines.
            tracing::warn!(ip = %client_ip, account = ?account_key, "login rate limited");
            return Err(e);
        }
        let user = match normalize_email(&account) {
            Ok(email) => {
                let txn = self.inner.db.begin_read()?;
                match store::get::<String>(&txn.open_table(EMAILS)?, "emails", &email)? {
                    Some(id) => store::get::<UserRecord>(&txn.open_table(USERS)?, "users", &id)?,
                    None => None,
                }
            }
            Err(_) => None,
        };
        let params = self.inner.config.password_params;
        let too_long = password.expose().len() > password::PASSWORD_BYTES_MAX;
        let verified = match (&user, too_long) {
            (_, true) => Verified::No,
            (Some(u), false) => password::verify_password(password.expose(), &u.password_hash, params)?,
            (None, false) => {
                // Same work as a real account, then the same answer.
                let _ = password::verify_password(password.expose(), &self.inner.dummy_hash, params)?;
                Verified::No
            }
        };
        let user = match user {
            Some(u) if verified != Verified::No && u.status == UserStatus::Active => u,
            other => {
                self.inner.limiter.record_failure(&account_key)?;
                let (target, reason) = match &other {
                    Some(u) if u.status == UserStatus::Disabled && verified != Verified::No => {
                        (format!("user:{}", u.id), "account disabled")
                    }
                    Some(u) => (format!("user:{}", u.id), "wrong password"),
                    None => (format!("email:{account_key}"), "unknown account"),
                };
                self.audit(
                    AuditEvent::new(&*actor, "auth.login", target, "denied")
                        .with_details(json!({ "reason": reason })),
                )?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.inner.limiter.record_success(&account_key)?;
        if verified == Verified::YesNeedsRehash {
            self.rehash(&user, password)?;
        }
        let pair = self.start_session(&user, client_ip)?;
        self.audit(
            AuditEvent::new(format!("user:{}", user.id), "auth.login", format!("user:{}", user.id), "ok")
                .with_details(json!({ "ip": client_ip.to_string(), "session": pair.session_id })),
        )?;
        Ok(pair)
    }

    fn rehash(&self, user: &UserRecord, password: &Secret) -> AuthResult<()> {
        let params = self.inner.config.password_params;
        let from = password::stored_params(&user.password_hash);
        let hash = password::hash_password(password.expose(), params)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            if let Some(mut current) = store::get::<UserRecord>(&users, "users", &user.id)? {
                current.password_hash = hash;
                current.updated_ms = now_ms();
                store::put(&mut users, &user.id, &current)?;
            }
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(
                format!("user:{}", user.id),
                "auth.password_rehash",
                format!("user:{}", user.id),
                "ok",
            )
            .with_details(json!({
                "from": from.map(|p| [p.memory_kib, p.iterations, p.parallelism]),
                "to": [params.memory_kib, params.iterations, params.parallelism],
            })),
        )
    }

    /// Creates a session family with its first refresh token and signs an access token.
    fn start_session(&self, user: &UserRecord, client_ip: IpAddr) -> AuthResult<TokenPair> {
        let now = now_ms();
        let refresh = random_token()?;
        let family_id = random_id()?;
        let expires_s = now / 1_000 + self.inner.config.refresh_ttl_s;
        let txn = self.inner.db.begin_write()?;
        let mut evicted = None;
        {
            let mut families = txn.open_table(FAMILIES)?;
            let mut index = txn.open_table(USER_FAMILIES)?;
            // Live sessions of this user; drop dead ones from the index as we go.
            let (lo, hi) = store::user_family_range(&user.id);
            let mut live: Vec<(String, u64)> = Vec::new();
            let mut dead = Vec::new();
            for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
                let (k, _) = item?;
                let key = k.value().to_owned();
                let fid = key.rsplit('/').next().unwrap_or_default().to_owned();
                match store::get::<FamilyRecord>(&families, "families", &fid)? {
                    Some(f) if f.revoked.is_none() && f.expires_s >= now / 1_000 => {
                        live.push((fid, f.last_used_ms))
                    }
                    _ => dead.push(key),
                }
            }
            for key in dead {
                index.remove(key.as_str())?;
            }
            if live.len() >= SESSIONS_PER_USER_MAX {
                live.sort_by_key(|(_, last)| *last);
                if let Some((oldest, _)) = live.first()
                    && let Some(mut f) = store::get::<FamilyRecord>(&families, "families", oldest)?
                {
                    f.revoked = Some(Revocation { at_ms: now, reason: "session limit".into() });
                    store::put(&mut families, oldest, &f)?;
                    evicted = Some(oldest.clone());
                }
            }
            let family = FamilyRecord {
                user_id: user.id.clone(),
                created_ms: now,
                last_used_ms: now,
                expires_s,
                rotations: 0,
                login_ip: client_ip.to_string(),
                last_ip: client_ip.to_string(),
                revoked: None,
            };
            store::put(&mut families, &family_id, &family)?;
            store::put(&mut index, &store::user_family_key(&user.id, &family_id), &())?;
            let record = RefreshRecord {
                family_id: family_id.clone(),
                user_id: user.id.clone(),
                expires_s,
                used: false,
            };
            store::put(&mut txn.open_table(REFRESH_TOKENS)?, &sha256_hex(&refresh), &record)?;
        }
        txn.commit()?;
        if let Some(old) = evicted {
            self.audit(
                AuditEvent::new("system", "auth.session_revoke", format!("session:{old}"), "ok")
                    .with_details(json!({ "reason": "session limit", "max": SESSIONS_PER_USER_MAX })),
            )?;
        }
        let (access, access_expires_in_s) = self.sign_access(user)?;
        Ok(TokenPair {
            access_token: access,
            access_expires_in_s,
            refresh_token: Secret::new(refresh),
            refresh_expires_in_s: self.inner.config.refresh_ttl_s,
            session_id: family_id,
            user_id: user.id.clone(),
        })
    }

    fn sign_access(&self, user: &UserRecord) -> AuthResult<(Secret, u64)> {
        let config = &self.inner.config;
        // Never earlier than the account's stamp, so a token issued right after a logout-all in
        // the same millisecond is still valid.
        let iat_ms = now_ms().max(user.valid_after_ms);
        let iat = iat_ms / 1_000;
        let claims = TokenClaims {
            iss: config.issuer.clone(),
            aud: config.api_audience.clone(),
            sub: user.id.clone(),
            typ: TYP_ACCESS.into(),
            exp: iat + config.access_ttl_s,
            iat,
            nbf: iat,
            jti: random_id()?,
            role: Some(user.role.to_string()),
            plan: user.plan_id.clone(),
            iat_ms: Some(iat_ms),
        };
        let keys = self.inner.keys.read().map_err(|_| AuthError::Poisoned)?;
        Ok((Secret::new(token::sign(&keys, &claims)?), config.access_ttl_s))
    }

    /// Exchanges a refresh token for a new pair (rotation). The check-and-mark is one write
    /// transaction, so of two concurrent calls with one token exactly one wins; the other sees a
    /// used token, which is reuse: the whole family is revoked ([`AuthError::RefreshReused`]).
    pub fn refresh(&self, refresh_token: &str, client_ip: IpAddr) -> AuthResult<TokenPair> {
        let actor = format!("ip:{client_ip}");
        if refresh_token.is_empty() || refresh_token.len() > REFRESH_TOKEN_BYTES_MAX {
            return Err(AuthError::RefreshInvalid);
        }
        let hash = sha256_hex(refresh_token);
        let now = now_ms();
        let new_token = random_token()?;
        let txn = self.inner.db.begin_write()?;
        enum Outcome {
            Invalid(&'static str),
            Reused(String, String),
            Rotated(UserRecord, String),
        }
        let outcome = {
            let mut tokens = txn.open_table(REFRESH_TOKENS)?;
            let mut families = txn.open_table(FAMILIES)?;
            match store::get::<RefreshRecord>(&tokens, "refresh_tokens", &hash)? {
                None => Outcome::Invalid(UNKNOWN_TOKEN),
                Some(mut record) => {
                    match store::get::<FamilyRecord>(&families, "families", &record.family_id)? {
                        None => Outcome::Invalid("unknown session"),
                        Some(f) if f.revoked.is_some() => Outcome::Invalid("session revoked"),
                        Some(mut f) if record.used => {
                            f.revoked = Some(Revocation { at_ms: now, reason: "refresh token reuse".into() });
                            store::put(&mut families, &record.family_id, &f)?;
                            Outcome::Reused(record.family_id, record.user_id)
                        }
                        Some(_) if record.expires_s < now / 1_000 => Outcome::Invalid("expired"),
                        Some(mut f) => {
                            let user =
                                store::get::<UserRecord>(&txn.open_table(USERS)?, "users", &record.user_id)?;
                            match user {
                                Some(u) if u.status == UserStatus::Active => {
                                    if f.rotations >= ROTATIONS_PER_SESSION_MAX {
                                        Outcome::Invalid("rotation limit")
                                    } else {
                                        record.used = true;
                                        store::put(&mut tokens, &hash, &record)?;
                                        let expires_s = now / 1_000 + self.inner.config.refresh_ttl_s;
                                        let next = RefreshRecord {
                                            family_id: record.family_id.clone(),
                                            user_id: record.user_id.clone(),
                                            expires_s,
                                            used: false,
                                        };
                                        store::put(&mut tokens, &sha256_hex(&new_token), &next)?;
                                        f.rotations += 1;
                                        f.last_used_ms = now;
                                        f.expires_s = expires_s;
                                        f.last_ip = client_ip.to_string();
                                        store::put(&mut families, &record.family_id, &f)?;
                                        Outcome::Rotated(u, record.family_id)
                                    }
                                }
                                _ => Outcome::Invalid("account disabled or gone"),
                            }
                        }
                    }
                }
            }
        };
        match outcome {
            Outcome::Invalid(reason) => {
                txn.abort()?;
                // A token we never issued changes nothing and is not audited (an anonymous
                // flood must not become one fsync per request); known tokens are.
                if reason != UNKNOWN_TOKEN {
                    self.audit(
                        AuditEvent::new(actor, "auth.refresh", "-", "denied")
                            .with_details(json!({ "reason": reason })),
                    )?;
                }
                Err(AuthError::RefreshInvalid)
            }
            Outcome::Reused(family, user_id) => {
                txn.commit()?;
                tracing::warn!(session = %family, user = %user_id, "refresh token reuse: session revoked");
                self.audit(
                    AuditEvent::new(actor, "auth.refresh_reuse", format!("session:{family}"), "denied")
                        .with_details(json!({ "user": user_id, "session_revoked": true })),
                )?;
                Err(AuthError::RefreshReused)
            }
            Outcome::Rotated(user, family) => {
                txn.commit()?;
                let (access, access_expires_in_s) = self.sign_access(&user)?;
                self.audit(
                    AuditEvent::new(
                        format!("user:{}", user.id),
                        "auth.refresh",
                        format!("session:{family}"),
                        "ok",
                    )
                    .with_details(json!({ "ip": client_ip.to_string() })),
                )?;
                Ok(TokenPair {
                    access_token: access,
                    access_expires_in_s,
                    refresh_token: Secret::new(new_token),
                    refresh_expires_in_s: self.inner.config.refresh_ttl_s,
                    session_id: family,
                    user_id: user.id,
                })
            }
        }
    }

    /// Ends the session of `refresh_token` (its whole family). Unknown tokens give
    /// [`AuthError::RefreshInvalid`]; an already ended session is fine.
    pub fn logout(&self, refresh_token: &str, client_ip: IpAddr) -> AuthResult<()> {
        if refresh_token.is_empty() || refresh_token.len() > REFRESH_TOKEN_BYTES_MAX {
            return Err(AuthError::RefreshInvalid);
        }
        let record = {
            let txn = self.inner.db.begin_read()?;
            store::get::<RefreshRecord>(
                &txn.open_table(REFRESH_TOKENS)?,
                "refresh_tokens",
                &sha256_hex(refresh_token),
            )?
        };
        let Some(record) = record else { return Err(AuthError::RefreshInvalid) };
        if self.revoke_family(&record.family_id, "logout")? {
            self.audit(
                AuditEvent::new(
                    format!("user:{}", record.user_id),
                    "auth.logout",
                    format!("session:{}", record.family_id),
                    "ok",
                )
                .with_details(json!({ "ip": client_ip.to_string() })),
            )?;
        }
        Ok(())
    }

    /// Ends every session of the caller and invalidates all their access tokens issued so far.
    pub fn logout_all(&self, caller: &Caller) -> AuthResult<()> {
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", &caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            user.valid_after_ms = now_ms() + 1;
            user.updated_ms = now_ms();
            store::put(&mut users, &caller.user_id, &user)?;
        }
        txn.commit()?;
        let revoked = self.revoke_all_families(&caller.user_id, "logout all")?;
        self.audit(
            AuditEvent::new(caller.actor(), "auth.logout_all", caller.actor(), "ok")
                .with_details(json!({ "sessions_revoked": revoked })),
        )
    }

    /// Marks one family revoked; false if it was already (or does not exist).
    fn revoke_family(&self, family_id: &str, reason: &str) -> AuthResult<bool> {
        let txn = self.inner.db.begin_write()?;
        let changed;
        {
            let mut families = txn.open_table(FAMILIES)?;
            match store::get::<FamilyRecord>(&families, "families", family_id)? {
                Some(mut f) if f.revoked.is_none() => {
                    f.revoked = Some(Revocation { at_ms: now_ms(), reason: reason.into() });
                    store::put(&mut families, family_id, &f)?;
                    changed = true;
                }
                _ => changed = false,
            }
        }
        txn.commit()?;
        Ok(changed)
    }

    /// Revokes every live family of `user_id`; returns how many.
    fn revoke_all_families(&self, user_id: &str, reason: &str) -> AuthResult<u64> {
        let now = now_ms();
        let txn = self.inner.db.begin_write()?;
        let mut n = 0;
        {
            let mut families = txn.open_table(FAMILIES)?;
            let index = txn.open_table(USER_FAMILIES)?;
            let (lo, hi) = store::user_family_range(user_id);
            for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
                let (k, _) = item?;
                let fid = k.value().rsplit('/').next().unwrap_or_default().to_owned();
                if let Some(mut f) = store::get::<FamilyRecord>(&families, "families", &fid)?
                    && f.revoked.is_none()
                {
                    f.revoked = Some(Revocation { at_ms: now, reason: reason.into() });
                    store::put(&mut families, &fid, &f)?;
                    n += 1;
                }
            }
        }
        txn.commit()?;
        Ok(n)
    }

    /// Live sessions of `user_id`. Needs `users:manage` unless it is the caller's own account.
    pub fn list_sessions(&self, caller: &Caller, user_id: &str) -> AuthResult<Vec<SessionInfo>> {
        if user_id != caller.user_id {
            self.authorize(caller, Permission::UsersManage)?;
        }
        let now = now_s();
        let txn = self.inner.db.begin_read()?;
        let families = txn.open_table(FAMILIES)?;
        let index = txn.open_table(USER_FAMILIES)?;
        let (lo, hi) = store::user_family_range(user_id);
        let mut out = Vec::new();
        for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
            let (k, _) = item?;
            let fid = k.value().rsplit('/').next().unwrap_or_default().to_owned();
            if let Some(f) = store::get::<FamilyRecord>(&families, "families", &fid)?
                && f.revoked.is_none()
                && f.expires_s >= now
            {
                out.push(SessionInfo {
                    session_id: fid,
                    user_id: f.user_id,
                    created_ms: f.created_ms,
                    last_used_ms: f.last_used_ms,
                    expires_s: f.expires_s,
                    login_ip: f.login_ip,
                    last_ip: f.last_ip,
                });
            }
        }
        Ok(out)
    }

    /// Ends one session. Its owner may; others need `users:manage` and a rank not below the
    /// owner's.
    pub fn revoke_session(&self, caller: &Caller, session_id: &str) -> AuthResult<()> {
        let family = {
            let txn = self.inner.db.begin_read()?;
            store::get::<FamilyRecord>(&txn.open_table(FAMILIES)?, "families", session_id)?
        };
        let family = family.ok_or(AuthError::NotFound { kind: "session" })?;
        if family.user_id != caller.user_id {
            self.require(caller, Permission::UsersManage, "auth.session_revoke")?;
            let owner = self.user_record(&family.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            if owner.role.rank() > caller.role.rank() {
                return Err(AuthError::RoleEscalation { role: owner.role.to_string() });
            }
        }
        if self.revoke_family(session_id, "revoked")? {
            self.audit(AuditEvent::new(
                caller.actor(),
                "auth.session_revoke",
                format!("session:{session_id}"),
                "ok",
            ))?;
        }
        Ok(())
    }

    // ----- token verification -----------------------------------------------------------------

    /// Verifies an access token (see the `token` module for the checks) and the account's state:
    /// unknown account, disabled account, or a token older than the account's `valid_after`
    /// stamp are refused.
    pub fn verify_access_token(&self, token: &str) -> AuthResult<Caller> {
        let config = &self.inner.config;
        let expect = Expect {
            typ: TYP_ACCESS,
            iss: &config.issuer,
            aud: &config.api_audience,
            key_use: KeyUse::Access,
        };
        let claims = {
            let keys = self.inner.keys.read().map_err(|_| AuthError::Poisoned)?;
            token::verify(&keys, &self.inner.grace, token, &expect, now_s())?
        };
        let user = self.user_record(&claims.sub)?.ok_or(TokenRefusal::UnknownSubject)?;
        if user.status != UserStatus::Active {
            return Err(TokenRefusal::AccountDisabled.into());
        }
        if claims.iat_ms.unwrap_or(0) < user.valid_after_ms {
            return Err(TokenRefusal::Revoked.into());
        }
        Ok(Caller {
            user_id: user.id,
            email: user.email,
            role: user.role,
            plan_id: user.plan_id,
            token_id: claims.jti,
            expires_s: claims.exp,
        })
    }

    /// Verifies a buoy's device token; returns the buoy id it is bound to. Refusals carry the
    /// wire protocol's REFUSED codes ([`DeviceRefusal::code`]). Whether the buoy is registered
    /// is the server's check, after this one.
    pub fn verify_device_token(&self, token: &str) -> Result<String, DeviceRefusal> {
        let config = &self.inner.config;
        let expect = Expect {
            typ: TYP_DEVICE,
            iss: &config.issuer,
            aud: &config.device_audience,
            key_use: KeyUse::Device,
        };
        let claims = {
            let keys = self.inner.keys.read().map_err(|_| DeviceRefusal::ServerUnavailable)?;
            token::verify(&keys, &self.inner.grace, token, &expect, now_s())?
        };
        if bluewave_engine::BuoyId::new(&claims.sub).is_err() {
            return Err(DeviceRefusal::TokenMalformed);
        }
        let record = self.device_record(&claims.jti).map_err(|e| {
            tracing::error!(error = %e, "device token lookup failed");
            DeviceRefusal::ServerUnavailable
        })?;
        match record {
            Some(r) if r.revoked_ms.is_none() && r.buoy_id == claims.sub => Ok(claims.sub),
            _ => Err(DeviceRefusal::DeviceRevoked),
        }
    }

    fn device_record(&self, jti: &str) -> AuthResult<Option<DeviceRecord>> {
        if !keys::kid_well_formed(jti) {
            return Ok(None);
        }
        let txn = self.inner.db.begin_read()?;
        store::get(&txn.open_table(DEVICE_TOKENS)?, "device_tokens", jti)
    }

    // ----- device tokens ----------------------------------------------------------------------

    /// Issues a device token for `buoy_id`, valid `ttl_s` (default and maximum: the configured
    /// device lifetime). Needs `devices:manage`.
    pub fn issue_device_token(
        &self,
        caller: &Caller,
        buoy_id: &str,
        ttl_s: Option<u64>,
    ) -> AuthResult<IssuedDeviceToken> {
        self.require(caller, Permission::DevicesManage, "devices.issue")?;
        let buoy = bluewave_engine::BuoyId::new(buoy_id)
            .map_err(|e| AuthError::InvalidInput { field: "buoy_id", reason: e.to_string() })?;
        let max = self.inner.config.device_ttl_s;
        let ttl_s = ttl_s.unwrap_or(max);
        if !(DEVICE_TTL_S_MIN..=max).contains(&ttl_s) {
            return Err(AuthError::InvalidInput {
                field: "ttl_s",
                reason: format!("{DEVICE_TTL_S_MIN}-{max}"),
            });
        }
        let now = now_s();
        let jti = random_id()?;
        let record = DeviceRecord {
            buoy_id: buoy.as_str().to_owned(),
            issued_s: now,
            expires_s: now + ttl_s,
            issued_by: caller.actor(),
            revoked_ms: None,
        };
        let config = &self.inner.config;
        let claims = TokenClaims {
            iss: config.issuer.clone(),
            aud: config.device_audience.clone(),
            sub: record.buoy_id.clone(),
            typ: TYP_DEVICE.into(),
            exp: record.expires_s,
            iat: now,
            nbf: now,
            jti: jti.clone(),
            role: Some(Role::Device.to_string()),
            plan: None,
            iat_ms: None,
        };
        let token = {
            let keys = self.inner.keys.read().map_err(|_| AuthError::Poisoned)?;
            token::sign(&keys, &claims)?
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut table = txn.open_table(DEVICE_TOKENS)?;
            if table.len()? >= DEVICE_TOKENS_MAX {
                return Err(AuthError::LimitReached { what: "device tokens", max: DEVICE_TOKENS_MAX });
            }
            store::put(&mut table, &jti, &record)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "devices.issue", format!("device:{jti}"), "ok")
                .with_details(json!({ "buoy": record.buoy_id, "expires_s": record.expires_s })),
        )?;
        Ok(IssuedDeviceToken { token: Secret::new(token), info: device_info(jti, record) })
    }

    /// Device tokens on record (optionally of one buoy). Needs `devices:manage`.
    pub fn list_device_tokens(
        &self,
        caller: &Caller,
        buoy_id: Option<&str>,
    ) -> AuthResult<Vec<DeviceTokenInfo>> {
        self.authorize(caller, Permission::DevicesManage)?;
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEVICE_TOKENS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            let record: DeviceRecord = store::decode("device_tokens", k.value(), v.value())?;
            if buoy_id.is_none_or(|b| b == record.buoy_id) {
                out.push(device_info(k.value().to_owned(), record));
            }
        }
        Ok(out)
    }

    /// Revokes a device token by `jti`: the buoy's next connection is refused with
    /// `DEVICE_REVOKED`. Needs `devices:manage`.
    pub fn revoke_device_token(&self, caller: &Caller, jti: &str) -> AuthResult<()> {
        self.require(caller, Permission::DevicesManage, "devices.revoke")?;
        if !keys::kid_well_formed(jti) {
            return Err(AuthError::NotFound { kind: "device token" });
        }
        let txn = self.inner.db.begin_write()?;
        let buoy;
        {
            let mut table = txn.open_table(DEVICE_TOKENS)?;
            let mut record: DeviceRecord = store::get(&table, "device_tokens", jti)?
                .ok_or(AuthError::NotFound { kind: "device token" })?;
            if record.revoked_ms.is_some() {
                return Ok(());
            }
            record.revoked_ms = Some(now_ms());
            buoy = record.buoy_id.clone();
            store::put(&mut table, jti, &record)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "devices.revoke", format!("device:{jti}"), "ok")
                .with_details(json!({ "buoy": buoy })),
        )
    }

    // ----- RBAC -------------------------------------------------------------------------------

    /// [`AuthService::authorize`] for state changes: a refusal is also audited (an
    /// authenticated caller probing what they may change is worth a record).
    fn require(&self, caller: &Caller, permission: Permission, action: &str) -> AuthResult<()> {
        let result = self.authorize(caller, permission);
        if result.is_err() {
            self.audit(
                AuditEvent::new(caller.actor(), action, "-", "denied")
                    .with_details(json!({ "reason": "forbidden", "permission": permission.as_str() })),
            )?;
        }
        result
    }

    /// Ok if the caller's role has `permission`, else [`AuthError::Forbidden`].
    pub fn authorize(&self, caller: &Caller, permission: Permission) -> AuthResult<()> {
        let table = self.inner.role_permissions.read().map_err(|_| AuthError::Poisoned)?;
        if table.get(&caller.role).is_some_and(|set| set.contains(&permission)) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { permission: permission.to_string() })
        }
    }

    /// The current role → permission table.
    pub fn role_permissions(&self) -> AuthResult<BTreeMap<Role, BTreeSet<Permission>>> {
        Ok(self.inner.role_permissions.read().map_err(|_| AuthError::Poisoned)?.clone())
    }

    /// Replaces `role`'s permissions. Needs `rbac:manage`; a role above the caller's cannot be
    /// edited, and `admin` always keeps `rbac:manage` (no lock-out).
    pub fn set_role_permissions(
        &self,
        caller: &Caller,
        role: Role,
        permissions: BTreeSet<Permission>,
    ) -> AuthResult<()> {
        self.require(caller, Permission::RbacManage, "rbac.role_permissions.set")?;
        if role.rank() > caller.role.rank() {
            return Err(AuthError::RoleEscalation { role: role.to_string() });
        }
        if role == Role::Admin && !permissions.contains(&Permission::RbacManage) {
            return Err(AuthError::InvalidInput {
                field: "permissions",
                reason: "admin must keep rbac:manage".into(),
            });
        }
        let mut table = self.inner.role_permissions.write().map_err(|_| AuthError::Poisoned)?;
        let before = table.get(&role).cloned().unwrap_or_default();
        let txn = self.inner.db.begin_write()?;
        store::put(&mut txn.open_table(ROLE_PERMISSIONS)?, role.as_str(), &permissions)?;
        txn.commit()?;
        table.insert(role, permissions.clone());
        drop(table);
        self.audit(
            AuditEvent::new(caller.actor(), "rbac.role_permissions.set", format!("role:{role}"), "ok")
                .with_details(json!({ "before": before, "after": permissions })),
        )
    }

    // ----- plans ------------------------------------------------------------------------------

    /// Creates a plan. Needs `plans:manage`.
    pub fn create_plan(&self, caller: &Caller, spec: PlanSpec) -> AuthResult<Plan> {
        self.require(caller, Permission::PlansManage, "plans.create")?;
        let plan = Plan { id: random_id()?, spec: spec.validated()?, created_ms: now_ms() };
        let txn = self.inner.db.begin_write()?;
        {
            let mut plans = txn.open_table(PLANS)?;
            if plans.len()? >= PLANS_MAX as u64 {
                return Err(AuthError::LimitReached { what: "plans", max: PLANS_MAX as u64 });
            }
            store::put(&mut plans, &plan.id, &plan)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "plans.create", format!("plan:{}", plan.id), "ok")
                .with_details(json!({ "name": plan.spec.name, "history_days": plan.spec.history_days,
                    "daily_query_quota": plan.spec.daily_query_quota, "row_limit": plan.spec.row_limit })),
        )?;
        Ok(plan)
    }

    /// Every plan. Needs `plans:read`.
    pub fn list_plans(&self, caller: &Caller) -> AuthResult<Vec<Plan>> {
        self.authorize(caller, Permission::PlansRead)?;
        let txn = self.inner.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(PLANS)?.iter()? {
            let (k, v) = item?;
            out.push(store::decode("plans", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Assigns (or with `None` removes) an account's plan. Needs `plans:manage` and a rank not
    /// below the account's.
    pub fn assign_plan(&self, caller: &Caller, user_id: &str, plan_id: Option<&str>) -> AuthResult<()> {
        self.require(caller, Permission::PlansManage, "plans.assign")?;
        let txn = self.inner.db.begin_write()?;
        let before;
        {
            if let Some(p) = plan_id
                && txn.open_table(PLANS)?.get(p)?.is_none()
            {
                return Err(AuthError::NotFound { kind: "plan" });
            }
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            if user.role.rank() > caller.role.rank() {
                return Err(AuthError::RoleEscalation { role: user.role.to_string() });
            }
            before = user.plan_id.take();
            user.plan_id = plan_id.map(str::to_owned);
            user.updated_ms = now_ms();
            store::put(&mut users, user_id, &user)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "plans.assign", format!("user:{user_id}"), "ok")
                .with_details(json!({ "from": before, "to": plan_id })),
        )
    }

    /// What the caller may read now, from their role and plan (see [`grant_for`]).
    pub fn policy_grant(&self, caller: &Caller) -> AuthResult<PolicyGrant> {
        let plan = match &caller.plan_id {
            None => None,
            Some(id) => {
                let txn = self.inner.db.begin_read()?;
                store::get::<Plan>(&txn.open_table(PLANS)?, "plans", id)?
            }
        };
        let now_ns = i64::try_from(now_ms()).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        Ok(grant_for(caller.role, plan.as_ref(), now_ns))
    }

    /// Counts one query against the caller's daily quota (UTC days); refuses with
    /// [`AuthError::QuotaExceeded`] when it is used up. Callers without a quota are not counted.
    /// Usage counters are accounting, not security state, so they are not audited.
    pub fn record_query(&self, caller: &Caller) -> AuthResult<()> {
        let Some(quota) = self.policy_grant(caller)?.daily_query_quota else { return Ok(()) };
        let key = format!("{}/{}", caller.user_id, now_s() / 86_400);
        let txn = self.inner.db.begin_write()?;
        {
            let mut usage = txn.open_table(QUERY_USAGE)?;
            let used: u32 = store::get(&usage, "query_usage", &key)?.unwrap_or(0);
            if used >= quota {
                return Err(AuthError::QuotaExceeded { quota });
            }
            store::put(&mut usage, &key, &(used + 1))?;
        }
        txn.commit()?;
        Ok(())
    }

    // ----- audit ------------------------------------------------------------------------------

    /// A page of the audit log, newest first. Needs `audit:read`.
    pub fn audit_page(
        &self,
        caller: &Caller,
        before_seq: Option<u64>,
        limit: usize,
    ) -> AuthResult<AuditPage> {
        self.authorize(caller, Permission::AuditRead)?;
        Ok(self.inner.audit.page(before_seq, limit)?)
    }

    // ----- housekeeping -----------------------------------------------------------------------

    /// Deletes ended sessions and their refresh tokens (once their tokens could no longer be
    /// presented), expired device token records, and usage counters older than a day. Run at
    /// open; the server may call it periodically. Returns the number of records removed.
    pub fn purge_expired(&self) -> AuthResult<u64> {
        let now = now_s();
        let refresh_ttl = self.inner.config.refresh_ttl_s;
        let today = now / 86_400;
        let txn = self.inner.db.begin_write()?;
        let mut removed = 0u64;
        {
            let mut families = txn.open_table(FAMILIES)?;
            let mut index = txn.open_table(USER_FAMILIES)?;
            let mut tokens = txn.open_table(REFRESH_TOKENS)?;
            let mut dead_families = BTreeSet::new();
            let mut dead_index = Vec::new();
            for item in families.iter()? {
                let (k, v) = item?;
                let f: FamilyRecord = store::decode("families", k.value(), v.value())?;
                // A revoked family's tokens stay until they would have expired, so reuse of one is
                // still recognised (and answered) until then.
                let ended = f.expires_s < now
                    || f.revoked.as_ref().is_some_and(|r| r.at_ms / 1_000 + refresh_ttl < now);
                if ended {
                    dead_families.insert(k.value().to_owned());
                    dead_index.push(store::user_family_key(&f.user_id, k.value()));
                }
            }
            let mut dead_tokens = Vec::new();
            for item in tokens.iter()? {
                let (k, v) = item?;
                let r: RefreshRecord = store::decode("refresh_tokens", k.value(), v.value())?;
                if dead_families.contains(&r.family_id) || r.expires_s < now {
                    dead_tokens.push(k.value().to_owned());
                }
            }
            for k in &dead_tokens {
                tokens.remove(k.as_str())?;
            }
            for k in &dead_families {
                families.remove(k.as_str())?;
            }
            for k in &dead_index {
                index.remove(k.as_str())?;
            }
            removed += (dead_tokens.len() + dead_families.len()) as u64;

            let mut devices = txn.open_table(DEVICE_TOKENS)?;
            let mut dead_devices = Vec::new();
            for item in devices.iter()? {
                let (k, v) = item?;
                let d: DeviceRecord = store::decode("device_tokens", k.value(), v.value())?;
                if d.expires_s.saturating_add(token::LEEWAY_S) < now {
                    dead_devices.push(k.value().to_owned());
                }
            }
            for k in &dead_devices {
                devices.remove(k.as_str())?;
            }
            removed += dead_devices.len() as u64;

            let mut usage = txn.open_table(QUERY_USAGE)?;
            let mut dead_usage = Vec::new();
            for item in usage.iter()? {
                let (k, _) = item?;
                let day = k.value().rsplit('/').next().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
                if day + 1 < today {
                    dead_usage.push(k.value().to_owned());
                }
            }
            for k in &dead_usage {
                usage.remove(k.as_str())?;
            }
            removed += dead_usage.len() as u64;
        }
        txn.commit()?;
        if removed > 0 {
            self.audit(
                AuditEvent::new("system", "auth.purge", "-", "ok")
                    .with_details(json!({ "records": removed })),
            )?;
        }
        Ok(removed)
    }
}

/// Active accounts with `role` (a scan of `users`: only run for admin bootstrap and when an
/// admin is demoted or disabled).
fn count_active(users: &impl ReadableTable<&'static str, &'static [u8]>, role: Role) -> AuthResult<u64> {
    let mut n = 0;
    for item in users.iter()? {
        let (k, v) = item?;
        let user: UserRecord = store::decode("users", k.value(), v.value())?;
        n += u64::from(user.role == role && user.status == UserStatus::Active);
    }
    Ok(n)
}

/// Creates missing tables, checks the format version, seeds the default role table; returns it.
fn init_tables(db: &Database) -> AuthResult<BTreeMap<Role, BTreeSet<Permission>>> {
    let txn = db.begin_write()?;
    let mut table = BTreeMap::new();
    {
        let mut meta = txn.open_table(META)?;
        let version = meta.get(META_FORMAT_VERSION)?.map(|v| v.value());
        match version {
            None => {
                meta.insert(META_FORMAT_VERSION, ACCOUNTS_FORMAT_VERSION)?;
            }
            Some(v) if v == ACCOUNTS_FORMAT_VERSION => {}
            Some(v) => {
                return Err(AuthError::Store(format!(
                    "accounts format version {v} is not supported (this build reads {ACCOUNTS_FORMAT_VERSION})"
                )));
            }
        }
        for def in [
            USERS,
            EMAILS,
            FAMILIES,
            USER_FAMILIES,
            REFRESH_TOKENS,
            DEVICE_TOKENS,
            PLANS,
            QUERY_USAGE,
            SIGNING_KEYS,
        ] {
            txn.open_table(def)?;
        }
        let mut roles = txn.open_table(ROLE_PERMISSIONS)?;
        for role in Role::ALL {
            let stored: Option<BTreeSet<Permission>> = store::get(&roles, "role_permissions", role.as_str())?;
            let set = match stored {
                Some(set) => set,
                None => {
                    let set = role.default_permissions();
                    store::put(&mut roles, role.as_str(), &set)?;
                    set
                }
            };
            table.insert(role, set);
        }
    }
    txn.commit()?;
    Ok(table)
}

fn user_info(u: &UserRecord) -> UserInfo {
    UserInfo {
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role,
        status: u.status,
        plan_id: u.plan_id.clone(),
        created_ms: u.created_ms,
        updated_ms: u.updated_ms,
    }
}

fn device_info(jti: String, r: DeviceRecord) -> DeviceTokenInfo {
    DeviceTokenInfo {
        jti,
        buoy_id: r.buoy_id,
        issued_s: r.issued_s,
        expires_s: r.expires_s,
        issued_by: r.issued_by,
        revoked_ms: r.revoked_ms,
    }
}
