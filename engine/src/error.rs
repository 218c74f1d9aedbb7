//! The engine's error type: user mistakes ([`InputError`]), back-pressure ([`Error::Busy`]) and
//! faults of the machine or the data on disk are separate variants, so callers can answer each
//! correctly (4xx, retry-after, 5xx).

use std::path::PathBuf;

pub use bluewave_model::InputError;

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which bounded resource pushed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyReason {
    /// The lane's submission queue is at `queue_depth`.
    QueueFull,
    /// The in-memory buffer is at `buffer_bytes_max` until a flush frees it.
    BufferFull,
    /// A partition holds `compaction_debt_busy_generations` flush generations until the
    /// compactor merges them.
    CompactionDebt,
    /// The memory budget (`memory_bytes_max`) has no room for the batch until a flush or a
    /// compaction gives memory back.
    MemoryBudget,
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
    /// The catalog database failed (its source tells an I/O failure, such as a full disk,
    /// from a damaged or foreign catalog).
    #[error("catalog: {0}")]
    Catalog(#[source] CatalogError),
    /// Encoding or decoding a Parquet partition failed (its source tells a refused encoding
    /// from a damaged or foreign file).
    #[error("parquet: {0}")]
    Parquet(#[source] PartitionError),
    /// A WAL writer hit an fsync or write error and stopped; nothing more is acknowledged until
    /// the engine is reopened (an fsync failure is never retried and then acknowledged).
    #[error("WAL writer of lane {lane} failed and stopped: {reason}")]
    WriterFailed {
        /// The lane.
        lane: usize,
        /// The first error it hit, as text.
        reason: String,
        /// That error itself (an [`Error::Io`] whose source tells a full disk from a failed
        /// device), shared by every request the stopped lane answers.
        #[source]
        cause: std::sync::Arc<Error>,
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

    /// The operating-system error behind this one, if an I/O call failed: a full disk
    /// (`StorageFull`) or a permission problem, as opposed to damaged data ([`Error::Corrupt`],
    /// a corrupt partition or catalog), which has none.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Catalog(CatalogError::Database(redb::Error::Io(source))) => Some(source),
            Self::Catalog(CatalogError::Database(redb::Error::Corrupted(_))) => None,
            _ => {
                let mut next = std::error::Error::source(self);
                while let Some(e) = next {
                    if let Some(io) = e.downcast_ref::<std::io::Error>() {
                        return Some(io);
                    }
                    next = e.source();
                }
                None
            }
        }
    }
}

/// What went wrong in the catalog database.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// redb failed: I/O (`redb::Error::Io`), corruption, or a misuse.
    #[error(transparent)]
    Database(#[from] redb::Error),
    /// An entry's bytes do not decode: the catalog is damaged.
    #[error("undecodable entry {key} in table {table}")]
    Undecodable {
        /// The table.
        table: String,
        /// The entry's key.
        key: String,
    },
    /// The catalog was written by a build with another format.
    #[error("catalog format version {version} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// The catalog's version.
        version: u64,
        /// The version this build reads.
        supported: u64,
    },
}

/// What went wrong encoding or decoding a partition file.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The Parquet library failed (its own I/O, a damaged page, an unsupported feature).
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed building or reading the columns.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Rows that cannot be written (unsorted, duplicate keys, a value outside its encoding): a
    /// bug of the caller, nothing was written.
    #[error("cannot encode partition: {0}")]
    Unencodable(String),
    /// The file is not a BlueWave partition (foreign schema, other format version).
    #[error("not a BlueWave partition file: {0}")]
    Foreign(String),
    /// The file's content breaks the layout.
    #[error("corrupt partition file: {0}")]
    Corrupt(String),
}

/// Workload mistakes belong to the setup of a bench, demo or load run: [`Error::Config`], except
/// a refused batch size, which keeps its [`InputError`].
impl From<bluewave_model::workload::WorkloadError> for Error {
    fn from(e: bluewave_model::workload::WorkloadError) -> Self {
        match e {
            bluewave_model::workload::WorkloadError::Batch(input) => Self::Input(input),
            other => Self::Config(other.to_string()),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Self::Catalog(CatalogError::Database(e))
    }
}

macro_rules! catalog_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Self::Catalog(CatalogError::Database(redb::Error::from(e)))
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
        Self::Parquet(PartitionError::Parquet(e))
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::Parquet(PartitionError::Arrow(e))
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use bluewave_model::workload::WorkloadError;

    #[test]
    fn workload_mistakes_are_configuration_errors_except_a_refused_batch() {
        let engine_error: Error = WorkloadError::BuoyCount { buoys: 0 }.into();
        assert!(matches!(engine_error, Error::Config(_)));
        let engine_error: Error = WorkloadError::Batch(InputError::EmptyBatch).into();
        assert!(engine_error.is_input());
    }
}
