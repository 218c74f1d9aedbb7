//! Counters of the query service, read by the binary's `/metrics` collector: queries started,
//! refused, failed, timed out and completed, rows delivered, and a latency histogram. Plain
//! atomics bumped once per query (never per row), so they cost nothing on the scan path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;

/// Upper bounds (ms, inclusive) of the latency histogram's buckets; one more bucket counts
/// everything slower. Latency is from admission to the end of the result (or the error).
pub const QUERY_LATENCY_BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 1_000, 5_000, 30_000];

/// A snapshot of [`QueryService::metrics`](crate::QueryService::metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryMetrics {
    /// Queries admitted (planning began).
    pub started: u64,
    /// Queries refused: not read-only, invalid SQL or filter, outside the policy, or every
    /// slot busy (those are also in `refused_busy`).
    pub refused: u64,
    /// Of `refused`: queries turned away because `queries_max` were running.
    pub refused_busy: u64,
    /// Queries that failed while running (row or memory limit, execution or internal error).
    pub failed: u64,
    /// Queries stopped at their deadline or for producing nothing for their stall limit.
    pub timed_out: u64,
    /// Queries that delivered their whole result (or whose caller stopped reading).
    pub completed: u64,
    /// Rows handed to callers.
    pub rows: u64,
    /// Latency counts per bucket of [`QUERY_LATENCY_BUCKETS_MS`] (not cumulative), plus one
    /// last bucket for slower queries.
    pub latency_buckets: [u64; QUERY_LATENCY_BUCKETS_MS.len() + 1],
    /// Sum of every recorded latency, µs.
    pub latency_sum_us: u64,
}

/// The live counters (shared by the service and its query tasks).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    started: AtomicU64,
    refused: AtomicU64,
    refused_busy: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    completed: AtomicU64,
    rows: AtomicU64,
    latency_buckets: [AtomicU64; QUERY_LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_us: AtomicU64,
}

impl Counters {
    /// A query refused before it was admitted.
    pub(crate) fn refused(&self, error: &Error) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if matches!(error, Error::Busy { .. }) {
            self.refused_busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted query ended (`Ok` = whole result delivered) after `elapsed`, with `rows`.
    pub(crate) fn ended(&self, outcome: Result<(), &Error>, rows: u64, elapsed: Duration) {
        let counter = match outcome {
            Ok(()) => &self.completed,
            Err(Error::Timeout { .. } | Error::Stalled { .. }) => &self.timed_out,
            // Planning found the statement wrong or outside the policy: a refusal, not a fault.
            Err(
                Error::InvalidSql(_)
                | Error::Refused(_)
                | Error::PolicyDenied(_)
                | Error::InvalidFilter(_)
                | Error::TableFunctionLimit { .. },
            ) => &self.refused,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let bucket = QUERY_LATENCY_BUCKETS_MS
            .iter()
            .position(|&bound| elapsed_ms <= bound)
            .unwrap_or(QUERY_LATENCY_BUCKETS_MS.len());
        if let Some(slot) = self.latency_buckets.get(bucket) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(elapsed_us, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> QueryMetrics {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        QueryMetrics {
            started: get(&self.started),
            refused: get(&self.refused),
            refused_busy: get(&self.refused_busy),
            failed: get(&self.failed),
            timed_out: get(&self.timed_out),
            completed: get(&self.completed),
            rows: get(&self.rows),
            latency_buckets: std::array::from_fn(|i| self.latency_buckets.get(i).map_or(0, get)),
            latency_sum_us: get(&self.latency_sum_us),
        }
    }
}
