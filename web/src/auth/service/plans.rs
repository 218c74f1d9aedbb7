//! Data plans, their assignment, the policy grant they give, and daily query quotas.

use super::*;

impl AuthService {
    /// Creates a plan. Needs `plans:manage`.
    pub fn create_plan(&self, caller: &Caller, spec: PlanSpec) -> AuthResult<Plan> {
        self.require(caller, Permission::PlansManage, "plans.create")?;
        self.insert_plan(&caller.actor(), spec)
    }

    /// Creates a plan on behalf of the operator's command line (`bluewave shop seed-demo`, which
    /// runs with the server stopped and holds the data dir): audited as `actor`.
    pub fn create_plan_as(&self, actor: &str, spec: PlanSpec) -> AuthResult<Plan> {
        self.insert_plan(actor, spec)
    }

    /// A plan by id (`None` when there is none).
    pub fn plan(&self, plan_id: &str) -> AuthResult<Option<Plan>> {
        let txn = self.inner.db.begin_read()?;
        store::get::<Plan>(&txn.open_table(PLANS)?, "plans", plan_id)
    }

    fn insert_plan(&self, actor: &str, spec: PlanSpec) -> AuthResult<Plan> {
        let plan = Plan { id: random_id()?, spec: spec.validated()?, created_ms: now_ms() };
        let txn = self.inner.db.begin_write()?;
        {
            let mut plans = txn.open_table(PLANS)?;
            if plans.len()? >= PLANS_MAX as u64 {
                return Err(AuthError::LimitReached { what: "plans", max: PLANS_MAX as u64 });
            }
            store::put(&mut plans, &plan.id, &plan)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(actor, "plans.create", format!("plan:{}", plan.id), "ok")
                .with_details(json!({ "name": plan.spec.name, "history_days": plan.spec.history_days,
                    "daily_query_quota": plan.spec.daily_query_quota, "row_limit": plan.spec.row_limit })),
        )?;
        Ok(plan)
    }

    /// Every plan. Needs `plans:read`.
    pub fn list_plans(&self, caller: &Caller) -> AuthResult<Vec<Plan>> {
        self.authorize(caller, Permission::PlansRead)?;
        let txn = self.inner.db.begin_read()?;
        let mut out = Vec::new();
        for item in txn.open_table(PLANS)?.iter()? {
            let (k, v) = item?;
            out.push(store::decode("plans", k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Assigns (or with `None` removes) an account's plan. Needs `plans:manage` and a rank not
    /// below the account's.
    pub fn assign_plan(&self, caller: &Caller, user_id: &str, plan_id: Option<&str>) -> AuthResult<()> {
        self.require(caller, Permission::PlansManage, "plans.assign")?;
        let txn = self.inner.db.begin_write()?;
        let before;
        {
            if let Some(p) = plan_id
                && txn.open_table(PLANS)?.get(p)?.is_none()
            {
                return Err(AuthError::NotFound { kind: "plan" });
            }
            let mut users = txn.open_table(USERS)?;
            let mut user: UserRecord =
                store::get(&users, "users", user_id)?.ok_or(AuthError::NotFound { kind: "user" })?;
            if user.role.rank() > caller.role.rank() {
                return Err(AuthError::RoleEscalation { role: user.role.to_string() });
            }
            before = user.plan_id.take();
            user.plan_id = plan_id.map(str::to_owned);
            user.updated_ms = now_ms();
            store::put(&mut users, user_id, &user)?;
        }
        txn.commit()?;
        self.audit(
            AuditEvent::new(caller.actor(), "plans.assign", format!("user:{user_id}"), "ok")
                .with_details(json!({ "from": before, "to": plan_id })),
        )
    }

    /// Makes `source` (the shop's subscriptions) decide accounts' plans from now on (it
    /// replaces an earlier source). Held weakly: the source owns this service.
    pub fn set_plan_source(&self, source: std::sync::Weak<dyn PlanSource>) -> AuthResult<()> {
        *self.inner.plan_source.write().map_err(|_| AuthError::Poisoned)? = Some(source);
        Ok(())
    }

    /// The plan of account `user_id` now: the plan source's decision when it makes one (a
    /// subscription), else the account's assigned plan as stored now (not the copy in a
    /// [`Caller`], which a long-lived session such as a Postgres connection keeps).
    fn current_plan_id(&self, txn: &redb::ReadTransaction, user_id: &str) -> AuthResult<Option<String>> {
        let source = self.inner.plan_source.read().map_err(|_| AuthError::Poisoned)?.clone();
        if let Some(source) = source.and_then(|weak| weak.upgrade()) {
            match source.plan_of(user_id).map_err(AuthError::Store)? {
                PlanDecision::Decided(plan) => return Ok(plan),
                PlanDecision::NotDecided => {}
            }
        }
        let user: Option<UserRecord> = store::get(&txn.open_table(USERS)?, "users", user_id)?;
        Ok(user.and_then(|u| u.plan_id))
    }

    /// What the caller may read now, from their role and plan (see [`grant_for`]). The plan is
    /// resolved at every call ([`AuthService::set_plan_source`], then the stored assignment):
    /// no cache, so a subscription's activation or end applies to the next query.
    pub fn policy_grant(&self, caller: &Caller) -> AuthResult<PolicyGrant> {
        let plan = match caller.role {
            Role::Admin | Role::Operator | Role::Device => None,
            Role::Analyst | Role::Customer => {
                let txn = self.inner.db.begin_read()?;
                match self.current_plan_id(&txn, &caller.user_id)? {
                    None => None,
                    Some(id) => store::get::<Plan>(&txn.open_table(PLANS)?, "plans", &id)?,
                }
            }
        };
        let now_ns = i64::try_from(now_ms()).unwrap_or(i64::MAX).saturating_mul(1_000_000);
        Ok(grant_for(caller.role, plan.as_ref(), now_ns))
    }

    /// Counts one query against the caller's daily quota (UTC days); refuses with
    /// [`AuthError::QuotaExceeded`] when it is used up. Callers without a quota are not counted.
    /// Usage counters are accounting, not security state, so they are not audited.
    pub fn record_query(&self, caller: &Caller) -> AuthResult<()> {
        let Some(quota) = self.policy_grant(caller)?.daily_query_quota else { return Ok(()) };
        let key = format!("{}/{}", caller.user_id, now_s() / 86_400);
        let txn = self.inner.db.begin_write()?;
        {
            let mut usage = txn.open_table(QUERY_USAGE)?;
            let used: u32 = store::get(&usage, "query_usage", &key)?.unwrap_or(0);
            if used >= quota {
                return Err(AuthError::QuotaExceeded { quota });
            }
            store::put(&mut usage, &key, &(used + 1))?;
        }
        txn.commit()?;
        Ok(())
    }
}
