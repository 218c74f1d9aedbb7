//! `accounts.redb`: tables, record types and JSON codecs.
//!
//! Every value is a JSON document (`serde_json`) so records can gain optional fields without a
//! migration; keys are text. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format_version` | u64 |
//! | `users` | user id | [`UserRecord`] |
//! | `emails` | normalised email | user id (JSON string) |
//! | `families` | session family id | [`FamilyRecord`] |
//! | `user_families` | `<user id>/<family id>` | `null` (index) |
//! | `refresh_tokens` | SHA-256 hex of the token | [`RefreshRecord`] |
//! | `device_tokens` | jti | [`DeviceRecord`] |
//! | `role_permissions` | role name | list of permissions |
//! | `plans` | plan id | [`crate::Plan`] |
//! | `query_usage` | `<user id>/<UTC day number>` | count (u32) |
//! | `signing_keys` | kid | key bookkeeping (see `keys.rs`) |
//! | `browser_sessions` | SHA-256 hex of the session cookie | [`BrowserSessionRecord`] |
//! | `user_browser_sessions` | `<user id>/<session key>` | `null` (index) |
//! | `mfa` | user id | [`MfaRecord`] (TOTP secret sealed with the MFA key, used step, backup code hashes) |
//! | `links` | SHA-256 hex of a one-time link's token | [`LinkRecord`] |
//! | `user_links` | `<user id>/<link key>` | `null` (index: at most one live link per purpose) |

use redb::{ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{AuthError, AuthResult};
use super::rbac::Role;

/// Table of `&str` keys and JSON values.
pub(crate) type JsonTable = TableDefinition<'static, &'static str, &'static [u8]>;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const USERS: JsonTable = TableDefinition::new("users");
pub(crate) const EMAILS: JsonTable = TableDefinition::new("emails");
pub(crate) const FAMILIES: JsonTable = TableDefinition::new("families");
pub(crate) const USER_FAMILIES: JsonTable = TableDefinition::new("user_families");
pub(crate) const REFRESH_TOKENS: JsonTable = TableDefinition::new("refresh_tokens");
pub(crate) const DEVICE_TOKENS: JsonTable = TableDefinition::new("device_tokens");
pub(crate) const ROLE_PERMISSIONS: JsonTable = TableDefinition::new("role_permissions");
pub(crate) const PLANS: JsonTable = TableDefinition::new("plans");
pub(crate) const QUERY_USAGE: JsonTable = TableDefinition::new("query_usage");
pub(crate) const SIGNING_KEYS: JsonTable = TableDefinition::new("signing_keys");
pub(crate) const MFA: JsonTable = TableDefinition::new("mfa");
pub(crate) const BROWSER_SESSIONS: JsonTable = TableDefinition::new("browser_sessions");
pub(crate) const USER_BROWSER_SESSIONS: JsonTable = TableDefinition::new("user_browser_sessions");
pub(crate) const LINKS: JsonTable = TableDefinition::new("links");
pub(crate) const USER_LINKS: JsonTable = TableDefinition::new("user_links");

/// `meta` key of the format version.
pub(crate) const META_FORMAT_VERSION: &str = "format_version";
/// Version of this layout.
pub(crate) const ACCOUNTS_FORMAT_VERSION: u64 = 1;

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// May not sign in; its tokens and sessions are dead.
    Disabled,
}

/// A user row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub id: String,
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub status: UserStatus,
    pub plan_id: Option<String>,
    /// Access tokens issued before this instant (ms) are refused.
    pub valid_after_ms: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// MFA confirmed (a copy of `mfa` having a confirmed record, so a token check reads one
    /// record). Written with the `mfa` record in one transaction.
    #[serde(default)]
    pub mfa_enabled: bool,
    /// The owner followed a verification link sent to `email` (or an admin made the account).
    /// Records from before self-registration lack it and count as verified.
    #[serde(default = "verified_by_default")]
    pub email_verified: bool,
}

fn verified_by_default() -> bool {
    true
}

/// What a one-time link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LinkPurpose {
    /// Verifies the account's email.
    Verify,
    /// Sets a new password.
    Reset,
    /// Moves the account to `new_email`.
    EmailChange,
}

/// A one-time link (stored under the SHA-256 of its token; the token itself is only in the mail).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LinkRecord {
    pub purpose: LinkPurpose,
    pub user_id: String,
    /// The address the link was sent to (a verification link is good for that address only).
    pub sent_to: String,
    /// Expiry on the auth clock, s.
    pub expires_s: u64,
    /// The target address of an email change.
    pub new_email: Option<String>,
}

/// Why a session family ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Revocation {
    pub at_ms: u64,
    pub reason: String,
}

/// A session: the chain of refresh tokens from one login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FamilyRecord {
    pub user_id: String,
    pub created_ms: u64,
    pub last_used_ms: u64,
    /// Expiry of the family's current refresh token (s).
    pub expires_s: u64,
    pub rotations: u32,
    pub login_ip: String,
    pub last_ip: String,
    pub revoked: Option<Revocation>,
    /// Last proof of identity in this session (login, MFA), s on the auth clock; carried into
    /// every access token of the family as `auth_time`. Older records lack it (0: not fresh).
    #[serde(default)]
    pub auth_time_s: u64,
}

/// One refresh token (stored under its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshRecord {
    pub family_id: String,
    pub user_id: String,
    pub expires_s: u64,
    /// Set when the token was exchanged; presenting it again is reuse.
    pub used: bool,
}

/// A browser session (the cookie holds a random id; the key is its SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BrowserSessionRecord {
    pub user_id: String,
    /// System time of the login, ms (compared with the account's `valid_after_ms`).
    pub created_ms: u64,
    /// Login time on the auth clock, s (absolute timeout).
    pub created_s: u64,
    /// Last request on the auth clock, s (idle timeout; written at most once a minute).
    pub last_seen_s: u64,
    /// Last proof of identity (login, MFA) on the auth clock, s (fresh-auth gate).
    pub auth_time_s: u64,
    /// The synchronizer token of this session's forms and `X-CSRF-Token` header.
    pub csrf_token: String,
    pub ip: String,
    /// The browser's `User-Agent` at login, cut to 256 bytes.
    pub user_agent: String,
}

/// An account's TOTP enrolment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MfaRecord {
    /// The TOTP secret sealed with the MFA key (layout in `mfa.rs`).
    pub sealed_secret: String,
    /// False while the enrolment waits for its first code.
    pub confirmed: bool,
    pub created_ms: u64,
    /// The highest TOTP step accepted so far: a code of this step or an older one is a replay.
    pub last_step: Option<u64>,
    /// HMAC-SHA-256 tags (base64url) of the unused backup codes (see `mfa.rs`).
    pub backup_code_hashes: Vec<String>,
}

/// A device token's record (the token itself is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    pub buoy_id: String,
    pub issued_s: u64,
    pub expires_s: u64,
    pub issued_by: String,
    pub revoked_ms: Option<u64>,
}

/// Reads and decodes `key` from `table` (named `name` in errors).
pub(crate) fn get<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> AuthResult<Option<T>> {
    match table.get(key)? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|_| AuthError::CorruptRecord { table: name, key: key.to_owned() }),
    }
}

/// Encodes and writes `value` under `key`.
pub(crate) fn put<T: Serialize>(
    table: &mut Table<&'static str, &'static [u8]>,
    key: &str,
    value: &T,
) -> AuthResult<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| AuthError::Store(format!("encode record: {e}")))?;
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

/// Decodes a value read during iteration.
pub(crate) fn decode<T: DeserializeOwned>(name: &'static str, key: &str, bytes: &[u8]) -> AuthResult<T> {
    serde_json::from_slice(bytes).map_err(|_| AuthError::CorruptRecord { table: name, key: key.to_owned() })
}

/// The `user_families` index key.
pub(crate) fn user_family_key(user_id: &str, family_id: &str) -> String {
    format!("{user_id}/{family_id}")
}

/// Range bounds covering every `user_families` key of `user_id` (`/` sorts just before `0`).
pub(crate) fn user_family_range(user_id: &str) -> (String, String) {
    (format!("{user_id}/"), format!("{user_id}0"))
}
