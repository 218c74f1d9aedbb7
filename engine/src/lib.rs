//! `bluewave-engine`: BlueWave's storage engine for buoy telemetry.
//!
//! A batch travels through the modules in this order (DESIGN.md, *Ingest path*):
//!
//! - [`types`] (from the `bluewave-model` crate, re-exported with [`columns`] and [`workload`]):
//!   validated ids, [`ReadingBatch`], quality flags; checked once at the edge.
//! - `pipeline`: per-lane bounded lock-free queues, one WAL writer thread per lane doing group
//!   commit; acks after fsync.
//! - `wal`: segment files of checksummed group records (layout in `engine/WAL.md`).
//! - `budget`: the one memory budget (`memory_bytes_max`) that ingest, flushes, compactions
//!   and the query caches reserve from.
//! - `buffer`: immutable columnar chunks, published per lane, snapshotted by readers.
//! - `flush`: the flusher thread (sort, last-write-wins, tombstones, Parquet partition files,
//!   catalog commit, WAL trim) and the compactor thread beside it (size-tiered compaction of the
//!   partition being written, folds of closed ones, retention; compaction debt held in bounds).
//! - `partition`: the Parquet encoding (layout in `engine/PARTITION.md`).
//! - [`rollup`]: minute rollups of each readings file, built by the flush and compaction from
//!   the rows they write (layout and worked example in `engine/ROLLUPS.md`).
//! - `catalog`: `catalog.redb`, the durable index of files, tombstones, watermarks, buoys.
//! - `precedence`: last-write-wins ([`Precedence`]), shared by flush, compaction, the reference
//!   reader and the query crate.
//! - [`read`]: consistent snapshots, catalog file selection, the reference merge reader.
//! - `state`: the state the engine's threads share, every field's writer and lifetime noted.
//! - `retention`: how long readings are kept (globally and per metric) and the record of its
//!   last application.
//! - `recovery`: replay at open, temp and orphan files, the WAL handover to the first flush.
//! - `storage`: the file-system seam, swapped for a fault-injecting one in crash tests.
//!
//! ```no_run
//! use bluewave_engine::{BuoyId, BuoyInfo, Engine, EngineConfig, MetricName, ReadingBatch, ReadFilter};
//! # fn main() -> bluewave_engine::Result<()> {
//! let engine = Engine::open(EngineConfig::new("./bluewave-data"))?;
//! let buoy = BuoyId::new("buoy-0001")?;
//! engine.register_buoy(BuoyInfo::new(&buoy))?;
//! let batch = ReadingBatch::new(
//!     vec![MetricName::new("salinity_psu")?],
//!     vec![1_780_000_000_000_000_000],
//!     vec![0],
//!     vec![35.127],
//! )?;
//! engine.ingest(&buoy, 0, batch)?.wait()?; // durable once this returns
//! let rows = engine.snapshot().read(engine.storage().as_ref(), &ReadFilter::default())?;
//! assert_eq!(rows.len(), 1);
//! engine.shutdown()?;
//! # Ok(()) }
//! ```

mod budget;
mod buffer;
mod catalog;
mod config;
mod dedup;
mod engine;
mod error;
mod flush;
mod metrics;

mod partition;
mod pipeline;
mod precedence;
pub mod read;
mod recovery;
mod retention;
pub mod rollup;
mod state;
mod storage;
mod wal;

pub use bluewave_model::{columns, types, workload};

pub use bluewave_model::{
    BATCH_METRICS_MAX, BATCH_READINGS_MAX, BuoyId, MetricName, NANOS_PER_SECOND, PhysicalRange, Quality,
    ReadingBatch, ReadingBatchBuilder, TIMESTAMP_MAX, TIMESTAMP_MIN, TimestampNs,
};
pub use budget::{MemoryBudget, MemoryConsumer, MemoryReservation};
pub use buffer::Chunk;
pub use catalog::{BuoyInfo, FileMeta, MetricStats, RollupRef, SeriesStats, SeriesStatsBuilder, Tombstone};
pub use config::{Durability, EngineConfig, MEMORY_BYTES_MIN, PartitionDuration};
pub use dedup::{DEDUP_WINDOW, UNSEQUENCED};
pub use engine::{DeleteRange, DeleteTicket, Engine, IngestTicket, lane_for_buoy};
pub use error::{BusyReason, CatalogError, Error, InputError, PartitionError, Result};
pub use flush::{FlushReport, READINGS_TABLE, utc_text};
pub use metrics::{FSYNC_BUCKETS, MetricsSnapshot};
pub use partition::{
    COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_NAMES, COLUMN_QUALITY, COLUMN_TS, COLUMN_VALUE, ColumnBytes,
    EncodedPartition, PartitionReader, PartitionRows, PartitionWriteOptions, PartitionWriter, ValueEncoding,
    decode_partition, encode_partition, partition_schema, partition_value_encoding,
};
pub use pipeline::IngestOutcome;
pub use precedence::Precedence;
pub use read::{CompactionDebt, NewestWindow, ReadFilter, ReadView, Row, SelectedFile, Snapshot};
pub use recovery::RecoveryReport;
pub use retention::{
    RETENTION_MAX, RETENTION_MIN, Retention, RetentionRecord, format_duration as format_retention,
    parse_retention,
};
pub use storage::{FsStorage, Storage, StorageFile};

/// Internals exposed for fuzz targets and benches; not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::wal::{
        DeleteEntry, Entry, begin_record, decode_entries, encode_batch_entry, encode_delete_entry,
        finish_record, patch_sequence, read_lane,
    };
}
