//! Engine configuration: every bound is a named field with a documented default.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::partition::PartitionWriteOptions;
use crate::retention::Retention;
use crate::types::{DEFAULT_METRIC_RANGES, NANOS_PER_SECOND, PhysicalRange};

/// Whether an acknowledgement waits for `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Ack only after the WAL record is fsynced (the default; the only production setting).
    Strict,
    /// No fsync at all: an OS crash loses acknowledged data. For benchmarks only; the engine
    /// logs a warning when opened this way.
    Relaxed,
}

/// Length of a time partition, validated: at least one minute, divides a day evenly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionDuration(i64);

impl PartitionDuration {
    /// One hour, the default.
    pub const HOUR: Self = Self(3_600 * NANOS_PER_SECOND);

    /// Validates a partition length.
    pub fn new(d: Duration) -> Result<Self> {
        let ns =
            i64::try_from(d.as_nanos()).map_err(|_| Error::Config("partition duration too long".into()))?;
        let day = 86_400 * NANOS_PER_SECOND;
        if ns < 60 * NANOS_PER_SECOND || day % ns != 0 {
            return Err(Error::Config(format!(
                "partition duration of {d:?} must be at least one minute and divide a day evenly"
            )));
        }
        Ok(Self(ns))
    }

    /// Length in ns.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// Start of the partition holding `ts`.
    #[inline]
    pub fn start_of(self, ts: i64) -> i64 {
        ts.div_euclid(self.0) * self.0
    }
}

/// Configuration of [`crate::Engine::open`].
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Data directory (default `./bluewave-data`); holds `wal/`, `parquet/`, `catalog.redb`.
    pub data_dir: PathBuf,
    /// WAL lanes, each with one writer thread; buoys are sharded across them.
    /// Default: the number of cores.
    pub lanes: usize,
    /// Batches waiting per lane before ingest answers `Busy(QueueFull)`. Default 1,024.
    pub queue_depth: usize,
    /// Bytes of batches queued across all lanes (not yet written) before ingest answers
    /// `Busy(QueueFull)`; bounds queue memory whatever the batch sizes. Default 64 MiB.
    pub queue_bytes_max: usize,
    /// fsync policy. Default [`Durability::Strict`].
    pub durability: Durability,
    /// Most payload bytes one group commit (one WAL record) gathers. Default 8 MiB.
    pub group_bytes_max: usize,
    /// A WAL segment is closed once it passes this size. Default 64 MiB.
    pub wal_segment_bytes: u64,
    /// Buffered bytes that start a flush. Default 96 MiB (3 M rows of the benchmark fleet). A
    /// smaller flush holds a core for less time, so acks wait less behind it: 60 s runs at
    /// 2 M readings/s gave ack p99 13.8 and 17.6 ms at 64 MiB against 16–25 ms (median 21.9 of
    /// eleven) at 96 MiB, with open throttle within the runs' spread (3.91–3.98 against
    /// 3.49–4.62 M/s). But with 16 analysts querying while 500,000 readings/s arrive, 64 MiB
    /// gave 242 and 320 one-buoy queries/s and ingest ack p99 93 and 126 ms, against 365–386
    /// and 33–56 ms at 96 MiB (more, smaller files to read and compact; BENCHMARKS.md, sixth
    /// session). 64 MiB suits a server that ingests far more than it answers.
    pub flush_buffer_bytes: usize,
    /// Buffered bytes at which ingest answers `Busy(BufferFull)` until a flush frees memory.
    /// Default 256 MiB. Must be above `flush_buffer_bytes`.
    pub buffer_bytes_max: usize,
    /// Oldest buffered data is flushed after this long. Default 60 s.
    pub flush_interval_ms: u64,
    /// Threads a flush or compaction sorts and encodes on (the flusher's own thread is one of
    /// them): partitions are merged and files encoded in parallel. 1..=64; default: the number of
    /// cores.
    pub flush_threads: usize,
    /// Nice value (Linux scheduling priority, 0..=19) the flusher runs at, and so the threads it
    /// starts: a flush then yields the cores to the WAL writers and the network threads that
    /// ack batches, and takes what they leave (at weight 335 against their 1,024). The cost:
    /// while the buffer is full, ingest waits on a flush that competes at that weight. On two
    /// cores at 2 M readings/s the one clean A/B (one binary, the flusher reniced from outside)
    /// gave ack p99 19.7 ms at 5 against 24.2 ms at 0; 60 s runs of the shipped defaults gave
    /// 16–25 ms (median 21.9 of eleven), two at 0 gave 21.5 and 31.0 ms; open throttle was
    /// 3.49–4.62 M/s at 5 and 3.95 M/s at 0 (BENCHMARKS.md, sixth session). An earlier flusher,
    /// on a saturated machine, filled the buffer at 5: flushes cost half the CPU now. 0 leaves
    /// the flusher at the server's own priority; a server started at a higher nice keeps its
    /// own (a thread cannot raise its priority without privilege). Other systems ignore it.
    /// Default 5.
    pub flush_nice: i32,
    /// Time partition length. Default one hour.
    pub partition_duration: PartitionDuration,
    /// Fan-in of the size-tiered compaction of a partition still being written: this many
    /// consecutive flush generations of one size tier (sizes within a factor of this number)
    /// are merged into one of the next tier, by the compactor thread, while ingest goes on;
    /// at twice this many generations of mixed sizes, the lightest run of this many is merged.
    /// Default 4. At least 2.
    pub compaction_files_min: usize,
    /// Most rows a compaction holds in memory at once (about 130 bytes a row at peak), shared
    /// by its inputs: it streams them slice by slice, so a compaction may rewrite any number of
    /// rows (one flush above this bound is compacted all the same). Default 2,000,000.
    pub compaction_rows_max: usize,
    /// Whether the compactor thread compacts on its own: tiered runs of the partitions being
    /// written, and folds of closed partitions (a newer one has files) into one generation, as
    /// soon as they are due, beside ingest. `false` leaves only explicit [`crate::Engine::compact`]
    /// and retention (tests and tools that want files to stay as flushed). Default `true`.
    pub compaction_background: bool,
    /// Nice value (Linux, 0..=19) the compactor thread runs at, and so the threads it starts:
    /// above `flush_nice`, so a flush (which frees the buffer ingest waits on) takes the cores
    /// first and compaction takes what ingest and flushes leave (weight 110 at 10 against 335
    /// at 5 and 1,024 at 0). Default 10.
    pub compaction_nice: i32,
    /// Compaction debt (most flush generations in one partition) at which ingest slows down: a
    /// network server waits (bounded by its own busy-wait) before handing a batch over, so acks
    /// take longer and senders' windows throttle them (`Engine::ingest_throttled`,
    /// `Engine::ingest_room`). Default 32.
    pub compaction_debt_slowdown_generations: usize,
    /// Compaction debt at which ingest answers `Busy(CompactionDebt)` with a retry delay, until
    /// the compactor brings the debt back under it: the engine never takes more than it can keep
    /// compacted. Default 64; above `compaction_debt_slowdown_generations`.
    pub compaction_debt_busy_generations: usize,
    /// How long readings are kept, for every metric and per metric ([`Retention`]): the
    /// compactor drops the files of partitions that ended longer ago than that, and rewrites
    /// a file whose metrics expire at different times without the expired ones. Default: keep
    /// everything.
    pub retention: Retention,
    /// One memory budget for the buffer (and the batches queued for it), the flush and
    /// compaction working sets and the query-side caches ([`crate::MemoryBudget`]): their
    /// reservations together never pass it. A quarter of it is kept for flushes (they free the
    /// buffer), which take a partition in pieces that fit; ingest answers
    /// `Busy(MemoryBudget)` when the rest is taken, a compaction merges smaller slices or
    /// fewer files, or waits. `buffer_bytes_max + queue_bytes_max` must fit in the other three
    /// quarters. Default 1 GiB; at least 16 MiB.
    pub memory_bytes_max: usize,
    /// Physical range per metric name; readings outside are flagged `out_of_range`.
    pub metric_ranges: HashMap<String, PhysicalRange>,
    /// Parquet writer settings.
    pub partition_write: PartitionWriteOptions,
    /// Whether flushes, compactions and retention rewrites write each readings file's minute
    /// rollup beside it (`engine/ROLLUPS.md`), from the rows they already hold, for queries
    /// that ask for time buckets. Its memory comes from the same budget, without waiting: a
    /// rollup the budget refuses is skipped (`rollups_skipped`) and its file read from its
    /// readings. Default `true`.
    pub rollups: bool,
}

/// Most WAL lanes, and most flush threads.
const LANES_MAX: usize = 64;

/// Smallest `memory_bytes_max` accepted.
pub const MEMORY_BYTES_MIN: usize = 16 << 20;

impl EngineConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            lanes: std::thread::available_parallelism().map_or(2, |n| n.get()).min(LANES_MAX),
            queue_depth: 1_024,
            queue_bytes_max: 64 << 20,
            durability: Durability::Strict,
            group_bytes_max: 8 << 20,
            wal_segment_bytes: 64 << 20,
            flush_buffer_bytes: 96 << 20,
            buffer_bytes_max: 256 << 20,
            flush_interval_ms: 60_000,
            flush_threads: std::thread::available_parallelism().map_or(2, |n| n.get()).min(LANES_MAX),
            flush_nice: 5,
            partition_duration: PartitionDuration::HOUR,
            compaction_files_min: 4,
            compaction_rows_max: 2_000_000,
            compaction_background: true,
            compaction_nice: 10,
            compaction_debt_slowdown_generations: 32,
            compaction_debt_busy_generations: 64,
            retention: Retention::default(),
            memory_bytes_max: 1 << 30,
            metric_ranges: DEFAULT_METRIC_RANGES
                .iter()
                .map(|&(name, min, max)| (name.to_owned(), PhysicalRange { min, max }))
                .collect(),
            partition_write: PartitionWriteOptions::default(),
            rollups: true,
        }
    }

    /// Bytes of `memory_bytes_max` kept for flushes: a quarter. Other consumers are refused
    /// once the reservations held reach the other three quarters.
    pub fn flush_reserve_bytes(&self) -> usize {
        self.memory_bytes_max / 4
    }

    /// Checks the relations between fields.
    pub fn validate(&self) -> Result<()> {
        if self.lanes == 0 || self.lanes > LANES_MAX {
            return Err(Error::Config(format!("lanes must be 1..={LANES_MAX}, got {}", self.lanes)));
        }
        if self.flush_threads == 0 || self.flush_threads > LANES_MAX {
            return Err(Error::Config(format!(
                "flush_threads must be 1..={LANES_MAX}, got {}",
                self.flush_threads
            )));
        }
        if !(0..=19).contains(&self.flush_nice) {
            return Err(Error::Config(format!("flush_nice must be 0..=19, got {}", self.flush_nice)));
        }
        if self.queue_depth == 0 {
            return Err(Error::Config("queue_depth must be at least 1".into()));
        }
        if self.queue_bytes_max < crate::wal::RECORD_PAYLOAD_MAX / 16 {
            return Err(Error::Config("queue_bytes_max must be at least 4 MiB (one full batch)".into()));
        }
        if self.buffer_bytes_max <= self.flush_buffer_bytes {
            return Err(Error::Config("buffer_bytes_max must be above flush_buffer_bytes".into()));
        }
        if self.group_bytes_max < 1 << 16 || self.group_bytes_max > crate::wal::RECORD_PAYLOAD_MAX / 2 {
            return Err(Error::Config("group_bytes_max must be between 64 KiB and 32 MiB".into()));
        }
        if self.compaction_files_min < 2 {
            return Err(Error::Config("compaction_files_min must be at least 2".into()));
        }
        if !(0..=19).contains(&self.compaction_nice) {
            return Err(Error::Config(format!(
                "compaction_nice must be 0..=19, got {}",
                self.compaction_nice
            )));
        }
        self.retention.validate()?;
        if self.memory_bytes_max < MEMORY_BYTES_MIN {
            return Err(Error::Config(format!(
                "memory_bytes_max must be at least {MEMORY_BYTES_MIN} bytes, got {}",
                self.memory_bytes_max
            )));
        }
        let others = self.memory_bytes_max - self.flush_reserve_bytes();
        if self.buffer_bytes_max.saturating_add(self.queue_bytes_max) > others {
            return Err(Error::Config(format!(
                "buffer_bytes_max ({}) + queue_bytes_max ({}) must fit in three quarters of \
                 memory_bytes_max ({}): a quarter is kept for flushes",
                self.buffer_bytes_max, self.queue_bytes_max, self.memory_bytes_max
            )));
        }
        if self.compaction_debt_slowdown_generations < 2
            || self.compaction_debt_busy_generations <= self.compaction_debt_slowdown_generations
        {
            return Err(Error::Config(format!(
                "compaction_debt_slowdown_generations ({}) must be at least 2 and below \
                 compaction_debt_busy_generations ({})",
                self.compaction_debt_slowdown_generations, self.compaction_debt_busy_generations
            )));
        }
        Ok(())
    }
}
