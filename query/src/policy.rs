//! Who may read what, and how much: the per-request [`AccessPolicy`] and the service-wide
//! [`QueryConfig`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::error::{Error, Result};

/// Which buoys a caller may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuoyScope {
    /// Every buoy (operators, analysts with a fleet-wide plan).
    All,
    /// Only these buoy ids. An empty set grants nothing.
    Only(BTreeSet<String>),
}

impl BuoyScope {
    /// True when `buoy` is inside the scope.
    pub fn allows(&self, buoy: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(buoy),
        }
    }
}

/// What one request may see and spend. Built by the caller from a verified identity (the web
/// crate derives it from the JWT's role and subscription); this crate never parses tokens.
///
/// The buoy scope and `earliest_ts` are enforced inside every scan of `readings` and on the
/// `buoys` table, whatever the shape of the SQL; the limits end the query with a typed error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Buoys the caller may read.
    pub buoys: BuoyScope,
    /// Oldest timestamp (ns since the epoch, inclusive) the caller may read; `None` = no limit.
    pub earliest_ts: Option<i64>,
    /// Most rows one result may hold ([`Error::RowLimit`] beyond).
    pub rows_max: u64,
    /// Memory pool of one query, bytes ([`Error::MemoryLimit`] beyond).
    pub memory_max_bytes: usize,
    /// Time budget of one query, from the call until its last batch is delivered
    /// ([`Error::Timeout`] beyond; the query is cancelled).
    pub timeout: Duration,
    /// Longest time the query may go without handing a batch to its consumer, from planning
    /// on ([`Error::Stalled`] beyond; the query is cancelled); `None` = only `timeout` applies.
    pub stall_timeout: Option<Duration>,
    /// Most rows one call of a table function (`generate_series`, `range`) may produce; a call
    /// whose arguments ask for more is refused before it runs ([`Error::TableFunctionLimit`]).
    pub table_function_rows_max: u64,
}

/// Rows an unrestricted policy may return (operators, CLI): large but finite.
pub const UNRESTRICTED_ROWS_MAX: u64 = 1 << 40;
/// Memory pool of an unrestricted query: 2 GiB.
pub const UNRESTRICTED_MEMORY_MAX_BYTES: usize = 2 << 30;
/// Time budget of an unrestricted query: one hour.
pub const UNRESTRICTED_TIMEOUT: Duration = Duration::from_secs(3_600);

impl AccessPolicy {
    /// Every buoy, all history, generous limits: for operators and the offline CLI.
    pub fn unrestricted() -> Self {
        Self {
            buoys: BuoyScope::All,
            earliest_ts: None,
            rows_max: UNRESTRICTED_ROWS_MAX,
            memory_max_bytes: UNRESTRICTED_MEMORY_MAX_BYTES,
            timeout: UNRESTRICTED_TIMEOUT,
            stall_timeout: None,
            table_function_rows_max: UNRESTRICTED_ROWS_MAX,
        }
    }

    /// A policy limited to `buoys` and to readings at or after `earliest_ts`, with the limits of
    /// [`Self::unrestricted`] (tighten them with the public fields).
    pub fn restricted(buoys: impl IntoIterator<Item = impl Into<String>>, earliest_ts: Option<i64>) -> Self {
        Self {
            buoys: BuoyScope::Only(buoys.into_iter().map(Into::into).collect()),
            earliest_ts,
            ..Self::unrestricted()
        }
    }

    /// True when the policy lets the caller see a reading of `buoy` at `ts`.
    pub fn allows(&self, buoy: &str, ts: i64) -> bool {
        self.buoys.allows(buoy) && self.earliest_ts.is_none_or(|e| ts >= e)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.memory_max_bytes < MEMORY_MIN_BYTES {
            return Err(Error::InvalidConfig(format!(
                "policy memory_max_bytes {} is below the minimum {MEMORY_MIN_BYTES}",
                self.memory_max_bytes
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidConfig("policy timeout is zero".into()));
        }
        if self.stall_timeout.is_some_and(|stall| stall.is_zero()) {
            return Err(Error::InvalidConfig("policy stall_timeout is zero".into()));
        }
        Ok(())
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn stall_timeout_ms(&self) -> Option<u64> {
        self.stall_timeout.map(|stall| u64::try_from(stall.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Smallest memory pool a query may have (1 MiB): below it nothing useful plans.
pub const MEMORY_MIN_BYTES: usize = 1 << 20;

/// Default query worker threads: 2 (on the 2-core reference box ingest keeps its own threads;
/// the OS shares the cores, but a heavy query can never occupy ingest's threads).
pub const WORKER_THREADS_DEFAULT: usize = 2;
/// Default cap on concurrently running queries.
pub const QUERIES_MAX_DEFAULT: usize = 16;
/// Default rows per Arrow batch.
pub const BATCH_ROWS_DEFAULT: usize = 8_192;
/// Default page size of a typed read when the filter gives no limit.
pub const READ_LIMIT_DEFAULT: usize = 10_000;
/// Largest page a typed read may ask for.
pub const READ_LIMIT_MAX: usize = 1_000_000;
/// Default batches buffered between a running query and its consumer.
pub const RESULT_QUEUE_BATCHES_DEFAULT: usize = 4;
/// Default largest SQL text, bytes.
pub const SQL_BYTES_MAX_DEFAULT: usize = 64 << 10;
/// Default time budget of a served (HTTP) query: 30 s.
pub const TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default stall limit of a served query (no batch for this long): 30 s, the same as the
/// budget, so it matters for plans given a longer budget in [`QueryConfig::plan_timeout_ms`].
pub const STALL_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default memory pool of a served query: 512 MiB (no spilling: beyond it the query fails).
pub const MEMORY_MAX_BYTES_DEFAULT: usize = 512 << 20;
/// Default rows one table-function call of a served query may produce: 10,000,000.
pub const TABLE_FUNCTION_ROWS_MAX_DEFAULT: u64 = 10_000_000;
/// Longest time budget a plan override may give: one hour (the unrestricted budget).
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

/// Service-wide settings of a [`crate::QueryService`]. Every queue and pool has a bound here.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// Threads of the query runtime (its own tokio runtime; ingest never runs there).
    pub worker_threads: usize,
    /// Queries running at once; the next one gets [`Error::Busy`].
    pub queries_max: usize,
    /// Target rows per Arrow batch.
    pub batch_rows: usize,
    /// Partitions a scan is split into (parallelism within one query).
    pub target_partitions: usize,
    /// Batches buffered between a query and its consumer (back-pressure beyond).
    pub result_queue_batches: usize,
    /// Longest accepted SQL text, bytes.
    pub sql_bytes_max: usize,
    /// Page size of a typed read without a limit.
    pub read_limit_default: usize,
    /// Largest page of a typed read.
    pub read_limit_max: usize,
    /// Time budget of a served query (HTTP API), ms, unless its plan is in `plan_timeout_ms`.
    /// Applied by [`QueryConfig::limit_policy`]; the offline CLI keeps its own. Default
    /// [`TIMEOUT_MS_DEFAULT`], at most [`TIMEOUT_MS_MAX`].
    pub timeout_ms: u64,
    /// Time budgets of served queries by subscription plan id (overrides `timeout_ms`), ms,
    /// each at most [`TIMEOUT_MS_MAX`]. Default empty.
    pub plan_timeout_ms: BTreeMap<String, u64>,
    /// A served query that hands no batch to its client for this long is cancelled
    /// ([`Error::Stalled`]), ms. Default [`STALL_TIMEOUT_MS_DEFAULT`].
    pub stall_timeout_ms: u64,
    /// Memory pool of a served query, bytes (no spilling). Default [`MEMORY_MAX_BYTES_DEFAULT`],
    /// at least [`MEMORY_MIN_BYTES`].
    pub memory_max_bytes: usize,
    /// Rows one table-function call of a served query may produce. Default
    /// [`TABLE_FUNCTION_ROWS_MAX_DEFAULT`].
    pub table_function_rows_max: u64,
    /// Whether time-bucket aggregates are answered from the engine's minute rollups where
    /// they suffice (every session's `bluewave.rollups` option). Answers are the same either
    /// way (sums and averages to rounding); off, every bucket is scanned from readings.
    /// Default `true`.
    pub rollups: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            worker_threads: WORKER_THREADS_DEFAULT,
            queries_max: QUERIES_MAX_DEFAULT,
            batch_rows: BATCH_ROWS_DEFAULT,
            target_partitions: WORKER_THREADS_DEFAULT,
            result_queue_batches: RESULT_QUEUE_BATCHES_DEFAULT,
            sql_bytes_max: SQL_BYTES_MAX_DEFAULT,
            read_limit_default: READ_LIMIT_DEFAULT,
            read_limit_max: READ_LIMIT_MAX,
            timeout_ms: TIMEOUT_MS_DEFAULT,
            plan_timeout_ms: BTreeMap::new(),
            stall_timeout_ms: STALL_TIMEOUT_MS_DEFAULT,
            memory_max_bytes: MEMORY_MAX_BYTES_DEFAULT,
            table_function_rows_max: TABLE_FUNCTION_ROWS_MAX_DEFAULT,
            rollups: true,
        }
    }
}

impl QueryConfig {
    /// Checks every field is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("worker_threads", self.worker_threads),
            ("queries_max", self.queries_max),
            ("batch_rows", self.batch_rows),
            ("target_partitions", self.target_partitions),
            ("result_queue_batches", self.result_queue_batches),
            ("sql_bytes_max", self.sql_bytes_max),
            ("read_limit_default", self.read_limit_default),
            ("read_limit_max", self.read_limit_max),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::InvalidConfig(format!("{name} must be positive")));
        }
        if self.read_limit_default > self.read_limit_max {
            return Err(Error::InvalidConfig("read_limit_default exceeds read_limit_max".into()));
        }
        let budgets = std::iter::once(("timeout_ms", self.timeout_ms))
            .chain(self.plan_timeout_ms.values().map(|ms| ("plan_timeout_ms", *ms)))
            .chain(std::iter::once(("stall_timeout_ms", self.stall_timeout_ms)));
        for (name, ms) in budgets {
            if ms == 0 || ms > TIMEOUT_MS_MAX {
                return Err(Error::InvalidConfig(format!(
                    "{name} must be 1..={TIMEOUT_MS_MAX} ms, not {ms}"
                )));
            }
        }
        if self.memory_max_bytes < MEMORY_MIN_BYTES {
            return Err(Error::InvalidConfig(format!(
                "memory_max_bytes {} is below the minimum {MEMORY_MIN_BYTES}",
                self.memory_max_bytes
            )));
        }
        if self.table_function_rows_max == 0 {
            return Err(Error::InvalidConfig("table_function_rows_max must be positive".into()));
        }
        Ok(())
    }

    /// The time budget of a served query under `plan_id` (the plan's override, or
    /// `timeout_ms`).
    pub fn timeout_for(&self, plan_id: Option<&str>) -> Duration {
        let ms = plan_id.and_then(|plan| self.plan_timeout_ms.get(plan)).copied().unwrap_or(self.timeout_ms);
        Duration::from_millis(ms)
    }

    /// The longest budget any served query may get (for a front's own request deadline).
    pub fn timeout_max(&self) -> Duration {
        let ms = self.plan_timeout_ms.values().copied().fold(self.timeout_ms, u64::max);
        Duration::from_millis(ms)
    }

    /// Puts the served-query limits on `policy` (built from a caller's identity): the time
    /// budget of `plan_id`, the stall limit, the memory pool and the table-function row cap,
    /// each only ever tightening what the policy already has.
    pub fn limit_policy(&self, policy: &mut AccessPolicy, plan_id: Option<&str>) {
        policy.timeout = policy.timeout.min(self.timeout_for(plan_id));
        let stall = Duration::from_millis(self.stall_timeout_ms);
        policy.stall_timeout = Some(policy.stall_timeout.map_or(stall, |own| own.min(stall)));
        policy.memory_max_bytes = policy.memory_max_bytes.min(self.memory_max_bytes);
        policy.table_function_rows_max = policy.table_function_rows_max.min(self.table_function_rows_max);
    }
}
