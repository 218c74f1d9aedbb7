//! The owner's account actions that need a proof of identity: password change (with the choice
//! to end every other session), browser re-authentication (step-up), and an admin ending every
//! session of an account.

use super::*;

impl AuthService {
    /// Changes the caller's own password (current one required, fresh authentication needed).
    ///
    /// With `end_other_sessions`, every other session of the account ends: every refresh family
    /// but the caller's own (its access tokens at once, through the revocation set) and every
    /// browser session but `keep_browser` (the caller's own session key, for a browser). The
    /// caller's session goes on either way. Audited `users.change_password`.
    pub fn change_password(
        &self,
        caller: &Caller,
        current: &Secret,
        new: &Secret,
        end_other_sessions: bool,
        keep_browser: Option<&str>,
    ) -> AuthResult<u64> {
        self.require_fresh(caller)?;
        let user = self.user_record(&caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        if current.expose().len() > password::PASSWORD_BYTES_MAX
            || password::verify_password(
                current.expose(),
                &user.password_hash,
                self.inner.config.password_params,
            )? == Verified::No
        {
            self.audit(
                AuditEvent::new(caller.actor(), "users.change_password", caller.actor(), "denied")
                    .with_details(json!({ "reason": "wrong current password" })),
            )?;
            return Err(AuthError::InvalidCredentials);
        }
        password::check_password_rules(new.expose(), &user.email)?;
        let hash = password::hash_password(new.expose(), self.inner.config.password_params)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut current_user: UserRecord =
                store::get(&users, "users", &caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            // A change that raced another change of the password loses (the user retries).
            if current_user.password_hash != user.password_hash {
                return Err(AuthError::InvalidCredentials);
            }
            current_user.password_hash = hash;
            current_user.updated_ms = now_ms();
            store::put(&mut users, &caller.user_id, &current_user)?;
        }
        txn.commit()?;
        let mut ended = 0;
        let mut tokens_revoked = 0;
        if end_other_sessions {
            ended += self.revoke_families_except(&caller.user_id, caller.session_id(), "password changed")?;
            ended += self.delete_all_browser_sessions(&caller.user_id, keep_browser)?;
            // A personal token made by whoever knew the old password ends with the sessions.
            tokens_revoked = self.revoke_all_api_tokens(&caller.user_id)?;
        }
        self.audit(
            AuditEvent::new(caller.actor(), "users.change_password", caller.actor(), "ok").with_details(
                json!({
                    "end_other_sessions": end_other_sessions,
                    "sessions_ended": ended,
                    "api_tokens_revoked": tokens_revoked,
                }),
            ),
        )?;
        Ok(ended)
    }

    /// An admin (`users:manage`, fresh authentication) ends every session of `user_id`: its
    /// refresh families and their access tokens, and its browser sessions. The account's rank
    /// may not be above the caller's. Returns how many ended. Audited `auth.sessions_end_all`.
    pub fn end_user_sessions(&self, caller: &Caller, user_id: &str) -> AuthResult<u64> {
        self.require(caller, Permission::UsersManage, "auth.sessions_end_all")?;
        self.require_fresh(caller)?;
        let user = self.user_record(user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        if user.role.rank() > caller.role.rank() {
            self.audit(
                AuditEvent::new(caller.actor(), "auth.sessions_end_all", format!("user:{user_id}"), "denied")
                    .with_details(json!({ "reason": "role escalation", "role": user.role })),
            )?;
            return Err(AuthError::RoleEscalation { role: user.role.to_string() });
        }
        self.bump_valid_after(user_id)?;
        let families = self.revoke_all_families(user_id, "ended by an admin")?;
        let browsers = self.delete_all_browser_sessions(user_id, None)?;
        self.audit(
            AuditEvent::new(caller.actor(), "auth.sessions_end_all", format!("user:{user_id}"), "ok")
                .with_details(json!({ "sessions_revoked": families, "browser_sessions_ended": browsers })),
        )?;
        Ok(families + browsers)
    }

    /// Browser step-up: the account's password, and its MFA code when MFA is on, make the
    /// browser session's authentication fresh again (its `auth_time` becomes now). The login
    /// limits apply (per client IP, the account's backoff); a wrong password or code is
    /// [`AuthError::InvalidCredentials`] / [`AuthError::MfaCodeInvalid`].
    pub fn reauthenticate_browser(
        &self,
        session: &BrowserSession,
        password: &Secret,
        code: Option<&str>,
        client_ip: IpAddr,
    ) -> AuthResult<()> {
        let caller = &session.caller;
        let user = self.check_password(&caller.email, password, client_ip)?;
        if user.id != caller.user_id {
            return Err(AuthError::InvalidCredentials);
        }
        let proof = if user.mfa_enabled {
            self.inner.limiter.begin_attempt(&caller.email)?;
            let Some(proof) = self.check_code(&user.id, code.unwrap_or_default())? else {
                self.audit(
                    AuditEvent::new(caller.actor(), "auth.step_up", caller.actor(), "denied")
                        .with_details(json!({ "reason": "wrong code", "browser": true })),
                )?;
                return Err(AuthError::MfaCodeInvalid);
            };
            self.inner.limiter.record_success(&caller.email)?;
            Some(proof)
        } else {
            None
        };
        let now = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_write()?;
        {
            let mut sessions = txn.open_table(BROWSER_SESSIONS)?;
            let mut record: BrowserSessionRecord =
                store::get(&sessions, "browser_sessions", &session.key)?.ok_or(TokenRefusal::Revoked)?;
            record.auth_time_s = now;
            store::put(&mut sessions, &session.key, &record)?;
        }
        txn.commit()?;
        match proof {
            Some(proof) => self.audit_proof(&caller.actor(), proof, "auth.step_up"),
            None => self.audit(
                AuditEvent::new(caller.actor(), "auth.step_up", caller.actor(), "ok")
                    .with_details(json!({ "via": "password", "browser": true })),
            ),
        }
    }

    /// Revokes every live family of `user_id` but `keep`; returns how many.
    fn revoke_families_except(&self, user_id: &str, keep: Option<&str>, reason: &str) -> AuthResult<u64> {
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
                if Some(fid.as_str()) == keep {
                    continue;
                }
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
}
