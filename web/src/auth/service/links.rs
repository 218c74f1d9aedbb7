//! One-time links and the flows they carry: self-registration with email verification,
//! password reset, email change.
//!
//! A link is `<link_base_url><path>?token=<256 random bits>`. The store keeps only the token's
//! SHA-256 (`links`), with its purpose, account, the address it was sent to and its expiry
//! ([`ONE_TIME_LINK_TTL_S`] on the auth clock). Following a link takes its record out in one
//! write transaction, so a link works once, even under parallel requests; an expired one is
//! taken out and refused. An account has at most one live link per purpose (a new one replaces
//! the old). Tokens are never written to the audit log or to tracing: only the mail holds them.
//!
//! Who learns what: sign-up and reset requests answer the same whether the email has an account
//! or not (the owner of an existing account gets a notice instead), and sign-up hashes the
//! password either way, so neither the answer nor its timing tells whether an account exists.

use super::*;

/// How long a one-time link works: 30 minutes.
pub const ONE_TIME_LINK_TTL_S: u64 = 30 * 60;
/// Most one-time links stored at once; beyond it new links are refused with a 503 until
/// expired ones are purged (at most one live link per account and purpose anyway).
pub const LINKS_MAX: u64 = 1_000_000;
/// Longest link token accepted before hashing (ours are 43 chars).
const LINK_TOKEN_BYTES_MAX: usize = 128;

impl LinkPurpose {
    fn path(self) -> &'static str {
        match self {
            Self::Verify => "/verify",
            Self::Reset => "/reset",
            Self::EmailChange => "/email/confirm",
        }
    }
}

impl AuthService {
    /// Self-registration: a `customer` account, unverified, and a verification link sent to
    /// `email`. Limits: the login limits (per client IP, and the account's backoff). The
    /// password rules apply (length, not the email, not one of the 10,000 most common).
    ///
    /// An email that already has an account answers `Ok` too, after the same argon2 work: the
    /// owner gets a notice mail instead of a second account (audited `users.register` denied).
    pub fn register(&self, email: &str, password: &Secret, client_ip: IpAddr) -> AuthResult<()> {
        let email = normalize_email(email)?;
        self.inner.limiter.check_ip(client_ip)?;
        self.inner.limiter.check_account(&email)?;
        password::check_password_rules(password.expose(), &email)?;
        let hash = password::hash_password(password.expose(), self.inner.config.password_params)?;
        let actor = format!("ip:{client_ip}");
        match self.insert_user_hashed(&email, hash, Role::Customer, None, false) {
            Ok(user) => {
                self.audit(
                    AuditEvent::new(&*actor, "users.register", format!("user:{}", user.id), "ok")
                        .with_details(json!({ "email": email, "role": user.role })),
                )?;
                self.send_link(&user, LinkPurpose::Verify, None)?;
                Ok(())
            }
            Err(AuthError::EmailTaken) => {
                self.audit(
                    AuditEvent::new(&*actor, "users.register", format!("email:{email}"), "denied")
                        .with_details(json!({ "reason": "email taken" })),
                )?;
                let base = &self.inner.config.mail.link_base_url;
                self.inner.mailer.send(&Mail {
                    to: email.clone(),
                    subject: "Someone tried to sign up with your address".into(),
                    text: format!(
                        "Someone (perhaps you) tried to open a BlueWave account with this address,\n\
                         which already has one. Nothing was changed.\n\n\
                         If you forgot your password, reset it here:\n{base}/reset-request\n"
                    ),
                })?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the caller a new verification link (the previous one stops working). Needs an
    /// unverified account; limited per client IP.
    pub fn resend_verification(&self, caller: &Caller, client_ip: IpAddr) -> AuthResult<()> {
        self.inner.limiter.check_ip(client_ip)?;
        let user = self.user_record(&caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        if user.email_verified {
            return Err(AuthError::InvalidInput { field: "email", reason: "already verified".into() });
        }
        self.send_link(&user, LinkPurpose::Verify, None)
    }

    /// Follows a verification link: the account's email is verified from now on.
    pub fn verify_email(&self, token: &str, client_ip: IpAddr) -> AuthResult<()> {
        self.inner.limiter.check_ip(client_ip)?;
        let link = self.take_link(token, LinkPurpose::Verify)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", &link.user_id)?.ok_or(AuthError::LinkInvalid)?;
            // A link sent to an address the account no longer has verifies nothing.
            if user.email != link.sent_to {
                return Err(AuthError::LinkInvalid);
            }
            user.email_verified = true;
            user.updated_ms = now_ms();
            store::put(&mut users, &link.user_id, &user)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(
                format!("ip:{client_ip}"),
                "users.email_verify",
                format!("user:{}", link.user_id),
                "ok",
            )
            .with_details(json!({ "email": link.sent_to })),
        )
    }

    /// Takes one attempt from the client's login budget ([`AuthError::RateLimited`] when it
    /// is spent): the limit of [`AuthService::request_password_reset`], which the HTTP layer
    /// checks before it answers and runs the request itself after.
    pub fn check_request_limit(&self, client_ip: IpAddr) -> AuthResult<()> {
        self.inner.limiter.check_ip(client_ip)
    }

    /// Asks for a password-reset link for `email`. Answers `Ok` whether or not the account
    /// exists (only an active account gets a mail). Not limited here: check
    /// [`AuthService::check_request_limit`] first.
    pub fn request_password_reset(&self, email: &str, client_ip: IpAddr) -> AuthResult<()> {
        let Ok(email) = normalize_email(email) else { return Ok(()) };
        let user = {
            let txn = self.inner.db.begin_read()?;
            match store::get::<String>(&txn.open_table(EMAILS)?, "emails", &email)? {
                Some(id) => store::get::<UserRecord>(&txn.open_table(USERS)?, "users", &id)?,
                None => None,
            }
        };
        let Some(user) = user.filter(|u| u.status == UserStatus::Active) else { return Ok(()) };
        self.send_link(&user, LinkPurpose::Reset, None)?;
        self.audit(AuditEvent::new(
            format!("ip:{client_ip}"),
            "users.password_reset_request",
            format!("user:{}", user.id),
            "ok",
        ))
    }

    /// Follows a reset link with a new password: the password changes, and every session of the
    /// account ends (browser sessions, refresh families and their access tokens). The email
    /// counts as verified (the link reached it). The account's login backoff is cleared.
    pub fn reset_password(&self, token: &str, new_password: &Secret, client_ip: IpAddr) -> AuthResult<()> {
        self.inner.limiter.check_ip(client_ip)?;
        if new_password.expose().len() > password::PASSWORD_BYTES_MAX {
            return Err(AuthError::WeakPassword("longer than 1024 bytes"));
        }
        // The rules are checked before the link is spent, so a weak password can be retried.
        let key = link_key(token)?;
        let peek: LinkRecord = {
            let txn = self.inner.db.begin_read()?;
            store::get(&txn.open_table(LINKS)?, "links", &key)?.ok_or(AuthError::LinkInvalid)?
        };
        password::check_password_rules(new_password.expose(), &peek.sent_to)?;
        let hash = password::hash_password(new_password.expose(), self.inner.config.password_params)?;
        let link = self.take_link(token, LinkPurpose::Reset)?;
        let email;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", &link.user_id)?.ok_or(AuthError::LinkInvalid)?;
            if user.email != link.sent_to || user.status != UserStatus::Active {
                return Err(AuthError::LinkInvalid);
            }
            user.password_hash = hash;
            user.email_verified = true;
            user.updated_ms = now_ms();
            user.valid_after_ms = user.updated_ms + 1;
            email = user.email.clone();
            store::put(&mut users, &link.user_id, &user)?;
        }
        txn.commit()?;
        let families = self.revoke_all_families(&link.user_id, "password reset")?;
        let browsers = self.delete_all_browser_sessions(&link.user_id, None)?;
        self.inner.limiter.record_success(&email)?;
        self.audit(
            AuditEvent::new(
                format!("ip:{client_ip}"),
                "users.password_reset",
                format!("user:{}", link.user_id),
                "ok",
            )
            .with_details(json!({ "sessions_revoked": families, "browser_sessions_ended": browsers })),
        )
    }

    /// Asks to move the caller's account to `new_email` (fresh authentication needed): a link
    /// goes to the new address, and the account switches only when it is followed. A new
    /// address that already has an account gets a notice instead (the answer is the same).
    pub fn request_email_change(
        &self,
        caller: &Caller,
        new_email: &str,
        client_ip: IpAddr,
    ) -> AuthResult<()> {
        self.require_fresh(caller)?;
        self.inner.limiter.check_ip(client_ip)?;
        let new_email = normalize_email(new_email)?;
        let user = self.user_record(&caller.user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
        if new_email == user.email {
            return Err(AuthError::InvalidInput {
                field: "email",
                reason: "that is your current address".into(),
            });
        }
        let taken = {
            let txn = self.inner.db.begin_read()?;
            txn.open_table(EMAILS)?.get(new_email.as_str())?.is_some()
        };
        if taken {
            self.inner.mailer.send(&Mail {
                to: new_email.clone(),
                subject: "BlueWave: address already in use".into(),
                text: "Someone asked to move a BlueWave account to this address, which already has\n\
                       an account. Nothing was changed.\n"
                    .into(),
            })?;
        } else {
            self.send_link(&user, LinkPurpose::EmailChange, Some(&new_email))?;
        }
        self.audit(
            AuditEvent::new(caller.actor(), "users.email_change_request", caller.actor(), "ok")
                .with_details(json!({ "to": new_email })),
        )
    }

    /// Follows an email-change link: the account's address becomes the new one (verified), if
    /// no other account took it meanwhile ([`AuthError::EmailTaken`]). The old address gets a
    /// notice.
    pub fn confirm_email_change(&self, token: &str, client_ip: IpAddr) -> AuthResult<()> {
        self.inner.limiter.check_ip(client_ip)?;
        let link = self.take_link(token, LinkPurpose::EmailChange)?;
        let new_email = link.new_email.clone().ok_or(AuthError::LinkInvalid)?;
        let txn = self.inner.db.begin_write()?;
        {
            let mut users = txn.open_table(USERS)?;
            let mut emails = txn.open_table(EMAILS)?;
            let mut user: UserRecord =
                store::get(&users, "users", &link.user_id)?.ok_or(AuthError::LinkInvalid)?;
            // A link sent before the address changed otherwise, or before the account was
            // disabled, moves nothing.
            if user.email != link.sent_to || user.status != UserStatus::Active {
                return Err(AuthError::LinkInvalid);
            }
            if emails.get(new_email.as_str())?.is_some() {
                return Err(AuthError::EmailTaken);
            }
            emails.remove(user.email.as_str())?;
            store::put(&mut emails, &new_email, &user.id)?;
            user.email = new_email.clone();
            user.email_verified = true;
            user.updated_ms = now_ms();
            store::put(&mut users, &link.user_id, &user)?;
        }
        txn.commit()?;
        self.inner.mailer.send(&Mail {
            to: link.sent_to.clone(),
            subject: "BlueWave: your sign-in address changed".into(),
            text: "The address of your BlueWave account was changed to another one. If this was\n\
                   not you, contact your administrator.\n"
                .into(),
        })?;
        self.audit(
            AuditEvent::new(
                format!("user:{}", link.user_id),
                "users.email_change",
                format!("user:{}", link.user_id),
                "ok",
            )
            .with_details(json!({ "from": link.sent_to, "to": new_email, "ip": client_ip.to_string() })),
        )
    }

    /// Refuses a caller whose email is not verified ([`AuthError::EmailUnverified`]): the
    /// gate of buying and querying (the storefront calls it before an order).
    pub fn require_verified(&self, caller: &Caller) -> AuthResult<()> {
        if caller.email_verified { Ok(()) } else { Err(AuthError::EmailUnverified) }
    }

    /// Makes a link of `purpose` for `user` (replacing a live one of the same purpose) and
    /// mails it: to `new_email` for an email change, else to the account's address.
    fn send_link(&self, user: &UserRecord, purpose: LinkPurpose, new_email: Option<&str>) -> AuthResult<()> {
        let token = random_token()?;
        let key = sha256_hex(&token);
        let record = LinkRecord {
            purpose,
            user_id: user.id.clone(),
            sent_to: user.email.clone(),
            expires_s: self.inner.config.clock.now_s().saturating_add(ONE_TIME_LINK_TTL_S),
            new_email: new_email.map(str::to_owned),
        };
        let txn = self.inner.db.begin_write()?;
        {
            let mut links = txn.open_table(LINKS)?;
            let mut index = txn.open_table(USER_LINKS)?;
            let (lo, hi) = store::user_family_range(&user.id);
            let mut stale = Vec::new();
            for item in index.range::<&str>(lo.as_str()..hi.as_str())? {
                let (k, _) = item?;
                let index_key = k.value().to_owned();
                let link_key = index_key.rsplit('/').next().unwrap_or_default().to_owned();
                match store::get::<LinkRecord>(&links, "links", &link_key)? {
                    Some(old) if old.purpose != purpose => {}
                    _ => stale.push((index_key, link_key)),
                }
            }
            for (index_key, link_key) in stale {
                index.remove(index_key.as_str())?;
                links.remove(link_key.as_str())?;
            }
            if links.len()? >= LINKS_MAX {
                return Err(AuthError::Unavailable { what: "one-time links", retry_after_secs: 60 });
            }
            store::put(&mut links, &key, &record)?;
            store::put(&mut index, &store::user_family_key(&user.id, &key), &())?;
        }
        txn.commit()?;
        let url = format!("{}{}?token={token}", self.inner.config.mail.link_base_url, purpose.path());
        let minutes = ONE_TIME_LINK_TTL_S / 60;
        let (to, subject, text) = match purpose {
            LinkPurpose::Verify => (
                user.email.clone(),
                "Verify your BlueWave address",
                format!(
                    "Open this link to verify your address (it works once, for {minutes} minutes):\n{url}\n"
                ),
            ),
            LinkPurpose::Reset => (
                user.email.clone(),
                "Reset your BlueWave password",
                format!(
                    "Open this link to choose a new password (it works once, for {minutes} minutes):\n{url}\n\n\
                     Every session of your account ends when you do. If you did not ask, ignore this mail.\n"
                ),
            ),
            LinkPurpose::EmailChange => (
                new_email.unwrap_or(&user.email).to_owned(),
                "Confirm your new BlueWave address",
                format!(
                    "Open this link to make this your BlueWave sign-in address (it works once, for {minutes} minutes):\n{url}\n"
                ),
            ),
        };
        self.inner.mailer.send(&Mail { to, subject: subject.into(), text })?;
        Ok(())
    }

    /// Takes the link of `token` out of the store if it is of `purpose` and unexpired
    /// ([`AuthError::LinkInvalid`] otherwise; an expired one is removed too).
    fn take_link(&self, token: &str, purpose: LinkPurpose) -> AuthResult<LinkRecord> {
        let key = link_key(token)?;
        let now = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_write()?;
        let record = {
            let mut links = txn.open_table(LINKS)?;
            let record: LinkRecord = store::get(&links, "links", &key)?.ok_or(AuthError::LinkInvalid)?;
            if record.purpose != purpose {
                return Err(AuthError::LinkInvalid);
            }
            links.remove(key.as_str())?;
            txn.open_table(USER_LINKS)?.remove(store::user_family_key(&record.user_id, &key).as_str())?;
            record
        };
        txn.commit()?;
        if record.expires_s < now {
            return Err(AuthError::LinkInvalid);
        }
        Ok(record)
    }

    /// Removes expired links (housekeeping at open); returns how many.
    pub(super) fn purge_expired_links(&self) -> AuthResult<u64> {
        let now = self.inner.config.clock.now_s();
        let txn = self.inner.db.begin_write()?;
        let mut purged = 0;
        {
            let mut links = txn.open_table(LINKS)?;
            let mut index = txn.open_table(USER_LINKS)?;
            let mut expired = Vec::new();
            for item in links.iter()? {
                let (k, v) = item?;
                let record: LinkRecord = store::decode("links", k.value(), v.value())?;
                if record.expires_s < now {
                    expired.push((k.value().to_owned(), record.user_id));
                }
            }
            for (key, user_id) in expired {
                links.remove(key.as_str())?;
                index.remove(store::user_family_key(&user_id, &key).as_str())?;
                purged += 1;
            }
        }
        txn.commit()?;
        Ok(purged)
    }
}

/// The store key of a link token (its SHA-256), refusing empty and oversized tokens.
fn link_key(token: &str) -> AuthResult<String> {
    if token.is_empty() || token.len() > LINK_TOKEN_BYTES_MAX {
        return Err(AuthError::LinkInvalid);
    }
    Ok(sha256_hex(token))
}
