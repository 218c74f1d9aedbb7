//! RBAC: permission checks and the editable role → permission table.

use super::*;

impl AuthService {
    /// [`AuthService::authorize`] for state changes: a refusal is also audited (an
    /// authenticated caller probing what they may change is worth a record).
    pub(super) fn require(&self, caller: &Caller, permission: Permission, action: &str) -> AuthResult<()> {
        let result = self.authorize(caller, permission);
        if result.is_err() {
            self.audit(
                AuditEvent::new(caller.actor(), action, "-", "denied")
                    .with_details(json!({ "reason": "forbidden", "permission": permission.as_str() })),
            )?;
        }
        result
    }

    /// Ok if the caller's role has `permission`, else [`AuthError::Forbidden`]. Reading data
    /// (`telemetry:read`, `query:sql`) also needs a verified email
    /// ([`AuthError::EmailUnverified`], checked before the role so an unverified account
    /// learns what to do).
    pub fn authorize(&self, caller: &Caller, permission: Permission) -> AuthResult<()> {
        if caller.mfa_enrolment_required {
            return Err(AuthError::MfaEnrolmentRequired);
        }
        if !caller.email_verified && matches!(permission, Permission::TelemetryRead | Permission::QuerySql) {
            return Err(AuthError::EmailUnverified);
        }
        let table = self.inner.role_permissions.read().map_err(|_| AuthError::Poisoned)?;
        if table.get(&caller.role).is_some_and(|set| set.contains(&permission)) {
            Ok(())
        } else {
            Err(AuthError::Forbidden { permission: permission.to_string() })
        }
    }

    /// The current role → permission table.
    pub fn role_permissions(&self) -> AuthResult<BTreeMap<Role, BTreeSet<Permission>>> {
        Ok(self.inner.role_permissions.read().map_err(|_| AuthError::Poisoned)?.clone())
    }

    /// Replaces `role`'s permissions. Needs `rbac:manage`; a role above the caller's cannot be
    /// edited, and `admin` always keeps `rbac:manage` (no lock-out).
    pub fn set_role_permissions(
        &self,
        caller: &Caller,
        role: Role,
        permissions: BTreeSet<Permission>,
    ) -> AuthResult<()> {
        self.require(caller, Permission::RbacManage, "rbac.role_permissions.set")?;
        if role.rank() > caller.role.rank() {
            return Err(AuthError::RoleEscalation { role: role.to_string() });
        }
        if role == Role::Admin && !permissions.contains(&Permission::RbacManage) {
            return Err(AuthError::InvalidInput {
                field: "permissions",
                reason: "admin must keep rbac:manage".into(),
            });
        }
        let mut table = self.inner.role_permissions.write().map_err(|_| AuthError::Poisoned)?;
        let before = table.get(&role).cloned().unwrap_or_default();
        let txn = self.inner.db.begin_write()?;
        store::put(&mut txn.open_table(ROLE_PERMISSIONS)?, role.as_str(), &permissions)?;
        txn.commit()?;
        table.insert(role, permissions.clone());
        drop(table);
        self.audit(
            AuditEvent::new(caller.actor(), "rbac.role_permissions.set", format!("role:{role}"), "ok")
                .with_details(json!({ "before": before, "after": permissions })),
        )
    }

    /// The fresh-auth gate of sensitive actions: Ok when the caller logged in or gave an MFA code
    /// within `fresh_auth_s` (10 min by default), else [`AuthError::StepUpRequired`] (HTTP 401
    /// with a step-up hint). Not audited: a refusal changes nothing.
    pub fn require_fresh(&self, caller: &Caller) -> AuthResult<()> {
        let max_age_s = self.inner.config.fresh_auth_s;
        let now = self.inner.config.clock.now_s();
        if caller.auth_time_s > 0 && caller.auth_time_s.saturating_add(max_age_s) >= now {
            Ok(())
        } else {
            Err(AuthError::StepUpRequired { max_age_s })
        }
    }
}
