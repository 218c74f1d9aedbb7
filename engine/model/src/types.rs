//! Validated value types of the data model (DESIGN.md, *Data model*), parsed once at the edge.

use std::fmt;
use std::sync::Arc;

use crate::error::InputError;

/// Longest buoy id or metric name, in bytes (both are ASCII).
pub const NAME_LEN_MAX: usize = 64;
/// Most readings one batch may carry. A batch above it is refused with
/// [`InputError::BatchTooLarge`]; the wire protocol uses the same bound.
pub const BATCH_READINGS_MAX: usize = 65_536;
/// Most distinct metrics one batch may name (metric ids are `u16`).
pub const BATCH_METRICS_MAX: usize = 256;

/// How many sequences below the highest one a buoy may still deliver late.
pub const DEDUP_WINDOW: u64 = 4096;

/// The batch sequence of writes that bypass the window (operator corrections through
/// the engine's `write_unsequenced`): never deduplicated and never recorded, so they cannot move a
/// buoy's window. Devices cannot use it: the engine's `ingest` refuses it.
pub const UNSEQUENCED: u64 = u64::MAX;
/// A buoy's identity: 1–64 chars of `[A-Za-z0-9_.-]`. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuoyId(Arc<str>);

impl BuoyId {
    /// Validates `s` as a buoy id.
    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = !s.is_empty()
            && s.len() <= NAME_LEN_MAX
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok { Ok(Self(Arc::from(s))) } else { Err(InputError::InvalidBuoyId(truncate_for_error(s))) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for cheap interning.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for BuoyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BuoyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuoyId({})", &self.0)
    }
}

/// A metric's name: 1–64 chars of `[a-z0-9_]`, e.g. `salinity_psu`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricName(Arc<str>);

impl MetricName {
    /// Validates `s` as a metric name.
    pub fn new(s: &str) -> Result<Self, InputError> {
        let ok = !s.is_empty()
            && s.len() <= NAME_LEN_MAX
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok { Ok(Self(Arc::from(s))) } else { Err(InputError::InvalidMetricName(truncate_for_error(s))) }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared string, for cheap interning.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetricName({})", &self.0)
    }
}

/// Keeps error messages bounded when echoing user input back.
fn truncate_for_error(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    s.chars().take(SHOWN_CHARS_MAX).collect()
}

/// Quality flag set at ingest (DESIGN.md): out-of-range readings are kept and flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Quality {
    /// Inside the metric's physical range.
    Good = 0,
    /// Outside the metric's configured physical range.
    OutOfRange = 1,
    /// Plausible but doubtful (e.g. a spike); set by later analysis, never at ingest today.
    Suspect = 2,
}

impl Quality {
    /// Parses the stored byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Good),
            1 => Some(Self::OutOfRange),
            2 => Some(Self::Suspect),
            _ => None,
        }
    }
}

/// Monotonic ingest sequence number of a WAL record; orders writes for last-write-wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WalSequence(pub u64);

/// Nanoseconds since the Unix epoch, UTC.
pub type TimestampNs = i64;

/// Earliest timestamp a reading may carry: -2^62 ns (about 1823-12-05). The bound keeps every
/// partition computation (start, end) far from `i64` overflow.
pub const TIMESTAMP_MIN: TimestampNs = -(1 << 62);
/// Latest timestamp a reading may carry: 2^62 ns (about 2116-02-20).
pub const TIMESTAMP_MAX: TimestampNs = 1 << 62;

/// Nanoseconds per second, for readable arithmetic on [`TimestampNs`].
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A batch of readings from one buoy, stored column by column.
///
/// `metric_ids[i]` indexes `metric_names`; the metric dictionary is per batch so a buoy can send
/// compact `u16` ids. Build one with [`ReadingBatch::new`] (which validates) or push rows with
/// [`ReadingBatchBuilder`].
#[derive(Clone, Debug, PartialEq)]
pub struct ReadingBatch {
    metric_names: Vec<MetricName>,
    timestamps: Vec<TimestampNs>,
    metric_ids: Vec<u16>,
    values: Vec<f64>,
}

impl ReadingBatch {
    /// Validates and assembles a batch: columns of equal, non-zero length at most
    /// [`BATCH_READINGS_MAX`], metric ids inside the dictionary, no duplicate names in the
    /// dictionary, every value finite.
    pub fn new(
        metric_names: Vec<MetricName>,
        timestamps: Vec<TimestampNs>,
        metric_ids: Vec<u16>,
        values: Vec<f64>,
    ) -> Result<Self, InputError> {
        let rows = timestamps.len();
        if rows == 0 {
            return Err(InputError::EmptyBatch);
        }
        if rows > BATCH_READINGS_MAX {
            return Err(InputError::BatchTooLarge { readings: rows, readings_max: BATCH_READINGS_MAX });
        }
        if metric_ids.len() != rows || values.len() != rows {
            return Err(InputError::ColumnLengthMismatch {
                timestamps: rows,
                metric_ids: metric_ids.len(),
                values: values.len(),
            });
        }
        if metric_names.is_empty() || metric_names.len() > BATCH_METRICS_MAX {
            return Err(InputError::BadMetricDictionary { names: metric_names.len() });
        }
        for (i, name) in metric_names.iter().enumerate() {
            if metric_names[..i].contains(name) {
                return Err(InputError::DuplicateMetricName(name.to_string()));
            }
        }
        let dictionary_len = metric_names.len();
        if let Some(index) = metric_ids.iter().position(|&id| usize::from(id) >= dictionary_len) {
            return Err(InputError::UnknownMetricId { index, id: metric_ids[index] });
        }
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(InputError::NonFiniteValue { index });
        }
        if let Some(index) = timestamps.iter().position(|t| !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(t)) {
            return Err(InputError::TimestampOutOfRange { index, ts: timestamps[index] });
        }
        Ok(Self { metric_names, timestamps, metric_ids, values })
    }

    /// Number of readings.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// Always false for a validated batch; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// The per-batch metric dictionary.
    pub fn metric_names(&self) -> &[MetricName] {
        &self.metric_names
    }

    /// Timestamps, ns since the epoch.
    pub fn timestamps(&self) -> &[TimestampNs] {
        &self.timestamps
    }

    /// Metric ids indexing [`Self::metric_names`].
    pub fn metric_ids(&self) -> &[u16] {
        &self.metric_ids
    }

    /// Values (all finite).
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Smallest and largest timestamp.
    pub fn time_range(&self) -> (TimestampNs, TimestampNs) {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        for &t in &self.timestamps {
            lo = lo.min(t);
            hi = hi.max(t);
        }
        (lo, hi)
    }
}

/// Row-by-row construction of a [`ReadingBatch`], interning metric names.
#[derive(Debug, Default)]
pub struct ReadingBatchBuilder {
    metric_names: Vec<MetricName>,
    timestamps: Vec<TimestampNs>,
    metric_ids: Vec<u16>,
    values: Vec<f64>,
}

impl ReadingBatchBuilder {
    /// An empty builder with room for `readings` rows.
    pub fn with_capacity(readings: usize) -> Self {
        Self {
            metric_names: Vec::new(),
            timestamps: Vec::with_capacity(readings),
            metric_ids: Vec::with_capacity(readings),
            values: Vec::with_capacity(readings),
        }
    }

    /// Appends one reading. Fails only when the batch would name more than
    /// [`BATCH_METRICS_MAX`] metrics.
    pub fn push(&mut self, metric: &MetricName, ts: TimestampNs, value: f64) -> Result<(), InputError> {
        let id = match self.metric_names.iter().position(|m| m == metric) {
            Some(id) => id,
            None => {
                if self.metric_names.len() >= BATCH_METRICS_MAX {
                    return Err(InputError::BadMetricDictionary { names: self.metric_names.len() + 1 });
                }
                self.metric_names.push(metric.clone());
                self.metric_names.len() - 1
            }
        };
        // The bound check above keeps the id below 256.
        self.metric_ids.push(u16::try_from(id).unwrap_or(u16::MAX));
        self.timestamps.push(ts);
        self.values.push(value);
        Ok(())
    }

    /// Number of rows pushed so far.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True before the first push.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Validates and returns the batch.
    pub fn finish(self) -> Result<ReadingBatch, InputError> {
        ReadingBatch::new(self.metric_names, self.timestamps, self.metric_ids, self.values)
    }
}

/// Physical range of a metric; values outside are stored with [`Quality::OutOfRange`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhysicalRange {
    /// Smallest plausible value, inclusive.
    pub min: f64,
    /// Largest plausible value, inclusive.
    pub max: f64,
}

impl PhysicalRange {
    /// The quality of `value` against this range.
    #[inline]
    pub fn quality(&self, value: f64) -> Quality {
        if value >= self.min && value <= self.max { Quality::Good } else { Quality::OutOfRange }
    }
}

/// Default physical ranges of the marine metrics (metric, min, max).
pub const DEFAULT_METRIC_RANGES: &[(&str, f64, f64)] = &[
    ("salinity_psu", 0.0, 42.0),
    ("ph", 6.0, 9.5),
    ("water_temp_c", -2.5, 40.0),
    ("turbidity_ntu", 0.0, 1_000.0),
    ("nitrate_mg_l", 0.0, 100.0),
    ("dissolved_oxygen_mg_l", 0.0, 20.0),
    ("battery_v", 0.0, 30.0),
    ("pollutant_ppb", 0.0, 10_000.0),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buoy_ids_follow_the_rules() {
        assert!(BuoyId::new("buoy-07.north_A").is_ok());
        assert!(BuoyId::new("").is_err());
        assert!(BuoyId::new("has space").is_err());
        assert!(BuoyId::new(&"a".repeat(64)).is_ok());
        assert!(BuoyId::new(&"a".repeat(65)).is_err());
        assert!(BuoyId::new("ümlaut").is_err());
    }

    #[test]
    fn metric_names_follow_the_rules() {
        assert!(MetricName::new("salinity_psu").is_ok());
        assert!(MetricName::new("Salinity").is_err());
        assert!(MetricName::new("a-b").is_err());
        assert!(MetricName::new("").is_err());
    }

    #[test]
    fn batches_are_validated() {
        let m = || vec![MetricName::new("ph").unwrap()];
        assert_eq!(ReadingBatch::new(m(), vec![], vec![], vec![]), Err(InputError::EmptyBatch));
        assert_eq!(
            ReadingBatch::new(m(), vec![1, 2], vec![0, 0], vec![1.0, f64::NAN]),
            Err(InputError::NonFiniteValue { index: 1 })
        );
        assert_eq!(
            ReadingBatch::new(m(), vec![1], vec![0], vec![f64::INFINITY]),
            Err(InputError::NonFiniteValue { index: 0 })
        );
        assert_eq!(
            ReadingBatch::new(m(), vec![1], vec![1], vec![1.0]),
            Err(InputError::UnknownMetricId { index: 0, id: 1 })
        );
        let n = BATCH_READINGS_MAX + 1;
        assert_eq!(
            ReadingBatch::new(m(), vec![0; n], vec![0; n], vec![0.0; n]),
            Err(InputError::BatchTooLarge { readings: n, readings_max: BATCH_READINGS_MAX })
        );
        assert!(ReadingBatch::new(m(), vec![5, 3], vec![0, 0], vec![8.1, 8.2]).is_ok());
        assert_eq!(
            ReadingBatch::new(m(), vec![0, i64::MAX], vec![0, 0], vec![1.0, 1.0]),
            Err(InputError::TimestampOutOfRange { index: 1, ts: i64::MAX })
        );
        assert_eq!(
            ReadingBatch::new(m(), vec![TIMESTAMP_MIN - 1], vec![0], vec![1.0]),
            Err(InputError::TimestampOutOfRange { index: 0, ts: TIMESTAMP_MIN - 1 })
        );
        assert!(
            ReadingBatch::new(m(), vec![TIMESTAMP_MIN, TIMESTAMP_MAX], vec![0, 0], vec![1.0, 1.0]).is_ok()
        );
    }
}
