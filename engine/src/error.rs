//! The engine's error type: user mistakes ([`InputError`]), back-pressure ([`Error::Busy`]) and
//! faults of the machine or the data on disk are separate variants, so callers can answer each
//! correctly (4xx, retry-after, 5xx).

use std::path::PathBuf;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A request the caller got wrong; nothing was stored and nothing else was affected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The buoy id breaks the rule `[A-Za-z0-9_.-]{1,64}`.
    #[error("invalid buoy id {0:?}: use 1-64 characters of A-Z a-z 0-9 _ . -")]
    InvalidBuoyId(String),
    /// The metric name breaks the rule `[a-z0-9_]{1,64}`.
    #[error("invalid metric name {0:?}: use 1-64 characters of a-z 0-9 _")]
    InvalidMetricName(String),
    /// A batch with no readings.
    #[error("empty batch: a batch carries at least one reading")]
    EmptyBatch,
    /// A batch above [`crate::BATCH_READINGS_MAX`].
    #[error("batch of {readings} readings is above the limit of {readings_max}")]
    BatchTooLarge {
        /// Readings in the refused batch.
        readings: usize,
        /// The limit.
        readings_max: usize,
    },
    /// The columns of a batch differ in length.
    #[error("column lengths differ: {timestamps} timestamps, {metric_ids} metric ids, {values} values")]
    ColumnLengthMismatch {
        /// Length of the timestamp column.
        timestamps: usize,
        /// Length of the metric id column.
        metric_ids: usize,
        /// Length of the value column.
        values: usize,
    },
    /// The metric dictionary is empty or longer than [`crate::BATCH_METRICS_MAX`].
    #[error("metric dictionary of {names} names: a batch names 1-256 metrics")]
    BadMetricDictionary {
        /// Names in the dictionary.
        names: usize,
    },
    /// A name appears twice in the metric dictionary.
    #[error("metric {0:?} appears twice in the batch's metric dictionary")]
    DuplicateMetricName(String),
    /// A reading's metric id is outside the dictionary.
    #[error("reading {index} has metric id {id}, outside the batch's metric dictionary")]
    UnknownMetricId {
        /// Row of the reading.
        index: usize,
        /// The bad id.
        id: u16,
    },
    /// NaN or an infinity.
    #[error("reading {index} has a value that is NaN or infinite")]
    NonFiniteValue {
        /// Row of the reading.
        index: usize,
    },
    /// A timestamp outside `TIMESTAMP_MIN..=TIMESTAMP_MAX` (years 1823-2116).
    #[error("reading {index} has timestamp {ts} ns, outside the supported range (years 1823-2116)")]
    TimestampOutOfRange {
        /// Row of the reading.
        index: usize,
        /// The refused timestamp.
        ts: i64,
    },
    /// The buoy is not registered, so it may not write.
    #[error("buoy {0:?} is not registered")]
    UnknownBuoy(String),
    /// A batch sequence number below the buoy's deduplication window: it cannot be told apart
    /// from an old retry, so it is refused rather than stored twice.
    #[error("batch sequence {batch_seq} of buoy {buoy:?} is older than the last {window} batches")]
    StaleSequence {
        /// The buoy.
        buoy: String,
        /// The refused sequence number.
        batch_seq: u64,
        /// Size of the deduplication window.
        window: u64,
    },
    /// A device batch used the sequence number reserved for unsequenced writes
    /// ([`crate::UNSEQUENCED`]).
    #[error("batch sequence {0} is reserved for unsequenced writes (operator corrections)")]
    ReservedSequence(u64),
    /// A time range whose end is before its start.
    #[error("time range ends ({end}) before it starts ({start})")]
    InvalidTimeRange {
        /// Inclusive start, ns.
        start: i64,
        /// Exclusive end, ns.
        end: i64,
    },
}

/// Which bounded resource pushed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// The lane's submission queue is at `queue_depth`.
    QueueFull,
    /// The in-memory buffer is at `buffer_bytes_max` until a flush frees it.
    BufferFull,
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's mistake; answer with a 4xx-style refusal.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A bound was reached; nothing was stored. Retry after the given delay.
    #[error("engine busy ({reason:?}); retry after {retry_after_ms} ms")]
    Busy {
        /// The resource that is full.
        reason: BusyReason,
        /// Suggested delay before a retry.
        retry_after_ms: u64,
    },
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Data on disk is damaged somewhere it cannot be explained by a crash (not a torn tail).
    #[error("corrupt {}: at byte {offset}: {reason}", file.display())]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The catalog database failed.
    #[error("catalog: {0}")]
    Catalog(String),
    /// Encoding or decoding a Parquet partition failed.
    #[error("parquet: {0}")]
    Parquet(String),
    /// A WAL writer hit an fsync or write error and stopped; nothing more is acknowledged until
    /// the engine is reopened (an fsync failure is never retried and then acknowledged).
    #[error("WAL writer of lane {lane} failed and stopped: {reason}")]
    WriterFailed {
        /// The lane.
        lane: usize,
        /// The first error it hit.
        reason: String,
    },
    /// The engine is shutting down and takes no more work.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }

    /// True for mistakes of the caller (as opposed to faults of the server).
    pub fn is_input(&self) -> bool {
        matches!(self, Self::Input(_))
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Self::Catalog(e.to_string())
    }
}

macro_rules! catalog_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Catalog(e.to_string())
            }
        }
    )*};
}
catalog_error_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Self::Parquet(e.to_string())
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::Parquet(e.to_string())
    }
}
