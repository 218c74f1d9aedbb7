//! Sessions (refresh families): start, rotation with reuse detection, logout, listing and
//! revocation.

use super::*;

impl AuthService {
    /// Creates a session family with its first refresh token and signs an access token.
    ///
    /// `user` is the record the credentials were checked against; inside the write transaction
    /// the account is read again, and a login that raced a password change, a logout-all, an MFA
    /// reset or a disable (status, hash or `valid_after` differ) is refused
    /// ([`AuthError::InvalidCredentials`]) instead of opening a session the change should have
    /// ended.
    pub(super) fn start_session(&self, user: &UserRecord, client_ip: IpAddr) -> AuthResult<TokenPair> {
        let now = now_ms();
        let auth_time_s = self.inner.config.clock.now_s();
        let refresh = random_token()?;
        let family_id = random_id()?;
        let config = &self.inner.config;
        let expires_s = now / 1_000 + config.refresh_ttl_s.min(config.refresh_absolute_s);
        let txn = self.inner.db.begin_write()?;
        let mut evicted = None;
        {
            let current = store::get::<UserRecord>(&txn.open_table(USERS)?, "users", &user.id)?;
            if !current.is_some_and(|u| {
                u.status == UserStatus::Active
                    && u.password_hash == user.password_hash
                    && u.valid_after_ms == user.valid_after_ms
            }) {
                return Err(AuthError::InvalidCredentials);
            }
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
                auth_time_s,
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
            self.remember_revoked(&old, &user.id)?;
            self.audit(
                AuditEvent::new("system", "auth.session_revoke", format!("session:{old}"), "ok")
                    .with_details(json!({ "reason": "session limit", "max": SESSIONS_PER_USER_MAX })),
            )?;
        }
        let (access, access_expires_in_s) = self.sign_access(user, &family_id, auth_time_s)?;
        Ok(TokenPair {
            access_token: access,
            access_expires_in_s,
            refresh_token: Secret::new(refresh),
            refresh_expires_in_s: expires_s.saturating_sub(now / 1_000),
            session_id: family_id,
            user_id: user.id.clone(),
        })
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
            Rotated(UserRecord, String, u64, u64),
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
                        Some(f)
                            if f.created_ms / 1_000 + self.inner.config.refresh_absolute_s < now / 1_000 =>
                        {
                            Outcome::Invalid("absolute lifetime")
                        }
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
                                        // Never past the session's absolute lifetime.
                                        let expires_s = (now / 1_000 + self.inner.config.refresh_ttl_s)
                                            .min(f.created_ms / 1_000 + self.inner.config.refresh_absolute_s);
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
                                        Outcome::Rotated(u, record.family_id, f.auth_time_s, expires_s)
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
                self.remember_revoked(&family, &user_id)?;
                tracing::warn!(session = %family, user = %user_id, "refresh token reuse: session revoked");
                self.audit(
                    AuditEvent::new(actor, "auth.refresh_reuse", format!("session:{family}"), "denied")
                        .with_details(json!({ "user": user_id, "session_revoked": true })),
                )?;
                Err(AuthError::RefreshReused)
            }
            Outcome::Rotated(user, family, auth_time_s, expires_s) => {
                txn.commit()?;
                let (access, access_expires_in_s) = self.sign_access(&user, &family, auth_time_s)?;
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
                    refresh_expires_in_s: expires_s.saturating_sub(now / 1_000),
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
        self.bump_valid_after(&caller.user_id)?;
        let revoked = self.revoke_all_families(&caller.user_id, "logout all")?;
        self.audit(
            AuditEvent::new(caller.actor(), "auth.logout_all", caller.actor(), "ok")
                .with_details(json!({ "sessions_revoked": revoked })),
        )
    }

    /// Marks one family revoked; false if it was already (or does not exist).
    pub(super) fn revoke_family(&self, family_id: &str, reason: &str) -> AuthResult<bool> {
        let txn = self.inner.db.begin_write()?;
        let owner;
        {
            let mut families = txn.open_table(FAMILIES)?;
            match store::get::<FamilyRecord>(&families, "families", family_id)? {
                Some(mut f) if f.revoked.is_none() => {
                    f.revoked = Some(Revocation { at_ms: now_ms(), reason: reason.into() });
                    store::put(&mut families, family_id, &f)?;
                    owner = Some(f.user_id);
                }
                _ => owner = None,
            }
        }
        txn.commit()?;
        match owner {
            Some(user_id) => {
                self.remember_revoked(family_id, &user_id)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Revokes every live family of `user_id`; returns how many.
    pub(super) fn revoke_all_families(&self, user_id: &str, reason: &str) -> AuthResult<u64> {
        let now = now_ms();
        let txn = self.inner.db.begin_write()?;
        let mut revoked = Vec::new();
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
                    revoked.push(fid);
                }
            }
        }
        txn.commit()?;
        for fid in &revoked {
            self.remember_revoked(fid, user_id)?;
        }
        Ok(revoked.len() as u64)
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

    // ----- revocation set ---------------------------------------------------------------------

    /// Seconds a revoked session stays in the revocation set: until every access token of it
    /// has expired (lifetime plus the verification leeway).
    fn revocation_window_s(&self) -> u64 {
        self.inner.config.access_ttl_s.saturating_add(token::LEEWAY_S)
    }

    /// Fills the revocation set from `families` (sessions revoked within the window).
    pub(super) fn load_revoked_sessions(&self) -> AuthResult<()> {
        let now = now_s();
        let window = self.revocation_window_s();
        let mut recent = HashMap::new();
        {
            let txn = self.inner.db.begin_read()?;
            for item in txn.open_table(FAMILIES)?.iter()? {
                let (k, v) = item?;
                let f: FamilyRecord = store::decode("families", k.value(), v.value())?;
                if let Some(r) = f.revoked
                    && r.at_ms / 1_000 + window >= now
                {
                    recent.insert(k.value().to_owned(), (r.at_ms / 1_000, f.user_id));
                }
            }
        }
        for (fid, (at_s, user_id)) in recent {
            self.remember_revoked_at(&fid, &user_id, at_s)?;
        }
        Ok(())
    }

    /// Adds a just-revoked session to the revocation set.
    pub(super) fn remember_revoked(&self, family_id: &str, user_id: &str) -> AuthResult<()> {
        self.remember_revoked_at(family_id, user_id, now_s())
    }

    fn remember_revoked_at(&self, family_id: &str, user_id: &str, at_s: u64) -> AuthResult<()> {
        let now = now_s();
        let window = self.revocation_window_s();
        let full = {
            let mut set = self.inner.revoked_sessions.write().map_err(|_| AuthError::Poisoned)?;
            if set.len() >= REVOKED_SESSIONS_MAX {
                set.retain(|_, revoked_s| *revoked_s + window >= now);
            }
            if set.len() >= REVOKED_SESSIONS_MAX {
                true
            } else {
                set.insert(family_id.to_owned(), at_s);
                false
            }
        };
        if full {
            // No room: end every access token of the account instead (never weaker).
            tracing::warn!(
                max = REVOKED_SESSIONS_MAX,
                "revocation set full: ending all access tokens of the account"
            );
            self.bump_valid_after(user_id)?;
        }
        Ok(())
    }

    /// Whether `family_id` was revoked within the window (its access tokens are refused).
    pub(super) fn session_revoked(&self, family_id: &str) -> AuthResult<bool> {
        let set = self.inner.revoked_sessions.read().map_err(|_| AuthError::Poisoned)?;
        Ok(set.contains_key(family_id))
    }

    /// Sets the account's `valid_after` stamp to now: every access token issued so far ends.
    pub(super) fn bump_valid_after(&self, user_id: &str) -> AuthResult<()> {
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            user.valid_after_ms = now_ms() + 1;
            user.updated_ms = now_ms();
            store::put(&mut users, user_id, &user)?;
        }
        txn.commit()?;
        Ok(())
    }
}
