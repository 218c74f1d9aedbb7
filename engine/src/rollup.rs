//! Minute rollups: per `(buoy, metric, minute)` the count, sum, smallest and largest value and
//! the first and last reading (each with its timestamp) of one readings file's rows. Layout and
//! a worked example in `engine/ROLLUPS.md`.
//!
//! A rollup summarizes exactly one readings file (its rows after last-write-wins and tombstones,
//! as written), is computed from the sorted rows the flush or compaction already holds as it
//! writes them ([`RollupBuilder`], fed beside the file's catalog summary: no second scan), is
//! written durably before the catalog commit that adds its readings file, is named in that
//! file's catalog entry ([`crate::RollupRef`]), and goes when the file goes. So a rollup is
//! visible exactly when its readings file is, under the same snapshot. Whether a rollup may
//! stand for its file's rows in a query (no other file, buffered row or tombstone touches them)
//! is the reader's decision, from the same catalog facts the readings merge uses.
//!
//! A file may have no rollup: written before rollups existed, written with
//! [`crate::EngineConfig::rollups`] off, or whose rollup the memory budget refused (counted in
//! `rollups_skipped`). Readers scan such a file's readings.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::UInt32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;

use crate::budget::{MemoryBudget, MemoryConsumer, MemoryReservation};
use crate::error::{Error, PartitionError, Result};
use crate::partition::{PartitionRows, TS_TIMEZONE};
use crate::types::{NANOS_PER_SECOND, TimestampNs};

/// Width of a rollup bucket: one minute, aligned to the Unix epoch.
pub const ROLLUP_WIDTH_NS: i64 = 60 * NANOS_PER_SECOND;
/// Name of the rollup table's directory under `parquet/` (beside `readings`).
pub const ROLLUPS_TABLE: &str = "rollups_1m";
/// Version of the rollup file layout, written as [`METADATA_ROLLUP_VERSION_KEY`]; a reader
/// refuses any other.
pub const ROLLUP_FORMAT_VERSION: u32 = 1;
/// Key-value metadata key holding [`ROLLUP_FORMAT_VERSION`] as decimal text.
pub const METADATA_ROLLUP_VERSION_KEY: &str = "bluewave.rollup_format_version";
/// Key-value metadata key holding [`ROLLUP_WIDTH_NS`] as decimal text.
pub const METADATA_ROLLUP_WIDTH_KEY: &str = "bluewave.rollup_width_ns";

/// Column: buoy id (dictionary-encoded).
pub const ROLLUP_COLUMN_BUOY_ID: &str = "buoy_id";
/// Column: metric name (dictionary-encoded).
pub const ROLLUP_COLUMN_METRIC: &str = "metric";
/// Column: start of the minute (inclusive), UTC.
pub const ROLLUP_COLUMN_MINUTE: &str = "minute";
/// Column: readings in the bucket (at least 1).
pub const ROLLUP_COLUMN_COUNT: &str = "count";
/// Column: sum of the values, added in timestamp order.
pub const ROLLUP_COLUMN_SUM: &str = "sum";
/// Column: smallest value.
pub const ROLLUP_COLUMN_MIN: &str = "min";
/// Column: largest value.
pub const ROLLUP_COLUMN_MAX: &str = "max";
/// Column: timestamp of the bucket's earliest reading.
pub const ROLLUP_COLUMN_FIRST_TS: &str = "first_ts";
/// Column: value of the bucket's earliest reading.
pub const ROLLUP_COLUMN_FIRST_VALUE: &str = "first_value";
/// Column: timestamp of the bucket's latest reading.
pub const ROLLUP_COLUMN_LAST_TS: &str = "last_ts";
/// Column: value of the bucket's latest reading.
pub const ROLLUP_COLUMN_LAST_VALUE: &str = "last_value";

/// Most buckets one rollup file may hold (decode refuses more before decoding): a rollup has
/// at most one bucket per reading of its file, whose rows are bounded the same way.
pub const ROLLUP_BUCKETS_MAX: usize = crate::partition::PARTITION_ROWS_MAX;

/// Bytes a [`RollupBuilder`] holds per bucket: two dictionary keys (4 each), the minute, the
/// count, five values and two timestamps (8 each).
pub const ROLLUP_BYTES_PER_BUCKET: usize = 4 + 4 + 8 + 8 + 5 * 8 + 2 * 8;
/// Buckets a builder reserves memory for at a time (about 1.3 MiB).
pub const ROLLUP_RESERVE_STEP_BUCKETS: usize = 16_384;
/// Bytes per bucket that encoding a finished rollup takes on top of its builder: the Arrow
/// columns (the builder's size again) and the Parquet output (never above the plain size).
pub const ROLLUP_ENCODE_BYTES_PER_BUCKET: usize = 2 * ROLLUP_BYTES_PER_BUCKET;
/// zstd level of rollup files: they are small and written on every flush, so a fast level.
pub const ROLLUP_ZSTD_LEVEL: i32 = 3;
/// Buckets per Parquet row group (and per Arrow batch handed to the writer).
const ROLLUP_ROW_GROUP_BUCKETS: usize = 65_536;

/// The Arrow schema of a rollup file, in column order. Rows are sorted by
/// `(buoy_id, metric, minute)`, one row per bucket with at least one reading.
pub fn rollup_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, Some(TS_TIMEZONE.into()));
    let dictionary = || DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(ROLLUP_COLUMN_BUOY_ID, dictionary(), false),
        Field::new(ROLLUP_COLUMN_METRIC, dictionary(), false),
        Field::new(ROLLUP_COLUMN_MINUTE, ts(), false),
        Field::new(ROLLUP_COLUMN_COUNT, DataType::Int64, false),
        Field::new(ROLLUP_COLUMN_SUM, DataType::Float64, false),
        Field::new(ROLLUP_COLUMN_MIN, DataType::Float64, false),
        Field::new(ROLLUP_COLUMN_MAX, DataType::Float64, false),
        Field::new(ROLLUP_COLUMN_FIRST_TS, ts(), false),
        Field::new(ROLLUP_COLUMN_FIRST_VALUE, DataType::Float64, false),
        Field::new(ROLLUP_COLUMN_LAST_TS, ts(), false),
        Field::new(ROLLUP_COLUMN_LAST_VALUE, DataType::Float64, false),
    ]))
}

/// Start of the minute bucket holding `ts`.
#[inline]
pub fn minute_of(ts: TimestampNs) -> TimestampNs {
    ts.div_euclid(ROLLUP_WIDTH_NS) * ROLLUP_WIDTH_NS
}

/// The buckets of one rollup, column by column; keys index the dictionaries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollupRows {
    /// Dictionary of buoy ids.
    pub buoy_names: Vec<Arc<str>>,
    /// Dictionary of metric names.
    pub metric_names: Vec<Arc<str>>,
    /// Per bucket, index into `buoy_names`.
    pub buoy_keys: Vec<u32>,
    /// Per bucket, index into `metric_names`.
    pub metric_keys: Vec<u32>,
    /// Per bucket, start of its minute.
    pub minutes: Vec<TimestampNs>,
    /// Per bucket, readings in it (at least 1).
    pub counts: Vec<u64>,
    /// Per bucket, sum of its values in timestamp order.
    pub sums: Vec<f64>,
    /// Per bucket, smallest value.
    pub mins: Vec<f64>,
    /// Per bucket, largest value.
    pub maxs: Vec<f64>,
    /// Per bucket, timestamp of its earliest reading.
    pub first_ts: Vec<TimestampNs>,
    /// Per bucket, value of its earliest reading.
    pub first_values: Vec<f64>,
    /// Per bucket, timestamp of its latest reading.
    pub last_ts: Vec<TimestampNs>,
    /// Per bucket, value of its latest reading.
    pub last_values: Vec<f64>,
}

impl RollupRows {
    /// Buckets held.
    pub fn len(&self) -> usize {
        self.minutes.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty()
    }

    fn reserve_exact(&mut self, buckets: usize) {
        self.buoy_keys.reserve_exact(buckets);
        self.metric_keys.reserve_exact(buckets);
        self.minutes.reserve_exact(buckets);
        self.counts.reserve_exact(buckets);
        self.sums.reserve_exact(buckets);
        self.mins.reserve_exact(buckets);
        self.maxs.reserve_exact(buckets);
        self.first_ts.reserve_exact(buckets);
        self.first_values.reserve_exact(buckets);
        self.last_ts.reserve_exact(buckets);
        self.last_values.reserve_exact(buckets);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_bucket(&mut self, buoy: u32, metric: u32, minute: TimestampNs, ts: TimestampNs, value: f64) {
        self.buoy_keys.push(buoy);
        self.metric_keys.push(metric);
        self.minutes.push(minute);
        self.counts.push(1);
        self.sums.push(value);
        self.mins.push(value);
        self.maxs.push(value);
        self.first_ts.push(ts);
        self.first_values.push(value);
        self.last_ts.push(ts);
        self.last_values.push(value);
    }

    /// Adds a reading to the last bucket (same buoy, metric and minute).
    #[inline]
    fn add_to_last(&mut self, ts: TimestampNs, value: f64) {
        let i = self.minutes.len() - 1;
        self.counts[i] += 1;
        self.sums[i] += value;
        self.mins[i] = self.mins[i].min(value);
        self.maxs[i] = self.maxs[i].max(value);
        if ts < self.first_ts[i] {
            self.first_ts[i] = ts;
            self.first_values[i] = value;
        }
        if ts >= self.last_ts[i] {
            self.last_ts[i] = ts;
            self.last_values[i] = value;
        }
    }
}

/// Who pays for a rollup's memory: the budget and the consumer (the flush or the compaction
/// whose file it summarizes).
#[derive(Clone, Debug)]
pub(crate) struct RollupMemory {
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) consumer: MemoryConsumer,
}

/// Builds the rollup of one readings file from its rows as they are written (sorted by
/// `(buoy, metric, ts)`, keyed into one pair of dictionaries for the whole file). Its memory is
/// reserved from the budget [`ROLLUP_RESERVE_STEP_BUCKETS`] buckets at a time, without waiting:
/// when the budget refuses, the builder gives up (the file is written without a rollup and
/// read from its readings) rather than hold up a flush or compaction.
#[derive(Debug)]
pub(crate) struct RollupBuilder {
    rows: RollupRows,
    memory: RollupMemory,
    /// What is held against the budget for `rows` (capacity kept equal to it).
    reservation: MemoryReservation,
    /// Buckets `reservation` pays for.
    reserved_buckets: usize,
    /// The budget refused, or rows came keyed into other dictionaries: no rollup.
    abandoned: bool,
}

impl RollupBuilder {
    pub(crate) fn new(buoy_names: &[Arc<str>], metric_names: &[Arc<str>], memory: RollupMemory) -> Self {
        let rows = RollupRows {
            buoy_names: buoy_names.to_vec(),
            metric_names: metric_names.to_vec(),
            ..RollupRows::default()
        };
        Self { rows, memory, reservation: MemoryReservation::empty(), reserved_buckets: 0, abandoned: false }
    }

    /// True when this builder gave up.
    #[cfg(test)]
    pub(crate) fn abandoned(&self) -> bool {
        self.abandoned
    }

    /// Adds sorted rows (the next ones of the file).
    pub(crate) fn add(&mut self, rows: &PartitionRows) {
        if self.abandoned {
            return;
        }
        if rows.buoy_names.len() != self.rows.buoy_names.len()
            || rows.metric_names.len() != self.rows.metric_names.len()
        {
            // Every writer of a file keeps one pair of dictionaries; anything else is a bug,
            // which must not make a wrong rollup.
            debug_assert!(false, "rollup rows keyed into other dictionaries");
            self.abandon();
            return;
        }
        for i in 0..rows.len() {
            let (buoy, metric) = (rows.buoy_keys[i], rows.metric_keys[i]);
            let (ts, value) = (rows.timestamps[i], rows.values[i]);
            let minute = minute_of(ts);
            let n = self.rows.len();
            if n > 0
                && self.rows.buoy_keys[n - 1] == buoy
                && self.rows.metric_keys[n - 1] == metric
                && self.rows.minutes[n - 1] == minute
            {
                self.rows.add_to_last(ts, value);
                continue;
            }
            if n == self.reserved_buckets && !self.grow() {
                return;
            }
            self.rows.push_bucket(buoy, metric, minute, ts, value);
        }
    }

    /// Reserves room for [`ROLLUP_RESERVE_STEP_BUCKETS`] more buckets; gives up when refused.
    fn grow(&mut self) -> bool {
        let bytes = ROLLUP_RESERVE_STEP_BUCKETS * ROLLUP_BYTES_PER_BUCKET;
        match self.memory.budget.try_reserve(self.memory.consumer, bytes) {
            Some(more) => {
                self.reservation.absorb(more);
                self.rows.reserve_exact(ROLLUP_RESERVE_STEP_BUCKETS);
                self.reserved_buckets += ROLLUP_RESERVE_STEP_BUCKETS;
                true
            }
            None => {
                self.abandon();
                false
            }
        }
    }

    fn abandon(&mut self) {
        self.abandoned = true;
        self.rows = RollupRows::default();
        self.reservation = MemoryReservation::empty();
        self.reserved_buckets = 0;
    }

    /// Encodes the rollup; `None` when the builder gave up, the file had no rows, or the budget
    /// refuses the encoding's memory.
    pub(crate) fn finish(mut self) -> Result<Option<EncodedRollup>> {
        if self.abandoned || self.rows.is_empty() {
            return Ok(None);
        }
        let bytes = self.rows.len().saturating_mul(ROLLUP_ENCODE_BYTES_PER_BUCKET);
        let Some(more) = self.memory.budget.try_reserve(self.memory.consumer, bytes) else {
            return Ok(None);
        };
        self.reservation.absorb(more);
        let encoded = encode_rollup(&self.rows)?;
        let buckets = self.rows.len() as u64;
        drop(self.rows);
        Ok(Some(EncodedRollup { bytes: encoded, buckets, _memory: self.reservation }))
    }
}

/// A finished rollup, encoded, with its memory held until it is written.
#[derive(Debug)]
pub(crate) struct EncodedRollup {
    pub(crate) bytes: Vec<u8>,
    pub(crate) buckets: u64,
    _memory: MemoryReservation,
}

fn writer_properties() -> Result<WriterProperties> {
    let level =
        ZstdLevel::try_new(ROLLUP_ZSTD_LEVEL).map_err(|e| Error::Parquet(PartitionError::Parquet(e)))?;
    let ascending = |column_idx| SortingColumn { column_idx, descending: false, nulls_first: false };
    let column = |name: &str| ColumnPath::from(name);
    Ok(WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_key_value_metadata(Some(vec![
            KeyValue::new(METADATA_ROLLUP_VERSION_KEY.to_owned(), ROLLUP_FORMAT_VERSION.to_string()),
            KeyValue::new(METADATA_ROLLUP_WIDTH_KEY.to_owned(), ROLLUP_WIDTH_NS.to_string()),
        ]))
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROLLUP_ROW_GROUP_BUCKETS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_bloom_filter_enabled(false)
        .set_sorting_columns(Some(vec![ascending(0), ascending(1), ascending(2)]))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(column(ROLLUP_COLUMN_BUOY_ID), true)
        .set_column_dictionary_enabled(column(ROLLUP_COLUMN_METRIC), true)
        .set_column_encoding(column(ROLLUP_COLUMN_MINUTE), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(column(ROLLUP_COLUMN_COUNT), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(column(ROLLUP_COLUMN_FIRST_TS), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(column(ROLLUP_COLUMN_LAST_TS), Encoding::DELTA_BINARY_PACKED)
        .build())
}

/// Encodes rollup buckets as a rollup Parquet file ([`rollup_schema`]).
pub fn encode_rollup(rows: &RollupRows) -> Result<Vec<u8>> {
    let schema = rollup_schema();
    let arrow = |e: arrow_schema::ArrowError| Error::Parquet(PartitionError::Arrow(e));
    let parquet = |e: parquet::errors::ParquetError| Error::Parquet(PartitionError::Parquet(e));
    let names = |list: &[Arc<str>]| -> ArrayRef { Arc::new(StringArray::from_iter_values(list.iter())) };
    let (buoy_names, metric_names) = (names(&rows.buoy_names), names(&rows.metric_names));
    let mut out = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut out, schema.clone(), Some(writer_properties()?)).map_err(parquet)?;
    let ts = |v: &[TimestampNs]| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(v.to_vec()).with_timezone(TS_TIMEZONE))
    };
    let float = |v: &[f64]| -> ArrayRef { Arc::new(Float64Array::from(v.to_vec())) };
    let mut start = 0;
    while start < rows.len() {
        let end = (start + ROLLUP_ROW_GROUP_BUCKETS).min(rows.len());
        let r = start..end;
        let dictionary = |keys: &[u32], values: &ArrayRef| -> Result<ArrayRef> {
            let keys = UInt32Array::from(keys.to_vec());
            Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(keys, values.clone()).map_err(arrow)?))
        };
        let counts: Vec<i64> = rows.counts[r.clone()].iter().map(|&c| c as i64).collect();
        let columns: Vec<ArrayRef> = vec![
            dictionary(&rows.buoy_keys[r.clone()], &buoy_names)?,
            dictionary(&rows.metric_keys[r.clone()], &metric_names)?,
            ts(&rows.minutes[r.clone()]),
            Arc::new(Int64Array::from(counts)),
            float(&rows.sums[r.clone()]),
            float(&rows.mins[r.clone()]),
            float(&rows.maxs[r.clone()]),
            ts(&rows.first_ts[r.clone()]),
            float(&rows.first_values[r.clone()]),
            ts(&rows.last_ts[r.clone()]),
            float(&rows.last_values[r.clone()]),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(arrow)?;
        writer.write(&batch).map_err(parquet)?;
        start = end;
    }
    writer.close().map_err(parquet)?;
    Ok(out)
}

/// Decodes a rollup file written by [`encode_rollup`]. Refused with a typed error: another
/// layout version or width, a foreign schema, more than [`ROLLUP_BUCKETS_MAX`] buckets.
pub fn decode_rollup(bytes: Bytes) -> Result<RollupRows> {
    let parquet = |e: parquet::errors::ParquetError| Error::Parquet(PartitionError::Parquet(e));
    let foreign = |what: String| Error::Parquet(PartitionError::Foreign(format!("rollup file: {what}")));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet)?;
    let metadata = builder.metadata().file_metadata();
    let value_of = |key: &str| {
        metadata
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == key))
            .and_then(|k| k.value.clone())
    };
    if value_of(METADATA_ROLLUP_VERSION_KEY) != Some(ROLLUP_FORMAT_VERSION.to_string()) {
        return Err(foreign(format!("layout version {:?}", value_of(METADATA_ROLLUP_VERSION_KEY))));
    }
    if value_of(METADATA_ROLLUP_WIDTH_KEY) != Some(ROLLUP_WIDTH_NS.to_string()) {
        return Err(foreign(format!("bucket width {:?}", value_of(METADATA_ROLLUP_WIDTH_KEY))));
    }
    let buckets = usize::try_from(metadata.num_rows()).unwrap_or(usize::MAX);
    if buckets > ROLLUP_BUCKETS_MAX {
        return Err(foreign(format!("{buckets} buckets, above {ROLLUP_BUCKETS_MAX}")));
    }
    let expected = rollup_schema();
    if builder.schema().fields() != expected.fields() {
        return Err(foreign(format!("schema {:?}", builder.schema())));
    }
    let reader = builder.with_batch_size(ROLLUP_ROW_GROUP_BUCKETS).build().map_err(parquet)?;
    let mut rows = RollupRows::default();
    rows.reserve_exact(buckets);
    let mut buoy_index: HashMap<Arc<str>, u32> = HashMap::new();
    let mut metric_index: HashMap<Arc<str>, u32> = HashMap::new();
    let corrupt = || Error::Parquet(PartitionError::Corrupt("rollup file: column of another type".into()));
    for batch in reader {
        let batch = batch.map_err(|e| Error::Parquet(PartitionError::Arrow(e)))?;
        let column = |i: usize| batch.column(i).as_ref();
        let keys = |i: usize,
                    index: &mut HashMap<Arc<str>, u32>,
                    names: &mut Vec<Arc<str>>|
         -> Result<Vec<u32>> {
            let array =
                column(i).as_any().downcast_ref::<DictionaryArray<UInt32Type>>().ok_or_else(corrupt)?;
            let values = array.values().as_any().downcast_ref::<StringArray>().ok_or_else(corrupt)?;
            let map: Vec<u32> = values
                .iter()
                .map(|v| {
                    let name: Arc<str> = Arc::from(v.unwrap_or_default());
                    *index.entry(name.clone()).or_insert_with(|| {
                        names.push(name);
                        (names.len() - 1) as u32
                    })
                })
                .collect();
            array.keys().values().iter().map(|&k| map.get(k as usize).copied().ok_or_else(corrupt)).collect()
        };
        rows.buoy_keys.extend(keys(0, &mut buoy_index, &mut rows.buoy_names)?);
        rows.metric_keys.extend(keys(1, &mut metric_index, &mut rows.metric_names)?);
        let ts = |i: usize| -> Result<&[i64]> {
            Ok(column(i).as_any().downcast_ref::<TimestampNanosecondArray>().ok_or_else(corrupt)?.values())
        };
        let float = |i: usize| -> Result<&[f64]> {
            Ok(column(i).as_any().downcast_ref::<Float64Array>().ok_or_else(corrupt)?.values())
        };
        rows.minutes.extend_from_slice(ts(2)?);
        let counts = column(3).as_any().downcast_ref::<Int64Array>().ok_or_else(corrupt)?;
        rows.counts.extend(counts.values().iter().map(|&c| c.max(0) as u64));
        rows.sums.extend_from_slice(float(4)?);
        rows.mins.extend_from_slice(float(5)?);
        rows.maxs.extend_from_slice(float(6)?);
        rows.first_ts.extend_from_slice(ts(7)?);
        rows.first_values.extend_from_slice(float(8)?);
        rows.last_ts.extend_from_slice(ts(9)?);
        rows.last_values.extend_from_slice(float(10)?);
        if batch.columns().iter().any(|c| c.null_count() > 0) {
            return Err(Error::Parquet(PartitionError::Corrupt("rollup file: null in a column".into())));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> RollupMemory {
        RollupMemory { budget: MemoryBudget::new(1 << 30, 1 << 28), consumer: MemoryConsumer::Flush }
    }

    fn rows(list: &[(u32, u32, i64, f64)]) -> PartitionRows {
        PartitionRows {
            buoy_names: vec![Arc::from("b0"), Arc::from("b1")],
            metric_names: vec![Arc::from("ph"), Arc::from("temp")],
            buoy_keys: list.iter().map(|r| r.0).collect(),
            metric_keys: list.iter().map(|r| r.1).collect(),
            timestamps: list.iter().map(|r| r.2).collect(),
            values: list.iter().map(|r| r.3).collect(),
            quality: vec![0; list.len()],
        }
    }

    #[test]
    fn buckets_follow_the_worked_example_and_round_trip() {
        let s = NANOS_PER_SECOND;
        // The worked example of engine/ROLLUPS.md.
        let input = rows(&[
            (0, 0, 10 * s, 8.1),
            (0, 0, 50 * s, 8.3),
            (0, 0, 61 * s, 8.0),
            (0, 1, 5 * s, 12.5),
            (1, 0, 59 * s, 7.9),
        ]);
        let mut builder = RollupBuilder::new(&input.buoy_names, &input.metric_names, memory());
        // Fed in two slices, as a compaction does.
        let (a, b) = (rows(&[(0, 0, 10 * s, 8.1), (0, 0, 50 * s, 8.3)]), rows(&input_tail()));
        builder.add(&a);
        builder.add(&b);
        let encoded = builder.finish().unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!(encoded.buckets, 4);
        let decoded = decode_rollup(Bytes::from(encoded.bytes)).unwrap_or_else(|e| panic!("{e}"));
        let name = |names: &[Arc<str>], k: u32| names[k as usize].to_string();
        let got: Vec<ExampleRow> = (0..decoded.len())
            .map(|i| {
                (
                    name(&decoded.buoy_names, decoded.buoy_keys[i]),
                    name(&decoded.metric_names, decoded.metric_keys[i]),
                    decoded.minutes[i],
                    decoded.counts[i],
                    decoded.sums[i],
                    decoded.mins[i],
                    decoded.maxs[i],
                    decoded.first_ts[i],
                    decoded.first_values[i],
                    decoded.last_ts[i],
                    decoded.last_values[i],
                )
            })
            .collect();
        let b = |s: &str| s.to_owned();
        assert_eq!(
            got,
            vec![
                (b("b0"), b("ph"), 0, 2, 8.1 + 8.3, 8.1, 8.3, 10 * s, 8.1, 50 * s, 8.3),
                (b("b0"), b("ph"), 60 * s, 1, 8.0, 8.0, 8.0, 61 * s, 8.0, 61 * s, 8.0),
                (b("b0"), b("temp"), 0, 1, 12.5, 12.5, 12.5, 5 * s, 12.5, 5 * s, 12.5),
                (b("b1"), b("ph"), 0, 1, 7.9, 7.9, 7.9, 59 * s, 7.9, 59 * s, 7.9),
            ]
        );
    }

    /// `(buoy, metric, minute, count, sum, min, max, first ts, first, last ts, last)`.
    type ExampleRow = (String, String, i64, u64, f64, f64, f64, i64, f64, i64, f64);

    fn input_tail() -> Vec<(u32, u32, i64, f64)> {
        let s = NANOS_PER_SECOND;
        vec![(0, 0, 61 * s, 8.0), (0, 1, 5 * s, 12.5), (1, 0, 59 * s, 7.9)]
    }

    #[test]
    fn minutes_are_aligned_to_the_epoch_before_it_too() {
        assert_eq!(minute_of(0), 0);
        assert_eq!(minute_of(ROLLUP_WIDTH_NS - 1), 0);
        assert_eq!(minute_of(-1), -ROLLUP_WIDTH_NS);
    }

    #[test]
    fn a_refusing_budget_gives_no_rollup_and_holds_nothing() {
        let budget = MemoryBudget::new(1 << 20, 0);
        let memory = RollupMemory { budget: budget.clone(), consumer: MemoryConsumer::Compaction };
        let input = rows(&[(0, 0, 1, 1.0)]);
        let mut builder = RollupBuilder::new(&input.buoy_names, &input.metric_names, memory);
        builder.add(&input);
        assert!(builder.abandoned());
        assert!(builder.finish().unwrap_or_else(|e| panic!("{e}")).is_none());
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn foreign_files_are_refused() {
        let input = rows(&[(0, 0, 1, 1.0)]);
        let mut builder = RollupBuilder::new(&input.buoy_names, &input.metric_names, memory());
        builder.add(&input);
        let encoded = builder.finish().unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        let partition = crate::partition::encode_partition(&input, &Default::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .bytes;
        assert!(matches!(
            decode_rollup(Bytes::from(partition)),
            Err(Error::Parquet(PartitionError::Foreign(_)))
        ));
        let mut cut = encoded.bytes.clone();
        cut.truncate(cut.len() / 2);
        assert!(decode_rollup(Bytes::from(cut)).is_err());
    }
}
