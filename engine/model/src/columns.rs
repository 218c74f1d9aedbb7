//! Column names of the `readings` table, defined once: the Parquet partition files
//! (`engine/PARTITION.md`), the query crate's table schema and its filter pushdown all use these.

/// Name of the buoy id column (leaf 0).
pub const COLUMN_BUOY_ID: &str = "buoy_id";
/// Name of the metric name column (leaf 1).
pub const COLUMN_METRIC: &str = "metric";
/// Name of the timestamp column (leaf 2).
pub const COLUMN_TS: &str = "ts";
/// Name of the value column (leaf 3).
pub const COLUMN_VALUE: &str = "value";
/// Name of the quality flag column (leaf 4).
pub const COLUMN_QUALITY: &str = "quality";
/// Every column, in file order.
pub const COLUMN_NAMES: [&str; 5] = [COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_TS, COLUMN_VALUE, COLUMN_QUALITY];
/// Time zone of the `ts` column's Arrow type.
pub const TS_TIMEZONE: &str = "UTC";
