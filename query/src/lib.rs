//! `bluewave-query`: SQL and typed reads over BlueWave's storage engine, with DataFusion.
//!
//! One table, `readings(buoy_id, metric, ts, value, quality)`, scans the Parquet files the
//! catalog selects **and** the live buffer, so an acked reading is visible at once; `buoys`
//! holds the registry. Every scan applies the caller's [`AccessPolicy`] inside the table
//! provider (never by editing SQL); SQL is read-only; each query has a memory pool, a timeout
//! and a row cap, and runs on the service's own runtime so it cannot starve ingest.
//!
//! Layout:
//! - `policy`: [`AccessPolicy`], [`BuoyScope`], [`QueryConfig`] and their limits.
//! - `table`: the `readings` provider (filter → catalog selection, Parquet scan, policy) and
//!   the `buoys` table.
//! - `newest`: latest-row aggregates (`last_value(… ORDER BY ts)` per buoy or metric) run
//!   over each buoy's newest data first, older data only for the groups not found there.
//! - `rollups`: time-bucket aggregates (`date_bin`/`time_bucket` of whole minutes) answered
//!   from the engine's minute rollups where no merge touches a file, the rest scanned
//!   (`bluewave.rollups` session option, [`QueryConfig::rollups`]).
//! - `runaway`: guards against runaway queries (table-function row cap, yield points above
//!   joins).
//! - `scan`: execution plans of the scan: the snapshot-holding leaf, shared plan helpers.
//! - `merge`: the streaming last-write-wins k-way merge of overlapping files and the buffer.
//! - `service`: [`QueryService`] (runtime, sessions, read-only check, limits) and
//!   [`ResultStream`].
//! - `filter`: [`TelemetryFilter`] and the paging [`Cursor`] of REST reads.
//! - `encode`: [`encode`] into JSON, CSV, Arrow IPC or Parquet, batch by batch, and the
//!   [`error_record`] that ends an output whose query failed midway.
//! - `csv_safe`: the CSV writer, with formula cells neutralised by column type.
//! - `metrics`: [`QueryMetrics`], the service's counters and latency histogram.
//! - `error`: [`Error`], user errors apart from internal ones.
//!
//! ```no_run
//! use std::sync::Arc;
//! use bluewave_engine::{Engine, EngineConfig};
//! use bluewave_query::{AccessPolicy, Format, QueryConfig, QueryService, encode};
//! use futures::StreamExt;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Arc::new(Engine::open(EngineConfig::new("./bluewave-data"))?);
//! let service = QueryService::new(engine, QueryConfig::default())?;
//! let policy = AccessPolicy::restricted(["buoy-0001"], None);
//! let csv = service.block_on(async {
//!     let rows = service
//!         .sql("SELECT time_bucket(INTERVAL '1 hour', ts) AS hour, avg(value) FROM readings \
//!               WHERE metric = 'salinity_psu' GROUP BY 1 ORDER BY 1", &policy)
//!         .await?;
//!     let mut out = Vec::new();
//!     let mut chunks = encode(rows, Format::Csv);
//!     while let Some(chunk) = chunks.next().await {
//!         out.extend_from_slice(&chunk?);
//!     }
//!     Ok::<_, bluewave_query::Error>(out)
//! })??;
//! println!("{}", String::from_utf8_lossy(&csv));
//! # Ok(()) }
//! ```

mod csv_safe;
mod encode;
mod error;
mod filter;
mod merge;
mod metrics;
mod newest;
mod policy;
mod rollups;
mod runaway;
mod scan;
mod service;
mod stats;
mod table;

pub use csv_safe::FORMULA_TRIGGERS;
pub use encode::{
    ByteStream, ERROR_RECORD_PREFIX, Format, PARQUET_ROW_GROUP_BYTES_MAX, PARQUET_ROW_GROUP_ROWS_MAX, encode,
    error_record,
};
pub use error::{Error, Result};
pub use filter::{CURSOR_CHARS_MAX, Cursor, TelemetryFilter};
pub use metrics::{QUERY_LATENCY_BUCKETS_MS, QueryMetrics};
pub use policy::{
    AccessPolicy, BATCH_ROWS_DEFAULT, BuoyScope, MEMORY_MAX_BYTES_DEFAULT, MEMORY_MIN_BYTES,
    QUERIES_MAX_DEFAULT, QueryConfig, READ_LIMIT_DEFAULT, READ_LIMIT_MAX, RESULT_QUEUE_BATCHES_DEFAULT,
    SQL_BYTES_MAX_DEFAULT, STALL_TIMEOUT_MS_DEFAULT, TABLE_FUNCTION_ROWS_MAX_DEFAULT, TIMEOUT_MS_DEFAULT,
    TIMEOUT_MS_MAX, UNRESTRICTED_MEMORY_MAX_BYTES, UNRESTRICTED_ROWS_MAX, UNRESTRICTED_TIMEOUT,
    WORKER_THREADS_DEFAULT,
};
pub use service::{
    BLOCKING_THREADS_MAX, DescribedSql, FILE_METADATA_CACHE_BYTES, QueryService, ResultStream, WATCHDOG_TICK,
};
pub use table::{BUOYS, READINGS, buoys_schema, readings_schema};

/// DataFusion and Arrow as this crate uses them, so callers share one version.
pub use datafusion;
