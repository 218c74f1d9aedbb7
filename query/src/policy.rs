//! Who may read what, and how much: the per-request [`AccessPolicy`] and the service-wide
//! [`QueryConfig`].

use std::collections::BTreeSet;
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
        Ok(())
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
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
        Ok(())
    }
}
