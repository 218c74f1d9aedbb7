//! Login (limits, argon2 with a dummy hash for unknown accounts, rehash), access token
//! signing and verification.

use super::*;

impl AuthService {
    /// Exchanges credentials for a token pair. Unknown account, wrong password and disabled
    /// account all give [`AuthError::InvalidCredentials`] after the same argon2 work. Limits
    /// ([`AuthError::RateLimited`]) are checked first, per `client_ip` and per account. An
    /// account with MFA gets [`AuthError::MfaRequired`]: use [`AuthService::login_start`].
    pub fn login(&self, email: &str, password: &Secret, client_ip: IpAddr) -> AuthResult<TokenPair> {
        match self.login_start(email, password, client_ip)? {
            LoginOutcome::Tokens(pair) => Ok(pair),
            LoginOutcome::MfaRequired { .. } => Err(AuthError::MfaRequired),
        }
    }

    /// The password step of a login: limits, argon2 (a dummy hash for unknown accounts), the
    /// audit of a refusal, rehash. The account's failure count is reset here only without MFA;
    /// with MFA, only a right code resets it (so wrong codes keep adding up across logins).
    pub(super) fn check_password(
        &self,
        email: &str,
        password: &Secret,
        client_ip: IpAddr,
    ) -> AuthResult<UserRecord> {
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
        if !user.mfa_enabled {
            self.inner.limiter.record_success(&account_key)?;
        }
        let mut user = user;
        if verified == Verified::YesNeedsRehash
            && let Some(hash) = self.rehash(&user, password)?
        {
            user.password_hash = hash;
        }
        Ok(user)
    }

    /// Stores a hash of `password` with the current parameters, unless the account's hash is no
    /// longer the one just verified (a password change won the race: it must not be undone).
    /// Returns the new hash when it was stored.
    pub(super) fn rehash(&self, user: &UserRecord, password: &Secret) -> AuthResult<Option<String>> {
        let params = self.inner.config.password_params;
        let from = password::stored_params(&user.password_hash);
        let hash = password::hash_password(password.expose(), params)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            match store::get::<UserRecord>(&users, "users", &user.id)? {
                Some(mut current) if current.password_hash == user.password_hash => {
                    current.password_hash = hash.clone();
                    current.updated_ms = now_ms();
                    store::put(&mut users, &user.id, &current)?;
                }
                _ => return Ok(None),
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
        )?;
        Ok(Some(hash))
    }

    /// Signs an access token of `user` in session `session_id`, whose holder last proved who
    /// they are at `auth_time_s` (auth clock).
    pub(super) fn sign_access(
        &self,
        user: &UserRecord,
        session_id: &str,
        auth_time_s: u64,
    ) -> AuthResult<(Secret, u64)> {
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
            sid: Some(session_id.to_owned()),
            auth_time: Some(auth_time_s),
        };
        let keys = self.inner.keys.read().map_err(|_| AuthError::Poisoned)?;
        Ok((Secret::new(token::sign(&keys, &claims)?), config.access_ttl_s))
    }

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
        if let Some(sid) = &claims.sid
            && self.session_revoked(sid)?
        {
            return Err(TokenRefusal::Revoked.into());
        }
        Ok(Caller {
            user_id: user.id,
            email: user.email,
            role: user.role,
            plan_id: user.plan_id,
            token_id: claims.jti,
            expires_s: claims.exp,
            session_id: claims.sid,
            auth_time_s: claims.auth_time.unwrap_or(0),
            mfa_enrolment_required: !user.mfa_enabled && self.mfa_required_for(user.role),
            email_verified: user.email_verified,
        })
    }
}
