//! Accounts: the first admin, creation, listing, role and status changes, password changes.

use super::*;

impl AuthService {
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

    pub(super) fn count_role(&self, role: Role) -> AuthResult<u64> {
        let txn = self.inner.db.begin_read()?;
        count_active(&txn.open_table(USERS)?, role)
    }

    pub(super) fn insert_user(
        &self,
        email: &str,
        password: &Secret,
        role: Role,
        plan_id: Option<String>,
    ) -> AuthResult<UserRecord> {
        password::check_password_rules(password.expose(), email)?;
        let hash = password::hash_password(password.expose(), self.inner.config.password_params)?;
        self.insert_user_hashed(email, hash, role, plan_id, true)
    }

    /// Stores a new account with an already computed hash (`email` normalised, password rules
    /// checked by the caller). [`AuthError::EmailTaken`] when the email has an account.
    pub(super) fn insert_user_hashed(
        &self,
        email: &str,
        hash: String,
        role: Role,
        plan_id: Option<String>,
        email_verified: bool,
    ) -> AuthResult<UserRecord> {
        if role == Role::Device {
            return Err(AuthError::InvalidInput {
                field: "role",
                reason: "device is for device tokens only".into(),
            });
        }
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
            mfa_enabled: false,
            email_verified,
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

    /// Creates an account. Needs `users:manage` and fresh auth; the role may not be above the
    /// caller's.
    pub fn create_user(&self, caller: &Caller, new: NewUser) -> AuthResult<UserInfo> {
        self.require(caller, Permission::UsersManage, "users.create")?;
        self.require_fresh(caller)?;
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
        self.require_fresh(caller)?;
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
        self.require_fresh(caller)?;
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
    pub(super) fn update_user(
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

    pub(super) fn user_record(&self, user_id: &str) -> AuthResult<Option<UserRecord>> {
        let txn = self.inner.db.begin_read()?;
        store::get(&txn.open_table(USERS)?, "users", user_id)
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
