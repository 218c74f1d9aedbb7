//! Retention: how long readings are kept, for every metric and per metric
//! ([`Retention`], parsed from texts such as `"90d"` by [`parse_retention`]), and the record of
//! the last time the compactor applied it ([`RetentionRecord`], kept in the catalog and shown
//! by `bluewave inspect`).
//!
//! The compactor applies it partition by partition: a file whose every metric has expired in
//! its partition (the partition ended longer ago than the metric's retention) is dropped whole;
//! a file holding expired and kept metrics is rewritten without the expired ones. Files,
//! rewrites and the record change in one catalog transaction, so a crash leaves either the old
//! files or the new ones, never less than what is within retention.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::types::{MetricName, TimestampNs};

/// Longest retention accepted (100 years); longer is a typo, and `"forever"` says keep.
pub const RETENTION_MAX: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Shortest retention accepted: one minute.
pub const RETENTION_MIN: Duration = Duration::from_secs(60);

/// Most metric names a [`RetentionRecord`] lists.
pub const RETENTION_RECORD_METRICS_MAX: usize = 64;

/// How long readings are kept. Readings of a partition that ended longer ago than their
/// metric's retention are removed by the compactor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Retention of every metric without its own; `None` keeps them forever (the default).
    pub default: Option<Duration>,
    /// Per metric name: its own retention, `None` to keep it forever whatever the default.
    pub metrics: BTreeMap<String, Option<Duration>>,
}

impl Retention {
    /// Retention of `metric`.
    pub fn of(&self, metric: &str) -> Option<Duration> {
        self.metrics.get(metric).copied().unwrap_or(self.default)
    }

    /// True when nothing ever expires.
    pub fn keeps_everything(&self) -> bool {
        self.default.is_none() && self.metrics.values().all(Option::is_none)
    }

    /// Whether `metric`'s rows in a partition that ends at `partition_end` have expired at `now`.
    pub fn expired(&self, metric: &str, partition_end: TimestampNs, now: TimestampNs) -> bool {
        self.of(metric).is_some_and(|d| {
            let d = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
            partition_end <= now.saturating_sub(d)
        })
    }

    /// Checks the metric names and the durations.
    pub fn validate(&self) -> Result<()> {
        let check = |what: &str, d: Option<Duration>| match d {
            Some(d) if !(RETENTION_MIN..=RETENTION_MAX).contains(&d) => Err(Error::Config(format!(
                "retention of {what} must be between 1 minute and 100 years, got {}",
                format_duration(d)
            ))),
            _ => Ok(()),
        };
        check("every metric (default)", self.default)?;
        for (name, d) in &self.metrics {
            MetricName::new(name).map_err(|e| Error::Config(format!("retention of metric {name:?}: {e}")))?;
            check(&format!("metric {name}"), *d)?;
        }
        Ok(())
    }
}

impl fmt::Display for Retention {
    /// `default 90d, ph 30d, salinity_psu forever`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Option<Duration>| d.map_or_else(|| "forever".to_owned(), format_duration);
        write!(f, "default {}", show(self.default))?;
        for (name, d) in &self.metrics {
            write!(f, ", {name} {}", show(*d))?;
        }
        Ok(())
    }
}

/// Parses a retention: a whole number and a unit, `s`, `m` (minutes), `h`, `d` or `w`
/// (`"90d"`, `"36h"`), or `"forever"` (`None`: keep). Refuses anything else, and values outside
/// 1 minute ..= 100 years, with a message that says what is accepted.
pub fn parse_retention(text: &str) -> std::result::Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "forever" {
        return Ok(None);
    }
    let accepted = "a whole number and a unit s, m, h, d or w (e.g. \"90d\"), or \"forever\"";
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: no unit; use {accepted}"))?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?}: not {accepted}"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use {accepted}")),
    };
    let d = n
        .checked_mul(unit_secs)
        .map(Duration::from_secs)
        .filter(|d| (RETENTION_MIN..=RETENTION_MAX).contains(d));
    d.map(Some).ok_or_else(|| format!("{text:?}: must be between 1 minute and 100 years"))
}

/// `90d`, `36h`, `90m`, `45s`: the largest unit that divides it.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// What one application of retention removed, kept in the catalog (the last one only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionRecord {
    /// When it was applied, ns since the epoch.
    pub applied_at: TimestampNs,
    /// The settings applied, as [`Retention`] displays them.
    pub settings: String,
    /// Files dropped whole.
    pub files_dropped: u64,
    /// Files rewritten without their expired metrics.
    pub files_rewritten: u64,
    /// Rows removed.
    pub rows_removed: u64,
    /// Bytes of the files dropped or rewritten.
    pub bytes_released: u64,
    /// Start of the oldest partition touched, ns.
    pub partition_first: TimestampNs,
    /// End of the newest partition touched, ns.
    pub partition_last_end: TimestampNs,
    /// Metrics whose rows were removed (at most [`RETENTION_RECORD_METRICS_MAX`], sorted).
    pub metrics: Vec<String>,
}

const RECORD_VERSION: u8 = 1;

impl RetentionRecord {
    /// Version byte, then little-endian fields: applied_at i64, files_dropped, files_rewritten,
    /// rows_removed, bytes_released u64, partition_first, partition_last_end i64; settings as
    /// u16 length + UTF-8; metrics as u16 count, each u8 length + UTF-8.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        out.extend_from_slice(&self.applied_at.to_le_bytes());
        for v in [self.files_dropped, self.files_rewritten, self.rows_removed, self.bytes_released] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.partition_first.to_le_bytes());
        out.extend_from_slice(&self.partition_last_end.to_le_bytes());
        let settings = &self.settings.as_bytes()[..self.settings.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(settings.len() as u16).to_le_bytes());
        out.extend_from_slice(settings);
        let metrics = &self.metrics[..self.metrics.len().min(RETENTION_RECORD_METRICS_MAX)];
        out.extend_from_slice(&(metrics.len() as u16).to_le_bytes());
        for m in metrics {
            let m = &m.as_bytes()[..m.len().min(u8::MAX as usize)];
            out.push(m.len() as u8);
            out.extend_from_slice(m);
        }
        out
    }

    /// Decodes [`Self::encode`]'s bytes; `None` when they are damaged or of another version.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (r.get(..n)?, r.get(n..)?);
            r = rest;
            Some(head)
        };
        if take(1)? != [RECORD_VERSION] {
            return None;
        }
        let mut u64_at = || take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let applied_at = u64_at()? as i64;
        let (files_dropped, files_rewritten, rows_removed, bytes_released) =
            (u64_at()?, u64_at()?, u64_at()?, u64_at()?);
        let (partition_first, partition_last_end) = (u64_at()? as i64, u64_at()? as i64);
        let mut u16_at = || take(2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes);
        let settings_len = u16_at()? as usize;
        let settings = String::from_utf8(take(settings_len)?.to_vec()).ok()?;
        let count = take(2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes)? as usize;
        let mut metrics = Vec::with_capacity(count.min(RETENTION_RECORD_METRICS_MAX));
        for _ in 0..count {
            let len = *take(1)?.first()? as usize;
            metrics.push(String::from_utf8(take(len)?.to_vec()).ok()?);
        }
        (r.is_empty()).then_some(Self {
            applied_at,
            settings,
            files_dropped,
            files_rewritten,
            rows_removed,
            bytes_released,
            partition_first,
            partition_last_end,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NANOS_PER_SECOND;

    #[test]
    fn durations_parse_with_their_unit_and_bad_ones_are_refused_clearly() {
        assert_eq!(parse_retention("90d"), Ok(Some(Duration::from_secs(90 * 86_400))));
        assert_eq!(parse_retention("36h"), Ok(Some(Duration::from_secs(36 * 3_600))));
        assert_eq!(parse_retention("2w"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert_eq!(parse_retention("90m"), Ok(Some(Duration::from_secs(5_400))));
        assert_eq!(parse_retention("forever"), Ok(None));
        for bad in ["90", "d", "-1d", "1.5d", "90days", "30s", "0d", "36501000d", "99999999999999999999d", ""]
        {
            let e = parse_retention(bad).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad:?}: {e}");
        }
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "90m");
    }

    #[test]
    fn per_metric_retention_overrides_the_default() {
        let day = Duration::from_secs(86_400);
        let r = Retention {
            default: Some(day),
            metrics: [("ph".to_owned(), Some(day * 30)), ("battery_v".to_owned(), None)].into(),
        };
        assert_eq!((r.of("salinity_psu"), r.of("ph"), r.of("battery_v")), (Some(day), Some(day * 30), None));
        let now = 100 * 86_400 * NANOS_PER_SECOND;
        let end = now - 2 * 86_400 * NANOS_PER_SECOND;
        assert!(r.expired("salinity_psu", end, now));
        assert!(!r.expired("ph", end, now));
        assert!(!r.expired("battery_v", 0, now));
        assert_eq!(r.to_string(), "default 1d, battery_v forever, ph 30d");
        assert!(r.validate().is_ok());
        let bad = Retention { default: None, metrics: [("Bad Name".to_owned(), Some(day))].into() };
        assert!(matches!(bad.validate(), Err(Error::Config(m)) if m.contains("Bad Name")));
    }

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let record = RetentionRecord {
            applied_at: 1_780_000_000 * NANOS_PER_SECOND,
            settings: "default 90d, ph 30d".into(),
            files_dropped: 3,
            files_rewritten: 1,
            rows_removed: 12_345,
            bytes_released: 9_999,
            partition_first: 1_770_000_000 * NANOS_PER_SECOND,
            partition_last_end: 1_770_003_600 * NANOS_PER_SECOND,
            metrics: vec!["ph".into(), "salinity_psu".into()],
        };
        let bytes = record.encode();
        assert_eq!(RetentionRecord::decode(&bytes), Some(record));
        for cut in 0..bytes.len() {
            assert_eq!(RetentionRecord::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(RetentionRecord::decode(&longer), None);
    }
}
