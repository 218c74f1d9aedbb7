//! Browser sessions: a server-side record in `accounts.redb` behind a cookie that holds only a
//! random id (256 bits; the store keeps its SHA-256). A session carries the same identity as an
//! access token and gives the same [`Caller`], so it goes through the same permission checks.
//!
//! Lifetime: idle [`AuthConfig::browser_idle_s`] (30 min) and absolute
//! [`AuthConfig::browser_absolute_s`] (12 h) on the auth clock; the account's `valid_after`
//! stamp (logout-all, role, status and password changes) ends it as it ends access tokens. The
//! id changes at login and at every privilege change of the holder
//! ([`AuthService::rotate_browser_session`]); logout deletes the record.

use super::*;

/// Default idle timeout of a browser session: 30 minutes.
pub const BROWSER_IDLE_S_DEFAULT: u64 = 1_800;
/// Default absolute timeout of a browser session: 12 hours.
pub const BROWSER_ABSOLUTE_S_DEFAULT: u64 = 12 * 3_600;
/// Longest absolute timeout a config may set: 7 days.
pub const BROWSER_ABSOLUTE_S_MAX: u64 = 7 * 24 * 3_600;
/// Most browser sessions per account; a login beyond it ends the least recently seen one.
pub const BROWSER_SESSIONS_PER_USER_MAX: usize = 32;
/// The last-seen time is written at most this often (a page view is not one fsync).
const TOUCH_INTERVAL_S: u64 = 60;
/// Longest session cookie value accepted before hashing (ours are 43 chars).
const COOKIE_BYTES_MAX: usize = 128;
/// Longest `User-Agent` kept with a session.
const USER_AGENT_BYTES_MAX: usize = 256;

/// A freshly made browser session: the cookie value (shown to the browser once) and the
/// session's CSRF token.
#[derive(Debug, Clone)]
pub struct NewBrowserSession {
    /// The cookie value (random id).
    pub cookie: Secret,
    /// The synchronizer token of the session's forms.
    pub csrf_token: String,
}

/// A verified browser session.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// Who is calling (the same checks as a bearer caller).
    pub caller: Caller,
    /// The session's CSRF token.
    pub csrf_token: String,
    /// The session's key (SHA-256 of the cookie), as listed.
    pub key: String,
}

/// A browser session as listed to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserSessionInfo {
    /// Key (SHA-256 hex of the cookie; names the session without being the cookie).
    pub key: String,
    /// Login time, s (auth clock).
    pub created_s: u64,
    /// Last request, s (auth clock, at most a minute old).
    pub last_seen_s: u64,
    /// Client IP at login.
    pub ip: String,
    /// `User-Agent` at login.
    pub user_agent: String,
}

/// What a browser login gives.
#[derive(Debug, Clone)]
pub enum BrowserLogin {
    /// A session.
    Session(NewBrowserSession),
    /// MFA on: a challenge for [`AuthService::complete_browser_mfa`].
    MfaRequired {
        /// The challenge.
        challenge: Secret,
        /// Seconds it stays valid.
        expires_in_s: u64,
    },
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

impl AuthService {
    /// Password login of a browser: a session, or an MFA challenge (as [`AuthService::login_start`]).
    pub fn browser_login(
        &self,
        email: &str,
        password: &Secret,
        client_ip: IpAddr,
        user_agent: &str,
    ) -> AuthResult<BrowserLogin> {
        let user = self.check_password(email, password, client_ip)?;
        if user.mfa_enabled {
            let (challenge, expires_in_s) = self.new_challenge(&user, client_ip)?;
            return Ok(BrowserLogin::MfaRequired { challenge, expires_in_s });
        }
        let session = self.start_browser_session(&user, client_ip, user_agent)?;
        self.audit(
            AuditEvent::new(format!("user:{}", user.id), "auth.login", format!("user:{}", user.id), "ok")
                .with_details(json!({ "ip": client_ip.to_string(), "browser": true })),
        )?;
        Ok(BrowserLogin::Session(session))
    }

    /// Answers a browser login's MFA challenge: a session on success (refusals as
    /// [`AuthService::complete_mfa`]).
    pub fn complete_browser_mfa(
        &self,
        challenge: &str,
        code: &str,
        client_ip: IpAddr,
        user_agent: &str,
    ) -> AuthResult<NewBrowserSession> {
        let user = self.answer_challenge(challenge, code, client_ip)?;
        self.start_browser_session(&user, client_ip, user_agent)
    }

    fn start_browser_session(
        &self,
        user: &UserRecord,
        client_ip: IpAddr,
        user_agent: &str,
    ) -> AuthResult<NewBrowserSession> {
        let cookie = random_token()?;
        let key = sha256_hex(&cookie);
        let csrf_token = random_token()?;
        let now = self.inner.config.clock.now_s();
        let record = BrowserSessionRecord {
            user_id: user.id.clone(),
            created_ms: now_ms().max(user.valid_after_ms),
            created_s: now,
            last_seen_s: now,
            auth_time_s: now,
            csrf_token: csrf_token.clone(),
            ip: client_ip.to_string(),
            user_agent: cut(user_agent, USER_AGENT_BYTES_MAX),
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut sessions = txn.open_table(BROWSER_SESSIONS)?;
            let mut index = txn.open_table(USER_BROWSER_SESSIONS)?;
            let (lo, hi) = store::user_family_range(&user.id);
            let mut keys = Vec::new();
            for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
                let (k, _) = item?;
                keys.push(k.value().to_owned());
            }
            let mut live: Vec<(String, u64)> = Vec::new();
            for k in keys {
                let skey = k.rsplit('/').next().unwrap_or_default().to_owned();
                match store::get::<BrowserSessionRecord>(&sessions, "browser_sessions", &skey)? {
                    Some(s) if self.browser_alive(&s, now) => live.push((skey, s.last_seen_s)),
                    _ => {
                        sessions.remove(skey.as_str())?;
                        index.remove(k.as_str())?;
                    }
                }
            }
            if live.len() >= BROWSER_SESSIONS_PER_USER_MAX {
                live.sort_by_key(|(_, last)| *last);
                if let Some((oldest, _)) = live.first() {
                    sessions.remove(oldest.as_str())?;
                    index.remove(store::user_family_key(&user.id, oldest).as_str())?;
                }
            }
            store::put(&mut sessions, &key, &record)?;
            store::put(&mut index, &store::user_family_key(&user.id, &key), &())?;
        }
        txn.commit()?;
        Ok(NewBrowserSession { cookie: Secret::new(cookie), csrf_token })
    }

    fn browser_alive(&self, s: &BrowserSessionRecord, now: u64) -> bool {
        let config = &self.inner.config;
        s.last_seen_s.saturating_add(config.browser_idle_s) >= now
            && s.created_s.saturating_add(config.browser_absolute_s) >= now
    }

    /// The session of a cookie value: its caller and CSRF token. Unknown, expired (idle or
    /// absolute), and sessions older than the account's `valid_after` stamp are refused
    /// ([`TokenRefusal::Revoked`] / `Expired`); a dead record is deleted. Counts as activity
    /// (`last_seen`, written at most once a `TOUCH_INTERVAL_S`).
    pub fn browser_session(&self, cookie: &str) -> AuthResult<BrowserSession> {
        self.browser_session_checked(cookie, true)
    }

    /// As [`AuthService::browser_session`], but not activity: `last_seen` stays at the last
    /// real request, so a background re-check (an open live stream) ends at the idle deadline
    /// instead of keeping the session alive.
    pub fn peek_browser_session(&self, cookie: &str) -> AuthResult<BrowserSession> {
        self.browser_session_checked(cookie, false)
    }

    fn browser_session_checked(&self, cookie: &str, touch: bool) -> AuthResult<BrowserSession> {
        if cookie.is_empty() || cookie.len() > COOKIE_BYTES_MAX {
            return Err(TokenRefusal::Malformed.into());
        }
        let key = sha256_hex(cookie);
        let now = self.inner.config.clock.now_s();
        let (record, user) = {
            let txn = self.inner.db.begin_read()?;
            let record: BrowserSessionRecord =
                store::get(&txn.open_table(BROWSER_SESSIONS)?, "browser_sessions", &key)?
                    .ok_or(TokenRefusal::Revoked)?;
            let user: Option<UserRecord> = store::get(&txn.open_table(USERS)?, "users", &record.user_id)?;
            (record, user)
        };
        let user = user.ok_or(TokenRefusal::UnknownSubject)?;
        if !self.browser_alive(&record, now) || record.created_ms < user.valid_after_ms {
            self.delete_browser_session(&record.user_id, &key)?;
            return Err(TokenRefusal::Expired.into());
        }
        if user.status != UserStatus::Active {
            return Err(TokenRefusal::AccountDisabled.into());
        }
        if touch && record.last_seen_s + TOUCH_INTERVAL_S <= now {
            let txn = self.inner.db.begin_write()?;
            {
                let mut sessions = txn.open_table(BROWSER_SESSIONS)?;
                if let Some(mut current) =
                    store::get::<BrowserSessionRecord>(&sessions, "browser_sessions", &key)?
                {
                    current.last_seen_s = now;
                    store::put(&mut sessions, &key, &current)?;
                }
            }
            txn.commit()?;
        }
        let caller = Caller {
            user_id: user.id,
            email: user.email,
            role: user.role,
            plan_id: user.plan_id,
            token_id: key.clone(),
            expires_s: record.created_s.saturating_add(self.inner.config.browser_absolute_s),
            session_id: None,
            auth_time_s: record.auth_time_s,
            mfa_enrolment_required: !user.mfa_enabled && self.mfa_required_for(user.role),
            email_verified: user.email_verified,
        };
        Ok(BrowserSession { caller, csrf_token: record.csrf_token, key })
    }

    fn delete_browser_session(&self, user_id: &str, key: &str) -> AuthResult<bool> {
        let txn = self.inner.db.begin_write()?;
        let removed = {
            let removed = txn.open_table(BROWSER_SESSIONS)?.remove(key)?.is_some();
            txn.open_table(USER_BROWSER_SESSIONS)?.remove(store::user_family_key(user_id, key).as_str())?;
            removed
        };
        txn.commit()?;
        Ok(removed)
    }

    /// Deletes every browser session of `user_id` but `keep` (a session key); returns how many.
    pub(super) fn delete_all_browser_sessions(&self, user_id: &str, keep: Option<&str>) -> AuthResult<u64> {
        let txn = self.inner.db.begin_write()?;
        let mut ended = 0u64;
        {
            let mut sessions = txn.open_table(BROWSER_SESSIONS)?;
            let mut index = txn.open_table(USER_BROWSER_SESSIONS)?;
            let (lo, hi) = store::user_family_range(user_id);
            let mut keys = Vec::new();
            for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
                let (k, _) = item?;
                keys.push(k.value().to_owned());
            }
            for index_key in keys {
                let key = index_key.rsplit('/').next().unwrap_or_default().to_owned();
                if Some(key.as_str()) == keep {
                    continue;
                }
                index.remove(index_key.as_str())?;
                ended += u64::from(sessions.remove(key.as_str())?.is_some());
            }
        }
        txn.commit()?;
        Ok(ended)
    }

    /// Logout of a browser: deletes the session record (the cookie is dead from now on).
    pub fn end_browser_session(&self, session: &BrowserSession) -> AuthResult<()> {
        if self.delete_browser_session(&session.caller.user_id, &session.key)? {
            self.audit(AuditEvent::new(
                session.caller.actor(),
                "auth.logout",
                format!("browser:{}", &session.key[..16]),
                "ok",
            ))?;
        }
        Ok(())
    }

    /// A new id (and CSRF token) for the same session, the old cookie dead: at every privilege
    /// change of the holder (e.g. MFA enrolment ends the enrol-only state).
    ///
    /// `enrolled_valid_after_ms`: the account's `valid_after` stamp that this session's own MFA
    /// enrolment set (`MfaConfirmation::valid_after_ms`). The enrolment ends every session
    /// opened before it, this one too; when the stamp is still the account's (no later reset
    /// or revocation), the rotated session counts from it and its authentication time becomes
    /// now (the enrolment code was an MFA proof).
    pub fn rotate_browser_session(
        &self,
        session: &BrowserSession,
        enrolled_valid_after_ms: Option<u64>,
    ) -> AuthResult<NewBrowserSession> {
        let cookie = random_token()?;
        let key = sha256_hex(&cookie);
        let csrf_token = random_token()?;
        let user_id = &session.caller.user_id;
        let txn = self.inner.db.begin_write()?;
        {
            let mut sessions = txn.open_table(BROWSER_SESSIONS)?;
            let mut index = txn.open_table(USER_BROWSER_SESSIONS)?;
            let mut record: BrowserSessionRecord =
                store::get(&sessions, "browser_sessions", &session.key)?.ok_or(TokenRefusal::Revoked)?;
            sessions.remove(session.key.as_str())?;
            index.remove(store::user_family_key(user_id, &session.key).as_str())?;
            record.csrf_token = csrf_token.clone();
            if let Some(stamp) = enrolled_valid_after_ms {
                let user: Option<UserRecord> = store::get(&txn.open_table(USERS)?, "users", user_id)?;
                if user.is_some_and(|u| u.valid_after_ms == stamp) {
                    record.created_ms = record.created_ms.max(stamp);
                    record.auth_time_s = self.inner.config.clock.now_s();
                }
            }
            store::put(&mut sessions, &key, &record)?;
            store::put(&mut index, &store::user_family_key(user_id, &key), &())?;
        }
        txn.commit()?;
        Ok(NewBrowserSession { cookie: Secret::new(cookie), csrf_token })
    }

    /// The caller's live browser sessions.
    pub fn list_browser_sessions(&self, caller: &Caller) -> AuthResult<Vec<BrowserSessionInfo>> {
        let now = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_read()?;
        let sessions = txn.open_table(BROWSER_SESSIONS)?;
        let index = txn.open_table(USER_BROWSER_SESSIONS)?;
        let (lo, hi) = store::user_family_range(&caller.user_id);
        let mut out = Vec::new();
        for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
            let (k, _) = item?;
            let key = k.value().rsplit('/').next().unwrap_or_default().to_owned();
            if let Some(s) = store::get::<BrowserSessionRecord>(&sessions, "browser_sessions", &key)?
                && self.browser_alive(&s, now)
            {
                out.push(BrowserSessionInfo {
                    key,
                    created_s: s.created_s,
                    last_seen_s: s.last_seen_s,
                    ip: s.ip,
                    user_agent: s.user_agent,
                });
            }
        }
        Ok(out)
    }

    /// Ends one of the caller's own browser sessions (404 for any other key).
    pub fn revoke_browser_session(&self, caller: &Caller, key: &str) -> AuthResult<()> {
        if !self.delete_browser_session(&caller.user_id, key)? {
            return Err(AuthError::NotFound { kind: "session" });
        }
        self.audit(AuditEvent::new(
            caller.actor(),
            "auth.session_revoke",
            format!("browser:{}", cut(key, 16)),
            "ok",
        ))
    }

    /// Ends every session of the caller but `keep` (a browser session key): the other browser
    /// sessions and every refresh family. Returns how many ended.
    pub fn revoke_other_sessions(&self, caller: &Caller, keep: &str) -> AuthResult<u64> {
        let mut ended = 0u64;
        for s in self.list_browser_sessions(caller)? {
            if s.key != keep && self.delete_browser_session(&caller.user_id, &s.key)? {
                ended += 1;
            }
        }
        ended += self.revoke_all_families(&caller.user_id, "revoke others")?;
        self.audit(
            AuditEvent::new(caller.actor(), "auth.session_revoke_others", caller.actor(), "ok")
                .with_details(json!({ "sessions_revoked": ended })),
        )?;
        Ok(ended)
    }
}
