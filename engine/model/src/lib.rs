//! `bluewave-model`: the data model shared by the storage engine, the wire protocol and the buoy
//! SDK (DESIGN.md, *Data model*). It holds no storage, so a buoy build that only encodes batches
//! needs nothing of Parquet, Arrow or redb; `bluewave-engine` re-exports all of it.
//!
//! # Layout
//!
//! - [`types`]: validated ids ([`BuoyId`], [`MetricName`]), [`ReadingBatch`] and its builder,
//!   quality flags, timestamp bounds, the batch-sequence constants ([`DEDUP_WINDOW`],
//!   [`UNSEQUENCED`]); checked once at the edge.
//! - [`columns`]: the `readings` table's column names, defined once.
//! - [`workload`]: the deterministic marine fleet used by benches, demos and the load generator.
//! - `error`: [`InputError`], the crate's one error type (a request the caller got wrong).
//!
//! ```
//! use bluewave_model::{MetricName, ReadingBatch};
//! let batch = ReadingBatch::new(
//!     vec![MetricName::new("salinity_psu")?],
//!     vec![1_780_000_000_000_000_000],
//!     vec![0],
//!     vec![35.127],
//! )?;
//! assert_eq!(batch.len(), 1);
//! # Ok::<(), bluewave_model::InputError>(())
//! ```

pub mod columns;
mod error;
pub mod types;
pub mod workload;

pub use error::InputError;
pub use types::{
    BATCH_METRICS_MAX, BATCH_READINGS_MAX, BuoyId, DEDUP_WINDOW, MetricName, NANOS_PER_SECOND, PhysicalRange,
    Quality, ReadingBatch, ReadingBatchBuilder, TIMESTAMP_MAX, TIMESTAMP_MIN, TimestampNs, UNSEQUENCED,
};
