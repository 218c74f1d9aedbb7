//! Personal API tokens: long-lived bearer tokens a customer or analyst issues for scripts.
//!
//! Why not the existing kinds: device tokens are JWTs bound to a buoy with the ingest audience
//! (they read nothing), and refresh tokens are single-use and rotate; a script wants one
//! credential that works until it expires or is revoked, and revocation must take effect at
//! once, so a personal token is an opaque random secret checked against the store on every
//! request (like a refresh token, never a JWT).
//!
//! Text: `bwp_<id>_<secret>`: `<id>` 32 hex chars (the record key), `<secret>` 43 base64url
//! chars (32 random bytes). The store keeps the SHA-256 of the secret, never the secret; the
//! owner sees the text once, at issue.
//!
//! Tables in `accounts.redb` (JSON values):
//! - `api_tokens`: id → [`ApiTokenRecord`]; written at issue and revocation, and with the
//!   uses noted in memory (never on the request path) at most once a [`API_TOKEN_TOUCH_S`] by
//!   [`AuthService::flush_api_token_uses`], in one transaction for all tokens; kept after
//!   revocation or expiry so the owner's list shows it;
//! - `user_api_tokens`: `<user id>/<token id>` → `()`; the owner's index, written at issue.
//!
//! Who may: customers and analysts (the roles that read data under a plan); issuing needs a
//! fresh login (the fresh-auth gate). Staff accounts hold no personal tokens: a non-expiring
//! bearer credential would sidestep their MFA requirement. A token acts with its owner's
//! current role, plan and status (read at every use); it never counts as a fresh login. A
//! token made before the account's `valid_after` stamp (password change, logout everywhere,
//! MFA change) is refused, like every other credential of the account.

use super::*;

/// Prefix of every personal API token (so `ApiState` and secret scanners can tell them apart).
pub const API_TOKEN_PREFIX: &str = "bwp_";
/// Most live (unrevoked, unexpired) personal tokens per account.
pub const API_TOKENS_PER_USER_MAX: usize = 20;
/// Most personal token records (live, revoked or expired) kept per account: issuing past it
/// first deletes the account's oldest revoked or expired records, so a loop of issue and
/// revoke cannot fill the store.
pub const API_TOKEN_RECORDS_PER_USER_MAX: usize = 100;
/// Most personal token records in the store.
pub const API_TOKENS_MAX: u64 = 1_000_000;
/// Longest token name, bytes.
pub const API_TOKEN_NAME_BYTES_MAX: usize = 64;
/// Lifetimes an owner may pick, days (default the middle one).
pub const API_TOKEN_TTL_DAYS: [u32; 3] = [30, 90, 365];
/// Uses of personal tokens are written to the store at most once per this many seconds (a
/// use is noted in memory, never committed on the request path).
pub const API_TOKEN_TOUCH_S: u64 = 60;
/// Most tokens whose last use waits in memory for the next flush; a use of another token past
/// it is not noted until the flush has run (a flush is due at once when the map is full).
pub const API_TOKEN_USES_PENDING_MAX: usize = 10_000;
/// Prefix of the `token_id` of a caller authenticated by a personal token.
pub(crate) const API_TOKEN_ID_PREFIX: &str = "api_token:";
/// Milliseconds in a day (token lifetimes are given in days).
const MS_PER_DAY: u64 = 86_400_000;
const _: () = assert!(API_TOKENS_PER_USER_MAX < API_TOKEN_RECORDS_PER_USER_MAX);
/// Longest token text accepted before parsing.
const API_TOKEN_TEXT_BYTES_MAX: usize = 128;

/// Personal token records.
pub(crate) const API_TOKENS: store::JsonTable = redb::TableDefinition::new("api_tokens");
/// The owner index of personal tokens.
pub(crate) const USER_API_TOKENS: store::JsonTable = redb::TableDefinition::new("user_api_tokens");

/// A stored personal token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ApiTokenRecord {
    pub user_id: String,
    pub name: String,
    /// SHA-256 hex of the secret part.
    pub secret_sha256: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub last_used_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
}

/// Uses of personal tokens noted in memory, waiting for [`AuthService::flush_api_token_uses`].
#[derive(Debug, Default)]
pub(crate) struct PendingUses {
    /// Token id → its newest use, ms. At most [`API_TOKEN_USES_PENDING_MAX`] entries.
    uses: HashMap<String, u64>,
    /// When the last flush ended, ms (0: never).
    flushed_ms: u64,
    /// A flush has been handed out and has not ended (at most one runs at a time).
    flushing: bool,
}

/// A personal token as its owner sees it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiTokenInfo {
    /// Id (used to revoke).
    pub id: String,
    /// The owner's label.
    pub name: String,
    /// Issue time, ms since the epoch.
    pub created_ms: u64,
    /// Expiry, ms since the epoch.
    pub expires_ms: u64,
    /// Last use (to within [`API_TOKEN_TOUCH_S`]), ms; `None` = never used.
    pub last_used_ms: Option<u64>,
    /// Revocation time, ms.
    pub revoked_ms: Option<u64>,
    /// Past its expiry on the auth clock when listed.
    pub expired: bool,
}

impl ApiTokenInfo {
    /// Neither revoked nor expired (when listed).
    pub fn is_live(&self) -> bool {
        self.revoked_ms.is_none() && !self.expired
    }
}

/// A freshly issued personal token.
#[derive(Debug, Clone)]
pub struct IssuedApiToken {
    /// The token text (shown once).
    pub token: Secret,
    /// Its record.
    pub info: ApiTokenInfo,
}

fn info(id: String, r: ApiTokenRecord) -> ApiTokenInfo {
    ApiTokenInfo {
        id,
        name: r.name,
        created_ms: r.created_ms,
        expires_ms: r.expires_ms,
        last_used_ms: r.last_used_ms,
        revoked_ms: r.revoked_ms,
        expired: false,
    }
}

fn may_hold_tokens(role: Role) -> bool {
    matches!(role, Role::Customer | Role::Analyst)
}

/// `(id, secret)` of a token text, if it has the shape of one.
fn split_token(token: &str) -> Option<(&str, &str)> {
    if token.len() > API_TOKEN_TEXT_BYTES_MAX {
        return None;
    }
    let (id, secret) = token.strip_prefix(API_TOKEN_PREFIX)?.split_once('_')?;
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

impl AuthService {
    /// Now on the auth clock (`AuthConfig::clock`), ms: the time of token expiry, use and
    /// revocation. (`created_ms` stays on the system clock, in ms, because it is compared with
    /// the account's `valid_after_ms` stamp, which the account code writes from it.)
    fn token_clock_ms(&self) -> u64 {
        self.inner.config.clock.now_s().saturating_mul(1_000)
    }

    /// Issues a personal token named `name`, valid `ttl_days` (one of [`API_TOKEN_TTL_DAYS`]).
    /// Needs a customer or analyst account and a fresh login.
    pub fn issue_api_token(&self, caller: &Caller, name: &str, ttl_days: u32) -> AuthResult<IssuedApiToken> {
        if !may_hold_tokens(caller.role) {
            return Err(AuthError::Forbidden { permission: "api_tokens:issue".into() });
        }
        self.require_fresh(caller)?;
        let name = name.trim();
        if name.is_empty() || name.len() > API_TOKEN_NAME_BYTES_MAX || name.chars().any(char::is_control) {
            return Err(AuthError::InvalidInput {
                field: "name",
                reason: "1-64 bytes, no control characters".into(),
            });
        }
        if !API_TOKEN_TTL_DAYS.contains(&ttl_days) {
            return Err(AuthError::InvalidInput { field: "ttl_days", reason: "30, 90 or 365".into() });
        }
        let id = random_id()?;
        let secret = random_token()?;
        let now = self.token_clock_ms();
        let record = ApiTokenRecord {
            user_id: caller.user_id.clone(),
            name: name.to_owned(),
            secret_sha256: sha256_hex(&secret),
            created_ms: now_ms(),
            expires_ms: now.saturating_add(u64::from(ttl_days) * MS_PER_DAY),
            last_used_ms: None,
            revoked_ms: None,
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            if tokens.len()? >= API_TOKENS_MAX {
                return Err(AuthError::LimitReached { what: "personal API tokens", max: API_TOKENS_MAX });
            }
            let mut index = txn.open_table(USER_API_TOKENS)?;
            let mut owned = self.owned_tokens(&tokens, &index, &caller.user_id)?;
            let is_live = |t: &ApiTokenInfo| t.revoked_ms.is_none() && t.expires_ms > now;
            let live = owned.iter().filter(|t| is_live(t)).count();
            if live >= API_TOKENS_PER_USER_MAX {
                return Err(AuthError::LimitReached {
                    what: "personal API tokens per account",
                    max: API_TOKENS_PER_USER_MAX as u64,
                });
            }
            // Room for one more record: the oldest dead ones go first (live ones are fewer than
            // API_TOKENS_PER_USER_MAX < API_TOKEN_RECORDS_PER_USER_MAX, so this always finds room).
            owned.sort_by_key(|t| t.created_ms);
            let mut excess = (owned.len() + 1).saturating_sub(API_TOKEN_RECORDS_PER_USER_MAX);
            for dead in owned.iter().filter(|t| !is_live(t)) {
                if excess == 0 {
                    break;
                }
                tokens.remove(dead.id.as_str())?;
                index.remove(format!("{}/{}", caller.user_id, dead.id).as_str())?;
                excess -= 1;
            }
            store::put(&mut tokens, &id, &record)?;
            store::put(&mut index, &format!("{}/{id}", caller.user_id), &())?;
        }
        // The audit record first: a failed audit write drops the transaction, so no token
        // exists that the audit log does not show (a failed commit after it leaves a record
        // of an issue whose token never worked, the harmless side).
        self.audit(
            AuditEvent::new(caller.actor(), "api_tokens.issue", format!("{API_TOKEN_ID_PREFIX}{id}"), "ok")
                .with_details(json!({ "name": record.name, "expires_ms": record.expires_ms })),
        )?;
        txn.commit()?;
        let token = Secret::new(format!("{API_TOKEN_PREFIX}{id}_{secret}"));
        Ok(IssuedApiToken { token, info: info(id, record) })
    }

    fn owned_tokens(
        &self,
        tokens: &impl ReadableTable<&'static str, &'static [u8]>,
        index: &impl ReadableTable<&'static str, &'static [u8]>,
        user_id: &str,
    ) -> AuthResult<Vec<ApiTokenInfo>> {
        let prefix = format!("{user_id}/");
        let mut out = Vec::new();
        for item in index.range::<&str>(prefix.as_str()..)? {
            let (key, _) = item?;
            let Some(id) = key.value().strip_prefix(&prefix) else { break };
            if let Some(record) = store::get::<ApiTokenRecord>(tokens, "api_tokens", id)? {
                out.push(info(id.to_owned(), record));
            }
        }
        Ok(out)
    }

    /// The caller's personal tokens (revoked and expired ones too), oldest first.
    pub fn list_api_tokens(&self, caller: &Caller) -> AuthResult<Vec<ApiTokenInfo>> {
        let txn = self.inner.db.begin_read()?;
        let mut out = self.owned_tokens(
            &txn.open_table(API_TOKENS)?,
            &txn.open_table(USER_API_TOKENS)?,
            &caller.user_id,
        )?;
        let now = self.token_clock_ms();
        for token in &mut out {
            token.expired = token.expires_ms <= now;
        }
        {
            let pending = self.inner.api_token_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for token in &mut out {
                if let Some(&used) = pending.uses.get(&token.id) {
                    token.last_used_ms = Some(token.last_used_ms.map_or(used, |last| last.max(used)));
                }
            }
        }
        out.sort_by_key(|t| t.created_ms);
        Ok(out)
    }

    /// Revokes one of the caller's tokens: its next use is refused. Another account's id, or
    /// an unknown one, is [`AuthError::NotFound`]. Revoking twice is a no-op.
    pub fn revoke_api_token(&self, caller: &Caller, id: &str) -> AuthResult<()> {
        let txn = self.inner.db.begin_write()?;
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            let mut record = store::get::<ApiTokenRecord>(&tokens, "api_tokens", id)?
                .filter(|r| r.user_id == caller.user_id)
                .ok_or(AuthError::NotFound { kind: "API token" })?;
            if record.revoked_ms.is_some() {
                return Ok(());
            }
            record.revoked_ms = Some(self.token_clock_ms());
            store::put(&mut tokens, id, &record)?;
        }
        txn.commit()?;
        self.audit(AuditEvent::new(caller.actor(), "api_tokens.revoke", format!("api_token:{id}"), "ok"))
    }

    /// Revokes every live personal token of `user_id` (a password change that ends the other
    /// sessions ends them too). Returns how many were revoked. Not audited here: the caller's
    /// own audit event counts them.
    pub(crate) fn revoke_all_api_tokens(&self, user_id: &str) -> AuthResult<u64> {
        let now = self.token_clock_ms();
        let txn = self.inner.db.begin_write()?;
        let mut revoked = 0;
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            let owned = self.owned_tokens(&tokens, &txn.open_table(USER_API_TOKENS)?, user_id)?;
            for token in owned.into_iter().filter(|t| t.revoked_ms.is_none()) {
                if let Some(mut record) = store::get::<ApiTokenRecord>(&tokens, "api_tokens", &token.id)? {
                    record.revoked_ms = Some(now);
                    store::put(&mut tokens, &token.id, &record)?;
                    revoked += 1;
                }
            }
        }
        txn.commit()?;
        Ok(revoked)
    }

    /// Verifies a personal token; the caller it acts for (the owner's current role, plan and
    /// status). Refusals are [`TokenRefusal`]s (401).
    pub fn verify_api_token(&self, token: &str) -> AuthResult<Caller> {
        let (id, secret) = split_token(token).ok_or(TokenRefusal::Malformed)?;
        let now = self.token_clock_ms();
        let (record, user) = {
            let txn = self.inner.db.begin_read()?;
            let record: ApiTokenRecord =
                store::get(&txn.open_table(API_TOKENS)?, "api_tokens", id)?.ok_or(TokenRefusal::Revoked)?;
            let user: Option<UserRecord> = store::get(&txn.open_table(USERS)?, "users", &record.user_id)?;
            (record, user)
        };
        let presented = sha256_hex(secret);
        let matches = presented.len() == record.secret_sha256.len()
            && presented.bytes().zip(record.secret_sha256.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !matches {
            return Err(TokenRefusal::BadSignature.into());
        }
        let user = user.ok_or(TokenRefusal::UnknownSubject)?;
        if record.revoked_ms.is_some() || record.created_ms < user.valid_after_ms {
            return Err(TokenRefusal::Revoked.into());
        }
        if record.expires_ms <= now {
            return Err(TokenRefusal::Expired.into());
        }
        if user.status != UserStatus::Active {
            return Err(TokenRefusal::AccountDisabled.into());
        }
        if !may_hold_tokens(user.role) {
            return Err(TokenRefusal::Revoked.into());
        }
        self.note_api_token_use(id, now);
        Ok(Caller {
            mfa_enrolment_required: !user.mfa_enabled && self.mfa_required_for(user.role),
            user_id: user.id,
            email: user.email,
            email_verified: user.email_verified,
            role: user.role,
            plan_id: user.plan_id,
            token_id: format!("{API_TOKEN_ID_PREFIX}{id}"),
            expires_s: record.expires_ms / 1_000,
            session_id: None,
            // Never a fresh login: a token cannot pass the fresh-auth gate.
            auth_time_s: 0,
        })
    }
}

impl AuthService {
    /// Notes a use of token `id` in memory (no store write).
    fn note_api_token_use(&self, id: &str, now_ms: u64) {
        let mut pending = self.inner.api_token_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.uses.len() < API_TOKEN_USES_PENDING_MAX || pending.uses.contains_key(id) {
            pending.uses.insert(id.to_owned(), now_ms);
        }
    }

    /// True (once, until [`AuthService::flush_api_token_uses`] ends) when noted uses wait and
    /// the last flush is at least [`API_TOKEN_TOUCH_S`] old or the map is full: the caller
    /// then runs the flush off the async workers.
    pub fn api_token_uses_due(&self) -> bool {
        // The system clock: this paces store writes, it is no authentication event.
        let now = now_ms();
        let mut pending = self.inner.api_token_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = !pending.flushing
            && !pending.uses.is_empty()
            && (pending.flushed_ms.saturating_add(API_TOKEN_TOUCH_S * 1_000) <= now
                || pending.uses.len() >= API_TOKEN_USES_PENDING_MAX);
        if due {
            pending.flushing = true;
        }
        due
    }

    /// Writes the noted uses of personal tokens (`last_used_ms`) in one write transaction and
    /// empties the map; blocking (fsync), so never on an async worker. Returns how many records
    /// were written. Uses of tokens deleted meanwhile are dropped.
    pub fn flush_api_token_uses(&self) -> AuthResult<usize> {
        let uses = {
            let mut pending =
                self.inner.api_token_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            pending.flushing = true;
            std::mem::take(&mut pending.uses)
        };
        let written = self.write_api_token_uses(&uses);
        let mut pending = self.inner.api_token_uses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.flushing = false;
        pending.flushed_ms = now_ms();
        if written.is_err() {
            // Not lost on a failed write: merged back (newer uses win) for the next flush.
            for (id, used) in uses {
                if pending.uses.len() < API_TOKEN_USES_PENDING_MAX {
                    let entry = pending.uses.entry(id).or_insert(used);
                    *entry = (*entry).max(used);
                }
            }
        }
        written
    }

    fn write_api_token_uses(&self, uses: &HashMap<String, u64>) -> AuthResult<usize> {
        if uses.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        let txn = self.inner.db.begin_write()?;
        {
            let mut tokens = txn.open_table(API_TOKENS)?;
            for (id, &used) in uses {
                if let Some(mut current) = store::get::<ApiTokenRecord>(&tokens, "api_tokens", id)?
                    && current.last_used_ms.is_none_or(|last| last < used)
                {
                    current.last_used_ms = Some(used);
                    store::put(&mut tokens, id, &current)?;
                    written += 1;
                }
            }
        }
        txn.commit()?;
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_is_split_only_when_well_formed() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(split_token(&format!("bwp_{id}_secret")), Some((id, "secret")));
        for bad in [
            "",
            "bwp_",
            &format!("bwp_{id}"),
            &format!("bwp_{id}_"),
            "bwp_XYZ_secret",
            &format!("xyz_{id}_s"),
        ] {
            assert_eq!(split_token(bad), None, "{bad}");
        }
        assert_eq!(split_token(&format!("bwp_{id}_{}", "a".repeat(200))), None);
    }
}
