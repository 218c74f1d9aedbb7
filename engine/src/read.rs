//! Read side: the published [`ReadView`] (committed files + tombstones), consistent
//! [`Snapshot`]s of view + buffer, catalog file selection, and a reference reader that merges
//! everything with the last-write-wins and tombstone rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::buffer::Chunk;
use crate::catalog::{FileMeta, Tombstone};
use crate::error::{Error, InputError, Result};
use crate::partition;
use crate::storage::Storage;
use crate::types::TimestampNs;

/// What readers see of the catalog: replaced whole, atomically, on every change.
#[derive(Debug, Default, Clone)]
pub struct ReadView {
    /// Committed files by partition start.
    pub partitions: BTreeMap<TimestampNs, Vec<Arc<FileMeta>>>,
    /// Highest committed flush generation: buffer chunks sealed at or below it are in files.
    pub flushed_gen: u64,
    /// Tombstones in force.
    pub tombstones: Vec<Arc<Tombstone>>,
}

impl ReadView {
    /// Number of committed files.
    pub fn file_count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    /// Every committed file.
    pub fn files(&self) -> impl Iterator<Item = &Arc<FileMeta>> {
        self.partitions.values().flatten()
    }
}

/// Which readings a read wants. `None` means no restriction.
#[derive(Clone, Debug, Default)]
pub struct ReadFilter {
    /// Inclusive start, ns.
    pub start: Option<TimestampNs>,
    /// Exclusive end, ns.
    pub end: Option<TimestampNs>,
    /// Only these buoys.
    pub buoys: Option<Vec<String>>,
    /// Only these metrics.
    pub metrics: Option<Vec<String>>,
}

impl ReadFilter {
    /// Checks the filter.
    pub fn validate(&self) -> Result<()> {
        if let (Some(start), Some(end)) = (self.start, self.end)
            && end < start
        {
            return Err(InputError::InvalidTimeRange { start, end }.into());
        }
        Ok(())
    }

    #[inline]
    fn time_overlaps(&self, lo: TimestampNs, hi: TimestampNs) -> bool {
        self.start.is_none_or(|s| hi >= s) && self.end.is_none_or(|e| lo < e)
    }

    #[inline]
    fn keeps(&self, buoy: &str, metric: &str, ts: TimestampNs) -> bool {
        self.start.is_none_or(|s| ts >= s)
            && self.end.is_none_or(|e| ts < e)
            && self.buoys.as_ref().is_none_or(|b| b.iter().any(|x| x == buoy))
            && self.metrics.as_ref().is_none_or(|m| m.iter().any(|x| x == metric))
    }
}

/// A file chosen by [`Snapshot::select_files`].
#[derive(Clone, Debug)]
pub struct SelectedFile {
    /// The file.
    pub meta: Arc<FileMeta>,
    /// True when another selected file or a buffered chunk overlaps it in time within its
    /// partition, so its keys may be rewritten elsewhere and need last-write-wins merging.
    /// False for the common in-order case, which can be read as is.
    pub overlaps: bool,
    /// Tombstones that hide rows of this file.
    pub tombstones: Vec<Arc<Tombstone>>,
}

/// True when two sorted name lists share a name (linear merge).
fn sorted_lists_intersect(a: &[Arc<str>], b: &[Arc<str>]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// `(buoy, metric, ts)`.
type RowKey = (Arc<str>, Arc<str>, TimestampNs);
/// `((source: 0 file / 1 buffer, generation or sequence), value, quality)`.
type Candidate = ((u8, u64), f64, u8);

/// One merged reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Buoy id.
    pub buoy: Arc<str>,
    /// Metric name.
    pub metric: Arc<str>,
    /// Timestamp, ns.
    pub ts: TimestampNs,
    /// Value.
    pub value: f64,
    /// Quality flag.
    pub quality: u8,
}

/// A consistent read state: the view and the buffered chunks not yet in its files.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Committed files and tombstones.
    pub view: Arc<ReadView>,
    /// Buffered chunks whose rows are not in `view`'s files.
    pub chunks: Vec<Arc<Chunk>>,
    pub(crate) data_dir: PathBuf,
}

impl Snapshot {
    /// A snapshot of a given view with no buffered chunks (benches and tools that build views
    /// by hand).
    pub fn from_view(view: Arc<ReadView>, data_dir: PathBuf) -> Self {
        Self { view, chunks: Vec::new(), data_dir }
    }

    /// Absolute path of a file of this snapshot.
    pub fn file_path(&self, meta: &FileMeta) -> PathBuf {
        self.data_dir.join(&meta.path)
    }

    /// Chooses files for a filter from catalog metadata alone (no file is opened).
    pub fn select_files(&self, filter: &ReadFilter) -> Vec<SelectedFile> {
        let lo = filter.start.map_or(i64::MIN, |s| s);
        let mut out: Vec<SelectedFile> = Vec::new();
        // Partitions are keyed by start; a partition starting before `lo` may still reach it,
        // so begin one partition earlier than the first start >= lo.
        let first = self.view.partitions.range(..=lo).next_back().map_or(i64::MIN, |(k, _)| *k);
        for (_, files) in self.view.partitions.range(first..) {
            if let Some(end) = filter.end
                && files.first().is_some_and(|f| f.partition_start >= end)
            {
                break;
            }
            let start_index = out.len();
            for f in files {
                if !filter.time_overlaps(f.ts_min, f.ts_max) {
                    continue;
                }
                if let Some(buoys) = &filter.buoys
                    && !buoys.iter().any(|b| f.has_buoy(b))
                {
                    continue;
                }
                if let Some(metrics) = &filter.metrics
                    && !metrics.iter().any(|m| f.has_metric(m))
                {
                    continue;
                }
                let tombstones =
                    self.view.tombstones.iter().filter(|t| t.applies_to_file(f)).cloned().collect();
                out.push(SelectedFile { meta: f.clone(), overlaps: false, tombstones });
            }
            // Mark overlaps among this partition's selected files and with buffered chunks.
            let selected = &mut out[start_index..];
            for i in 0..selected.len() {
                let (a_lo, a_hi) = (selected[i].meta.ts_min, selected[i].meta.ts_max);
                let a = &selected[i].meta;
                let with_files = selected.iter().enumerate().any(|(j, b)| {
                    j != i
                        && b.meta.ts_min <= a_hi
                        && a_lo <= b.meta.ts_max
                        && sorted_lists_intersect(&a.metrics, &b.meta.metrics)
                        && sorted_lists_intersect(&a.buoys, &b.meta.buoys)
                });
                let with_chunks = self.chunks.iter().any(|c| c.ts_min <= a_hi && a_lo <= c.ts_max);
                selected[i].overlaps = with_files || with_chunks;
            }
        }
        out
    }

    /// Every reading that matches `filter`, one per key (last write wins), tombstones applied,
    /// sorted by `(buoy, metric, ts)`. Reads whole files: the reference against which the query
    /// layer's pruned scans are checked, and the engine of small tools (`bluewave inspect`).
    pub fn read(&self, storage: &dyn Storage, filter: &ReadFilter) -> Result<Vec<Row>> {
        filter.validate()?;
        // Key -> (precedence, row). Buffer rows beat file rows; among files the higher
        // generation wins; among buffer rows the higher sequence.
        let mut merged: BTreeMap<RowKey, Candidate> = BTreeMap::new();
        for selected in self.select_files(filter) {
            let path = self.file_path(&selected.meta);
            let bytes = storage.read(&path).map_err(|e| Error::io("read partition file", &path, e))?;
            let rows = partition::decode_partition(bytes.into())?;
            for i in 0..rows.len() {
                let buoy = &rows.buoy_names[rows.buoy_keys[i] as usize];
                let metric = &rows.metric_names[rows.metric_keys[i] as usize];
                let ts = rows.timestamps[i];
                if !filter.keeps(buoy, metric, ts) {
                    continue;
                }
                if selected.tombstones.iter().any(|t| t.covers(buoy, metric, ts)) {
                    continue;
                }
                let precedence = (0u8, selected.meta.generation);
                let key = (buoy.clone(), metric.clone(), ts);
                let candidate = (precedence, rows.values[i], rows.quality[i]);
                merged
                    .entry(key)
                    .and_modify(|e| {
                        if precedence > e.0 {
                            *e = candidate
                        }
                    })
                    .or_insert(candidate);
            }
        }
        for c in &self.chunks {
            if !filter.time_overlaps(c.ts_min, c.ts_max) {
                continue;
            }
            for i in 0..c.len() {
                let buoy = &c.buoy_names[c.buoy_keys[i] as usize];
                let metric = &c.metric_names[c.metric_keys[i] as usize];
                let ts = c.timestamps[i];
                if !filter.keeps(buoy, metric, ts) {
                    continue;
                }
                let seq = c.seqs[i];
                if self.view.tombstones.iter().any(|t| t.seq > seq && t.covers(buoy, metric, ts)) {
                    continue;
                }
                let precedence = (1u8, seq);
                let candidate = (precedence, c.values[i], c.quality[i]);
                // `>=`: one batch may name a key twice (same sequence); its later row wins, as
                // in a flush. Rows of one chunk are visited in arrival order.
                merged
                    .entry((buoy.clone(), metric.clone(), ts))
                    .and_modify(|e| {
                        if precedence >= e.0 {
                            *e = candidate
                        }
                    })
                    .or_insert(candidate);
            }
        }
        Ok(merged
            .into_iter()
            .map(|((buoy, metric, ts), (_, value, quality))| Row { buoy, metric, ts, value, quality })
            .collect())
    }
}
