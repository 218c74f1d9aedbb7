//! `catalog.redb`: the durable index of partition files, tombstones, WAL watermarks, buoy
//! registry and deduplication windows.
//!
//! A file is visible to readers only once its entry is committed here; every flush, compaction
//! and retention pass is one redb write transaction. Records are stored in small, versioned,
//! little-endian encodings written out below (no serde format whose layout could drift).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::dedup::DedupWindow;
use crate::error::{CatalogError, Error, Result};
use crate::types::TimestampNs;

const FILES: TableDefinition<u64, &[u8]> = TableDefinition::new("files");
const TOMBSTONES: TableDefinition<u64, &[u8]> = TableDefinition::new("tombstones");
const WATERMARKS: TableDefinition<&str, u64> = TableDefinition::new("wal_watermarks");
const DEDUP: TableDefinition<&str, &[u8]> = TableDefinition::new("dedup_windows");
const BUOYS: TableDefinition<&str, &[u8]> = TableDefinition::new("buoys");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The last application of retention (`crate::retention::RetentionRecord`'s encoding), under
/// [`RETENTION_LAST`].
const RETENTION: TableDefinition<&str, &[u8]> = TableDefinition::new("retention");
const RETENTION_LAST: &str = "last";

const META_FORMAT_VERSION: &str = "format_version";
const META_NEXT_FILE_ID: &str = "next_file_id";
const META_FLUSHED_GEN: &str = "flushed_gen";
const META_PARTITION_NS: &str = "partition_duration_ns";
/// Catalog layout version; a newer one is refused rather than misread.
pub const CATALOG_FORMAT_VERSION: u64 = 1;

/// One committed Parquet partition file.
#[derive(Clone, Debug, PartialEq)]
pub struct FileMeta {
    /// Catalog id, unique for the life of the data dir.
    pub id: u64,
    /// Start of the time partition (inclusive), ns.
    pub partition_start: TimestampNs,
    /// End of the time partition (exclusive), ns.
    pub partition_end: TimestampNs,
    /// Path relative to the data dir, `/`-separated.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// Smallest timestamp in the file.
    pub ts_min: TimestampNs,
    /// Largest timestamp in the file.
    pub ts_max: TimestampNs,
    /// Flush generation: among files of one partition, a key in the file of higher generation
    /// replaces the same key in a lower one. A compacted file keeps its inputs' highest.
    pub generation: u64,
    /// Smallest WAL sequence of the rows (informational).
    pub seq_min: u64,
    /// Largest WAL sequence of the rows (informational).
    pub seq_max: u64,
    /// Buoy ids present, sorted.
    pub buoys: Vec<Arc<str>>,
    /// Metric names present, sorted.
    pub metrics: Vec<Arc<str>>,
    /// Sequences of tombstones compaction already applied to the rows of this file (sorted):
    /// they no longer apply to it, so they can be collected.
    pub applied_tombstones: Vec<u64>,
    /// Per buoy (aligned with `buoys`): smallest and largest timestamp of its rows. Readers
    /// decide overlap per buoy: a fleet whose clocks are skewed by minutes still writes files
    /// that share no key, and those are read as they are. Empty for entries written before
    /// catalog entry version 3: the file-wide `ts_min..=ts_max` then stands for every buoy.
    pub buoy_ranges: Vec<(TimestampNs, TimestampNs)>,
    /// Per metric (aligned with `metrics`): count, sum, smallest and largest value of its rows,
    /// so aggregates over files no filter cuts are answered from here without reading them.
    /// Empty for entries written before catalog entry version 4.
    pub metric_stats: Vec<MetricStats>,
    /// Per series (one buoy's one metric) with rows in the file: count, sum, smallest and
    /// largest value, sorted by `(buoy, metric)` position, so per-buoy aggregates (fleet-wide
    /// top-N, per-buoy extremes) and callers who see only some buoys are answered without
    /// opening the file. 40 bytes a series on disk and in memory. Empty for entries written
    /// before catalog entry version 5.
    pub series_stats: Vec<SeriesStats>,
    /// The file's minute rollup (`engine/ROLLUPS.md`), written before this entry was committed
    /// and removed with the file; `None` for files without one (entries before catalog entry
    /// version 6, rollups off, or a rollup the memory budget refused): readers scan those.
    pub rollup: Option<RollupRef>,
}

/// Where a readings file's minute rollup lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollupRef {
    /// Path relative to the data dir, `/`-separated
    /// (`parquet/rollups_1m/date=…/hour=…/<file id>.parquet`).
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// Buckets (rows) in it.
    pub buckets: u64,
}

/// Aggregates of one series' rows in one file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesStats {
    /// Position of the buoy in [`FileMeta::buoys`].
    pub buoy: u32,
    /// Position of the metric in [`FileMeta::metrics`].
    pub metric: u32,
    /// Its rows' count, sum (in row order), minimum and maximum.
    pub stats: MetricStats,
}

/// Gathers [`SeriesStats`] while a file's rows are written, keyed by the writer's dictionary
/// keys. Rows come sorted by `(buoy, metric, ts)`, so a series is one run of rows and each row
/// costs one comparison with the series before it.
#[derive(Clone, Debug, Default)]
pub struct SeriesStatsBuilder {
    /// `(buoy key, metric key)` and stats, one entry per run of rows.
    runs: Vec<((u32, u32), MetricStats)>,
}

impl SeriesStatsBuilder {
    /// Adds one row's value.
    #[inline]
    pub fn add(&mut self, buoy_key: u32, metric_key: u32, value: f64) {
        match self.runs.last_mut() {
            Some((key, stats)) if *key == (buoy_key, metric_key) => stats.add(value),
            _ => {
                let mut stats = MetricStats::EMPTY;
                stats.add(value);
                self.runs.push(((buoy_key, metric_key), stats));
            }
        }
    }

    /// The series stats of a file whose sorted name lists are `buoys` and `metrics`, given the
    /// dictionaries the keys index (`buoy_names`, `metric_names`). A key outside its dictionary
    /// or a name missing from the lists leaves the series out (never misattributed); runs of
    /// one series that were not adjacent are merged.
    pub fn finish(
        &self,
        buoy_names: &[Arc<str>],
        metric_names: &[Arc<str>],
        buoys: &[Arc<str>],
        metrics: &[Arc<str>],
    ) -> Vec<SeriesStats> {
        let position = |names: &[Arc<str>], list: &[Arc<str>], key: u32| -> Option<u32> {
            let name = names.get(key as usize)?;
            list.binary_search(name).ok().and_then(|i| u32::try_from(i).ok())
        };
        let mut out: Vec<SeriesStats> = self
            .runs
            .iter()
            .filter_map(|&((b, m), stats)| {
                Some(SeriesStats {
                    buoy: position(buoy_names, buoys, b)?,
                    metric: position(metric_names, metrics, m)?,
                    stats,
                })
            })
            .collect();
        out.sort_by_key(|s| (s.buoy, s.metric));
        out.dedup_by(|later, earlier| {
            let same = (later.buoy, later.metric) == (earlier.buoy, earlier.metric);
            if same {
                earlier.stats.merge(&later.stats);
            }
            same
        });
        out
    }
}

/// Aggregates of one metric's rows in one file, taken from the values as written (values
/// round-trip bit for bit, so a scan of the file sees exactly these).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricStats {
    /// Rows of the metric.
    pub rows: u64,
    /// Sum of the values, in row order.
    pub sum: f64,
    /// Smallest value (IEEE 754 total order, as Arrow's `min`).
    pub min: f64,
    /// Largest value (IEEE 754 total order, as Arrow's `max`).
    pub max: f64,
}

impl MetricStats {
    /// No rows yet.
    pub const EMPTY: Self = Self { rows: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY };

    /// Adds one value.
    pub fn add(&mut self, v: f64) {
        if self.rows == 0 {
            (self.min, self.max) = (v, v);
        } else {
            if v.total_cmp(&self.min).is_lt() {
                self.min = v;
            }
            if v.total_cmp(&self.max).is_gt() {
                self.max = v;
            }
        }
        self.rows += 1;
        self.sum += v;
    }

    /// Both sets of rows together.
    pub fn merge(&mut self, other: &Self) {
        if other.rows == 0 {
            return;
        }
        if self.rows == 0 {
            *self = *other;
            return;
        }
        if other.min.total_cmp(&self.min).is_lt() {
            self.min = other.min;
        }
        if other.max.total_cmp(&self.max).is_gt() {
            self.max = other.max;
        }
        self.rows += other.rows;
        self.sum += other.sum;
    }
}

impl FileMeta {
    /// True when the file may hold rows for `buoy` (binary search on the sorted list).
    pub fn has_buoy(&self, buoy: &str) -> bool {
        self.buoys.binary_search_by(|b| (**b).cmp(buoy)).is_ok()
    }

    /// Smallest and largest timestamp of the `i`-th buoy of `buoys` (the file-wide range when
    /// the entry predates per-buoy ranges).
    pub fn buoy_range_at(&self, i: usize) -> (TimestampNs, TimestampNs) {
        self.buoy_ranges.get(i).copied().unwrap_or((self.ts_min, self.ts_max))
    }

    /// Smallest and largest timestamp of `buoy`'s rows; `None` when the file has none.
    pub fn buoy_range(&self, buoy: &str) -> Option<(TimestampNs, TimestampNs)> {
        let i = self.buoys.binary_search_by(|b| (**b).cmp(buoy)).ok()?;
        Some(self.buoy_range_at(i))
    }

    /// True when the file may hold rows for `metric`.
    pub fn has_metric(&self, metric: &str) -> bool {
        self.metrics.binary_search_by(|m| (**m).cmp(metric)).is_ok()
    }

    /// Layout: `version u8 | id u64 | partition_start i64 | partition_end i64 | path (u16 len) |
    /// rows u64 | bytes u64 | ts_min i64 | ts_max i64 | generation u64 | seq_min u64 | seq_max u64
    /// | buoys (u32 count, (u8 len, bytes)*) | metrics (same) | applied tombstones (u32 count,
    /// u64*) | buoy ranges (u32 count, (i64 min, i64 max)*) | metric stats (u32 count, (u64 rows,
    /// f64 sum, f64 min, f64 max)*) | series stats (u32 count, (u32 buoy position, u32 metric
    /// position, u64 rows, f64 sum, f64 min, f64 max)*, sorted by position pair) | rollup (u8
    /// 0 = none, 1 = present, then path (u16 len) | bytes u64 | buckets u64)`. Version 1
    /// entries (no tombstone list), version 2 entries (no buoy ranges), version 3 entries (no
    /// metric stats), version 4 entries (no series stats) and version 5 entries (no rollup)
    /// are still read.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            100 + self.path.len()
                + self.buoys.len() * 28
                + self.metrics.len() * 48
                + self.series_stats.len() * 40,
        );
        out.push(6);
        for v in [self.id, self.partition_start as u64, self.partition_end as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.path.len() as u16).to_le_bytes());
        out.extend_from_slice(self.path.as_bytes());
        for v in [
            self.rows,
            self.bytes,
            self.ts_min as u64,
            self.ts_max as u64,
            self.generation,
            self.seq_min,
            self.seq_max,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for list in [&self.buoys, &self.metrics] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for name in list.iter() {
                out.push(name.len() as u8);
                out.extend_from_slice(name.as_bytes());
            }
        }
        out.extend_from_slice(&(self.applied_tombstones.len() as u32).to_le_bytes());
        for seq in &self.applied_tombstones {
            out.extend_from_slice(&seq.to_le_bytes());
        }
        out.extend_from_slice(&(self.buoy_ranges.len() as u32).to_le_bytes());
        for (lo, hi) in &self.buoy_ranges {
            out.extend_from_slice(&lo.to_le_bytes());
            out.extend_from_slice(&hi.to_le_bytes());
        }
        out.extend_from_slice(&(self.metric_stats.len() as u32).to_le_bytes());
        for m in &self.metric_stats {
            out.extend_from_slice(&m.rows.to_le_bytes());
            for v in [m.sum, m.min, m.max] {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.series_stats.len() as u32).to_le_bytes());
        for s in &self.series_stats {
            out.extend_from_slice(&s.buoy.to_le_bytes());
            out.extend_from_slice(&s.metric.to_le_bytes());
            out.extend_from_slice(&s.stats.rows.to_le_bytes());
            for v in [s.stats.sum, s.stats.min, s.stats.max] {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        match &self.rollup {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                out.extend_from_slice(&(r.path.len() as u16).to_le_bytes());
                out.extend_from_slice(r.path.as_bytes());
                out.extend_from_slice(&r.bytes.to_le_bytes());
                out.extend_from_slice(&r.buckets.to_le_bytes());
            }
        }
        out
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if !(1..=6).contains(&version) {
            return None;
        }
        let id = r.u64()?;
        let partition_start = r.u64()? as i64;
        let partition_end = r.u64()? as i64;
        let path_len = usize::from(r.u16()?);
        let path = std::str::from_utf8(r.take(path_len)?).ok()?.to_owned();
        let rows = r.u64()?;
        let file_bytes = r.u64()?;
        let ts_min = r.u64()? as i64;
        let ts_max = r.u64()? as i64;
        let generation = r.u64()?;
        let seq_min = r.u64()?;
        let seq_max = r.u64()?;
        let buoys = r.names()?;
        let metrics = r.names()?;
        let mut applied_tombstones = Vec::new();
        if version >= 2 {
            let count = r.u32()? as usize;
            applied_tombstones.reserve(count.min(bytes.len() / 8));
            for _ in 0..count {
                applied_tombstones.push(r.u64()?);
            }
        }
        let mut buoy_ranges = Vec::new();
        if version >= 3 {
            let count = r.u32()? as usize;
            // Either one range per buoy or none; anything else is not an entry we wrote.
            if count != 0 && count != buoys.len() {
                return None;
            }
            buoy_ranges.reserve(count.min(bytes.len() / 16));
            for _ in 0..count {
                buoy_ranges.push((r.u64()? as i64, r.u64()? as i64));
            }
        }
        let mut metric_stats = Vec::new();
        if version >= 4 {
            let count = r.u32()? as usize;
            // Either one entry per metric or none.
            if count != 0 && count != metrics.len() {
                return None;
            }
            metric_stats.reserve(count.min(bytes.len() / 32));
            for _ in 0..count {
                let rows = r.u64()?;
                let (sum, min, max) =
                    (f64::from_bits(r.u64()?), f64::from_bits(r.u64()?), f64::from_bits(r.u64()?));
                metric_stats.push(MetricStats { rows, sum, min, max });
            }
        }
        let mut series_stats = Vec::new();
        if version >= 5 {
            let count = r.u32()? as usize;
            series_stats.reserve(count.min(bytes.len() / 40));
            for _ in 0..count {
                let (buoy, metric) = (r.u32()?, r.u32()?);
                let rows = r.u64()?;
                let (sum, min, max) =
                    (f64::from_bits(r.u64()?), f64::from_bits(r.u64()?), f64::from_bits(r.u64()?));
                // Positions inside the lists and strictly increasing, or not an entry we wrote.
                let after_last =
                    series_stats.last().is_none_or(|l: &SeriesStats| (l.buoy, l.metric) < (buoy, metric));
                if buoy as usize >= buoys.len() || metric as usize >= metrics.len() || !after_last {
                    return None;
                }
                series_stats.push(SeriesStats { buoy, metric, stats: MetricStats { rows, sum, min, max } });
            }
        }
        let mut rollup = None;
        if version >= 6 {
            match r.u8()? {
                0 => {}
                1 => {
                    let len = usize::from(r.u16()?);
                    let path = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
                    rollup = Some(RollupRef { path, bytes: r.u64()?, buckets: r.u64()? });
                }
                _ => return None,
            }
        }
        (r.pos == bytes.len()).then_some(Self {
            id,
            partition_start,
            partition_end,
            path,
            rows,
            bytes: file_bytes,
            ts_min,
            ts_max,
            generation,
            seq_min,
            seq_max,
            buoys,
            metrics,
            applied_tombstones,
            buoy_ranges,
            metric_stats,
            series_stats,
            rollup,
        })
    }

    /// The series stats of `buoy` (one per metric it has here); empty when the file has none
    /// of its rows or the entry predates series stats.
    pub fn series_stats_of(&self, buoy: &str) -> &[SeriesStats] {
        let Ok(i) = self.buoys.binary_search_by(|b| (**b).cmp(buoy)) else { return &[] };
        let i = i as u32;
        let start = self.series_stats.partition_point(|s| s.buoy < i);
        let end = self.series_stats.partition_point(|s| s.buoy <= i);
        &self.series_stats[start..end]
    }

    /// True when the entry carries series stats (written by catalog entry version 5 or later,
    /// and the file has rows).
    pub fn has_series_stats(&self) -> bool {
        !self.series_stats.is_empty()
    }

    /// The stats of `metric`'s rows; `None` when the file has none or the entry predates them.
    pub fn metric_stats_of(&self, metric: &str) -> Option<&MetricStats> {
        let i = self.metrics.binary_search_by(|m| (**m).cmp(metric)).ok()?;
        self.metric_stats.get(i)
    }
}

/// A logged delete that readers apply until compaction removes the rows for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// WAL sequence of the delete: buffered rows with a lower sequence are hidden.
    pub seq: u64,
    /// Files of this generation or lower are hidden where they match (they were sealed before
    /// the delete was applied); higher generations were filtered when they were written.
    pub generation: u64,
    /// The buoy.
    pub buoy: Arc<str>,
    /// One metric, or all.
    pub metric: Option<Arc<str>>,
    /// Inclusive start, ns.
    pub start: TimestampNs,
    /// Exclusive end, ns.
    pub end: TimestampNs,
}

impl Tombstone {
    /// True when the tombstone covers this key (ignoring sequence and generation).
    #[inline]
    pub fn covers(&self, buoy: &str, metric: &str, ts: TimestampNs) -> bool {
        ts >= self.start
            && ts < self.end
            && &*self.buoy == buoy
            && self.metric.as_deref().is_none_or(|m| m == metric)
    }

    /// True when the tombstone hides rows of `file`.
    pub fn applies_to_file(&self, file: &FileMeta) -> bool {
        file.generation <= self.generation
            && file.applied_tombstones.binary_search(&self.seq).is_err()
            && self.start <= file.ts_max
            && self.end > file.ts_min
            && file.has_buoy(&self.buoy)
            && self.metric.as_deref().is_none_or(|m| file.has_metric(m))
    }

    /// Layout: `version u8 | seq u64 | generation u64 | start i64 | end i64 | buoy (u8 len) |
    /// metric (u8 len, 0 = all)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.buoy.len());
        out.push(1);
        for v in [self.seq, self.generation, self.start as u64, self.end as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let metric = self.metric.as_deref().unwrap_or("");
        for name in [&*self.buoy, metric] {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        out
    }

    /// Parses [`Self::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader { bytes, pos: 0 };
        if r.u8()? != 1 {
            return None;
        }
        let seq = r.u64()?;
        let generation = r.u64()?;
        let start = r.u64()? as i64;
        let end = r.u64()? as i64;
        let buoy = r.name()?;
        let metric = r.name()?;
        let metric = if metric.is_empty() { None } else { Some(metric) };
        (r.pos == bytes.len()).then_some(Self { seq, generation, buoy, metric, start, end })
    }
}

/// A registered buoy (the `buoys` table of the query layer).
#[derive(Clone, Debug, PartialEq)]
pub struct BuoyInfo {
    /// Its id.
    pub id: Arc<str>,
    /// Human name.
    pub name: String,
    /// Latitude, degrees, if known.
    pub latitude: Option<f64>,
    /// Longitude, degrees, if known.
    pub longitude: Option<f64>,
    /// `active`, `maintenance`, `retired`…
    pub status: String,
}

impl BuoyInfo {
    /// An active buoy without location.
    pub fn new(id: &crate::BuoyId) -> Self {
        Self {
            id: Arc::from(id.as_str()),
            name: id.as_str().to_owned(),
            latitude: None,
            longitude: None,
            status: "active".into(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![1];
        for s in [self.name.as_str(), self.status.as_str()] {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        for v in [self.latitude, self.longitude] {
            out.push(u8::from(v.is_some()));
            out.extend_from_slice(&v.unwrap_or(0.0).to_bits().to_le_bytes());
        }
        out
    }

    fn decode(id: &str, bytes: &[u8]) -> Option<Self> {
        let mut r = Reader { bytes, pos: 0 };
        if r.u8()? != 1 {
            return None;
        }
        let mut strings = [String::new(), String::new()];
        for s in &mut strings {
            let len = usize::from(r.u16()?);
            *s = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        }
        let mut coords = [None, None];
        for c in &mut coords {
            let present = r.u8()? == 1;
            let v = f64::from_bits(r.u64()?);
            *c = present.then_some(v);
        }
        let [name, status] = strings;
        Some(Self { id: Arc::from(id), name, latitude: coords[0], longitude: coords[1], status })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn name(&mut self) -> Option<Arc<str>> {
        let len = usize::from(self.u8()?);
        Some(Arc::from(std::str::from_utf8(self.take(len)?).ok()?))
    }
    fn names(&mut self) -> Option<Vec<Arc<str>>> {
        let count = self.u32()? as usize;
        let mut out = Vec::with_capacity(count.min(self.bytes.len()));
        for _ in 0..count {
            out.push(self.name()?);
        }
        Some(out)
    }
}

/// Everything loaded from the catalog at open.
#[derive(Debug, Default)]
pub struct CatalogState {
    /// Committed files by id.
    pub files: BTreeMap<u64, FileMeta>,
    /// Tombstones by sequence.
    pub tombstones: BTreeMap<u64, Tombstone>,
    /// Highest flushed WAL sequence per lane directory name.
    pub watermarks: BTreeMap<String, u64>,
    /// Deduplication windows per buoy.
    pub dedup: BTreeMap<String, DedupWindow>,
    /// Registered buoys.
    pub buoys: BTreeMap<String, BuoyInfo>,
    /// Next file id to hand out.
    pub next_file_id: u64,
    /// Highest committed flush generation.
    pub flushed_gen: u64,
}

/// One atomic change of the catalog (a flush, a compaction or a retention pass).
#[derive(Debug, Default)]
pub struct CatalogCommit {
    /// Files that become visible.
    pub add_files: Vec<FileMeta>,
    /// Files that stop being visible (their bytes are removed after the commit).
    pub remove_files: Vec<u64>,
    /// New WAL watermarks.
    pub watermarks: Vec<(String, u64)>,
    /// Changed deduplication windows.
    pub dedup: Vec<(String, DedupWindow)>,
    /// Tombstones to persist.
    pub put_tombstones: Vec<Tombstone>,
    /// Tombstones no longer needed.
    pub remove_tombstones: Vec<u64>,
    /// New highest committed flush generation, if it changes.
    pub flushed_gen: Option<u64>,
    /// New next file id, if it is higher than the stored one.
    pub next_file_id: Option<u64>,
    /// The encoded record of a retention pass, replacing the last one.
    pub retention_record: Option<Vec<u8>>,
}

/// Handle on `catalog.redb`. Writes come from the flusher, the compactor and registration; redb
/// runs one write transaction at a time.
pub struct Catalog {
    db: Database,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalog")
    }
}

fn corrupt_entry(table: &str, key: &str) -> Error {
    Error::Catalog(CatalogError::Undecodable { table: table.to_owned(), key: key.to_owned() })
}

impl Catalog {
    /// Opens or creates the catalog and loads its state.
    pub fn open(path: &Path) -> Result<(Self, CatalogState)> {
        let db = Database::create(path)?;
        // Make sure every table exists so readers never meet a missing one.
        let txn = db.begin_write()?;
        {
            txn.open_table(FILES)?;
            txn.open_table(TOMBSTONES)?;
            txn.open_table(WATERMARKS)?;
            txn.open_table(DEDUP)?;
            txn.open_table(BUOYS)?;
            txn.open_table(RETENTION)?;
            let mut meta = txn.open_table(META)?;
            let version = meta.get(META_FORMAT_VERSION)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_FORMAT_VERSION, CATALOG_FORMAT_VERSION)?;
                }
                Some(v) if v == CATALOG_FORMAT_VERSION => {}
                Some(v) => {
                    return Err(Error::Catalog(CatalogError::UnsupportedVersion {
                        version: v,
                        supported: CATALOG_FORMAT_VERSION,
                    }));
                }
            }
        }
        txn.commit()?;
        let catalog = Self { db };
        let state = catalog.load()?;
        Ok((catalog, state))
    }

    fn load(&self) -> Result<CatalogState> {
        let txn = self.db.begin_read()?;
        let mut state = CatalogState::default();
        for item in txn.open_table(FILES)?.iter()? {
            let (k, v) = item?;
            let meta =
                FileMeta::decode(v.value()).ok_or_else(|| corrupt_entry("files", &k.value().to_string()))?;
            state.files.insert(k.value(), meta);
        }
        for item in txn.open_table(TOMBSTONES)?.iter()? {
            let (k, v) = item?;
            let t = Tombstone::decode(v.value())
                .ok_or_else(|| corrupt_entry("tombstones", &k.value().to_string()))?;
            state.tombstones.insert(k.value(), t);
        }
        for item in txn.open_table(WATERMARKS)?.iter()? {
            let (k, v) = item?;
            state.watermarks.insert(k.value().to_owned(), v.value());
        }
        for item in txn.open_table(DEDUP)?.iter()? {
            let (k, v) = item?;
            let w =
                DedupWindow::decode(v.value()).ok_or_else(|| corrupt_entry("dedup_windows", k.value()))?;
            state.dedup.insert(k.value().to_owned(), w);
        }
        for item in txn.open_table(BUOYS)?.iter()? {
            let (k, v) = item?;
            let b =
                BuoyInfo::decode(k.value(), v.value()).ok_or_else(|| corrupt_entry("buoys", k.value()))?;
            state.buoys.insert(k.value().to_owned(), b);
        }
        let meta = txn.open_table(META)?;
        state.next_file_id = meta.get(META_NEXT_FILE_ID)?.map_or(1, |v| v.value());
        state.flushed_gen = meta.get(META_FLUSHED_GEN)?.map_or(0, |v| v.value());
        Ok(state)
    }

    /// Applies one change atomically and durably.
    pub fn commit(&self, change: &CatalogCommit) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut files = txn.open_table(FILES)?;
            for f in &change.add_files {
                files.insert(f.id, f.encode().as_slice())?;
            }
            for id in &change.remove_files {
                files.remove(id)?;
            }
            let mut tombstones = txn.open_table(TOMBSTONES)?;
            for t in &change.put_tombstones {
                tombstones.insert(t.seq, t.encode().as_slice())?;
            }
            for seq in &change.remove_tombstones {
                tombstones.remove(seq)?;
            }
            let mut watermarks = txn.open_table(WATERMARKS)?;
            for (lane, seq) in &change.watermarks {
                watermarks.insert(lane.as_str(), seq)?;
            }
            let mut dedup = txn.open_table(DEDUP)?;
            for (buoy, w) in &change.dedup {
                dedup.insert(buoy.as_str(), w.encode().as_slice())?;
            }
            if let Some(record) = &change.retention_record {
                txn.open_table(RETENTION)?.insert(RETENTION_LAST, record.as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            if let Some(g) = change.flushed_gen {
                meta.insert(META_FLUSHED_GEN, g)?;
            }
            // Two threads write files (flusher, compactor) and commit in either order: the
            // catalog keeps the highest next id, so no id is ever handed out twice.
            if let Some(id) = change.next_file_id {
                let stored = meta.get(META_NEXT_FILE_ID)?.map_or(0, |v| v.value());
                if id > stored {
                    meta.insert(META_NEXT_FILE_ID, id)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Records the partition length on first use and refuses a different one later: files and
    /// last-write-wins merging are per partition, so the length is part of the data's layout.
    pub fn check_partition_duration(&self, ns: i64) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(META_PARTITION_NS)?.map(|v| v.value());
            match stored {
                None => {
                    meta.insert(META_PARTITION_NS, ns as u64)?;
                }
                Some(v) if v == ns as u64 => {}
                Some(v) => {
                    return Err(Error::Config(format!(
                        "this data dir uses partitions of {} s; it cannot be opened with {} s",
                        v / 1_000_000_000,
                        ns / 1_000_000_000
                    )));
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The encoded record of the last retention pass, if any.
    pub fn last_retention(&self) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RETENTION)?;
        Ok(table.get(RETENTION_LAST)?.map(|v| v.value().to_vec()))
    }

    /// Registers or updates a buoy.
    pub fn put_buoy(&self, info: &BuoyInfo) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(BUOYS)?.insert(&*info.id, info.encode().as_slice())?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn meta(id: u64) -> FileMeta {
        FileMeta {
            id,
            partition_start: 0,
            partition_end: 3_600_000_000_000,
            path: format!("parquet/readings/date=1970-01-01/hour=00/{id:016x}.parquet"),
            rows: 10,
            bytes: 100,
            ts_min: 5,
            ts_max: 50,
            generation: 3,
            seq_min: 1,
            seq_max: 9,
            buoys: vec![Arc::from("a"), Arc::from("b")],
            metrics: vec![Arc::from("ph")],
            applied_tombstones: vec![4, 12],
            buoy_ranges: vec![(5, 20), (7, 50)],
            metric_stats: vec![MetricStats { rows: 10, sum: 71.25, min: -0.5, max: 8.125 }],
            series_stats: vec![
                SeriesStats {
                    buoy: 0,
                    metric: 0,
                    stats: MetricStats { rows: 4, sum: 30.0, min: -0.5, max: 8.125 },
                },
                SeriesStats {
                    buoy: 1,
                    metric: 0,
                    stats: MetricStats { rows: 6, sum: 41.25, min: 6.0, max: 7.5 },
                },
            ],
            rollup: None,
        }
    }

    #[test]
    fn rollup_references_round_trip_and_entries_of_version_5_are_read_without_them() {
        let mut m = meta(9);
        m.rollup = Some(RollupRef {
            path: "parquet/rollups_1m/date=1970-01-01/hour=00/0000000000000009.parquet".into(),
            bytes: 1_234,
            buckets: 56,
        });
        assert_eq!(FileMeta::decode(&m.encode()), Some(m.clone()));
        let mut v5 = meta(9);
        let mut bytes = v5.encode();
        bytes[0] = 5;
        bytes.truncate(bytes.len() - 1);
        v5.rollup = None;
        assert_eq!(FileMeta::decode(&bytes), Some(v5));
        // A presence byte other than 0 or 1, or a cut reference, is refused, not misread.
        let mut bad = meta(9).encode();
        *bad.last_mut().unwrap() = 2;
        assert_eq!(FileMeta::decode(&bad), None);
        let mut cut = m.encode();
        cut.truncate(cut.len() - 3);
        assert_eq!(FileMeta::decode(&cut), None);
    }

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let t = Tombstone { seq: 12, generation: 2, buoy: Arc::from("a"), metric: None, start: -1, end: 7 };
        let mut w = DedupWindow::default();
        w.record(4);
        {
            let (cat, state) = Catalog::open(&path).unwrap();
            assert!(state.files.is_empty());
            cat.commit(&CatalogCommit {
                add_files: vec![meta(1), meta(2)],
                put_tombstones: vec![t.clone()],
                watermarks: vec![("lane-00".into(), 77)],
                dedup: vec![("a".into(), w.clone())],
                flushed_gen: Some(3),
                next_file_id: Some(3),
                ..CatalogCommit::default()
            })
            .unwrap();
            cat.commit(&CatalogCommit { remove_files: vec![1], ..CatalogCommit::default() }).unwrap();
        }
        let (_cat, state) = Catalog::open(&path).unwrap();
        assert_eq!(state.files.values().cloned().collect::<Vec<_>>(), vec![meta(2)]);
        assert_eq!(state.tombstones.get(&12), Some(&t));
        assert_eq!(state.watermarks.get("lane-00"), Some(&77));
        assert_eq!(state.dedup.get("a"), Some(&w));
        assert_eq!((state.flushed_gen, state.next_file_id), (3, 3));
        assert_eq!(FileMeta::decode(&meta(5).encode()), Some(meta(5)));
        assert_eq!(FileMeta::decode(&meta(5).encode()[1..]), None);
    }

    #[test]
    fn entries_of_older_versions_are_read_with_file_wide_buoy_ranges() {
        let mut v2 = meta(6);
        v2.buoy_ranges.clear();
        v2.metric_stats.clear();
        v2.series_stats.clear();
        let mut bytes = v2.encode();
        bytes[0] = 2;
        // A version 2 entry ends after the tombstone list: drop the (empty) range and stats
        // counts.
        bytes.truncate(bytes.len() - 13);
        let decoded = FileMeta::decode(&bytes).unwrap();
        assert_eq!(decoded, v2);
        assert_eq!(decoded.buoy_range("b"), Some((5, 50)));
        assert_eq!(meta(6).buoy_range("b"), Some((7, 50)));
        assert_eq!(meta(6).buoy_range("c"), None);
        // A range list that does not match the buoy list is refused, not misread.
        let mut wrong = meta(6);
        wrong.buoy_ranges.pop();
        assert_eq!(FileMeta::decode(&wrong.encode()), None);
    }

    #[test]
    fn entries_of_version_3_are_read_without_metric_stats() {
        let mut v3 = meta(7);
        v3.metric_stats.clear();
        v3.series_stats.clear();
        let mut bytes = v3.encode();
        bytes[0] = 3;
        // A version 3 entry ends after the buoy ranges: drop the (empty) stats counts.
        bytes.truncate(bytes.len() - 9);
        let decoded = FileMeta::decode(&bytes).unwrap();
        assert_eq!(decoded, v3);
        assert_eq!(decoded.metric_stats_of("ph"), None);
        assert_eq!(meta(7).metric_stats_of("ph").map(|m| m.rows), Some(10));
        // A stats list that does not match the metric list is refused, not misread.
        let mut wrong = meta(7);
        wrong.metric_stats.push(MetricStats::EMPTY);
        assert_eq!(FileMeta::decode(&wrong.encode()), None);
    }

    #[test]
    fn series_stats_round_trip_and_entries_of_version_4_are_read_without_them() {
        let m = meta(8);
        assert_eq!(m.series_stats_of("b").iter().map(|s| s.stats.rows).collect::<Vec<_>>(), vec![6]);
        assert!(m.series_stats_of("c").is_empty());
        let mut v4 = meta(8);
        v4.series_stats.clear();
        let mut bytes = v4.encode();
        bytes[0] = 4;
        bytes.truncate(bytes.len() - 5);
        let decoded = FileMeta::decode(&bytes).unwrap();
        assert_eq!(decoded, v4);
        assert!(!decoded.has_series_stats() && decoded.series_stats_of("a").is_empty());
        // Positions outside the lists, or out of order, are refused, not misread.
        for broken in [
            |m: &mut FileMeta| m.series_stats[1].buoy = 2,
            |m: &mut FileMeta| m.series_stats[1].metric = 1,
            |m: &mut FileMeta| m.series_stats.swap(0, 1),
        ] {
            let mut wrong = meta(8);
            broken(&mut wrong);
            assert_eq!(FileMeta::decode(&wrong.encode()), None);
        }
    }

    #[test]
    fn series_stats_builder_keeps_one_entry_per_series_in_list_order() {
        let names = |list: &[&str]| list.iter().map(|s| Arc::from(*s)).collect::<Vec<Arc<str>>>();
        // Dictionaries in first-seen order, lists sorted; rows sorted by name.
        let (buoy_dict, metric_dict) = (names(&["b", "a"]), names(&["temp", "ph"]));
        let (buoys, metrics) = (names(&["a", "b"]), names(&["ph", "temp"]));
        let mut builder = SeriesStatsBuilder::default();
        for (b, m, v) in [(1, 1, 7.0), (1, 1, 8.5), (1, 0, 20.0), (0, 1, 6.5), (0, 0, 21.0), (0, 0, 19.5)] {
            builder.add(b, m, v);
        }
        // A run of a series seen before (unsorted input) is merged, an unknown key dropped.
        builder.add(1, 1, 9.0);
        builder.add(7, 0, 1.0);
        let got = builder.finish(&buoy_dict, &metric_dict, &buoys, &metrics);
        let stats = |values: &[f64]| {
            let mut s = MetricStats::EMPTY;
            values.iter().for_each(|&v| s.add(v));
            s
        };
        assert_eq!(
            got,
            vec![
                SeriesStats { buoy: 0, metric: 0, stats: stats(&[7.0, 8.5, 9.0]) },
                SeriesStats { buoy: 0, metric: 1, stats: stats(&[20.0]) },
                SeriesStats { buoy: 1, metric: 0, stats: stats(&[6.5]) },
                SeriesStats { buoy: 1, metric: 1, stats: stats(&[21.0, 19.5]) },
            ]
        );
    }

    #[test]
    fn metric_stats_merge_as_one_pass_over_all_values() {
        let values = [3.5, -1.25, 0.0, -0.0, 7.0, -8.5];
        let mut whole = MetricStats::EMPTY;
        values.iter().for_each(|&v| whole.add(v));
        let (mut left, mut right) = (MetricStats::EMPTY, MetricStats::EMPTY);
        values[..2].iter().for_each(|&v| left.add(v));
        values[2..].iter().for_each(|&v| right.add(v));
        left.merge(&right);
        assert_eq!(left, whole);
        assert_eq!(whole, MetricStats { rows: 6, sum: 0.75, min: -8.5, max: 7.0 });
        let mut empty = MetricStats::EMPTY;
        empty.merge(&MetricStats::EMPTY);
        assert_eq!(empty.rows, 0);
        // Total order: -0.0 sorts below +0.0, as in Arrow's `min`.
        let mut zeros = MetricStats::EMPTY;
        [0.0, -0.0].iter().for_each(|&v| zeros.add(v));
        assert!(zeros.min.is_sign_negative() && zeros.max.is_sign_positive());
    }
}
