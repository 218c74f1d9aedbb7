//! Roles, permissions and the default role → permission table.
//!
//! Roles are ranked `admin > operator > analyst > customer`; `device` is outside the ranking
//! (buoys only write telemetry) and below every person. Nobody may assign a role ranked above
//! their own, nor change an account ranked above their own.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::AuthError;

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Buoys (device tokens only; cannot log in).
    Device,
    /// Paying customers: their plan's data, their own account.
    Customer,
    /// Researchers: their plan's data, SQL.
    Analyst,
    /// Runs the fleet: buoys, devices, telemetry corrections.
    Operator,
    /// Everything, including users, roles and the audit log.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 5] = [Role::Device, Role::Customer, Role::Analyst, Role::Operator, Role::Admin];

    /// Rank for escalation checks: higher may manage lower.
    pub fn rank(self) -> u8 {
        match self {
            Self::Device => 0,
            Self::Customer => 1,
            Self::Analyst => 2,
            Self::Operator => 3,
            Self::Admin => 4,
        }
    }

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Customer => "customer",
            Self::Analyst => "analyst",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// The permissions a fresh install gives this role.
    pub fn default_permissions(self) -> BTreeSet<Permission> {
        use Permission as P;
        let list: &[P] = match self {
            Self::Device => &[P::TelemetryWrite],
            Self::Customer => &[P::TelemetryRead, P::BuoysRead, P::PlansRead],
            Self::Analyst => &[P::TelemetryRead, P::BuoysRead, P::QuerySql, P::PlansRead],
            Self::Operator => &[
                P::TelemetryRead,
                P::TelemetryWrite,
                P::TelemetryDelete,
                P::BuoysRead,
                P::BuoysManage,
                P::DevicesManage,
                P::QuerySql,
                P::PlansRead,
            ],
            Self::Admin => P::ALL,
        };
        list.iter().copied().collect()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| AuthError::InvalidInput { field: "role", reason: "unknown role".into() })
    }
}

macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A permission, written `resource:action`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            /// Every permission.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The `resource:action` text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $text,)*
                }
            }
        }
    };
}

permissions! {
    /// Read readings (within the caller's plan).
    TelemetryRead = "telemetry:read",
    /// Write readings (ingest, corrections).
    TelemetryWrite = "telemetry:write",
    /// Delete readings.
    TelemetryDelete = "telemetry:delete",
    /// List and read buoys.
    BuoysRead = "buoys:read",
    /// Register, edit and remove buoys.
    BuoysManage = "buoys:manage",
    /// Issue, list and revoke device tokens.
    DevicesManage = "devices:manage",
    /// Create users, change roles, status and plans of others.
    UsersManage = "users:manage",
    /// Edit the role → permission table and rotate signing keys.
    RbacManage = "rbac:manage",
    /// Read the audit log.
    AuditRead = "audit:read",
    /// Run SQL through the query endpoint.
    QuerySql = "query:sql",
    /// Read plans.
    PlansRead = "plans:read",
    /// Create plans and assign them.
    PlansManage = "plans:manage",
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.iter().copied().find(|p| p.as_str() == s).ok_or_else(|| AuthError::InvalidInput {
            field: "permission",
            reason: "unknown permission (want resource:action from the documented list)".into(),
        })
    }
}

impl Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
