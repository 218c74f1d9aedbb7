//! The model's one error type: [`InputError`], a request the caller got wrong. The engine wraps
//! it (`bluewave_engine::Error::Input`) and the wire protocol answers it as a rejected batch.

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
