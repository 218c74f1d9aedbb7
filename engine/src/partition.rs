//! One partition file: the readings of one time partition as a standard Parquet file that
//! DuckDB, Spark or pandas can read (DESIGN.md, *Storage layout*). The layout, the measurements
//! behind every choice and the command that reproduces them are in `engine/PARTITION.md`.
//!
//! ```text
//! column   Arrow type                    Parquet physical / logical        encoding
//! buoy_id  Dictionary(UInt32, Utf8)      BYTE_ARRAY / STRING               RLE_DICTIONARY
//! metric   Dictionary(UInt32, Utf8)      BYTE_ARRAY / STRING               RLE_DICTIONARY
//! ts       Timestamp(Nanosecond, "UTC")  INT64 / TIMESTAMP(NANOS, UTC)     DELTA_BINARY_PACKED
//! value    Decimal64(18, s)              INT64 / DECIMAL(18, s)            DELTA_BINARY_PACKED
//!      or  Float64                       DOUBLE                            PLAIN or BYTE_STREAM_SPLIT
//! quality  UInt8                         INT32 / INT(8, unsigned)          RLE_DICTIONARY
//! ```
//!
//! Every column is `REQUIRED` and zstd-compressed. Rows are sorted by `(buoy_id, metric, ts)`
//! with no duplicate key, and each row group records that order as its sorting columns.
//! Statistics are kept per page (column index + offset index); bloom filters are off.
//!
//! The value column is chosen per file by exactness ([`ValueEncoding::choose`]): when every value
//! is `i / 10^s` for one scale `s` in `0..=9` (bit for bit), values are stored as the integers
//! `i` in a `DECIMAL(18, s)` column; otherwise as doubles. Either way [`decode_partition`] gives
//! back the exact `f64` bits that were written. The key-value metadata carries
//! `bluewave.format_version = 1` and `bluewave.value_encoding` (`decimal(18,s)` or `float64`).

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_array::types::UInt32Type;
use arrow_array::{
    Array, ArrayRef, Decimal64Array, DictionaryArray, Float64Array, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt8Array, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::basic::{
    Compression, DecimalType, Encoding, IntType, LogicalType, TimeUnit as ParquetTimeUnit, TimestampType,
    Type as PhysicalType, ZstdLevel,
};
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterVersion,
};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, PartitionError, Result};
use crate::types::{BuoyId, MetricName, Quality, TimestampNs};

pub use bluewave_model::columns::{
    COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_NAMES, COLUMN_QUALITY, COLUMN_TS, COLUMN_VALUE, TS_TIMEZONE,
};

/// Version of this file layout, written as [`METADATA_FORMAT_VERSION_KEY`]. A reader refuses
/// any other version: a change of columns, types or value rule gets a new number.
pub const FORMAT_VERSION: u32 = 1;
/// Key-value metadata key holding [`FORMAT_VERSION`] as decimal text.
pub const METADATA_FORMAT_VERSION_KEY: &str = "bluewave.format_version";
/// Key-value metadata key holding the [`ValueEncoding`] (`decimal(18,s)` or `float64`).
pub const METADATA_VALUE_ENCODING_KEY: &str = "bluewave.value_encoding";

/// Decimal precision of the value column. 18 digits is the most Parquet stores as `INT64`.
pub const DECIMAL_PRECISION: u8 = 18;
/// Largest decimal scale tried by [`ValueEncoding::choose`].
pub const DECIMAL_SCALE_MAX: u8 = 9;
/// Exclusive bound on the magnitude of an unscaled decimal: `10^18`, i.e. 18 digits.
const DECIMAL_UNSCALED_LIMIT: i64 = 1_000_000_000_000_000_000;
/// [`DECIMAL_UNSCALED_LIMIT`] as a double (exact: `10^18 = 2^18 * 5^18` and `5^18 < 2^53`).
const DECIMAL_UNSCALED_LIMIT_F64: f64 = 1e18;
const _: () = assert!(DECIMAL_UNSCALED_LIMIT_F64 as i64 == DECIMAL_UNSCALED_LIMIT);

/// `10^s` for every scale. Each is exact in `f64` and equal to `10_f64.powi(s)`, the factor
/// Arrow's `Decimal64 -> Float64` (and `Decimal128 -> Float64`) cast divides by, so a query
/// engine casting the decimal column gets the same bits as [`decode_partition`].
const POW10: [f64; DECIMAL_SCALE_MAX as usize + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// Most rows one partition file may hold (encode and decode refuse more). A bound on the
/// memory a file can claim: decoding costs about 29 bytes per row.
pub const PARTITION_ROWS_MAX: usize = 1 << 28;
/// Largest Parquet footer (thrift file metadata) a reader accepts before parsing it.
pub const FOOTER_BYTES_MAX: usize = 8 << 20;

/// Parquet's magic, at both ends of a file.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";
/// Magic + footer length + magic.
const PARQUET_FRAME_BYTES: usize = 4 + 4 + 4;

/// Rows handed to the Parquet writer at a time, so encoding never copies a whole partition.
const ENCODE_CHUNK_ROWS: usize = 65_536;
/// Rows per decoded Arrow batch.
const DECODE_BATCH_ROWS: usize = 65_536;
/// Parquet's write batch: page limits are checked between batches of this many values.
const WRITE_BATCH_ROWS_MAX: usize = 1_024;
/// Decode reserves room for the claimed row count only up to this many rows per file byte;
/// past that (a file claiming more rows than its size makes plausible) the vectors grow as
/// rows are actually decoded.
const PREALLOCATED_ROWS_PER_FILE_BYTE: usize = 256;

/// Values sampled (evenly spaced) to pick the float path's column encoding.
const FLOAT_LAYOUT_SAMPLE_MAX: usize = 4_096;

/// Rows of one time partition, column by column.
///
/// Invariants (checked by [`encode_partition`], guaranteed by [`decode_partition`]): all
/// per-row vectors have the same length; keys index the dictionaries; rows are sorted by
/// `(buoy name, metric name, ts)` in byte order of the names, with no two rows of one key;
/// values are finite; quality is a [`Quality`] byte. Dictionaries may hold unused names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionRows {
    /// Dictionary of buoy ids; each a valid [`BuoyId`].
    pub buoy_names: Vec<Arc<str>>,
    /// Dictionary of metric names; each a valid [`MetricName`].
    pub metric_names: Vec<Arc<str>>,
    /// Per row, index into `buoy_names`.
    pub buoy_keys: Vec<u32>,
    /// Per row, index into `metric_names`.
    pub metric_keys: Vec<u32>,
    /// Per row, ns since the Unix epoch, UTC.
    pub timestamps: Vec<TimestampNs>,
    /// Per row, the reading; finite.
    pub values: Vec<f64>,
    /// Per row, the [`Quality`] byte: 0 good, 1 out of range, 2 suspect.
    pub quality: Vec<u8>,
}

impl PartitionRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    fn with_capacity(rows: usize) -> Self {
        Self {
            buoy_names: Vec::new(),
            metric_names: Vec::new(),
            buoy_keys: Vec::with_capacity(rows),
            metric_keys: Vec::with_capacity(rows),
            timestamps: Vec::with_capacity(rows),
            values: Vec::with_capacity(rows),
            quality: Vec::with_capacity(rows),
        }
    }
}

/// How one file stores the `value` column; recorded as [`METADATA_VALUE_ENCODING_KEY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueEncoding {
    /// `DECIMAL(18, scale)` on `INT64`, delta-encoded: value `v` is stored as the integer `i` with
    /// `(i as f64) / 10^scale == v` bit for bit and `|i| < 10^18`.
    Decimal {
        /// Decimal digits after the point, `0..=9`.
        scale: u8,
    },
    /// `DOUBLE`, the value's own bits.
    Float64,
}

impl ValueEncoding {
    /// The encoding for a file holding `values` (all finite): `Decimal` with the smallest scale
    /// `s` in `0..=9` at which every value round-trips bit for bit through
    /// `i = (v * 10^s).round()`, `|i| < 10^18`, `(i as f64) / 10^s`; otherwise `Float64`.
    /// `-0.0` never round-trips (it comes back `+0.0`), so it forces `Float64`. An empty slice
    /// gives `Decimal { scale: 0 }`.
    pub fn choose(values: &[f64]) -> Self {
        // First pass: raise the scale until each value in turn fits. Every scale skipped is
        // refused by some value, so the answer is at least the scale reached.
        let mut scale = 0u8;
        for &v in values {
            while to_unscaled(v, scale).is_none() {
                if scale == DECIMAL_SCALE_MAX {
                    return Self::Float64;
                }
                scale += 1;
            }
        }
        // Fitting is not monotone in the scale (the 10^18 bound, rounding of large integers),
        // so values accepted at a smaller scale are checked again at the final one.
        loop {
            if values.iter().all(|&v| to_unscaled(v, scale).is_some()) {
                return Self::Decimal { scale };
            }
            if scale == DECIMAL_SCALE_MAX {
                return Self::Float64;
            }
            scale += 1;
        }
    }

    /// True when `v` can be stored with this encoding bit for bit.
    pub fn fits(self, v: f64) -> bool {
        match self {
            Self::Decimal { scale } => to_unscaled(v, scale).is_some(),
            Self::Float64 => v.is_finite(),
        }
    }

    /// The encoding of a file merging files stored with `self` and `other`: the larger scale
    /// of two decimals (a value exact at one scale is exact at any larger one unless it
    /// outgrows 18 digits, which [`Self::fits`] tells), otherwise `Float64`.
    pub fn widen(self, other: Self) -> Self {
        match (self, other) {
            (Self::Decimal { scale: a }, Self::Decimal { scale: b }) => Self::Decimal { scale: a.max(b) },
            _ => Self::Float64,
        }
    }

    /// Text stored under [`METADATA_VALUE_ENCODING_KEY`]: `decimal(18,3)` or `float64`.
    pub fn metadata_value(self) -> String {
        match self {
            Self::Decimal { scale } => format!("decimal({DECIMAL_PRECISION},{scale})"),
            Self::Float64 => "float64".to_owned(),
        }
    }

    /// Parses [`Self::metadata_value`]'s text.
    pub fn from_metadata_value(text: &str) -> Result<Self> {
        if text == "float64" {
            return Ok(Self::Float64);
        }
        let scale = text
            .strip_prefix("decimal(18,")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|digits| digits.parse::<u8>().ok())
            .filter(|&scale| scale <= DECIMAL_SCALE_MAX);
        match scale {
            Some(scale) => Ok(Self::Decimal { scale }),
            None => Err(not_ours(format_args!("unknown {METADATA_VALUE_ENCODING_KEY} {text:?}"))),
        }
    }
}

impl fmt::Display for ValueEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metadata_value())
    }
}

/// Arrow type of the `value` column of a file written with `encoding`.
pub fn partition_schema_value_type(encoding: ValueEncoding) -> DataType {
    match encoding {
        // `Decimal64`, not `Decimal128`: the values are `INT64` in the file, and a reader that
        // takes the type from the embedded Arrow schema (DataFusion) then keeps them as they
        // are decoded instead of widening each to 16 bytes and converting back through an
        // `i128 -> f64` library call. The scale is at most 9, so the cast cannot wrap.
        ValueEncoding::Decimal { scale } => DataType::Decimal64(DECIMAL_PRECISION, scale as i8),
        ValueEncoding::Float64 => DataType::Float64,
    }
}

/// Arrow type of the `buoy_id` and `metric` columns.
pub fn partition_schema_name_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
}

/// Arrow type of the `ts` column: `Timestamp(Nanosecond, "UTC")`.
pub fn partition_schema_ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(TS_TIMEZONE.into()))
}

/// Arrow schema of a file written with `encoding`; every field non-nullable.
pub fn partition_schema(encoding: ValueEncoding) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(COLUMN_BUOY_ID, partition_schema_name_type(), false),
        Field::new(COLUMN_METRIC, partition_schema_name_type(), false),
        Field::new(COLUMN_TS, partition_schema_ts_type(), false),
        Field::new(COLUMN_VALUE, partition_schema_value_type(encoding), false),
        Field::new(COLUMN_QUALITY, DataType::UInt8, false),
    ]))
}

/// The [`ValueEncoding`] a partition file declares in its key-value metadata, after checking
/// its format version. For readers (e.g. the query crate) that open files themselves.
pub fn partition_value_encoding(metadata: &ParquetMetaData) -> Result<ValueEncoding> {
    let key_values = metadata.file_metadata().key_value_metadata();
    let lookup = |key: &str| {
        key_values.and_then(|kvs| kvs.iter().find(|kv| kv.key == key)).and_then(|kv| kv.value.as_deref())
    };
    let version = lookup(METADATA_FORMAT_VERSION_KEY)
        .ok_or_else(|| not_ours(format_args!("no {METADATA_FORMAT_VERSION_KEY} in its metadata")))?;
    if version != FORMAT_VERSION.to_string() {
        return Err(not_ours(format_args!(
            "{METADATA_FORMAT_VERSION_KEY} is {version:?}; this build reads version {FORMAT_VERSION}"
        )));
    }
    let encoding = lookup(METADATA_VALUE_ENCODING_KEY)
        .ok_or_else(|| not_ours(format_args!("no {METADATA_VALUE_ENCODING_KEY} in its metadata")))?;
    ValueEncoding::from_metadata_value(encoding)
}

/// Writer settings of partition files. The defaults come from measurements on the marine
/// workload (PARTITION.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionWriteOptions {
    /// zstd level of every column, 1..=22. Default 12: on the marine workload it stores 5% less
    /// than level 3 (level 1 stores 3% more than 3) and still encodes about 7 M readings/s. Value
    /// pages are under 16 KB, and 12 is the first level whose zstd parameters for such small
    /// inputs use the optimal parser with 3-byte matches; levels above gain under 0.5%.
    pub zstd_level: i32,
    /// zstd level of the files a flush writes, 1..=22. Default 3: a flush is on the path that
    /// frees ingest's buffer, and its files are short-lived (compaction and the fold of a
    /// closed partition rewrite them at `zstd_level`); they store about 5% more.
    pub flush_zstd_level: i32,
    /// Most rows per row group, at least 1. Default 1,048,576 (about 36 buoy-hours of 8 metrics
    /// at 1 Hz): long sequential reads, and still several row groups per hourly partition of a
    /// large fleet for parallel scans.
    pub row_group_rows_max: usize,
    /// Most rows per data page, at least 1: the granularity of page-index pruning (best effort:
    /// Parquet checks it between write batches of up to 1,024 rows). Default 8,192 (about two
    /// buoy-metric-hours at 1 Hz): 3% larger files than 65,536-row pages, yet smaller than
    /// 20,000-row pages, whose value pages outgrow zstd's small-input parameters.
    pub data_page_rows_max: usize,
}

impl Default for PartitionWriteOptions {
    fn default() -> Self {
        Self { zstd_level: 12, flush_zstd_level: 3, row_group_rows_max: 1 << 20, data_page_rows_max: 8_192 }
    }
}

impl PartitionWriteOptions {
    /// Checks every field's bounds.
    pub fn validate(&self) -> Result<()> {
        if ZstdLevel::try_new(self.zstd_level).is_err() {
            return Err(Error::Config(format!("partition zstd_level {} is outside 1..=22", self.zstd_level)));
        }
        if ZstdLevel::try_new(self.flush_zstd_level).is_err() {
            return Err(Error::Config(format!(
                "partition flush_zstd_level {} is outside 1..=22",
                self.flush_zstd_level
            )));
        }
        if self.row_group_rows_max == 0 {
            return Err(Error::Config("partition row_group_rows_max must be at least 1".into()));
        }
        if self.data_page_rows_max == 0 {
            return Err(Error::Config("partition data_page_rows_max must be at least 1".into()));
        }
        Ok(())
    }
}

/// Compressed bytes of one file by column (dictionary and data pages with their headers, over
/// all row groups), plus the rest: magic, page indexes and footer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColumnBytes {
    /// The `buoy_id` column.
    pub buoy_id: u64,
    /// The `metric` column.
    pub metric: u64,
    /// The `ts` column.
    pub ts: u64,
    /// The `value` column.
    pub value: u64,
    /// The `quality` column.
    pub quality: u64,
    /// Magic bytes, column and offset indexes, footer.
    pub other: u64,
}

impl ColumnBytes {
    /// The whole file.
    pub fn total(&self) -> u64 {
        self.buoy_id + self.metric + self.ts + self.value + self.quality + self.other
    }
}

/// A written partition file.
#[derive(Clone, Debug)]
pub struct EncodedPartition {
    /// The complete Parquet file.
    pub bytes: Vec<u8>,
    /// How the `value` column was stored.
    pub value_encoding: ValueEncoding,
    /// Where the bytes went.
    pub column_bytes: ColumnBytes,
}

/// Encodes `rows` as one partition file.
///
/// Fails with [`Error::Config`] for invalid `options` and [`Error::Parquet`] when `rows` breaks
/// the [`PartitionRows`] invariants (a bug of the caller) or the writer fails.
pub fn encode_partition(rows: &PartitionRows, options: &PartitionWriteOptions) -> Result<EncodedPartition> {
    encode_partition_as(rows, ValueEncoding::choose(&rows.values), options)
}

/// [`encode_partition`] with the value encoding already chosen (the flush chooses it per
/// metric): saves a pass over the values. Fails with [`Error::Parquet`] when a value does not
/// fit `value_encoding`.
pub fn encode_partition_as(
    rows: &PartitionRows,
    value_encoding: ValueEncoding,
    options: &PartitionWriteOptions,
) -> Result<EncodedPartition> {
    options.validate()?;
    check_rows(rows).map_err(|reason| Error::Parquet(PartitionError::Unencodable(reason)))?;
    let properties = writer_properties(options, value_encoding, &rows.values)?.build();
    let encoded = write_file(rows, value_encoding, properties)?;
    tracing::debug!(
        rows = rows.len(),
        bytes = encoded.bytes.len(),
        value_encoding = %value_encoding,
        "encoded partition"
    );
    Ok(encoded)
}

/// The writer settings of a partition file holding `values` with `value_encoding`; see the
/// module documentation for the layout.
fn writer_properties(
    options: &PartitionWriteOptions,
    value_encoding: ValueEncoding,
    values: &[f64],
) -> Result<WriterPropertiesBuilder> {
    let zstd_level = ZstdLevel::try_new(options.zstd_level)?;
    let column = |name: &str| ColumnPath::from(name);
    let value_column_encoding = match value_encoding {
        ValueEncoding::Decimal { .. } => Encoding::DELTA_BINARY_PACKED,
        ValueEncoding::Float64 => float64_column_encoding(values),
    };
    let sorting_columns =
        (0..3).map(|column_idx| SortingColumn { column_idx, descending: false, nulls_first: false });
    Ok(WriterProperties::builder()
        // Version 1 data pages: read by every engine, including older Spark vectorized readers.
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_created_by(created_by())
        .set_key_value_metadata(Some(vec![
            KeyValue::new(METADATA_FORMAT_VERSION_KEY.to_owned(), FORMAT_VERSION.to_string()),
            KeyValue::new(METADATA_VALUE_ENCODING_KEY.to_owned(), value_encoding.metadata_value()),
        ]))
        .set_compression(Compression::ZSTD(zstd_level))
        .set_max_row_group_row_count(Some(options.row_group_rows_max))
        .set_data_page_row_count_limit(options.data_page_rows_max)
        .set_write_batch_size(options.data_page_rows_max.min(WRITE_BATCH_ROWS_MAX))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_offset_index_disabled(false)
        .set_bloom_filter_enabled(false)
        .set_sorting_columns(Some(sorting_columns.collect()))
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(column(COLUMN_BUOY_ID), true)
        .set_column_dictionary_enabled(column(COLUMN_METRIC), true)
        .set_column_dictionary_enabled(column(COLUMN_QUALITY), true)
        .set_column_encoding(column(COLUMN_TS), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(column(COLUMN_VALUE), value_column_encoding))
}

/// Encoding of the `value` column on the float path. Measured on the marine workload
/// (PARTITION.md): on raw doubles byte-stream-split + zstd stores 16% less than plain + zstd,
/// but on sensor-precision decimals pushed onto the float path (one `-0.0` is enough) plain +
/// zstd stores 4.5x less, as zstd finds the few distinct values of each series. Mixing the two
/// figures, plain wins above about 28% short decimals; an even sample decides with a third.
fn float64_column_encoding(values: &[f64]) -> Encoding {
    let stride = (values.len() / FLOAT_LAYOUT_SAMPLE_MAX).max(1);
    let (mut sampled, mut decimals) = (0usize, 0usize);
    for &v in values.iter().step_by(stride) {
        sampled += 1;
        if (0..=DECIMAL_SCALE_MAX).any(|scale| to_unscaled(v, scale).is_some()) {
            decimals += 1;
        }
    }
    if decimals * 3 >= sampled { Encoding::PLAIN } else { Encoding::BYTE_STREAM_SPLIT }
}

/// `created_by` in the `<application> version <version> (build <build>)` shape that other
/// engines parse (parquet-mr ignores string statistics of files whose `created_by` it cannot
/// parse).
fn created_by() -> String {
    format!(
        "bluewave version {} (build format {FORMAT_VERSION}, {})",
        env!("CARGO_PKG_VERSION"),
        parquet::file::properties::DEFAULT_CREATED_BY
    )
}

/// Writes checked `rows` with `value_encoding` (which every value must fit) under `properties`.
fn write_file(
    rows: &PartitionRows,
    value_encoding: ValueEncoding,
    properties: WriterProperties,
) -> Result<EncodedPartition> {
    let mut writer =
        PartitionWriter::with_properties(&rows.buoy_names, &rows.metric_names, value_encoding, properties)?;
    writer.write_checked(rows, 0..rows.len())?;
    writer.finish()
}

/// Encodes one partition file from sorted slices of rows that share one pair of dictionaries,
/// so a merge (compaction) never holds its whole output decoded. Every slice is checked
/// against the [`PartitionRows`] invariants, including the order across slices; the encoded
/// file stays in memory (about 0.6 bytes a reading) until [`PartitionWriter::finish`].
pub struct PartitionWriter {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    value_encoding: ValueEncoding,
    buoy_names: Vec<Arc<str>>,
    metric_names: Vec<Arc<str>>,
    buoy_dictionary: ArrayRef,
    metric_dictionary: ArrayRef,
    row_group_rows: usize,
    rows: usize,
    /// Key of the last row written (dictionary keys), to check the order across slices.
    last: Option<(u32, u32, TimestampNs)>,
}

impl fmt::Debug for PartitionWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionWriter")
            .field("value_encoding", &self.value_encoding)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl PartitionWriter {
    /// A writer of rows keyed into `buoy_names` and `metric_names` (each name valid), values
    /// stored with `value_encoding`. `sample` (values of the first rows, say) picks the float
    /// path's column layout.
    pub fn new(
        buoy_names: &[Arc<str>],
        metric_names: &[Arc<str>],
        value_encoding: ValueEncoding,
        sample: &[f64],
        options: &PartitionWriteOptions,
    ) -> Result<Self> {
        options.validate()?;
        let properties = writer_properties(options, value_encoding, sample)?.build();
        let writer = Self::with_properties(buoy_names, metric_names, value_encoding, properties)?;
        let names = PartitionRows {
            buoy_names: writer.buoy_names.clone(),
            metric_names: writer.metric_names.clone(),
            ..PartitionRows::default()
        };
        check_names(&names).map_err(|reason| Error::Parquet(PartitionError::Unencodable(reason)))?;
        Ok(writer)
    }

    fn with_properties(
        buoy_names: &[Arc<str>],
        metric_names: &[Arc<str>],
        value_encoding: ValueEncoding,
        properties: WriterProperties,
    ) -> Result<Self> {
        let schema = partition_schema(value_encoding);
        let row_group_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
        let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
        Ok(Self {
            writer,
            schema,
            value_encoding,
            buoy_names: buoy_names.to_vec(),
            metric_names: metric_names.to_vec(),
            buoy_dictionary: Arc::new(StringArray::from_iter_values(buoy_names.iter().map(|n| &**n))),
            metric_dictionary: Arc::new(StringArray::from_iter_values(metric_names.iter().map(|n| &**n))),
            row_group_rows,
            rows: 0,
            last: None,
        })
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends `rows` (whose dictionaries must be this writer's, their rows after every row
    /// written before). Fails with [`Error::Parquet`] on rows that break the invariants, come
    /// out of order, or hold a value that does not fit the value encoding; the writer is then
    /// not to be used further.
    pub fn write(&mut self, rows: &PartitionRows) -> Result<()> {
        let refuse = |reason: String| Error::Parquet(PartitionError::Unencodable(reason));
        if rows.buoy_names != self.buoy_names || rows.metric_names != self.metric_names {
            return Err(refuse("the rows' dictionaries are not the writer's".to_owned()));
        }
        if self.rows.saturating_add(rows.len()) > PARTITION_ROWS_MAX {
            return Err(refuse(format!("more than {PARTITION_ROWS_MAX} rows")));
        }
        let previous =
            self.last.map(|(b, m, t)| (&*self.buoy_names[b as usize], &*self.metric_names[m as usize], t));
        check_order(rows, previous).map_err(refuse)?;
        self.write_checked(rows, 0..rows.len())
    }

    /// Appends `rows[range]`, already checked, in chunks of [`ENCODE_CHUNK_ROWS`] that never
    /// straddle a row group, so pages start at multiples of the write batch.
    fn write_checked(&mut self, rows: &PartitionRows, range: std::ops::Range<usize>) -> Result<()> {
        let value_encoding = self.value_encoding;
        let dictionary_column = |keys: &[u32], dictionary: &ArrayRef| -> Result<ArrayRef> {
            Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(
                UInt32Array::from(keys.to_vec()),
                dictionary.clone(),
            )?))
        };
        let mut start = range.start;
        while start < range.end {
            let written = self.rows + (start - range.start);
            let row_group_end = (written / self.row_group_rows + 1).saturating_mul(self.row_group_rows);
            let end = range.end.min(start + ENCODE_CHUNK_ROWS).min(start + (row_group_end - written));
            let values: ArrayRef = match value_encoding {
                ValueEncoding::Decimal { scale } => {
                    let unscaled = rows.values[start..end]
                        .iter()
                        .map(|&v| to_unscaled(v, scale))
                        .collect::<Option<Vec<i64>>>()
                        .ok_or_else(|| {
                            Error::Parquet(PartitionError::Unencodable(format!(
                                "a value does not fit {value_encoding}"
                            )))
                        })?;
                    // The scale is at most 9, so the cast cannot wrap.
                    Arc::new(
                        Decimal64Array::from(unscaled)
                            .with_precision_and_scale(DECIMAL_PRECISION, scale as i8)?,
                    )
                }
                ValueEncoding::Float64 => Arc::new(Float64Array::from(rows.values[start..end].to_vec())),
            };
            let columns = vec![
                dictionary_column(&rows.buoy_keys[start..end], &self.buoy_dictionary)?,
                dictionary_column(&rows.metric_keys[start..end], &self.metric_dictionary)?,
                Arc::new(
                    TimestampNanosecondArray::from(rows.timestamps[start..end].to_vec())
                        .with_timezone(TS_TIMEZONE),
                ) as ArrayRef,
                values,
                Arc::new(UInt8Array::from(rows.quality[start..end].to_vec())),
            ];
            self.writer.write(&RecordBatch::try_new(self.schema.clone(), columns)?)?;
            start = end;
        }
        self.rows += range.len();
        if let Some(i) = range.end.checked_sub(1).filter(|_| !range.is_empty()) {
            self.last = Some((rows.buoy_keys[i], rows.metric_keys[i], rows.timestamps[i]));
        }
        Ok(())
    }

    /// Closes the file: its bytes and where they went.
    pub fn finish(self) -> Result<EncodedPartition> {
        let mut writer = self.writer;
        let metadata = writer.finish()?;
        // Finished: the buffer holds the whole file and nothing writes to it any more.
        let bytes = std::mem::take(writer.inner_mut());
        let mut column_bytes = ColumnBytes::default();
        for row_group in metadata.row_groups() {
            let size = |i: usize| {
                row_group.columns().get(i).map_or(0, |c| u64::try_from(c.compressed_size()).unwrap_or(0))
            };
            column_bytes.buoy_id += size(0);
            column_bytes.metric += size(1);
            column_bytes.ts += size(2);
            column_bytes.value += size(3);
            column_bytes.quality += size(4);
        }
        let columns_total = column_bytes.total();
        column_bytes.other = (bytes.len() as u64).saturating_sub(columns_total);
        Ok(EncodedPartition { bytes, value_encoding: self.value_encoding, column_bytes })
    }
}

/// Decodes a file written by [`encode_partition`] (any options), values bit for bit.
///
/// Untrusted bytes: the Parquet frame is checked before the footer is parsed, the footer's
/// format version, value encoding, schema and row counts before any page is decoded, and the
/// decoded rows against the [`PartitionRows`] invariants. Every failure is [`Error::Parquet`].
pub fn decode_partition(bytes: Bytes) -> Result<PartitionRows> {
    let mut reader = PartitionReader::open(bytes, DECODE_BATCH_ROWS)?;
    let preallocated =
        reader.rows_claimed.min(reader.file_bytes.saturating_mul(PREALLOCATED_ROWS_PER_FILE_BYTE));
    let mut rows = PartitionRows::with_capacity(preallocated);
    while let Some(slice) = reader.next_slice()? {
        rows.buoy_keys.extend_from_slice(&slice.buoy_keys);
        rows.metric_keys.extend_from_slice(&slice.metric_keys);
        rows.timestamps.extend_from_slice(&slice.timestamps);
        rows.values.extend_from_slice(&slice.values);
        rows.quality.extend_from_slice(&slice.quality);
        // Dictionaries only grow: the last slice's hold every earlier key.
        rows.buoy_names = slice.buoy_names;
        rows.metric_names = slice.metric_names;
    }
    Ok(rows)
}

/// Runs `f` behind an unwind boundary. parquet-rs 59 still panics on some damaged pages (an
/// over-long VLQ integer in a delta-encoded page asserts; shifts overflow in debug builds). A
/// damaged file must answer with an error, not take its reader down. This relies on
/// `panic = "unwind"`, the workspace's setting; callers drop whatever `f` touched after a
/// caught panic ([`PartitionReader`] marks itself failed), so no broken state is observed.
fn parquet_guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(corrupt(format_args!("the Parquet decoder failed on it: {message}")))
        }
    }
}

/// Reads a partition file in sorted slices of at most `batch_rows` rows, so a merge of many
/// files (compaction) holds a slice of each instead of whole files. Untrusted bytes: checked
/// exactly as [`decode_partition`] checks them (which is built on this reader): the frame
/// before the footer is parsed, the footer's format version, value encoding, schema and row
/// counts before any page is decoded, and every slice against the [`PartitionRows`]
/// invariants, including the order across slices.
pub struct PartitionReader {
    batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    value_encoding: ValueEncoding,
    buoys: NameInterner,
    metrics: NameInterner,
    rows_claimed: usize,
    rows_read: usize,
    file_bytes: usize,
    /// Key of the last row read, to check the order across slices.
    last: Option<(Arc<str>, Arc<str>, TimestampNs)>,
    /// Set once a slice failed: the decoder's state is not trusted after that.
    failed: bool,
}

impl fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionReader")
            .field("value_encoding", &self.value_encoding)
            .field("rows_claimed", &self.rows_claimed)
            .field("rows_read", &self.rows_read)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    /// Checks the frame and footer of `bytes` and prepares to read slices of at most
    /// `batch_rows` rows (at least 1).
    pub fn open(bytes: Bytes, batch_rows: usize) -> Result<Self> {
        let data_end = check_parquet_frame(&bytes)?;
        let file_bytes = bytes.len();
        parquet_guarded(|| {
            let metadata = ParquetMetaDataReader::new().parse_and_finish(&bytes)?;
            let value_encoding = partition_value_encoding(&metadata)?;
            check_parquet_schema(&metadata, value_encoding)?;
            let rows_claimed = check_row_groups(&metadata, data_end)?;
            // The Arrow types come from our schema, checked against the Parquet leaves above;
            // the embedded `ARROW:schema` (an IPC flatbuffer) is never parsed.
            let options = ArrowReaderOptions::new().with_schema(partition_schema(value_encoding));
            let reader_metadata = ArrowReaderMetadata::try_new(Arc::new(metadata), options)?;
            let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, reader_metadata)
                .with_batch_size(batch_rows.max(1))
                .build()?;
            Ok(Self {
                batches,
                value_encoding,
                buoys: NameInterner::default(),
                metrics: NameInterner::default(),
                rows_claimed,
                rows_read: 0,
                file_bytes,
                last: None,
                failed: false,
            })
        })
    }

    /// How the file stores its values.
    pub fn value_encoding(&self) -> ValueEncoding {
        self.value_encoding
    }

    /// Rows the footer claims (all checked by the time the last slice is read).
    pub fn rows(&self) -> usize {
        self.rows_claimed
    }

    /// The next slice of rows, or `None` after the last. A slice's dictionaries hold every
    /// name read so far from the file, in first-seen order: keys of earlier slices stay valid.
    pub fn next_slice(&mut self) -> Result<Option<PartitionRows>> {
        if self.failed {
            return Err(corrupt("an earlier slice of it failed to decode"));
        }
        let result = parquet_guarded(|| self.read_slice());
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn read_slice(&mut self) -> Result<Option<PartitionRows>> {
        let Some(batch) = self.batches.next() else {
            if self.rows_read != self.rows_claimed {
                return Err(corrupt(format_args!(
                    "it holds {} rows, its footer says {}",
                    self.rows_read, self.rows_claimed
                )));
            }
            return Ok(None);
        };
        let batch = batch?;
        if self.rows_read + batch.num_rows() > self.rows_claimed {
            return Err(corrupt("it holds more rows than its footer says"));
        }
        let mut rows = PartitionRows::with_capacity(batch.num_rows());
        append_batch(&mut rows, &batch, self.value_encoding, &mut self.buoys, &mut self.metrics)?;
        rows.buoy_names = self.buoys.names.clone();
        rows.metric_names = self.metrics.names.clone();
        check_names(&rows).map_err(corrupt)?;
        check_order(&rows, self.last.as_ref().map(|(b, m, t)| (&**b, &**m, *t))).map_err(corrupt)?;
        self.rows_read += rows.len();
        if let Some(i) = rows.len().checked_sub(1) {
            self.last = Some((
                rows.buoy_names[rows.buoy_keys[i] as usize].clone(),
                rows.metric_names[rows.metric_keys[i] as usize].clone(),
                rows.timestamps[i],
            ));
        }
        Ok(Some(rows))
    }
}

/// Checks that `bytes` is framed like a Parquet file with a plaintext footer of sane length;
/// returns the offset where the footer starts (the end of the column chunks).
fn check_parquet_frame(bytes: &[u8]) -> Result<usize> {
    let len = bytes.len();
    if len < PARQUET_FRAME_BYTES {
        return Err(not_ours(format_args!("{len} bytes is too short for a Parquet file")));
    }
    if &bytes[..4] != PARQUET_MAGIC || &bytes[len - 4..] != PARQUET_MAGIC {
        return Err(not_ours("it lacks the PAR1 magic at both ends"));
    }
    let footer_len =
        u32::from_le_bytes([bytes[len - 8], bytes[len - 7], bytes[len - 6], bytes[len - 5]]) as usize;
    if footer_len > len - PARQUET_FRAME_BYTES || footer_len > FOOTER_BYTES_MAX {
        return Err(corrupt(format_args!("footer length {footer_len} does not fit a {len}-byte file")));
    }
    Ok(len - 8 - footer_len)
}

/// Checks the Parquet columns (names, nesting, physical and logical types, `REQUIRED`) against
/// the partition layout for `value_encoding`.
fn check_parquet_schema(metadata: &ParquetMetaData, value_encoding: ValueEncoding) -> Result<()> {
    let (value_physical, value_logical) = match value_encoding {
        ValueEncoding::Decimal { scale } => (
            PhysicalType::INT64,
            Some(LogicalType::Decimal(DecimalType {
                scale: i32::from(scale),
                precision: i32::from(DECIMAL_PRECISION),
            })),
        ),
        ValueEncoding::Float64 => (PhysicalType::DOUBLE, None),
    };
    let expected = [
        (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        (
            PhysicalType::INT64,
            Some(LogicalType::Timestamp(TimestampType {
                is_adjusted_to_u_t_c: true,
                unit: ParquetTimeUnit::NANOS,
            })),
        ),
        (value_physical, value_logical),
        (PhysicalType::INT32, Some(LogicalType::Integer(IntType { bit_width: 8, is_signed: false }))),
    ];
    let schema = metadata.file_metadata().schema_descr();
    let leaves = schema.columns();
    let same = schema.root_schema().get_fields().len() == expected.len()
        && leaves.len() == expected.len()
        && leaves.iter().zip(COLUMN_NAMES.iter().zip(&expected)).all(
            |(leaf, (name, (physical, logical)))| {
                leaf.path().parts() == [*name]
                    && leaf.physical_type() == *physical
                    && leaf.logical_type_ref() == logical.as_ref()
                    && leaf.max_def_level() == 0
                    && leaf.max_rep_level() == 0
            },
        );
    if !same {
        return Err(not_ours(format_args!(
            "its columns are {:?}, not the {value_encoding} partition layout",
            leaves
                .iter()
                .map(|leaf| format!("{} {} {:?}", leaf.path(), leaf.physical_type(), leaf.logical_type_ref()))
                .collect::<Vec<_>>()
        )));
    }
    Ok(())
}

/// The file's row count, after checking it against its row groups and [`PARTITION_ROWS_MAX`],
/// and every column chunk's value count and byte range (inside `4..data_end`) against its row
/// group and the file.
fn check_row_groups(metadata: &ParquetMetaData, data_end: usize) -> Result<usize> {
    let rows = usize::try_from(metadata.file_metadata().num_rows())
        .ok()
        .filter(|&rows| rows <= PARTITION_ROWS_MAX)
        .ok_or_else(|| corrupt(format_args!("row count {}", metadata.file_metadata().num_rows())))?;
    let data = PARQUET_MAGIC.len() as i64..=data_end as i64;
    let mut row_group_rows = 0usize;
    for (g, row_group) in metadata.row_groups().iter().enumerate() {
        let group_rows = usize::try_from(row_group.num_rows())
            .map_err(|_| corrupt(format_args!("row group {g} of {} rows", row_group.num_rows())))?;
        row_group_rows = row_group_rows.saturating_add(group_rows);
        for (c, chunk) in row_group.columns().iter().enumerate() {
            let start = chunk.dictionary_page_offset().unwrap_or_else(|| chunk.data_page_offset());
            let end = start.checked_add(chunk.compressed_size());
            let inside = chunk.compressed_size() >= 0
                && data.contains(&start)
                && end.is_some_and(|end| data.contains(&end));
            if !inside || chunk.num_values() != row_group.num_rows() {
                return Err(corrupt(format_args!(
                    "row group {g} column {c}: {} values at {start}+{} in a {}-row group, data ends at {data_end}",
                    chunk.num_values(),
                    chunk.compressed_size(),
                    row_group.num_rows()
                )));
            }
        }
    }
    if row_group_rows != rows {
        return Err(corrupt(format_args!("row groups hold {row_group_rows} rows, the footer says {rows}")));
    }
    Ok(rows)
}

/// Appends one decoded batch (schema already checked) to `rows`.
fn append_batch(
    rows: &mut PartitionRows,
    batch: &RecordBatch,
    value_encoding: ValueEncoding,
    buoys: &mut NameInterner,
    metrics: &mut NameInterner,
) -> Result<()> {
    if batch.columns().iter().any(|column| column.null_count() != 0) {
        return Err(corrupt("a column holds nulls"));
    }
    buoys.append_keys(batch.column(0), &mut rows.buoy_keys)?;
    metrics.append_keys(batch.column(1), &mut rows.metric_keys)?;
    let timestamps = downcast::<TimestampNanosecondArray>(batch.column(2), COLUMN_TS)?;
    rows.timestamps.extend_from_slice(timestamps.values());
    match value_encoding {
        ValueEncoding::Decimal { scale } => {
            let unscaled = downcast::<Decimal64Array>(batch.column(3), COLUMN_VALUE)?;
            for &i in unscaled.values().iter() {
                if i.unsigned_abs() >= DECIMAL_UNSCALED_LIMIT.unsigned_abs() {
                    return Err(corrupt(format_args!("decimal value {i} has more than 18 digits")));
                }
                rows.values.push(from_unscaled(i, scale));
            }
        }
        ValueEncoding::Float64 => {
            rows.values.extend_from_slice(downcast::<Float64Array>(batch.column(3), COLUMN_VALUE)?.values());
        }
    }
    rows.quality.extend_from_slice(downcast::<UInt8Array>(batch.column(4), COLUMN_QUALITY)?.values());
    Ok(())
}

fn downcast<'a, T: 'static>(column: &'a ArrayRef, name: &str) -> Result<&'a T> {
    column
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| corrupt(format_args!("column {name} decoded as {}", column.data_type())))
}

/// Builds one dictionary for a name column over batches that each bring their own dictionary
/// (one per row group).
#[derive(Default)]
struct NameInterner {
    names: Vec<Arc<str>>,
    keys: HashMap<Arc<str>, u32>,
}

impl NameInterner {
    fn append_keys(&mut self, column: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        let dictionary = downcast::<DictionaryArray<UInt32Type>>(column, "name")?;
        let names = dictionary
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| corrupt("a name dictionary is not UTF-8 strings"))?;
        let mut remap = Vec::with_capacity(names.len());
        for name in names.iter() {
            let name = name.ok_or_else(|| corrupt("a name dictionary holds a null"))?;
            let key = match self.keys.get(name) {
                Some(&key) => key,
                None => {
                    let key = u32::try_from(self.names.len()).map_err(|_| corrupt("too many names"))?;
                    let name: Arc<str> = Arc::from(name);
                    self.names.push(name.clone());
                    self.keys.insert(name, key);
                    key
                }
            };
            remap.push(key);
        }
        for &local in dictionary.keys().values().iter() {
            let key = remap.get(local as usize).ok_or_else(|| corrupt("a dictionary key is out of range"))?;
            out.push(*key);
        }
        Ok(())
    }
}

/// Checks the [`PartitionRows`] invariants; the error says which row breaks which.
fn check_rows(rows: &PartitionRows) -> std::result::Result<(), String> {
    check_names(rows)?;
    check_order(rows, None)
}

/// Checks column lengths, the row bound and every dictionary name.
fn check_names(rows: &PartitionRows) -> std::result::Result<(), String> {
    let len = rows.len();
    let lengths = [rows.buoy_keys.len(), rows.metric_keys.len(), rows.values.len(), rows.quality.len()];
    if lengths.iter().any(|&l| l != len) {
        return Err(format!(
            "column lengths differ: {len} timestamps, [buoy, metric, value, quality] {lengths:?}"
        ));
    }
    if len > PARTITION_ROWS_MAX {
        return Err(format!("{len} rows is above the limit of {PARTITION_ROWS_MAX}"));
    }
    for name in &rows.buoy_names {
        BuoyId::new(name).map_err(|e| e.to_string())?;
    }
    for name in &rows.metric_names {
        MetricName::new(name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Checks keys, values, quality and the `(buoy, metric, ts)` order of rows whose columns have
/// equal lengths, the first row also against `previous` (the key of the row before, by name).
fn check_order(
    rows: &PartitionRows,
    previous: Option<(&str, &str, TimestampNs)>,
) -> std::result::Result<(), String> {
    let len = rows.len();
    let mut before: Option<(u32, u32, TimestampNs)> = None;
    for i in 0..len {
        let (buoy, metric, ts) = (rows.buoy_keys[i], rows.metric_keys[i], rows.timestamps[i]);
        let buoy_name = rows
            .buoy_names
            .get(buoy as usize)
            .ok_or_else(|| format!("row {i}: buoy key {buoy} out of range"))?;
        let metric_name = rows
            .metric_names
            .get(metric as usize)
            .ok_or_else(|| format!("row {i}: metric key {metric} out of range"))?;
        if !rows.values[i].is_finite() {
            return Err(format!("row {i}: value is not finite"));
        }
        if Quality::from_u8(rows.quality[i]).is_none() {
            return Err(format!("row {i}: quality {} is not a quality flag", rows.quality[i]));
        }
        let ascending = match before {
            Some((previous_buoy, previous_metric, previous_ts)) => {
                if (buoy, metric) == (previous_buoy, previous_metric) {
                    ts > previous_ts
                } else {
                    // Keys index the dictionaries, checked on the previous row.
                    let previous_key = (
                        &*rows.buoy_names[previous_buoy as usize],
                        &*rows.metric_names[previous_metric as usize],
                        previous_ts,
                    );
                    (&**buoy_name, &**metric_name, ts) > previous_key
                }
            }
            None => previous.is_none_or(|key| (&**buoy_name, &**metric_name, ts) > key),
        };
        if !ascending {
            return Err(match i {
                0 => "its first row is not after the row before in (buoy_id, metric, ts) order".to_owned(),
                _ => format!("row {i} is not after row {} in (buoy_id, metric, ts) order", i - 1),
            });
        }
        before = Some((buoy, metric, ts));
    }
    Ok(())
}

/// The unscaled decimal of `v` at `scale`, if `v` round-trips through it bit for bit.
#[inline]
fn to_unscaled(v: f64, scale: u8) -> Option<i64> {
    let factor = *POW10.get(usize::from(scale))?;
    let scaled = (v * factor).round();
    // Also refuses NaN and the infinities a huge `v` scales to.
    if scaled.is_nan() || scaled.abs() >= DECIMAL_UNSCALED_LIMIT_F64 {
        return None;
    }
    // In range by the check above, so the cast is exact.
    let unscaled = scaled as i64;
    (from_unscaled(unscaled, scale).to_bits() == v.to_bits()).then_some(unscaled)
}

/// The value of an unscaled decimal: `(i as f64) / 10^scale`, the one formula of both
/// directions (and of Arrow's decimal-to-float cast).
#[inline]
fn from_unscaled(unscaled: i64, scale: u8) -> f64 {
    unscaled as f64 / POW10[usize::from(scale.min(DECIMAL_SCALE_MAX))]
}

/// A file that is not a BlueWave partition (foreign schema, other format version).
fn not_ours(reason: impl fmt::Display) -> Error {
    Error::Parquet(PartitionError::Foreign(reason.to_string()))
}

/// A partition file whose content breaks the layout.
fn corrupt(reason: impl fmt::Display) -> Error {
    Error::Parquet(PartitionError::Corrupt(reason.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use arrow_array::PrimitiveArray;
    use arrow_array::types::{Decimal64Type, Decimal128Type};
    use parquet::file::metadata::PageIndexPolicy;
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    use proptest::prelude::*;

    use super::*;
    use crate::types::{DEFAULT_METRIC_RANGES, NANOS_PER_SECOND, PhysicalRange};

    // ------------------------------------------------------------------------------------------
    // Row builders

    /// 2025-06-01T12:00:00Z: partitions in these tests start at noon, when the diurnal cycle is
    /// at its steepest.
    const PARTITION_START_NS: TimestampNs = 1_748_779_200 * NANOS_PER_SECOND;

    /// Rows carrying `values` in key order: 4 timestamps per (buoy, metric), 3 metrics per buoy.
    fn rows_with_values(values: &[f64]) -> PartitionRows {
        let n = values.len();
        let buoys = n / 12 + 1;
        let mut rows = PartitionRows {
            buoy_names: (0..buoys).map(|b| Arc::from(format!("buoy-{b:04}"))).collect(),
            metric_names: ["m_a", "m_b", "m_c"].into_iter().map(Arc::from).collect(),
            ..PartitionRows::default()
        };
        for (i, &value) in values.iter().enumerate() {
            rows.buoy_keys.push((i / 12) as u32);
            rows.metric_keys.push((i / 4 % 3) as u32);
            rows.timestamps.push(PARTITION_START_NS + (i % 4) as i64 * NANOS_PER_SECOND);
            rows.values.push(value);
            rows.quality.push((i % 3) as u8);
        }
        rows
    }

    fn assert_bit_exact(found: &PartitionRows, wanted: &PartitionRows) {
        assert_eq!(found.len(), wanted.len());
        let name = |names: &[Arc<str>], key: u32| names[key as usize].clone();
        for i in 0..wanted.len() {
            assert_eq!(
                name(&found.buoy_names, found.buoy_keys[i]),
                name(&wanted.buoy_names, wanted.buoy_keys[i])
            );
            assert_eq!(
                name(&found.metric_names, found.metric_keys[i]),
                name(&wanted.metric_names, wanted.metric_keys[i])
            );
            assert_eq!(found.timestamps[i], wanted.timestamps[i], "row {i}");
            assert_eq!(
                found.values[i].to_bits(),
                wanted.values[i].to_bits(),
                "row {i}: {} vs {}",
                found.values[i],
                wanted.values[i]
            );
            assert_eq!(found.quality[i], wanted.quality[i], "row {i}");
        }
    }

    fn round_trip(rows: &PartitionRows) -> (EncodedPartition, PartitionRows) {
        let encoded = encode_partition(rows, &PartitionWriteOptions::default()).unwrap();
        let decoded = decode_partition(Bytes::from(encoded.bytes.clone())).unwrap();
        assert_bit_exact(&decoded, rows);
        (encoded, decoded)
    }

    // ------------------------------------------------------------------------------------------
    // The value rule

    #[test]
    fn pow10_table_is_the_arrow_cast_factor() {
        for (scale, &factor) in POW10.iter().enumerate() {
            assert_eq!(factor.to_bits(), 10_f64.powi(scale as i32).to_bits());
        }
    }

    #[test]
    fn value_encoding_is_the_smallest_exact_scale() {
        let choose = ValueEncoding::choose;
        assert_eq!(choose(&[]), ValueEncoding::Decimal { scale: 0 });
        assert_eq!(choose(&[0.0, 1.0, -7.0]), ValueEncoding::Decimal { scale: 0 });
        assert_eq!(choose(&[35.127, 8.093, 12.5]), ValueEncoding::Decimal { scale: 3 });
        assert_eq!(choose(&[1.5, 2.25]), ValueEncoding::Decimal { scale: 2 });
        assert_eq!(choose(&[0.1, 0.2]), ValueEncoding::Decimal { scale: 1 });
        assert_eq!(choose(&[0.123_456_789]), ValueEncoding::Decimal { scale: 9 });
        assert_eq!(choose(&[0.1 + 0.2]), ValueEncoding::Float64, "0.30000000000000004 is no short decimal");
        assert_eq!(choose(&[0.123_456_789_1]), ValueEncoding::Float64, "10 decimals");
        assert_eq!(choose(&[-0.0]), ValueEncoding::Float64, "-0.0 would come back +0.0");
        assert_eq!(choose(&[1.0, -0.0]), ValueEncoding::Float64);
        assert_eq!(choose(&[5e-324]), ValueEncoding::Float64, "subnormal");
        assert_eq!(choose(&[f64::MAX]), ValueEncoding::Float64);
        assert_eq!(choose(&[1e17]), ValueEncoding::Decimal { scale: 0 });
        assert_eq!(choose(&[1e18]), ValueEncoding::Float64, "19 digits");
        // 1e17 fits only at scale 0 and 0.5 needs scale 1: no single scale fits both.
        assert_eq!(choose(&[1e17, 0.5]), ValueEncoding::Float64);
        assert_eq!(choose(&[2f64.powi(-30)]), ValueEncoding::Float64, "30 binary places");
    }

    #[test]
    fn value_encoding_metadata_text_round_trips() {
        for encoding in (0..=DECIMAL_SCALE_MAX)
            .map(|scale| ValueEncoding::Decimal { scale })
            .chain([ValueEncoding::Float64])
        {
            assert_eq!(ValueEncoding::from_metadata_value(&encoding.metadata_value()).unwrap(), encoding);
        }
        assert_eq!(ValueEncoding::Decimal { scale: 3 }.metadata_value(), "decimal(18,3)");
        for bad in ["", "decimal(18,10)", "decimal(17,3)", "decimal(18,-1)", "float32", "decimal(18,3"] {
            assert!(ValueEncoding::from_metadata_value(bad).is_err(), "{bad}");
        }
    }

    /// Any finite double: uniform over bit patterns (mostly huge or tiny magnitudes, some
    /// subnormals), the edge cases by name, and short decimals.
    fn finite_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u64>().prop_map(f64::from_bits).prop_filter("finite", |v| v.is_finite()),
            prop::sample::select(vec![
                0.0,
                -0.0,
                5e-324,
                -5e-324,
                f64::MIN_POSITIVE,
                f64::MIN_POSITIVE / 3.0,
                f64::MAX,
                f64::MIN,
                1e18,
                -1e17,
                9_007_199_254_740_993.0,
            ]),
            (-1_000_000_000i64..1_000_000_000, 0u8..=DECIMAL_SCALE_MAX)
                .prop_map(|(i, scale)| i as f64 / POW10[usize::from(scale)]),
            (-1e6..1e6f64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn any_finite_values_round_trip_bit_exact(values in prop::collection::vec(finite_f64(), 1..200)) {
            let rows = rows_with_values(&values);
            let (encoded, _) = round_trip(&rows);
            prop_assert_eq!(encoded.value_encoding, ValueEncoding::choose(&values));
            if values.iter().any(|v| v.to_bits() == (-0.0f64).to_bits() || v.is_subnormal()) {
                prop_assert_eq!(encoded.value_encoding, ValueEncoding::Float64);
            }
        }

        #[test]
        fn decimal_values_take_the_decimal_path_bit_exact(
            scale in 0u8..=DECIMAL_SCALE_MAX,
            unscaled in prop::collection::vec(-(1i64 << 50)..(1i64 << 50), 1..200),
        ) {
            // The nearest double of each decimal `i / 10^scale`.
            let values: Vec<f64> = unscaled.iter().map(|&i| i as f64 / POW10[usize::from(scale)]).collect();
            let rows = rows_with_values(&values);
            let (encoded, _) = round_trip(&rows);
            match encoded.value_encoding {
                ValueEncoding::Decimal { scale: chosen } => prop_assert!(chosen <= scale),
                ValueEncoding::Float64 => prop_assert!(false, "decimal data took the float path"),
            }
        }
    }

    #[test]
    fn edge_values_round_trip_on_both_paths() {
        let floats = [-0.0, 0.0, 5e-324, f64::MAX, f64::MIN, 1.0 / 3.0, 35.127];
        let (encoded, _) = round_trip(&rows_with_values(&floats));
        assert_eq!(encoded.value_encoding, ValueEncoding::Float64);
        let decimals = [0.0, 99_999_999.999_999_99, -123_456_789.5, 0.000_000_001, 35.127];
        let (encoded, _) = round_trip(&rows_with_values(&decimals));
        assert_eq!(encoded.value_encoding, ValueEncoding::Decimal { scale: 9 });
    }

    #[test]
    fn empty_partition_round_trips() {
        let (encoded, decoded) = round_trip(&PartitionRows::default());
        assert_eq!(encoded.value_encoding, ValueEncoding::Decimal { scale: 0 });
        assert!(decoded.is_empty());
    }

    #[test]
    fn encode_refuses_rows_that_break_the_invariants() {
        let good = rows_with_values(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let options = PartitionWriteOptions::default();
        assert!(encode_partition(&good, &options).is_ok());
        let refused = |mutate: &dyn Fn(&mut PartitionRows)| {
            let mut rows = good.clone();
            mutate(&mut rows);
            matches!(encode_partition(&rows, &options), Err(Error::Parquet(_)))
        };
        assert!(refused(&|r| r.timestamps.swap(0, 1)), "unsorted");
        assert!(refused(&|r| r.timestamps[1] = r.timestamps[0]), "duplicate key");
        assert!(refused(&|r| r.values[2] = f64::NAN), "NaN");
        assert!(refused(&|r| r.values[2] = f64::NEG_INFINITY), "infinity");
        assert!(refused(&|r| r.quality[0] = 3), "unknown quality");
        assert!(refused(&|r| r.metric_keys[4] = 9), "key outside the dictionary");
        assert!(
            refused(&|r| {
                r.values.pop();
            }),
            "short column"
        );
        assert!(refused(&|r| r.buoy_names[0] = Arc::from("has space")), "invalid buoy id");
        assert!(refused(&|r| r.metric_names[0] = Arc::from("Upper")), "invalid metric name");
        // Names sort by text, not by key: swapping the dictionary entries unsorts the rows.
        let mut rows = rows_with_values(&[1.0; 24]);
        rows.buoy_names.swap(0, 1);
        assert!(encode_partition(&rows, &options).is_err());

        for bad in [
            PartitionWriteOptions { zstd_level: 0, ..options.clone() },
            PartitionWriteOptions { zstd_level: 23, ..options.clone() },
            PartitionWriteOptions { row_group_rows_max: 0, ..options.clone() },
            PartitionWriteOptions { data_page_rows_max: 0, ..options.clone() },
        ] {
            assert!(matches!(encode_partition(&good, &bad), Err(Error::Config(_))), "{bad:?}");
        }
    }

    // ------------------------------------------------------------------------------------------
    // Untrusted bytes

    fn assert_parquet_error(bytes: impl Into<Bytes>, what: &str) {
        match decode_partition(bytes.into()) {
            Err(Error::Parquet(_)) => {}
            other => panic!("{what}: expected Error::Parquet, got {other:?}"),
        }
    }

    #[test]
    fn garbage_bytes_are_errors() {
        let valid =
            encode_partition(&rows_with_values(&[35.127, 8.093, 12.5]), &PartitionWriteOptions::default())
                .unwrap()
                .bytes;
        assert_parquet_error(Vec::new(), "empty");
        assert_parquet_error(b"PAR1".to_vec(), "magic only");
        assert_parquet_error(b"PAR1PAR1PAR1".to_vec(), "three magics");
        assert_parquet_error(vec![0u8; 4096], "zeros");
        assert_parquet_error(b"PAR1\xff\xff\xff\xff\xff\xff\xff\x7fPAR1".to_vec(), "huge footer length");
        let mut footer_too_long = valid.clone();
        let len = footer_too_long.len();
        footer_too_long[len - 8..len - 4].copy_from_slice(&(len as u32).to_le_bytes());
        assert_parquet_error(footer_too_long, "footer longer than the file");
        let mut encrypted = valid.clone();
        encrypted[len - 4..].copy_from_slice(b"PARE");
        assert_parquet_error(encrypted, "encrypted-footer magic");
        for cut in [1, 8, 9, 100, valid.len() / 2] {
            assert_parquet_error(valid[..valid.len() - cut].to_vec(), "truncated");
        }
        // Every single-byte corruption is either refused or decodes to rows that keep the
        // invariants (Parquet has no checksum over data pages); none panics.
        for position in 0..valid.len() {
            let mut damaged = valid.clone();
            damaged[position] ^= 0x5a;
            if let Ok(rows) = decode_partition(Bytes::from(damaged)) {
                assert!(check_rows(&rows).is_ok());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_are_errors(mut bytes in prop::collection::vec(any::<u8>(), 0..2048), framed in any::<bool>()) {
            if framed && bytes.len() >= 12 {
                let len = bytes.len();
                bytes[..4].copy_from_slice(PARQUET_MAGIC);
                bytes[len - 4..].copy_from_slice(PARQUET_MAGIC);
                let footer = ((len - 12) as u32).min(u32::from(bytes[4]) * 4);
                bytes[len - 8..len - 4].copy_from_slice(&footer.to_le_bytes());
            }
            prop_assert!(matches!(decode_partition(Bytes::from(bytes)), Err(Error::Parquet(_))));
        }
    }

    /// Small files to damage, built once: two row groups of several pages on the decimal path,
    /// and the same on the float path.
    static DAMAGE_TARGETS: std::sync::LazyLock<[Vec<u8>; 2]> = std::sync::LazyLock::new(|| {
        let rows = marine_rows(1, 300, Quantize::SensorPrecision);
        let options = PartitionWriteOptions {
            row_group_rows_max: 1_500,
            data_page_rows_max: 256,
            ..Default::default()
        };
        let decimal = encode_partition(&rows, &options).unwrap().bytes;
        let mut float_rows = rows;
        float_rows.values[7] = 1.0 / 3.0;
        let float = encode_partition(&float_rows, &options).unwrap().bytes;
        [decimal, float]
    });

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Damage anywhere, or in the footer and page indexes at the end, never panics; when
        /// the damage goes unnoticed the rows still keep the invariants.
        #[test]
        fn damaged_files_never_panic(
            target in 0usize..2,
            damage in prop::collection::vec((any::<bool>(), any::<prop::sample::Index>(), any::<u8>()), 1..5),
        ) {
            let mut bytes = DAMAGE_TARGETS[target].clone();
            let len = bytes.len();
            for (near_end, index, byte) in damage {
                let position = if near_end { len - 1 - index.index(len.min(1_024)) } else { index.index(len) };
                bytes[position] = byte;
            }
            match decode_partition(Bytes::from(bytes)) {
                Ok(rows) => prop_assert!(check_rows(&rows).is_ok()),
                Err(error) => prop_assert!(matches!(error, Error::Parquet(_))),
            }
        }
    }

    /// A Parquet file with `columns` under `schema` and the given key-value metadata, written
    /// by a plain Arrow writer (no checks of ours).
    fn write_raw(schema: SchemaRef, columns: Vec<ArrayRef>, key_values: Option<Vec<KeyValue>>) -> Bytes {
        let properties = WriterProperties::builder().set_key_value_metadata(key_values).build();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties)).unwrap();
        writer.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
        writer.close().unwrap();
        Bytes::from(bytes)
    }

    fn our_key_values(version: &str, encoding: &str) -> Option<Vec<KeyValue>> {
        Some(vec![
            KeyValue::new(METADATA_FORMAT_VERSION_KEY.to_owned(), version.to_owned()),
            KeyValue::new(METADATA_VALUE_ENCODING_KEY.to_owned(), encoding.to_owned()),
        ])
    }

    /// Columns in our schema: `buoys`, metric `ph`, 1 s apart, `values`, `quality`.
    fn our_columns(buoys: &[&str], values: ArrayRef, quality: &[u8]) -> Vec<ArrayRef> {
        let n = buoys.len();
        vec![
            Arc::new(buoys.iter().copied().collect::<DictionaryArray<UInt32Type>>()),
            Arc::new(std::iter::repeat_n("ph", n).collect::<DictionaryArray<UInt32Type>>()),
            Arc::new(
                TimestampNanosecondArray::from_iter_values(
                    (0..n as i64).map(|i| PARTITION_START_NS + i * NANOS_PER_SECOND),
                )
                .with_timezone(TS_TIMEZONE),
            ),
            values,
            Arc::new(UInt8Array::from(quality.to_vec())),
        ]
    }

    fn decimals(unscaled: &[i64], scale: u8) -> ArrayRef {
        Arc::new(
            PrimitiveArray::<Decimal64Type>::from(unscaled.to_vec())
                .with_precision_and_scale(DECIMAL_PRECISION, scale as i8)
                .unwrap(),
        )
    }

    #[test]
    fn files_written_with_decimal128_values_still_decode() {
        // Files before `Decimal64` carried `Decimal128(18, s)` in their embedded Arrow schema;
        // the Parquet layout is the same, and they decode to the same values.
        let unscaled = [8093_i128, -8101, 999_999_999_999_999_999];
        let values: ArrayRef = Arc::new(
            PrimitiveArray::<Decimal128Type>::from(unscaled.to_vec())
                .with_precision_and_scale(DECIMAL_PRECISION, 3)
                .unwrap(),
        );
        let mut fields: Vec<Field> = partition_schema(ValueEncoding::Decimal { scale: 3 })
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[3] = Field::new(COLUMN_VALUE, DataType::Decimal128(DECIMAL_PRECISION, 3), false);
        let decoded = decode_partition(write_raw(
            Arc::new(Schema::new(fields)),
            our_columns(&["b1", "b1", "b1"], values, &[0, 0, 0]),
            our_key_values("1", "decimal(18,3)"),
        ))
        .unwrap();
        assert_eq!(decoded.values, vec![8.093, -8.101, 999_999_999_999_999.999]);
    }

    #[test]
    fn files_that_are_not_ours_are_refused() {
        let decimal_schema = partition_schema(ValueEncoding::Decimal { scale: 3 });
        let columns = || our_columns(&["b1", "b1"], decimals(&[8093, 8101], 3), &[0, 0]);
        // The control: a hand-written file in our layout decodes.
        let ours = decode_partition(write_raw(
            decimal_schema.clone(),
            columns(),
            our_key_values("1", "decimal(18,3)"),
        ))
        .unwrap();
        assert_eq!(ours.values, vec![8.093, 8.101]);

        let foreign = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let x: ArrayRef = Arc::new(arrow_array::Int32Array::from(vec![1, 2, 3]));
        assert_parquet_error(write_raw(foreign.clone(), vec![x.clone()], None), "foreign schema");
        assert_parquet_error(
            write_raw(foreign, vec![x], our_key_values("1", "float64")),
            "foreign schema with our metadata",
        );
        assert_parquet_error(write_raw(decimal_schema.clone(), columns(), None), "no metadata");
        assert_parquet_error(
            write_raw(decimal_schema.clone(), columns(), our_key_values("2", "decimal(18,3)")),
            "future version",
        );
        assert_parquet_error(
            write_raw(decimal_schema.clone(), columns(), our_key_values("1", "float64")),
            "metadata says float64, column is decimal",
        );
        assert_parquet_error(
            write_raw(decimal_schema.clone(), columns(), our_key_values("1", "decimal(18,2)")),
            "metadata scale differs from the column's",
        );
        let nullable = Arc::new(Schema::new(
            decimal_schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        assert_parquet_error(
            write_raw(nullable, columns(), our_key_values("1", "decimal(18,3)")),
            "nullable columns",
        );
        let mut renamed: Vec<Field> = decimal_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        renamed[4] = Field::new("flag", DataType::UInt8, false);
        assert_parquet_error(
            write_raw(Arc::new(Schema::new(renamed)), columns(), our_key_values("1", "decimal(18,3)")),
            "renamed column",
        );
    }

    #[test]
    fn files_whose_rows_break_the_layout_are_refused() {
        let schema = partition_schema(ValueEncoding::Decimal { scale: 3 });
        let kv = || our_key_values("1", "decimal(18,3)");
        let refused = |columns: Vec<ArrayRef>, what: &str| {
            assert_parquet_error(write_raw(schema.clone(), columns, kv()), what)
        };
        refused(our_columns(&["b2", "b1"], decimals(&[1, 2], 3), &[0, 0]), "unsorted buoys");
        refused(our_columns(&["b1", "b1"], decimals(&[1, 2], 3), &[0, 7]), "unknown quality");
        refused(
            our_columns(&["b1", "b1"], decimals(&[1, 1_000_000_000_000_000_000], 3), &[0, 0]),
            "decimal with 19 digits",
        );
        refused(our_columns(&["b 1", "b 1"], decimals(&[1, 2], 3), &[0, 0]), "invalid buoy id");
        let mut columns = our_columns(&["b1", "b1"], decimals(&[1, 2], 3), &[0, 0]);
        columns[2] = Arc::new(TimestampNanosecondArray::from(vec![5, 5]).with_timezone(TS_TIMEZONE));
        refused(columns, "duplicate key");

        let float_schema = partition_schema(ValueEncoding::Float64);
        let values: ArrayRef = Arc::new(Float64Array::from(vec![1.0, f64::NAN]));
        assert_parquet_error(
            write_raw(
                float_schema,
                our_columns(&["b1", "b1"], values, &[0, 0]),
                our_key_values("1", "float64"),
            ),
            "NaN value",
        );
    }

    // ------------------------------------------------------------------------------------------
    // The written layout

    #[test]
    fn written_file_has_the_partition_layout() {
        let rows = marine_rows(3, 3_600, Quantize::SensorPrecision);
        let options = PartitionWriteOptions {
            row_group_rows_max: 40_000,
            data_page_rows_max: 8_192,
            ..Default::default()
        };
        let encoded = encode_partition(&rows, &options).unwrap();
        assert_eq!(encoded.value_encoding, ValueEncoding::Decimal { scale: 3 });
        let bytes = Bytes::from(encoded.bytes.clone());
        let metadata = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        assert_eq!(encoded.column_bytes.total(), bytes.len() as u64);

        let file = metadata.file_metadata();
        assert!(file.created_by().unwrap().starts_with("bluewave version "), "{:?}", file.created_by());
        assert_eq!(file.num_rows(), rows.len() as i64);
        let kv = |key: &str| {
            file.key_value_metadata().unwrap().iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone())
        };
        assert_eq!(kv(METADATA_FORMAT_VERSION_KEY).as_deref(), Some("1"));
        assert_eq!(kv(METADATA_VALUE_ENCODING_KEY).as_deref(), Some("decimal(18,3)"));
        assert_eq!(partition_value_encoding(&metadata).unwrap(), ValueEncoding::Decimal { scale: 3 });

        let leaves = file.schema_descr().columns();
        let names: Vec<&str> = leaves.iter().map(|c| c.name()).collect();
        assert_eq!(names, COLUMN_NAMES);
        let physical: Vec<PhysicalType> = leaves.iter().map(|c| c.physical_type()).collect();
        use PhysicalType::*;
        assert_eq!(physical, [BYTE_ARRAY, BYTE_ARRAY, INT64, INT64, INT32]);
        let logical: Vec<Option<LogicalType>> =
            leaves.iter().map(|c| c.logical_type_ref().cloned()).collect();
        assert_eq!(
            logical,
            [
                Some(LogicalType::String),
                Some(LogicalType::String),
                Some(LogicalType::Timestamp(TimestampType {
                    is_adjusted_to_u_t_c: true,
                    unit: ParquetTimeUnit::NANOS
                })),
                Some(LogicalType::Decimal(DecimalType { scale: 3, precision: 18 })),
                Some(LogicalType::Integer(IntType { bit_width: 8, is_signed: false })),
            ]
        );
        assert!(leaves.iter().all(|c| c.max_def_level() == 0), "every column REQUIRED");

        assert_eq!(metadata.num_row_groups(), rows.len().div_ceil(40_000));
        let column_index = metadata.column_index().expect("column index");
        let offset_index = metadata.offset_index().expect("offset index");
        let ascending = |column_idx| SortingColumn { column_idx, descending: false, nulls_first: false };
        for (g, row_group) in metadata.row_groups().iter().enumerate() {
            assert_eq!(row_group.sorting_columns(), Some(&vec![ascending(0), ascending(1), ascending(2)]));
            for (c, chunk) in row_group.columns().iter().enumerate() {
                assert!(matches!(chunk.compression(), Compression::ZSTD(_)), "column {c}");
                assert_eq!(chunk.bloom_filter_offset(), None, "column {c}: no bloom filter");
                let statistics = chunk.statistics().expect("chunk statistics");
                assert!(
                    statistics.min_bytes_opt().is_some() && statistics.max_bytes_opt().is_some(),
                    "column {c}"
                );
                assert!(!matches!(column_index[g][c], ColumnIndexMetaData::NONE), "column {c}: page min/max");
                let pages = offset_index[g][c].page_locations();
                let group_rows = row_group.num_rows() as usize;
                assert!(
                    pages.len() >= group_rows.div_ceil(options.data_page_rows_max),
                    "column {c}: {} pages",
                    pages.len()
                );
                for pair in pages.windows(2) {
                    assert!(
                        pair[1].first_row_index - pair[0].first_row_index
                            <= options.data_page_rows_max as i64
                    );
                }
                let encodings: Vec<Encoding> = chunk.encodings().collect();
                let dictionary = chunk.dictionary_page_offset().is_some();
                match c {
                    0 | 1 | 4 => {
                        assert!(
                            dictionary && encodings.contains(&Encoding::RLE_DICTIONARY),
                            "column {c}: {encodings:?}"
                        );
                        assert!(
                            !encodings.contains(&Encoding::PLAIN) || encodings.len() <= 3,
                            "no plain fallback"
                        );
                    }
                    _ => {
                        assert!(!dictionary, "column {c}");
                        assert!(
                            encodings.contains(&Encoding::DELTA_BINARY_PACKED),
                            "column {c}: {encodings:?}"
                        );
                        assert!(!encodings.contains(&Encoding::RLE_DICTIONARY), "column {c}: {encodings:?}");
                    }
                }
            }
            // Page statistics of ts are ascending within each (buoy, metric) run.
            if let ColumnIndexMetaData::INT64(ts_index) = &column_index[g][2] {
                assert!(ts_index.min_values().iter().zip(ts_index.max_values()).all(|(lo, hi)| lo <= hi));
            } else {
                panic!("ts column index is not INT64");
            }
        }
        let first_ts =
            metadata.row_group(0).column(2).statistics().unwrap().min_bytes_opt().unwrap().to_vec();
        assert_eq!(first_ts, rows.timestamps[0].to_le_bytes());

        // The float path: DOUBLE, no dictionary; plain for mostly-decimal values (here one
        // -0.0 forces the float path), byte-stream-split for raw doubles.
        let mut mostly_decimal = rows.clone();
        mostly_decimal.values[0] = -0.0;
        let raw = marine_rows(3, 600, Quantize::No);
        for (float_rows, encoding) in
            [(&mostly_decimal, Encoding::PLAIN), (&raw, Encoding::BYTE_STREAM_SPLIT)]
        {
            let encoded = encode_partition(float_rows, &options).unwrap();
            assert_eq!(encoded.value_encoding, ValueEncoding::Float64);
            let metadata =
                ParquetMetaDataReader::new().parse_and_finish(&Bytes::from(encoded.bytes)).unwrap();
            assert_eq!(partition_value_encoding(&metadata).unwrap(), ValueEncoding::Float64);
            assert_eq!(metadata.file_metadata().schema_descr().column(3).logical_type_ref(), None);
            for row_group in metadata.row_groups() {
                let value = row_group.column(3);
                assert_eq!(value.column_type(), DOUBLE);
                assert!(
                    value.encodings().any(|e| e == encoding),
                    "{:?}",
                    value.encodings().collect::<Vec<_>>()
                );
                assert_eq!(value.dictionary_page_offset(), None);
            }
        }
    }

    #[test]
    fn marine_partition_round_trips() {
        let rows = marine_rows(4, 1_800, Quantize::SensorPrecision);
        let (encoded, decoded) = round_trip(&rows);
        assert_eq!(encoded.value_encoding, ValueEncoding::Decimal { scale: 3 });
        assert_eq!(decoded.buoy_names, rows.buoy_names);
        assert_eq!(decoded.metric_names, rows.metric_names);
        // Several row groups, so dictionaries of several row groups are merged.
        let options = PartitionWriteOptions { row_group_rows_max: 10_000, ..Default::default() };
        let encoded = encode_partition(&rows, &options).unwrap();
        assert_bit_exact(&decode_partition(Bytes::from(encoded.bytes)).unwrap(), &rows);
        let raw = marine_rows(2, 600, Quantize::No);
        let (encoded, _) = round_trip(&raw);
        assert_eq!(encoded.value_encoding, ValueEncoding::Float64);
    }

    // ------------------------------------------------------------------------------------------
    // Marine workload and the size report

    /// One sensor of the marine workload: a per-buoy level, a linear drift, a diurnal cycle, a
    /// slow wander and white sensor noise, clamped at `floor`.
    struct MetricModel {
        name: &'static str,
        decimals: i32,
        level: f64,
        level_spread: f64,
        drift_per_hour: f64,
        diurnal_amplitude: f64,
        wander_amplitude: f64,
        wander_period_s: f64,
        noise_sigma: f64,
        floor: f64,
    }

    /// Noise is about one to three steps of the sensor's precision, as in instruments whose
    /// published resolution matches their noise floor.
    #[rustfmt::skip]
    const MARINE_METRICS: [MetricModel; 8] = [
        MetricModel { name: "salinity_psu", decimals: 3, level: 35.0, level_spread: 0.8, drift_per_hour: 0.01, diurnal_amplitude: 0.05, wander_amplitude: 0.02, wander_period_s: 1_500.0, noise_sigma: 0.002, floor: 0.0 },
        MetricModel { name: "ph", decimals: 3, level: 8.05, level_spread: 0.06, drift_per_hour: 0.004, diurnal_amplitude: 0.03, wander_amplitude: 0.005, wander_period_s: 2_400.0, noise_sigma: 0.002, floor: 0.0 },
        MetricModel { name: "water_temp_c", decimals: 2, level: 17.0, level_spread: 6.0, drift_per_hour: 0.05, diurnal_amplitude: 0.8, wander_amplitude: 0.1, wander_period_s: 900.0, noise_sigma: 0.01, floor: -2.0 },
        MetricModel { name: "turbidity_ntu", decimals: 2, level: 3.0, level_spread: 2.0, drift_per_hour: 0.1, diurnal_amplitude: 0.3, wander_amplitude: 0.2, wander_period_s: 600.0, noise_sigma: 0.03, floor: 0.0 },
        MetricModel { name: "nitrate_mg_l", decimals: 3, level: 1.5, level_spread: 1.0, drift_per_hour: 0.01, diurnal_amplitude: 0.05, wander_amplitude: 0.02, wander_period_s: 1_800.0, noise_sigma: 0.003, floor: 0.0 },
        MetricModel { name: "dissolved_oxygen_mg_l", decimals: 2, level: 7.5, level_spread: 1.0, drift_per_hour: 0.02, diurnal_amplitude: 0.4, wander_amplitude: 0.05, wander_period_s: 1_200.0, noise_sigma: 0.01, floor: 0.0 },
        MetricModel { name: "battery_v", decimals: 3, level: 12.8, level_spread: 0.4, drift_per_hour: -0.01, diurnal_amplitude: 0.05, wander_amplitude: 0.0, wander_period_s: 3_600.0, noise_sigma: 0.002, floor: 0.0 },
        MetricModel { name: "pollutant_ppb", decimals: 1, level: 12.0, level_spread: 8.0, drift_per_hour: 0.2, diurnal_amplitude: 1.0, wander_amplitude: 0.5, wander_period_s: 700.0, noise_sigma: 0.2, floor: 0.0 },
    ];

    /// A reading is flagged out of range this often (a sensor glitch).
    const GLITCH_PROBABILITY: f64 = 1e-4;

    /// SplitMix64: small, deterministic, good enough for synthetic sensor noise.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        /// Uniform in [-1, 1).
        fn signed_unit(&mut self) -> f64 {
            self.unit() * 2.0 - 1.0
        }

        /// Standard normal (Box-Muller).
        fn gaussian(&mut self) -> f64 {
            let u1 = 1.0 - self.unit();
            let u2 = self.unit();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Quantize {
        /// Each value is the nearest double of a decimal at the sensor's precision.
        SensorPrecision,
        /// Raw doubles (e.g. computed in floating point before storage).
        No,
    }

    /// `buoys` buoys × 8 marine metrics at 1 Hz for `seconds`, from [`PARTITION_START_NS`], in
    /// partition order.
    fn marine_rows(buoys: usize, seconds: i64, quantize: Quantize) -> PartitionRows {
        marine_rows_with_noise(buoys, seconds, quantize, 1.0)
    }

    /// [`marine_rows`] with every sensor's noise multiplied by `noise_scale`.
    fn marine_rows_with_noise(
        buoys: usize,
        seconds: i64,
        quantize: Quantize,
        noise_scale: f64,
    ) -> PartitionRows {
        let mut rng = Rng(0x0B1E_3A7E);
        let mut metrics: Vec<&MetricModel> = MARINE_METRICS.iter().collect();
        metrics.sort_by_key(|m| m.name);
        let rows_total = buoys * metrics.len() * seconds as usize;
        let mut rows = PartitionRows::with_capacity(rows_total);
        rows.buoy_names = (0..buoys).map(|b| Arc::from(format!("buoy-{b:05}"))).collect();
        rows.metric_names = metrics.iter().map(|m| Arc::from(m.name)).collect();
        let seconds_into_day = (PARTITION_START_NS / NANOS_PER_SECOND % 86_400) as f64;
        for b in 0..buoys {
            for (m, model) in metrics.iter().enumerate() {
                let (_, min, max) = *DEFAULT_METRIC_RANGES.iter().find(|r| r.0 == model.name).unwrap();
                let range = PhysicalRange { min, max };
                let level = model.level + model.level_spread * rng.signed_unit();
                let drift = model.drift_per_hour * rng.signed_unit();
                let diurnal_phase = 0.5 * rng.signed_unit();
                let wander_phase = std::f64::consts::TAU * rng.unit();
                let wander_period = model.wander_period_s * (1.0 + 0.3 * rng.signed_unit());
                let step = 10f64.powi(model.decimals);
                for t in 0..seconds {
                    let t_s = t as f64;
                    let day_angle =
                        std::f64::consts::TAU * (seconds_into_day + t_s) / 86_400.0 + diurnal_phase;
                    let mut value = level
                        + drift * t_s / 3_600.0
                        + model.diurnal_amplitude * day_angle.sin()
                        + model.wander_amplitude
                            * (std::f64::consts::TAU * t_s / wander_period + wander_phase).sin()
                        + noise_scale * model.noise_sigma * rng.gaussian();
                    value = value.max(model.floor);
                    if rng.unit() < GLITCH_PROBABILITY {
                        value = range.max + 1.0 + rng.unit();
                    }
                    if quantize == Quantize::SensorPrecision {
                        value = (value * step).round() / step;
                    }
                    rows.buoy_keys.push(b as u32);
                    rows.metric_keys.push(m as u32);
                    rows.timestamps.push(PARTITION_START_NS + t * NANOS_PER_SECOND);
                    rows.values.push(value);
                    rows.quality.push(range.quality(value) as u8);
                }
            }
        }
        rows
    }

    /// The rows of some metrics.
    fn metric_subset(rows: &PartitionRows, metrics: &[u32]) -> PartitionRows {
        let mut subset = PartitionRows {
            buoy_names: rows.buoy_names.clone(),
            metric_names: rows.metric_names.clone(),
            ..Default::default()
        };
        for i in (0..rows.len()).filter(|&i| metrics.contains(&rows.metric_keys[i])) {
            subset.buoy_keys.push(rows.buoy_keys[i]);
            subset.metric_keys.push(rows.metric_keys[i]);
            subset.timestamps.push(rows.timestamps[i]);
            subset.values.push(rows.values[i]);
            subset.quality.push(rows.quality[i]);
        }
        subset
    }

    /// Encodes with `value_encoding` forced and the default properties adjusted by `adjust`.
    fn encode_variant(
        rows: &PartitionRows,
        options: &PartitionWriteOptions,
        value_encoding: ValueEncoding,
        adjust: impl FnOnce(WriterPropertiesBuilder) -> WriterPropertiesBuilder,
    ) -> (EncodedPartition, f64) {
        let started = Instant::now();
        let properties = adjust(writer_properties(options, value_encoding, &rows.values).unwrap()).build();
        let encoded = write_file(rows, value_encoding, properties).unwrap();
        (encoded, started.elapsed().as_secs_f64() * 1e3)
    }

    fn report_line(label: &str, bytes: &ColumnBytes, readings: usize, encode_ms: f64) -> String {
        let per = |b: u64| b as f64 / readings as f64;
        format!(
            "{label:<46} {:>7.3} | {:>7.4} {:>7.4} {:>7.4} {:>7.3} {:>7.4} {:>7.4} | {:>8.0}",
            per(bytes.total()),
            per(bytes.buoy_id),
            per(bytes.metric),
            per(bytes.ts),
            per(bytes.value),
            per(bytes.quality),
            per(bytes.other),
            encode_ms
        )
    }

    /// Sums the byte counts of several files.
    fn add_bytes(sum: &mut ColumnBytes, more: &ColumnBytes) {
        sum.buoy_id += more.buoy_id;
        sum.metric += more.metric;
        sum.ts += more.ts;
        sum.value += more.value;
        sum.quality += more.quality;
        sum.other += more.other;
    }

    /// Prints bytes per reading, in total and per column, for the value layouts, the cost of the
    /// shared decimal scale and, when `BLUEWAVE_PARTITION_BUOYS` sets the fleet size (default
    /// 10; PARTITION.md quotes 100), the writer levers behind the defaults. Encode times are
    /// indicative only (debug builds are slow).
    /// `cargo test -p bluewave-engine partition::tests::marine_bytes_per_reading -- --nocapture`
    #[test]
    fn marine_bytes_per_reading() {
        let requested = std::env::var("BLUEWAVE_PARTITION_BUOYS").ok().and_then(|v| v.parse().ok());
        // Without a requested fleet size this runs in every `cargo test`: keep it small.
        let measuring = requested.is_some();
        let buoys = requested.unwrap_or(10);
        let rows = marine_rows(buoys, 3_600, Quantize::SensorPrecision);
        let readings = rows.len();
        let defaults = PartitionWriteOptions::default();
        let timed = |rows: &PartitionRows, options: &PartitionWriteOptions| {
            let started = Instant::now();
            let encoded = encode_partition(rows, options).unwrap();
            (encoded, started.elapsed().as_secs_f64() * 1e3)
        };
        let force_value = |encoding: Encoding| {
            move |b: WriterPropertiesBuilder| b.set_column_encoding(ColumnPath::from(COLUMN_VALUE), encoding)
        };
        let mut out = vec![
            format!("marine workload: {buoys} buoys x 8 metrics x 3600 s at 1 Hz = {readings} readings"),
            format!(
                "{:<46} {:>7} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} | {:>8}",
                "bytes per reading",
                "total",
                "buoy_id",
                "metric",
                "ts",
                "value",
                "quality",
                "other",
                "enc ms"
            ),
        ];

        let (chosen, ms) = timed(&rows, &defaults);
        let decimal = chosen.value_encoding;
        assert_eq!(decimal, ValueEncoding::Decimal { scale: 3 });
        let label = format!("{decimal} delta + zstd {} (default)", defaults.zstd_level);
        out.push(report_line(&label, &chosen.column_bytes, readings, ms));
        let (plain_float, ms) =
            encode_variant(&rows, &defaults, ValueEncoding::Float64, force_value(Encoding::PLAIN));
        out.push(report_line("float64 plain + zstd", &plain_float.column_bytes, readings, ms));
        let (split_float, ms) = encode_variant(
            &rows,
            &defaults,
            ValueEncoding::Float64,
            force_value(Encoding::BYTE_STREAM_SPLIT),
        );
        out.push(report_line("float64 byte-stream-split + zstd", &split_float.column_bytes, readings, ms));
        let mut with_negative_zero = rows.clone();
        with_negative_zero.values[readings / 2] = -0.0;
        let (negative_zero, ms) = timed(&with_negative_zero, &defaults);
        assert_eq!(negative_zero.value_encoding, ValueEncoding::Float64);
        out.push(report_line(
            "one -0.0 in the file: float64, plain (auto)",
            &negative_zero.column_bytes,
            readings,
            ms,
        ));

        if measuring {
            out.push("levers on the decimal layout:".to_owned());
            for zstd_level in [1, 3, 9, 11, 12, 19] {
                let options = PartitionWriteOptions { zstd_level, ..defaults.clone() };
                let (encoded, ms) = timed(&rows, &options);
                out.push(report_line(
                    &format!("  zstd level {zstd_level}"),
                    &encoded.column_bytes,
                    readings,
                    ms,
                ));
            }
            for data_page_rows_max in [4_096, 8_192, 20_000, 65_536] {
                let options = PartitionWriteOptions { data_page_rows_max, ..defaults.clone() };
                let (encoded, ms) = timed(&rows, &options);
                let label = format!("  data pages of {data_page_rows_max} rows");
                out.push(report_line(&label, &encoded.column_bytes, readings, ms));
            }
            let (encoded, ms) = encode_variant(&rows, &defaults, decimal, |b| {
                b.set_column_dictionary_enabled(ColumnPath::from(COLUMN_QUALITY), false)
            });
            out.push(report_line("  quality plain (no dictionary)", &encoded.column_bytes, readings, ms));
            for (label, encoding) in [
                ("  decimal plain", Encoding::PLAIN),
                ("  decimal byte-stream-split", Encoding::BYTE_STREAM_SPLIT),
            ] {
                let (encoded, ms) = encode_variant(&rows, &defaults, decimal, force_value(encoding));
                out.push(report_line(label, &encoded.column_bytes, readings, ms));
            }
            let (encoded, ms) = encode_variant(&rows, &defaults, decimal, |b| {
                b.set_column_compression(ColumnPath::from(COLUMN_VALUE), Compression::UNCOMPRESSED)
                    .set_column_compression(ColumnPath::from(COLUMN_TS), Compression::UNCOMPRESSED)
            });
            out.push(report_line("  ts and value not zstd-compressed", &encoded.column_bytes, readings, ms));
            for noise_scale in [0.5, 2.0] {
                let noisy = marine_rows_with_noise(buoys, 3_600, Quantize::SensorPrecision, noise_scale);
                let (encoded, ms) = timed(&noisy, &defaults);
                out.push(report_line(
                    &format!("  sensor noise x{noise_scale}"),
                    &encoded.column_bytes,
                    readings,
                    ms,
                ));
            }
        } else {
            out.push("(levers: set BLUEWAVE_PARTITION_BUOYS, e.g. 100, to measure them too)".to_owned());
        }
        // One scale per file: the metrics grouped by their own scale, one file per group.
        out.push("the shared scale (value bytes per reading of each metric):".to_owned());
        let mut metrics_by_scale: Vec<(ValueEncoding, Vec<u32>)> = Vec::new();
        for metric in 0..rows.metric_names.len() as u32 {
            let subset = metric_subset(&rows, &[metric]);
            let (own, _) = timed(&subset, &defaults);
            let (shared, _) = encode_variant(&subset, &defaults, decimal, |b| b);
            out.push(format!(
                "  {:<24} own {}: {:.3}   at {decimal}: {:.3}",
                rows.metric_names[metric as usize],
                own.value_encoding,
                own.column_bytes.value as f64 / subset.len() as f64,
                shared.column_bytes.value as f64 / subset.len() as f64
            ));
            match metrics_by_scale.iter_mut().find(|(encoding, _)| *encoding == own.value_encoding) {
                Some((_, metrics)) => metrics.push(metric),
                None => metrics_by_scale.push((own.value_encoding, vec![metric])),
            }
        }
        let mut split = ColumnBytes::default();
        let mut split_ms = 0.0;
        for (_, metrics) in &metrics_by_scale {
            let (encoded, ms) = timed(&metric_subset(&rows, metrics), &defaults);
            add_bytes(&mut split, &encoded.column_bytes);
            split_ms += ms;
        }
        let label = format!("  one file per scale ({} files, summed)", metrics_by_scale.len());
        out.push(report_line(&label, &split, readings, split_ms));

        out.push("unquantized doubles (the float path's data):".to_owned());
        let raw = marine_rows(buoys, 3_600, Quantize::No);
        let (chosen_raw, ms) = timed(&raw, &defaults);
        assert_eq!(chosen_raw.value_encoding, ValueEncoding::Float64);
        let (plain_raw, plain_ms) =
            encode_variant(&raw, &defaults, ValueEncoding::Float64, force_value(Encoding::PLAIN));
        out.push(report_line("  float64 plain + zstd", &plain_raw.column_bytes, readings, plain_ms));
        out.push(report_line(
            "  float64 byte-stream-split + zstd (auto)",
            &chosen_raw.column_bytes,
            readings,
            ms,
        ));

        let started = Instant::now();
        let decoded = decode_partition(Bytes::from(chosen.bytes.clone())).unwrap();
        out.push(format!("decode of the default file: {:.0} ms", started.elapsed().as_secs_f64() * 1e3));
        assert_bit_exact(&decoded, &rows);
        println!("{}", out.join("\n"));

        // The comparisons the defaults rest on (PARTITION.md); sizes are deterministic.
        let total = |b: &ColumnBytes| b.total();
        assert!(total(&chosen.column_bytes) < total(&plain_float.column_bytes));
        assert!(total(&chosen.column_bytes) < total(&split_float.column_bytes));
        assert!(chosen_raw.column_bytes.value < plain_raw.column_bytes.value);
        assert!(negative_zero.column_bytes.value < split_float.column_bytes.value);
    }
}
