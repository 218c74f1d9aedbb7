//! [`AuthService`]: the one entry point of the auth module. Each method takes what an endpoint
//! has (credentials, the client IP, a verified [`Caller`]) and writes an audit entry for every
//! state change it makes.
//!
//! Blocking: every method does synchronous disk I/O (redb commits with fsync, audit appends with
//! fsync), and `login`, `create_user`, `change_password` and `ensure_first_admin` run argon2id
//! (~19 MiB, tens of ms of one core). Call them from a blocking pool
//! (`tokio::task::spawn_blocking`), never directly on an async worker.
//!
//! Layout: this file holds the settings, the shared state and `open`; one file per concern adds
//! its methods to [`AuthService`]:
//! - `browser`: browser sessions (cookie id, idle and absolute timeouts, CSRF token, rotation);
//! - `users`: the first admin, accounts, roles, status, passwords;
//! - `login`: login and its limits, access token signing and verification;
//! - `sessions`: refresh families (start, rotation, reuse detection, logout, listing, revocation);
//! - `signing`: signing keys (load, rotate);
//! - `devices`: device tokens for buoys;
//! - `permissions`: RBAC checks and the role table;
//! - `plans`: data plans, policy grants, query quotas;
//! - `mfa`: TOTP enrolment, the login challenge, step-up, disabling, the CLI reset;
//! - `housekeeping`: audit paging and the purge of expired records;
//! - `api_tokens`: personal API tokens for scripts (issue, list, revoke, verify);
//! - `usage`: daily query usage against the plan's quota.
//! - `links`: one-time links (stored hashed, single use, [`ONE_TIME_LINK_TTL_S`]) and the flows
//!   they carry: self-registration, email verification, password reset, email change;
//! - `account`: the owner's password change, and an admin ending every session of an account.

mod account;
mod browser;
mod devices;
mod housekeeping;
mod links;
mod login;
mod mfa;
mod permissions;
mod plans;
mod sessions;
mod signing;
mod users;

// The customer's data side (issue 20): personal API tokens and query usage.
mod api_tokens;
mod usage;
pub use api_tokens::{
    API_TOKEN_NAME_BYTES_MAX, API_TOKEN_PREFIX, API_TOKEN_RECORDS_PER_USER_MAX, API_TOKEN_TOUCH_S,
    API_TOKEN_TTL_DAYS, API_TOKEN_USES_PENDING_MAX, API_TOKENS_MAX, API_TOKENS_PER_USER_MAX, ApiTokenInfo,
    IssuedApiToken,
};
pub use usage::{DayUsage, QueryUsage, USAGE_HISTORY_DAYS};

pub use browser::{
    BROWSER_ABSOLUTE_S_DEFAULT, BROWSER_ABSOLUTE_S_MAX, BROWSER_IDLE_S_DEFAULT,
    BROWSER_SESSIONS_PER_USER_MAX, BrowserLogin, BrowserSession, BrowserSessionInfo, NewBrowserSession,
};
pub use links::{LINKS_MAX, ONE_TIME_LINK_TTL_S};
pub use mfa::{LoginOutcome, MFA_CHALLENGE_TTL_S, MFA_CHALLENGES_MAX, MFA_FAILURES_MAX, MfaEnrolment};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::clock::AuthClock;
use super::error::{AuthError, AuthResult, DeviceRefusal, TokenRefusal};
use super::keys::{self, KeyGrace, KeyRecord, KeySet, KeyUse, SIGNING_KEYS_MAX};
use super::limit::{LoginLimiter, LoginLimits};
use super::password::{self, PasswordParams, Verified};
use super::plan::{PLANS_MAX, Plan, PlanDecision, PlanSource, PlanSpec, PolicyGrant, grant_for};
use super::rbac::{Permission, Role};
use super::secret::{Secret, random_id, random_password, random_token};
use super::store::{
    self, ACCOUNTS_FORMAT_VERSION, BROWSER_SESSIONS, BrowserSessionRecord, DEVICE_TOKENS, DeviceRecord,
    EMAILS, FAMILIES, FamilyRecord, LINKS, LinkPurpose, LinkRecord, META, META_FORMAT_VERSION, MFA,
    MfaRecord, PLANS, QUERY_USAGE, REFRESH_TOKENS, ROLE_PERMISSIONS, RefreshRecord, Revocation, SIGNING_KEYS,
    USER_BROWSER_SESSIONS, USER_FAMILIES, USER_LINKS, USERS, UserRecord, UserStatus,
};
use super::token::{self, Expect, TYP_ACCESS, TYP_DEVICE, TokenClaims};
use crate::audit::{AuditEvent, AuditLog, AuditPage};
use crate::mail::{Mail, MailConfig, Mailer};

/// File name of the accounts store in the data dir.
pub const ACCOUNTS_FILE_NAME: &str = "accounts.redb";
/// Default access token lifetime: 15 minutes.
pub const ACCESS_TTL_S_DEFAULT: u64 = 15 * 60;
/// Default refresh token lifetime: 7 days (each rotation starts a new 7 days).
pub const REFRESH_TTL_S_DEFAULT: u64 = 7 * 24 * 3_600;
/// Default absolute lifetime of a session (refresh family): 30 days from its login.
pub const REFRESH_ABSOLUTE_S_DEFAULT: u64 = 30 * 24 * 3_600;
/// Longest absolute session lifetime a config may set: 1 year.
pub const REFRESH_ABSOLUTE_S_MAX: u64 = 365 * 24 * 3_600;
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
/// How long a login or MFA proof counts as fresh for sensitive actions (password, email and MFA
/// changes, role and status changes, token issuance, key rotation, telemetry deletes): 10 min.
pub const FRESH_AUTH_S_DEFAULT: u64 = 600;
/// Longest fresh-auth window a config may set: 1 hour.
pub const FRESH_AUTH_S_MAX: u64 = 3_600;
/// Most revoked sessions remembered in memory at once (each for one access-token lifetime after
/// its revocation). Past it, a revocation also bumps the account's `valid_after` stamp, which
/// ends every access token of the account: stricter, never weaker.
pub const REVOKED_SESSIONS_MAX: usize = 262_144;
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
    /// Absolute lifetime of a session (refresh family), s from its login: rotations extend a
    /// refresh token up to this and no further; then the owner logs in again (default 30 days,
    /// at most [`REFRESH_ABSOLUTE_S_MAX`]).
    pub refresh_absolute_s: u64,
    /// Default and longest device token lifetime, s.
    pub device_ttl_s: u64,
    /// argon2id cost of new hashes; stored hashes with other costs are rehashed at login.
    pub password_params: PasswordParams,
    /// Brute-force limits.
    pub login_limits: LoginLimits,
    /// Seconds a login or MFA proof stays fresh for sensitive actions (1..=[`FRESH_AUTH_S_MAX`]).
    pub fresh_auth_s: u64,
    /// The clock of authentication events (system clock; tests use a manual one).
    pub clock: AuthClock,
    /// Roles whose accounts must have MFA (default `admin` and `operator`): until they enrol,
    /// their tokens open nothing but the enrolment endpoints.
    pub mfa_required_roles: BTreeSet<Role>,
    /// Idle timeout of a browser session, s (default 30 min; at most the absolute timeout).
    pub browser_idle_s: u64,
    /// Absolute timeout of a browser session, s (default 12 h; at most 7 days).
    pub browser_absolute_s: u64,
    /// Outgoing mail (verification, reset and email-change links): the outbox under the data
    /// dir by default, or SMTP.
    pub mail: MailConfig,
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
        if !(1..=REFRESH_ABSOLUTE_S_MAX).contains(&self.refresh_absolute_s) {
            return bad("refresh_absolute_s", "1 s - 365 days");
        }
        if !(DEVICE_TTL_S_MIN..=DEVICE_TTL_S_MAX).contains(&self.device_ttl_s) {
            return bad("device_ttl_s", "60 s - 5 years");
        }
        if self.issuer.is_empty() || self.api_audience.is_empty() || self.device_audience.is_empty() {
            return bad("issuer", "issuer and audiences must be non-empty");
        }
        if !(1..=FRESH_AUTH_S_MAX).contains(&self.fresh_auth_s) {
            return bad("fresh_auth_s", "1-3600");
        }
        if !(1..=BROWSER_ABSOLUTE_S_MAX).contains(&self.browser_absolute_s)
            || !(1..=self.browser_absolute_s).contains(&self.browser_idle_s)
        {
            return bad("browser_idle_s", "1 s <= idle <= absolute <= 7 days");
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
            refresh_absolute_s: REFRESH_ABSOLUTE_S_DEFAULT,
            device_ttl_s: DEVICE_TTL_S_DEFAULT,
            password_params: PasswordParams::OWASP,
            login_limits: LoginLimits::default(),
            fresh_auth_s: FRESH_AUTH_S_DEFAULT,
            clock: AuthClock::system(),
            mfa_required_roles: BTreeSet::from([Role::Admin, Role::Operator]),
            browser_idle_s: BROWSER_IDLE_S_DEFAULT,
            browser_absolute_s: BROWSER_ABSOLUTE_S_DEFAULT,
            mail: MailConfig::default(),
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
    session_id: Option<String>,
    auth_time_s: u64,
    mfa_enrolment_required: bool,
    email_verified: bool,
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
    /// True when the caller was authenticated by a personal API token (`bwp_…`): such a
    /// caller may read data, never manage sessions or accounts.
    pub fn is_personal_token(&self) -> bool {
        self.token_id.starts_with(api_tokens::API_TOKEN_ID_PREFIX)
    }
    /// The session (refresh family) the access token belongs to.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
    /// When the caller last proved who they are (login or MFA), s on the auth clock.
    pub fn auth_time_s(&self) -> u64 {
        self.auth_time_s
    }
    /// True when the account's role requires MFA and it has none yet: such a caller may only
    /// enrol (every other method answers [`AuthError::MfaEnrolmentRequired`]).
    pub fn mfa_enrolment_required(&self) -> bool {
        self.mfa_enrolment_required
    }
    /// True once the account's email is verified (self-registered accounts start without it;
    /// accounts made by an admin have it). Without it the account may sign in but not buy or
    /// query: [`AuthService::require_verified`].
    pub fn email_verified(&self) -> bool {
        self.email_verified
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
    /// Sessions revoked within the last access-token lifetime: family id → revocation time (s).
    /// Loaded from `families` at open; written by every revocation (logout, revoke, reuse,
    /// eviction, account disable, password change); an entry is dropped once every access token
    /// of its session has expired. At most [`REVOKED_SESSIONS_MAX`] entries.
    revoked_sessions: RwLock<HashMap<String, u64>>,
    /// MFA challenges of logins that passed the password step: SHA-256 hex of the challenge →
    /// its state. Written by `login_start` and `complete_mfa`; an entry ends at its first right
    /// code, its `MFA_FAILURES_MAX`th wrong one or `MFA_CHALLENGE_TTL_S`. At most
    /// `MFA_CHALLENGES_MAX` entries; lost at restart (the user logs in again).
    challenges: Mutex<HashMap<String, mfa::Challenge>>,
    /// The AEAD key sealing TOTP secrets, opened (or made) at the first MFA use.
    sealer: OnceLock<crate::auth::mfa::SecretSealer>,
    /// The mail transport of `config.mail`, opened at `open` (shared with the storefront).
    mailer: Arc<dyn Mailer>,
    /// Uses of personal API tokens not yet written to `api_tokens` (token id → last use, ms).
    /// Written in memory only by `verify_api_token` (no write transaction on the request
    /// path); drained by `flush_api_token_uses` (one write transaction, run off the async
    /// workers when due). At most `API_TOKEN_USES_PENDING_MAX` entries; lost at a crash
    /// (`last_used` is informational).
    api_token_uses: Mutex<api_tokens::PendingUses>,
    /// Where plans come from beside the assignment (the shop's subscriptions): set by
    /// [`AuthService::set_plan_source`] when the shop opens, read at every policy resolution.
    /// A weak reference (the shop holds the auth service); a dropped source counts as none.
    plan_source: RwLock<Option<std::sync::Weak<dyn PlanSource>>>,
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
        let mailer = crate::mail::open_mailer(&config.mail, data_dir)?;
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
                revoked_sessions: RwLock::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
                api_token_uses: Mutex::new(api_tokens::PendingUses::default()),
                sealer: OnceLock::new(),
                mailer,
                plan_source: RwLock::new(None),
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
        service.load_revoked_sessions()?;
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

    /// The mail transport (the storefront sends order mails through it). Blocking.
    pub fn mailer(&self) -> &Arc<dyn Mailer> {
        &self.inner.mailer
    }

    fn audit(&self, event: AuditEvent) -> AuthResult<()> {
        self.inner.audit.append(event)?;
        Ok(())
    }
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
            MFA,
            BROWSER_SESSIONS,
            USER_BROWSER_SESSIONS,
            api_tokens::API_TOKENS,
            api_tokens::USER_API_TOKENS,
            LINKS,
            USER_LINKS,
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
