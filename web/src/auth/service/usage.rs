//! Daily query usage as its owner sees it. Queries are counted by
//! [`AuthService::record_query`] (`plans`): one per `/api/query`, `/api/telemetry` read,
//! dashboard page view, dashboard CSV export and live-stream opening, in the `query_usage`
//! table under `<user id>/<UTC day number>`, and only for callers whose plan has a quota.

use super::*;

/// Days of history [`AuthService::query_usage`] returns (today included).
pub const USAGE_HISTORY_DAYS: u64 = 7;

/// One UTC day's count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DayUsage {
    /// Days since 1970-01-01 (UTC).
    pub day: u64,
    /// Queries counted that day.
    pub used: u32,
}

/// The caller's query usage against their plan's daily quota.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueryUsage {
    /// Today, days since 1970-01-01 (UTC).
    pub day: u64,
    /// Queries counted today.
    pub used: u32,
    /// The plan's daily quota; `None` = unlimited (and not counted).
    pub quota: Option<u32>,
    /// Queries left today; `None` = unlimited.
    pub remaining: Option<u32>,
    /// Seconds until the count starts again (00:00 UTC).
    pub resets_in_s: u64,
    /// The last [`USAGE_HISTORY_DAYS`] days, oldest first, today last.
    pub history: Vec<DayUsage>,
}

impl AuthService {
    /// The caller's usage today and over the last days.
    pub fn query_usage(&self, caller: &Caller) -> AuthResult<QueryUsage> {
        let quota = self.policy_grant(caller)?.daily_query_quota;
        let now = now_s();
        let today = now / 86_400;
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(QUERY_USAGE)?;
        let mut history = Vec::new();
        for day in today.saturating_sub(USAGE_HISTORY_DAYS - 1)..=today {
            let used: u32 =
                store::get(&table, "query_usage", &format!("{}/{day}", caller.user_id))?.unwrap_or(0);
            history.push(DayUsage { day, used });
        }
        let used = history.last().map_or(0, |d| d.used);
        Ok(QueryUsage {
            day: today,
            used,
            quota,
            remaining: quota.map(|q| q.saturating_sub(used)),
            resets_in_s: 86_400 - now % 86_400,
            history,
        })
    }
}
