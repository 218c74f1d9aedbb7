//! Engine counters, lock-free, for export by the server (`/metrics`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Buckets of the fsync latency histogram: bucket `i` counts syncs of `< 2^i` µs
/// (the last bucket takes everything slower).
pub const FSYNC_BUCKETS: usize = 24;

/// Counters of one engine; read them with [`EngineMetrics::snapshot`].
#[derive(Debug, Default)]
pub struct EngineMetrics {
    pub(crate) readings_ingested: AtomicU64,
    pub(crate) batches_ingested: AtomicU64,
    pub(crate) batches_duplicate: AtomicU64,
    pub(crate) batches_refused_busy: AtomicU64,
    pub(crate) batches_refused_compaction_debt: AtomicU64,
    pub(crate) readings_out_of_range: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) wal_records: AtomicU64,
    pub(crate) wal_bytes: AtomicU64,
    pub(crate) fsync_micros: [AtomicU64; FSYNC_BUCKETS],
    pub(crate) flushes: AtomicU64,
    pub(crate) flush_micros_total: AtomicU64,
    pub(crate) flush_bytes: AtomicU64,
    pub(crate) flush_rows: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) compactions_yielded: AtomicU64,
    pub(crate) partitions_dropped: AtomicU64,
    pub(crate) batches_refused_memory: AtomicU64,
    pub(crate) compactions_narrowed: AtomicU64,
    pub(crate) retention_files_rewritten: AtomicU64,
    pub(crate) retention_rows_removed: AtomicU64,
    pub(crate) rollups_written: AtomicU64,
    pub(crate) rollups_skipped: AtomicU64,
}

impl EngineMetrics {
    pub(crate) fn record_fsync(&self, micros: u64) {
        let bucket = (64 - micros.leading_zeros() as usize).min(FSYNC_BUCKETS - 1);
        self.fsync_micros[bucket].fetch_add(1, Relaxed);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            readings_ingested: self.readings_ingested.load(Relaxed),
            batches_ingested: self.batches_ingested.load(Relaxed),
            batches_duplicate: self.batches_duplicate.load(Relaxed),
            batches_refused_busy: self.batches_refused_busy.load(Relaxed),
            batches_refused_compaction_debt: self.batches_refused_compaction_debt.load(Relaxed),
            readings_out_of_range: self.readings_out_of_range.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            wal_records: self.wal_records.load(Relaxed),
            wal_bytes: self.wal_bytes.load(Relaxed),
            fsync_micros_log2: std::array::from_fn(|i| self.fsync_micros[i].load(Relaxed)),
            flushes: self.flushes.load(Relaxed),
            flush_micros_total: self.flush_micros_total.load(Relaxed),
            flush_bytes: self.flush_bytes.load(Relaxed),
            flush_rows: self.flush_rows.load(Relaxed),
            compactions: self.compactions.load(Relaxed),
            compactions_yielded: self.compactions_yielded.load(Relaxed),
            partitions_dropped: self.partitions_dropped.load(Relaxed),
            batches_refused_memory: self.batches_refused_memory.load(Relaxed),
            compactions_narrowed: self.compactions_narrowed.load(Relaxed),
            retention_files_rewritten: self.retention_files_rewritten.load(Relaxed),
            retention_rows_removed: self.retention_rows_removed.load(Relaxed),
            rollups_written: self.rollups_written.load(Relaxed),
            rollups_skipped: self.rollups_skipped.load(Relaxed),
            buffer_bytes: 0,
            queue_depth: 0,
            compaction_generations_max: 0,
            compaction_generations_total: 0,
            compaction_partitions_waiting: 0,
            compaction_bytes_waiting: 0,
            memory_bytes_max: 0,
            memory_used_bytes: 0,
            memory_high_water_bytes: 0,
            memory_ingest_bytes: 0,
            memory_flush_bytes: 0,
            memory_compaction_bytes: 0,
            memory_query_cache_bytes: 0,
            memory_refusals: 0,
        }
    }
}

/// Point-in-time values of the engine's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Readings stored (duplicates excluded).
    pub readings_ingested: u64,
    /// Batches stored.
    pub batches_ingested: u64,
    /// Batches acknowledged as duplicates.
    pub batches_duplicate: u64,
    /// Batches refused with `Busy` (any reason).
    pub batches_refused_busy: u64,
    /// Of those, batches refused with `Busy(CompactionDebt)`.
    pub batches_refused_compaction_debt: u64,
    /// Readings flagged out of range.
    pub readings_out_of_range: u64,
    /// Deletes logged.
    pub deletes: u64,
    /// WAL records (group commits) written.
    pub wal_records: u64,
    /// WAL bytes written.
    pub wal_bytes: u64,
    /// fsync latency histogram, bucket `i` = syncs under `2^i` µs.
    pub fsync_micros_log2: [u64; FSYNC_BUCKETS],
    /// Flushes committed.
    pub flushes: u64,
    /// Time spent in committed flushes, µs.
    pub flush_micros_total: u64,
    /// Parquet bytes written by flushes.
    pub flush_bytes: u64,
    /// Rows written by flushes.
    pub flush_rows: u64,
    /// Compactions committed.
    pub compactions: u64,
    /// Compactions that gave up because the engine was stopping (nothing written; the next
    /// open compacts).
    pub compactions_yielded: u64,
    /// Partition files dropped by retention.
    pub partitions_dropped: u64,
    /// Partition files retention rewrote without their expired metrics.
    pub retention_files_rewritten: u64,
    /// Rows retention removed (dropped files and rewritten ones).
    pub retention_rows_removed: u64,
    /// Minute rollups written beside readings files (flushes, compactions, retention).
    pub rollups_written: u64,
    /// Readings files written without their rollup because the memory budget refused it.
    pub rollups_skipped: u64,
    /// Bytes in the in-memory buffer now.
    pub buffer_bytes: u64,
    /// Batches waiting in lane queues now.
    pub queue_depth: u64,
    /// Compaction debt now: most flush generations in one partition (ingest slows at
    /// `compaction_debt_slowdown_generations`, answers busy at `compaction_debt_busy_generations`).
    pub compaction_generations_max: u64,
    /// Compaction debt now: flush generations summed over all partitions.
    pub compaction_generations_total: u64,
    /// Compaction debt now: partitions holding more than one generation.
    pub compaction_partitions_waiting: u64,
    /// Compaction debt now: bytes of the files of those partitions, which compaction rewrites.
    pub compaction_bytes_waiting: u64,
    /// Of the batches refused busy, those refused `Busy(MemoryBudget)`.
    pub batches_refused_memory: u64,
    /// Compactions that merged fewer generations than due because the whole run could never
    /// fit the memory budget.
    pub compactions_narrowed: u64,
    /// The memory budget, `memory_bytes_max`.
    pub memory_bytes_max: u64,
    /// Bytes reserved against the budget now (all consumers).
    pub memory_used_bytes: u64,
    /// Most bytes ever reserved at once since open (never above `memory_bytes_max` but for a
    /// WAL replayed at open that a larger budget wrote).
    pub memory_high_water_bytes: u64,
    /// Reserved now by ingest: queued batches and buffered chunks (chunks a snapshot still
    /// holds included).
    pub memory_ingest_bytes: u64,
    /// Reserved now by flushes.
    pub memory_flush_bytes: u64,
    /// Reserved now by compactions.
    pub memory_compaction_bytes: u64,
    /// Reserved by the query side's caches.
    pub memory_query_cache_bytes: u64,
    /// Reservations refused since open (an ingest refused, a compaction that took smaller
    /// slices or fewer files; a flush or compaction waiting for memory is not counted).
    pub memory_refusals: u64,
}
