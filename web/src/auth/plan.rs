//! Data plans and the access grant they give a caller.
//!
//! A plan says which buoys, how much history, how many queries a day and how many rows per
//! answer. [`grant_for`] turns a caller's role and plan into a [`PolicyGrant`], the fields the
//! query layer's access policy is built from (the integration maps it; this crate does not
//! depend on the query crate's type).

use serde::{Deserialize, Serialize};

use super::error::{AuthError, AuthResult};
use super::rbac::Role;

/// Longest plan name, in bytes.
pub const PLAN_NAME_BYTES_MAX: usize = 128;
/// Most buoys one plan may list.
pub const PLAN_BUOYS_MAX: usize = 10_000;
/// Most plans in the store.
pub const PLANS_MAX: usize = 1_000;
/// Longest history a plan may grant, in days (100 years).
pub const PLAN_HISTORY_DAYS_MAX: u32 = 36_500;

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// Which buoys a plan covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ids")]
pub enum BuoyScope {
    /// Every buoy.
    All,
    /// Only these (validated buoy ids, sorted, no duplicates).
    List(Vec<String>),
}

/// What an admin fills in to create or replace a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    /// Display name, 1–128 bytes.
    pub name: String,
    /// Buoys covered.
    pub buoys: BuoyScope,
    /// How many days back readings are visible; `None` = all history.
    pub history_days: Option<u32>,
    /// Queries per UTC day; `None` = unlimited.
    pub daily_query_quota: Option<u32>,
    /// Most rows in one answer; `None` = the query layer's own cap.
    pub row_limit: Option<u64>,
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Id (32 hex chars).
    pub id: String,
    /// The plan's terms.
    #[serde(flatten)]
    pub spec: PlanSpec,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
}

impl PlanSpec {
    /// Validates and normalises (buoy list sorted and deduplicated).
    pub(crate) fn validated(mut self) -> AuthResult<Self> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > PLAN_NAME_BYTES_MAX || name.chars().any(char::is_control) {
            return Err(AuthError::InvalidInput {
                field: "name",
                reason: "1-128 bytes, no control characters".into(),
            });
        }
        self.name = name.to_owned();
        if let BuoyScope::List(ids) = &mut self.buoys {
            if ids.len() > PLAN_BUOYS_MAX {
                return Err(AuthError::LimitReached { what: "buoys per plan", max: PLAN_BUOYS_MAX as u64 });
            }
            for id in ids.iter() {
                bluewave_engine::BuoyId::new(id)
                    .map_err(|e| AuthError::InvalidInput { field: "buoys", reason: e.to_string() })?;
            }
            ids.sort();
            ids.dedup();
        }
        if self.history_days.is_some_and(|d| d == 0 || d > PLAN_HISTORY_DAYS_MAX) {
            return Err(AuthError::InvalidInput { field: "history_days", reason: "1-36500".into() });
        }
        if self.row_limit == Some(0) {
            return Err(AuthError::InvalidInput { field: "row_limit", reason: "must be at least 1".into() });
        }
        Ok(self)
    }
}

/// What another part decides about an account's plan (see [`PlanSource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanDecision {
    /// The source has nothing to say about this account: its assigned plan applies.
    NotDecided,
    /// The source decides: this plan (`Some`) or no plan at all (`None`).
    Decided(Option<String>),
}

/// A source of accounts' plans beside the assignment in `accounts.redb`: the shop's
/// subscriptions. [`AuthService::policy_grant`](super::AuthService::policy_grant) asks it at
/// every policy resolution (no cache), so a plan follows the source's state at once.
pub trait PlanSource: Send + Sync {
    /// The plan of `user_id` now. An error fails the resolution closed (HTTP 500, no access).
    fn plan_of(&self, user_id: &str) -> Result<PlanDecision, String>;
}

/// What a caller may read: the inputs of the query layer's access policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyGrant {
    /// Buoys the caller may see. An empty list means none (no plan).
    pub buoys: BuoyScope,
    /// Earliest visible reading time (ns since the epoch); `None` = no bound.
    pub earliest_ts_ns: Option<i64>,
    /// Most rows per answer; `None` = the query layer's own cap.
    pub max_rows: Option<u64>,
    /// Queries per UTC day; `None` = unlimited.
    pub daily_query_quota: Option<u32>,
    /// The plan the grant came from, if any.
    pub plan_id: Option<String>,
}

impl PolicyGrant {
    /// Everything (staff).
    pub fn unrestricted() -> Self {
        Self {
            buoys: BuoyScope::All,
            earliest_ts_ns: None,
            max_rows: None,
            daily_query_quota: None,
            plan_id: None,
        }
    }

    /// Nothing (no plan, devices).
    pub fn nothing() -> Self {
        Self {
            buoys: BuoyScope::List(Vec::new()),
            earliest_ts_ns: None,
            max_rows: Some(0),
            daily_query_quota: Some(0),
            plan_id: None,
        }
    }
}

/// The grant of a caller with `role` and `plan` at `now_ns`. Admins and operators see
/// everything (they run the fleet); analysts and customers see what their plan gives, and
/// nothing without a plan; devices read nothing.
pub fn grant_for(role: Role, plan: Option<&Plan>, now_ns: i64) -> PolicyGrant {
    match role {
        Role::Admin | Role::Operator => PolicyGrant::unrestricted(),
        Role::Device => PolicyGrant::nothing(),
        Role::Analyst | Role::Customer => match plan {
            None => PolicyGrant::nothing(),
            Some(plan) => PolicyGrant {
                buoys: plan.spec.buoys.clone(),
                earliest_ts_ns: plan
                    .spec
                    .history_days
                    .map(|d| now_ns.saturating_sub(i64::from(d).saturating_mul(NS_PER_DAY))),
                max_rows: plan.spec.row_limit,
                daily_query_quota: plan.spec.daily_query_quota,
                plan_id: Some(plan.id.clone()),
            },
        },
    }
}
