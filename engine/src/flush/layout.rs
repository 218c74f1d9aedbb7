//! Partition layout: where a partition's files live (`parquet/readings/date=…/hour=…`), what
//! the catalog records of a file's rows, and the split of a partition's rows into one file per
//! value encoding.

use std::sync::Arc;

use crate::catalog::{MetricStats, SeriesStatsBuilder};
use crate::partition::{PartitionRows, ValueEncoding};
use crate::rollup::{ROLLUPS_TABLE, RollupBuilder, RollupMemory};
use crate::types::TimestampNs;

/// Name of the readings table's directory under `parquet/`.
pub const READINGS_TABLE: &str = "readings";

/// A file's buoys (sorted), their time ranges (aligned), its metrics (sorted) and their value
/// stats (aligned).
pub(super) type FileLists = (Vec<Arc<str>>, Vec<(TimestampNs, TimestampNs)>, Vec<Arc<str>>, Vec<MetricStats>);

/// What the catalog records of a file's rows, gathered as they are written.
pub(super) struct FileSummary {
    pub(super) buoy_names: Vec<Arc<str>>,
    pub(super) metric_names: Vec<Arc<str>>,
    pub(super) rows: u64,
    pub(super) ts_min: TimestampNs,
    pub(super) ts_max: TimestampNs,
    /// Per buoy key: smallest and largest timestamp (`(MAX, MIN)` for a key with no row).
    pub(super) buoy_ranges: Vec<(TimestampNs, TimestampNs)>,
    /// Per metric key: its rows' value stats (no rows: the metric is absent).
    pub(super) metric_stats: Vec<MetricStats>,
    /// Per series (buoy key, metric key): its rows' value stats.
    pub(super) series: SeriesStatsBuilder,
    /// The file's minute rollup, built from the same rows (`None`: rollups off).
    pub(super) rollup: Option<RollupBuilder>,
}

impl FileSummary {
    pub(super) fn new(buoy_names: &[Arc<str>], metric_names: &[Arc<str>]) -> Self {
        Self {
            buoy_names: buoy_names.to_vec(),
            metric_names: metric_names.to_vec(),
            rows: 0,
            ts_min: i64::MAX,
            ts_max: i64::MIN,
            buoy_ranges: vec![(i64::MAX, i64::MIN); buoy_names.len()],
            metric_stats: vec![MetricStats::EMPTY; metric_names.len()],
            series: SeriesStatsBuilder::default(),
            rollup: None,
        }
    }

    /// Also builds the file's minute rollup from the rows added (memory from `memory`).
    pub(super) fn with_rollup(mut self, memory: Option<&RollupMemory>) -> Self {
        self.rollup = memory.map(|m| RollupBuilder::new(&self.buoy_names, &self.metric_names, m.clone()));
        self
    }

    pub(super) fn of(rows: &PartitionRows, rollup: Option<&RollupMemory>) -> Self {
        let mut summary = Self::new(&rows.buoy_names, &rows.metric_names).with_rollup(rollup);
        summary.add(rows);
        summary
    }

    /// Adds rows keyed into this summary's dictionaries.
    pub(super) fn add(&mut self, rows: &PartitionRows) {
        self.rows += rows.len() as u64;
        let keys = rows.timestamps.iter().zip(&rows.buoy_keys).zip(&rows.metric_keys);
        for (((&t, &buoy), &metric), &value) in keys.zip(&rows.values) {
            self.ts_min = self.ts_min.min(t);
            self.ts_max = self.ts_max.max(t);
            if let Some(range) = self.buoy_ranges.get_mut(buoy as usize) {
                range.0 = range.0.min(t);
                range.1 = range.1.max(t);
            }
            if let Some(stats) = self.metric_stats.get_mut(metric as usize) {
                stats.add(value);
            }
            self.series.add(buoy, metric, value);
        }
        if let Some(rollup) = &mut self.rollup {
            rollup.add(rows);
        }
    }

    /// The buoys present (sorted) with their time ranges, and the metrics present (sorted).
    pub(super) fn lists(&self) -> FileLists {
        let mut by_name: Vec<(Arc<str>, (TimestampNs, TimestampNs))> = self
            .buoy_names
            .iter()
            .zip(&self.buoy_ranges)
            .filter(|(_, range)| range.0 <= range.1)
            .map(|(name, &range)| (name.clone(), range))
            .collect();
        by_name.sort_by(|a, b| a.0.cmp(&b.0));
        let (buoys, ranges) = by_name.into_iter().unzip();
        let mut metrics: Vec<(Arc<str>, MetricStats)> = self
            .metric_names
            .iter()
            .zip(&self.metric_stats)
            .filter(|(_, stats)| stats.rows > 0)
            .map(|(name, &stats)| (name.clone(), stats))
            .collect();
        metrics.sort_by(|a, b| a.0.cmp(&b.0));
        let (metrics, stats) = metrics.into_iter().unzip();
        (buoys, ranges, metrics, stats)
    }
}

/// A file's catalog facts besides its bytes, for `write_file`.
pub(super) struct FileToWrite<'a> {
    pub(super) partition_start: TimestampNs,
    pub(super) summary: &'a FileSummary,
    pub(super) seq_min: u64,
    pub(super) seq_max: u64,
    /// The file's encoded rollup, written beside it (`None`: the file has none).
    pub(super) rollup: Option<&'a crate::rollup::EncodedRollup>,
}

/// A partition's sorted rows go to one file per value encoding: a Parquet DECIMAL column has
/// one scale, so metrics measured at different precisions (salinity at 0.001, temperature at
/// 0.01) are stored apart, each at its own scale (0.64 instead of 0.80 bytes per reading on the
/// marine workload, see `engine/PARTITION.md`).
///
/// Groups the metrics of sorted rows by the value encoding their values choose: the encoding and
/// one mask over the metric dictionary per group. A single group means the rows are written as
/// they are.
pub(super) fn value_encoding_groups(rows: &PartitionRows) -> Vec<(ValueEncoding, Vec<bool>)> {
    let metric_count = rows.metric_names.len();
    let mut values_by_metric: Vec<Vec<f64>> = vec![Vec::new(); metric_count];
    for (i, &m) in rows.metric_keys.iter().enumerate() {
        if let Some(v) = values_by_metric.get_mut(m as usize) {
            v.push(rows.values[i]);
        }
    }
    let encodings: Vec<Option<ValueEncoding>> =
        values_by_metric.iter().map(|v| (!v.is_empty()).then(|| ValueEncoding::choose(v))).collect();
    let mut distinct: Vec<ValueEncoding> = Vec::new();
    for e in encodings.iter().flatten() {
        if !distinct.contains(e) {
            distinct.push(*e);
        }
    }
    distinct
        .into_iter()
        .map(|encoding| (encoding, encodings.iter().map(|e| *e == Some(encoding)).collect()))
        .collect()
}

/// The rows whose metric is kept, with dictionaries reduced to the names still used.
pub(super) fn subset_by_metric(rows: &PartitionRows, keep_metric: &[bool]) -> PartitionRows {
    let mut buoy_used = vec![false; rows.buoy_names.len()];
    let mut picked = Vec::new();
    for (i, &m) in rows.metric_keys.iter().enumerate() {
        if keep_metric.get(m as usize).copied().unwrap_or(false) {
            picked.push(i);
            buoy_used[rows.buoy_keys[i] as usize] = true;
        }
    }
    let remap = |used: &[bool], names: &[Arc<str>]| {
        let mut map = vec![u32::MAX; used.len()];
        let mut out = Vec::new();
        for (k, &u) in used.iter().enumerate() {
            if u {
                map[k] = out.len() as u32;
                out.push(names[k].clone());
            }
        }
        (map, out)
    };
    let (buoy_map, buoy_names) = remap(&buoy_used, &rows.buoy_names);
    let (metric_map, metric_names) = remap(keep_metric, &rows.metric_names);
    PartitionRows {
        buoy_names,
        metric_names,
        buoy_keys: picked.iter().map(|&i| buoy_map[rows.buoy_keys[i] as usize]).collect(),
        metric_keys: picked.iter().map(|&i| metric_map[rows.metric_keys[i] as usize]).collect(),
        timestamps: picked.iter().map(|&i| rows.timestamps[i]).collect(),
        values: picked.iter().map(|&i| rows.values[i]).collect(),
        quality: picked.iter().map(|&i| rows.quality[i]).collect(),
    }
}

/// `parquet/readings/date=YYYY-MM-DD/hour=HH` for a partition start.
pub(crate) fn partition_dir(partition_start: TimestampNs) -> String {
    table_partition_dir(READINGS_TABLE, partition_start)
}

/// `parquet/rollups_1m/date=YYYY-MM-DD/hour=HH` for a partition start: where the rollups of
/// the partition's readings files live.
pub(crate) fn rollup_dir(partition_start: TimestampNs) -> String {
    table_partition_dir(ROLLUPS_TABLE, partition_start)
}

fn table_partition_dir(table: &str, partition_start: TimestampNs) -> String {
    let secs = partition_start.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3_600;
    let (y, m, d) = civil_from_days(days);
    format!("parquet/{table}/date={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// `2026-06-01T13:00:00Z`: a timestamp as UTC text to the second (for tools such as
/// `bluewave inspect`).
pub fn utc_text(ts: TimestampNs) -> String {
    let secs = ts.div_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3_600, s % 3_600 / 60, s % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_dirs_use_civil_dates() {
        assert_eq!(partition_dir(0), "parquet/readings/date=1970-01-01/hour=00");
        assert_eq!(utc_text(1_780_318_800 * 1_000_000_000 + 61_000_000_123), "2026-06-01T13:01:01Z");
        // 2026-06-01T13:00:00Z
        assert_eq!(partition_dir(1_780_318_800 * 1_000_000_000), "parquet/readings/date=2026-06-01/hour=13");
        assert_eq!(partition_dir(-3_600 * 1_000_000_000), "parquet/readings/date=1969-12-31/hour=23");
    }
}
