//! MFA: enrolment (QR code, confirmation by a first code, backup codes), the login challenge,
//! step-up of a session, disabling, and the CLI reset.
//!
//! A login of an account with MFA answers a challenge instead of tokens ([`LoginOutcome`]);
//! the challenge (256 random bits, kept in memory as its SHA-256, [`MFA_CHALLENGE_TTL_S`])
//! grants nothing but [`AuthService::complete_mfa`]. Every wrong code counts as a failed login
//! of the account (the login backoff applies; each attempt is counted before its code is
//! checked, so parallel guesses cannot outrun it), and the [`MFA_FAILURES_MAX`]th ends the
//! challenge. A TOTP step is accepted once: the highest used step is stored with the secret.

use super::*;
use crate::auth::mfa::{self, SecretSealer};

/// Seconds an MFA challenge stays valid after the password step.
pub const MFA_CHALLENGE_TTL_S: u64 = 300;
/// Wrong codes that end a challenge (each also counts as a failed login of the account).
pub const MFA_FAILURES_MAX: u32 = 5;
/// Most MFA challenges held at once (a login beyond it answers `Unavailable`, HTTP 503).
pub const MFA_CHALLENGES_MAX: usize = 10_000;
/// Most MFA challenges of one account held at once: a further login ends the account's
/// oldest, so one account cannot fill the table for everyone.
pub const MFA_CHALLENGES_PER_USER_MAX: usize = 3;
/// Longest challenge token accepted before hashing (ours are 43 chars).
const CHALLENGE_BYTES_MAX: usize = 128;

/// An MFA challenge waiting for its code (in memory; a restart asks for the password again).
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    /// The account that passed the password step.
    user_id: String,
    /// Its limiter key (the normalised email).
    account_key: String,
    /// Issue time, s on the auth clock.
    created_s: u64,
    /// Wrong codes so far.
    failures: u32,
    /// The account's password hash and `valid_after` stamp at the password step: a password
    /// change, logout-all or MFA reset in between ends the challenge.
    password_hash: String,
    valid_after_ms: u64,
    /// Issue instant (monotonic): the order of an account's challenges for the per-account cap.
    issued_at: std::time::Instant,
}

/// What a password login gives.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    /// No MFA on the account: the session's tokens.
    Tokens(TokenPair),
    /// MFA on: a challenge to answer with a code through [`AuthService::complete_mfa`].
    MfaRequired {
        /// The challenge (single use, [`MFA_CHALLENGE_TTL_S`]).
        challenge: Secret,
        /// Seconds it stays valid.
        expires_in_s: u64,
    },
}

/// An enrolment in progress: what the account's owner puts into an authenticator app.
#[derive(Debug, Clone)]
pub struct MfaEnrolment {
    /// The secret in base32 (for typing it in).
    pub secret_base32: Secret,
    /// The `otpauth://` URL (what the QR code holds).
    pub otpauth_url: Secret,
    /// The QR code of the URL, an SVG document rendered here.
    pub qr_svg: String,
}

/// Which proof a code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proof {
    Totp,
    BackupCode,
}

impl AuthService {
    /// The MFA key (opened on first use so accounts without MFA never need it).
    fn sealer(&self) -> AuthResult<&SecretSealer> {
        if let Some(sealer) = self.inner.sealer.get() {
            return Ok(sealer);
        }
        let sealer = SecretSealer::open(&self.inner.keys_dir)?;
        Ok(self.inner.sealer.get_or_init(|| sealer))
    }

    /// Whether accounts of `role` must have MFA ([`AuthConfig::mfa_required_roles`]).
    pub fn mfa_required_for(&self, role: Role) -> bool {
        self.inner.config.mfa_required_roles.contains(&role)
    }

    /// Password login that knows MFA: [`LoginOutcome::Tokens`] for accounts without MFA, a
    /// challenge for accounts with it. Refusals as in [`AuthService::login`].
    pub fn login_start(&self, email: &str, password: &Secret, client_ip: IpAddr) -> AuthResult<LoginOutcome> {
        let user = self.check_password(email, password, client_ip)?;
        if !user.mfa_enabled {
            let pair = self.start_session(&user, client_ip)?;
            self.audit(
                AuditEvent::new(format!("user:{}", user.id), "auth.login", format!("user:{}", user.id), "ok")
                    .with_details(json!({ "ip": client_ip.to_string(), "session": pair.session_id })),
            )?;
            return Ok(LoginOutcome::Tokens(pair));
        }
        let (challenge, expires_in_s) = self.new_challenge(&user, client_ip)?;
        Ok(LoginOutcome::MfaRequired { challenge, expires_in_s })
    }

    /// Makes an MFA challenge for `user`, who passed the password step.
    pub(super) fn new_challenge(&self, user: &UserRecord, client_ip: IpAddr) -> AuthResult<(Secret, u64)> {
        let challenge = random_token()?;
        let now = self.inner.config.clock.now_s();
        {
            let mut challenges = self.inner.challenges.lock().map_err(|_| AuthError::Poisoned)?;
            if challenges.len() >= MFA_CHALLENGES_MAX {
                challenges.retain(|_, c| c.created_s + MFA_CHALLENGE_TTL_S >= now);
            }
            let mut own: Vec<(std::time::Instant, String)> = challenges
                .iter()
                .filter(|(_, c)| c.user_id == user.id)
                .map(|(k, c)| (c.issued_at, k.clone()))
                .collect();
            own.sort();
            let surplus = (own.len() + 1).saturating_sub(MFA_CHALLENGES_PER_USER_MAX);
            for (_, oldest) in own.iter().take(surplus) {
                challenges.remove(oldest);
            }
            if challenges.len() >= MFA_CHALLENGES_MAX {
                return Err(AuthError::Unavailable { what: "MFA challenges", retry_after_secs: 60 });
            }
            challenges.insert(
                sha256_hex(&challenge),
                Challenge {
                    user_id: user.id.clone(),
                    account_key: user.email.clone(),
                    created_s: now,
                    failures: 0,
                    password_hash: user.password_hash.clone(),
                    valid_after_ms: user.valid_after_ms,
                    issued_at: std::time::Instant::now(),
                },
            );
        }
        self.audit(
            AuditEvent::new(
                format!("user:{}", user.id),
                "auth.login",
                format!("user:{}", user.id),
                "mfa_pending",
            )
            .with_details(json!({ "ip": client_ip.to_string() })),
        )?;
        Ok((Secret::new(challenge), MFA_CHALLENGE_TTL_S))
    }

    /// Answers a login's MFA challenge with a TOTP or backup code; tokens on success. A wrong
    /// code is [`AuthError::MfaCodeInvalid`] and a failed login of the account; the
    /// [`MFA_FAILURES_MAX`]th ends the challenge ([`AuthError::MfaChallengeInvalid`] after).
    pub fn complete_mfa(&self, challenge: &str, code: &str, client_ip: IpAddr) -> AuthResult<TokenPair> {
        let user = self.answer_challenge(challenge, code, client_ip)?;
        // The session write re-checks the account: a password change since the challenge ends it.
        let pair = self.start_session(&user, client_ip).map_err(|e| match e {
            AuthError::InvalidCredentials => AuthError::MfaChallengeInvalid,
            other => other,
        })?;
        let actor = format!("user:{}", user.id);
        self.audit(
            AuditEvent::new(&*actor, "auth.login", &*actor, "ok").with_details(
                json!({ "ip": client_ip.to_string(), "session": pair.session_id, "mfa": true }),
            ),
        )?;
        Ok(pair)
    }

    /// Checks a challenge and its code (see [`AuthService::complete_mfa`]); the account on success.
    pub(super) fn answer_challenge(
        &self,
        challenge: &str,
        code: &str,
        client_ip: IpAddr,
    ) -> AuthResult<UserRecord> {
        if challenge.is_empty() || challenge.len() > CHALLENGE_BYTES_MAX {
            return Err(AuthError::MfaChallengeInvalid);
        }
        self.inner.limiter.check_ip(client_ip)?;
        let key = sha256_hex(challenge);
        let now = self.inner.config.clock.now_s();
        // The challenge is taken out while its code is checked: concurrent answers to one
        // challenge find none (at most one code is tried at a time, so at most
        // MFA_FAILURES_MAX guesses per challenge, and one session per challenge).
        let mut pending = {
            let mut challenges = self.inner.challenges.lock().map_err(|_| AuthError::Poisoned)?;
            match challenges.remove(&key) {
                Some(c) if c.created_s + MFA_CHALLENGE_TTL_S >= now => c,
                _ => return Err(AuthError::MfaChallengeInvalid),
            }
        };
        if let Err(e) = self.inner.limiter.begin_attempt(&pending.account_key) {
            // Rate limited is no wrong code: the challenge stays as it was.
            self.inner.challenges.lock().map_err(|_| AuthError::Poisoned)?.insert(key, pending);
            return Err(e);
        }
        let actor = format!("user:{}", pending.user_id);
        match self.check_code(&pending.user_id, code)? {
            Some(proof) => {
                self.inner.limiter.record_success(&pending.account_key)?;
                let user = self.user_record(&pending.user_id)?.ok_or(AuthError::MfaChallengeInvalid)?;
                if user.status != UserStatus::Active
                    || user.password_hash != pending.password_hash
                    || user.valid_after_ms != pending.valid_after_ms
                {
                    return Err(AuthError::MfaChallengeInvalid);
                }
                self.audit_proof(&actor, proof, "auth.mfa")?;
                Ok(user)
            }
            None => {
                // The failure was counted by `begin_attempt`.
                pending.failures += 1;
                let ended = pending.failures >= MFA_FAILURES_MAX;
                if !ended {
                    self.inner.challenges.lock().map_err(|_| AuthError::Poisoned)?.insert(key, pending);
                }
                self.audit(
                    AuditEvent::new(&*actor, "auth.mfa", &*actor, "denied")
                        .with_details(json!({ "reason": "wrong code", "challenge_ended": ended })),
                )?;
                Err(AuthError::MfaCodeInvalid)
            }
        }
    }

    /// Checks `code` (TOTP, or an unused backup code) of a confirmed enrolment and spends it:
    /// the TOTP step is recorded (a replay is refused), the backup code removed. `None` for a
    /// wrong, replayed or unusable code.
    pub(super) fn check_code(&self, user_id: &str, code: &str) -> AuthResult<Option<Proof>> {
        if code.len() > mfa::MFA_CODE_BYTES_MAX {
            return Ok(None);
        }
        let now = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_write()?;
        let proof = {
            let mut table = txn.open_table(MFA)?;
            let Some(mut record) = store::get::<MfaRecord>(&table, "mfa", user_id)? else { return Ok(None) };
            if !record.confirmed {
                return Ok(None);
            }
            let proof = if mfa::is_backup_code(code) {
                match self.sealer()?.backup_code_position(user_id, code, &record.backup_code_hashes) {
                    Some(i) => {
                        record.backup_code_hashes.remove(i);
                        Some(Proof::BackupCode)
                    }
                    None => None,
                }
            } else {
                let secret = self.sealer()?.open_sealed(user_id, &record.sealed_secret)?;
                match mfa::totp_step(&secret, code, now)? {
                    Some(step) if record.last_step.is_none_or(|last| step > last) => {
                        record.last_step = Some(step);
                        Some(Proof::Totp)
                    }
                    _ => None,
                }
            };
            if proof.is_some() {
                store::put(&mut table, user_id, &record)?;
            }
            proof
        };
        if proof.is_some() {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(proof)
    }

    pub(super) fn audit_proof(&self, actor: &str, proof: Proof, action: &str) -> AuthResult<()> {
        let via = match proof {
            Proof::Totp => "totp",
            Proof::BackupCode => "backup_code",
        };
        self.audit(AuditEvent::new(actor, action, actor, "ok").with_details(json!({ "via": via })))?;
        if proof == Proof::BackupCode {
            self.audit(AuditEvent::new(actor, "mfa.backup_code_used", actor, "ok"))?;
        }
        Ok(())
    }

    /// Starts (or restarts) the caller's enrolment: a fresh secret, sealed and stored
    /// unconfirmed, and the QR code to scan. Needs fresh auth; refused while MFA is on
    /// ([`AuthService::disable_mfa`] first).
    pub fn begin_mfa_enrolment(&self, caller: &Caller) -> AuthResult<MfaEnrolment> {
        self.require_fresh(caller)?;
        let secret = mfa::new_totp_secret()?;
        let sealed = self.sealer()?.seal(&caller.user_id, &secret)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut table = txn.open_table(MFA)?;
            if store::get::<MfaRecord>(&table, "mfa", &caller.user_id)?.is_some_and(|r| r.confirmed) {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            let record = MfaRecord {
                sealed_secret: sealed,
                confirmed: false,
                created_ms: now_ms(),
                last_step: None,
                backup_code_hashes: Vec::new(),
            };
            store::put(&mut table, &caller.user_id, &record)?;
        }
        txn.commit()?;
        let url = mfa::otpauth_url(&self.inner.config.issuer, &caller.email, &secret);
        let qr_svg = mfa::qr_svg(&url)?;
        self.audit(AuditEvent::new(caller.actor(), "mfa.enrol_begin", caller.actor(), "ok"))?;
        Ok(MfaEnrolment {
            secret_base32: Secret::new(mfa::base32(&secret)),
            otpauth_url: Secret::new(url),
            qr_svg,
        })
    }

    /// Confirms the caller's enrolment with a first TOTP code: MFA is on from now, and the ten
    /// backup codes are returned (shown once; only their hashes are kept).
    ///
    /// Sessions opened before enrolment were opened with the password alone: in the same write
    /// transaction every other session of the account is revoked and its `valid_after` stamp is
    /// bumped (ending every access token issued so far). The caller's own session stays (its
    /// `auth_time` becomes now: the code is an MFA proof) and gets a new access token here.
    pub fn confirm_mfa_enrolment_session(&self, caller: &Caller, code: &str) -> AuthResult<MfaConfirmation> {
        self.require_fresh(caller)?;
        let now = self.inner.config.clock.now_s();
        let codes = mfa::new_backup_codes()?;
        let txn = self.inner.db.begin_write()?;
        let mut revoked = Vec::new();
        let accepted = {
            let mut table = txn.open_table(MFA)?;
            let mut record = store::get::<MfaRecord>(&table, "mfa", &caller.user_id)?
                .ok_or(AuthError::NotFound { kind: "MFA enrolment" })?;
            if record.confirmed {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            let secret = self.sealer()?.open_sealed(&caller.user_id, &record.sealed_secret)?;
            match mfa::totp_step(&secret, code, now)? {
                Some(step) if code.len() <= mfa::MFA_CODE_BYTES_MAX => {
                    record.confirmed = true;
                    record.last_step = Some(step);
                    let sealer = self.sealer()?;
                    record.backup_code_hashes =
                        codes.iter().map(|c| sealer.backup_code_tag(&caller.user_id, c.expose())).collect();
                    store::put(&mut table, &caller.user_id, &record)?;
                    let mut users = txn.open_table(USERS)?;
                    let mut user: UserRecord = store::get(&users, "users", &caller.user_id)?
                        .ok_or(AuthError::NotFound { kind: "user" })?;
                    user.mfa_enabled = true;
                    user.updated_ms = now_ms();
                    user.valid_after_ms = user.updated_ms + 1;
                    store::put(&mut users, &caller.user_id, &user)?;
                    revoked = end_sessions_opened_before_mfa(&txn, caller, now)?;
                    Some(user)
                }
                _ => None,
            }
        };
        let Some(user) = accepted else {
            txn.abort()?;
            self.inner.limiter.record_failure(&caller.email)?;
            self.audit(
                AuditEvent::new(caller.actor(), "mfa.enrol", caller.actor(), "denied")
                    .with_details(json!({ "reason": "wrong code" })),
            )?;
            return Err(AuthError::MfaCodeInvalid);
        };
        txn.commit()?;
        for family in &revoked {
            self.remember_revoked(family, &caller.user_id)?;
        }
        self.audit(
            AuditEvent::new(caller.actor(), "mfa.enrol", caller.actor(), "ok")
                .with_details(json!({ "backup_codes": codes.len(), "sessions_revoked": revoked.len() })),
        )?;
        let access = match &caller.session_id {
            Some(session) if !self.session_revoked(session)? => Some(self.sign_access(&user, session, now)?),
            _ => None,
        };
        Ok(MfaConfirmation { backup_codes: codes, access, valid_after_ms: user.valid_after_ms })
    }

    /// Step-up of the caller's session with an MFA code: the session's authentication time
    /// becomes now, and a new access token carries it. Needs MFA on.
    /// Limits as for a login: `client_ip`'s budget, and the account's backoff (each attempt
    /// counts as a failure until its code is right).
    pub fn step_up_mfa(&self, caller: &Caller, code: &str, client_ip: IpAddr) -> AuthResult<(Secret, u64)> {
        self.inner.limiter.check_ip(client_ip)?;
        let session = caller.session_id.clone().ok_or(AuthError::NotFound { kind: "session" })?;
        self.inner.limiter.begin_attempt(&caller.email)?;
        let Some(proof) = self.check_code(&caller.user_id, code)? else {
            self.audit(
                AuditEvent::new(caller.actor(), "auth.step_up", caller.actor(), "denied")
                    .with_details(json!({ "reason": "wrong code" })),
            )?;
            return Err(AuthError::MfaCodeInvalid);
        };
        self.inner.limiter.record_success(&caller.email)?;
        let auth_time_s = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_write()?;
        {
            let mut families = txn.open_table(FAMILIES)?;
            let mut family: FamilyRecord = store::get(&families, "families", &session)?
                .filter(|f: &FamilyRecord| f.revoked.is_none() && f.user_id == caller.user_id)
                .ok_or(AuthError::NotFound { kind: "session" })?;
            family.auth_time_s = auth_time_s;
            store::put(&mut families, &session, &family)?;
        }
        txn.commit()?;
        let user = self.user_record(&caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        self.audit_proof(&caller.actor(), proof, "auth.step_up")?;
        self.sign_access(&user, &session, auth_time_s)
    }

    /// Turns the caller's MFA off (a current code and fresh auth needed). An account whose role
    /// requires MFA is then led to enrol again before anything else. Limits as for
    /// [`AuthService::step_up_mfa`].
    pub fn disable_mfa(&self, caller: &Caller, code: &str, client_ip: IpAddr) -> AuthResult<()> {
        self.require_fresh(caller)?;
        self.inner.limiter.check_ip(client_ip)?;
        self.inner.limiter.begin_attempt(&caller.email)?;
        let Some(proof) = self.check_code(&caller.user_id, code)? else {
            self.audit(
                AuditEvent::new(caller.actor(), "mfa.disable", caller.actor(), "denied")
                    .with_details(json!({ "reason": "wrong code" })),
            )?;
            return Err(AuthError::MfaCodeInvalid);
        };
        self.inner.limiter.record_success(&caller.email)?;
        self.remove_mfa(&caller.user_id)?;
        self.audit_proof(&caller.actor(), proof, "mfa.disable")
    }

    /// `bluewave users reset-mfa EMAIL`: removes the account's MFA (lost authenticator) and ends
    /// its sessions; audited as `cli`. Run with the server stopped.
    pub fn reset_mfa_offline(&self, email: &str) -> AuthResult<String> {
        let email = normalize_email(email)?;
        let user_id = {
            let txn = self.inner.db.begin_read()?;
            store::get::<String>(&txn.open_table(EMAILS)?, "emails", &email)?
                .ok_or(AuthError::NotFound { kind: "user" })?
        };
        self.remove_mfa(&user_id)?;
        self.bump_valid_after(&user_id)?;
        let revoked = self.revoke_all_families(&user_id, "MFA reset")?;
        self.audit(
            AuditEvent::new("cli", "mfa.reset", format!("user:{user_id}"), "ok")
                .with_details(json!({ "email": email, "sessions_revoked": revoked })),
        )?;
        Ok(user_id)
    }

    fn remove_mfa(&self, user_id: &str) -> AuthResult<()> {
        let txn = self.inner.db.begin_write()?;
        {
            txn.open_table(MFA)?.remove(user_id)?;
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            user.mfa_enabled = false;
            user.updated_ms = now_ms();
            store::put(&mut users, user_id, &user)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Unused backup codes of the caller (0 without MFA).
    pub fn backup_codes_left(&self, caller: &Caller) -> AuthResult<usize> {
        let txn = self.inner.db.begin_read()?;
        Ok(store::get::<MfaRecord>(&txn.open_table(MFA)?, "mfa", &caller.user_id)?
            .filter(|r| r.confirmed)
            .map_or(0, |r| r.backup_code_hashes.len()))
    }

    /// Whether the caller's account has MFA on.
    pub fn mfa_enabled(&self, caller: &Caller) -> AuthResult<bool> {
        Ok(self.user_record(&caller.user_id)?.is_some_and(|u| u.mfa_enabled))
    }
    /// [`AuthService::confirm_mfa_enrolment_session`] for callers that only show the backup
    /// codes: the caller's access token ends with the others (its session's refresh token still
    /// works, or the caller logs in again).
    pub fn confirm_mfa_enrolment(&self, caller: &Caller, code: &str) -> AuthResult<Vec<Secret>> {
        Ok(self.confirm_mfa_enrolment_session(caller, code)?.backup_codes)
    }
}

/// What a confirmed enrolment gives.
#[derive(Debug, Clone)]
pub struct MfaConfirmation {
    /// The ten backup codes (shown once).
    pub backup_codes: Vec<Secret>,
    /// A new access token of the caller's session and its lifetime in s (`None` when the caller's
    /// token named no live session: then the caller logs in again).
    pub access: Option<(Secret, u64)>,
    /// The account's new `valid_after` stamp (every session opened before the enrolment ends
    /// at it; [`AuthService::rotate_browser_session`] carries the enrolling browser session
    /// over it).
    pub valid_after_ms: u64,
}

/// Inside the enrolment's write transaction: revokes every live session of the caller except
/// the caller's own, whose `auth_time` becomes `now_s`. Returns the revoked family ids (for the
/// revocation set, after commit).
fn end_sessions_opened_before_mfa(
    txn: &redb::WriteTransaction,
    caller: &Caller,
    now_s: u64,
) -> AuthResult<Vec<String>> {
    let now = now_ms();
    let mut families = txn.open_table(FAMILIES)?;
    let index = txn.open_table(USER_FAMILIES)?;
    let (lo, hi) = store::user_family_range(&caller.user_id);
    let mut revoked = Vec::new();
    for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
        let (k, _) = item?;
        let fid = k.value().rsplit('/').next().unwrap_or_default().to_owned();
        let Some(mut f) = store::get::<FamilyRecord>(&families, "families", &fid)? else { continue };
        if f.revoked.is_some() {
            continue;
        }
        if caller.session_id.as_deref() == Some(fid.as_str()) {
            f.auth_time_s = now_s;
        } else {
            f.revoked = Some(Revocation { at_ms: now, reason: "MFA enrolled".into() });
            revoked.push(fid.clone());
        }
        store::put(&mut families, &fid, &f)?;
    }
    Ok(revoked)
}
