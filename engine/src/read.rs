//! Read side: the published [`ReadView`] (committed files + tombstones), consistent
//! [`Snapshot`]s of view + buffer, catalog file selection, and a reference reader that merges
//! everything with the last-write-wins and tombstone rules.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use crate::buffer::Chunk;
use crate::catalog::{FileMeta, Tombstone};
use crate::error::{Error, InputError, Result};
use crate::partition;
use crate::precedence::Precedence;
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
    /// Compaction debt of `partitions`, recomputed ([`ReadView::recompute_debt`]) by whoever
    /// changes them, so it always matches the files of this view.
    pub debt: CompactionDebt,
}

/// How far compaction is behind, from the files of one view: what queries pay for (every
/// generation of a partition is one more file to open and merge) and what ingest is slowed, then
/// refused, by (`compaction_debt_slowdown_generations`, `compaction_debt_busy_generations`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactionDebt {
    /// Most flush generations in one partition (1 once compacted, 0 with no files).
    pub generations_max: usize,
    /// Flush generations summed over all partitions.
    pub generations_total: usize,
    /// Partitions with more than one generation.
    pub partitions_waiting: usize,
    /// Bytes of the files of partitions with more than one generation: what compaction has
    /// yet to rewrite.
    pub bytes_waiting: u64,
}

impl ReadView {
    /// Recomputes [`ReadView::debt`] from `partitions`; O(files).
    pub fn recompute_debt(&mut self) {
        let mut debt = CompactionDebt::default();
        let mut gens: Vec<u64> = Vec::new();
        for files in self.partitions.values() {
            gens.clear();
            gens.extend(files.iter().map(|f| f.generation));
            gens.sort_unstable();
            gens.dedup();
            debt.generations_max = debt.generations_max.max(gens.len());
            debt.generations_total += gens.len();
            if gens.len() > 1 {
                debt.partitions_waiting += 1;
                debt.bytes_waiting += files.iter().map(|f| f.bytes).sum::<u64>();
            }
        }
        self.debt = debt;
    }

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

    /// The asked buoys as a set, for lookups over many sources (`None`: every buoy).
    pub fn buoy_set(&self) -> Option<std::collections::HashSet<&str>> {
        self.buoys.as_ref().map(|b| b.iter().map(String::as_str).collect())
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
    /// True when some of its rows need last-write-wins merging: `merge_buoys` is not empty.
    pub overlaps: bool,
    /// Buoys (sorted, within the filter) whose rows in this file may have another version in
    /// another selected file or a buffered chunk (their time ranges for that buoy overlap), or
    /// are hidden by a tombstone. Only these need merging; the file's other buoys can be read
    /// as they are, which is the common in-order case even when the fleet's clocks are skewed.
    pub merge_buoys: Vec<Arc<str>>,
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
/// `(precedence, value, quality)`.
type Candidate = (Precedence, f64, u8);

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

/// [`NewestWindow::end`] is the newest end that all but `1 / NEWEST_END_QUANTILE_DIVISOR` of
/// the buoys reach (the 10th percentile): clocks of a fleet are skewed by minutes, and a window
/// ending at the median would leave half the fleet to a second look.
pub const NEWEST_END_QUANTILE_DIVISOR: usize = 10;

/// Where the newest data of a filter lies ([`Snapshot::newest_window`]). Quantiles over the
/// buoys, so a few buoys that went silent or whose clocks run far ahead move nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewestWindow {
    /// The last timestamp of each buoy's newest source (file or chunk), at the 10th percentile
    /// over buoys ([`NEWEST_END_QUANTILE_DIVISOR`]): nine buoys in ten have data up to it.
    pub end: TimestampNs,
    /// Median over buoys of the time span of the buoy's rows in that source.
    pub span: TimestampNs,
    /// Earliest timestamp of any source within the filter.
    pub earliest: TimestampNs,
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

    /// The data dir the snapshot's paths are relative to.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Absolute path of a file's minute rollup.
    pub fn rollup_path(&self, rollup: &crate::catalog::RollupRef) -> PathBuf {
        self.data_dir.join(&rollup.path)
    }

    /// Chooses files for a filter from catalog metadata alone (no file is opened).
    pub fn select_files(&self, filter: &ReadFilter) -> Vec<SelectedFile> {
        self.select(filter, true)
    }

    /// How many files [`Self::select_files`] would choose, without deciding what to merge.
    pub fn count_files(&self, filter: &ReadFilter) -> usize {
        self.select(filter, false).len()
    }

    fn select(&self, filter: &ReadFilter, mark: bool) -> Vec<SelectedFile> {
        let lo = filter.start.map_or(i64::MIN, |s| s);
        let mut out: Vec<SelectedFile> = Vec::new();
        // Buffered rows per buoy: the ranges of every chunk that holds the buoy.
        let mut chunk_ranges: HashMap<&str, Vec<(TimestampNs, TimestampNs)>> = HashMap::new();
        let wanted = filter.buoy_set();
        for c in self.chunks.iter().filter(|c| mark && filter.time_overlaps(c.ts_min, c.ts_max)) {
            for (i, buoy) in c.buoy_names.iter().enumerate() {
                // Only the asked buoys matter for marking (a one-buoy query over a large buffer).
                if wanted.as_ref().is_some_and(|want| !want.contains(&**buoy)) {
                    continue;
                }
                let range = c.buoy_ranges.get(i).copied().unwrap_or((c.ts_min, c.ts_max));
                chunk_ranges.entry(&**buoy).or_default().push(range);
            }
        }
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
                out.push(SelectedFile {
                    meta: f.clone(),
                    overlaps: false,
                    merge_buoys: Vec::new(),
                    tombstones,
                });
            }
            if mark {
                self.mark_merge_buoys(filter, &chunk_ranges, &mut out[start_index..]);
            }
        }
        out
    }

    /// Marks, among one partition's selected files, the buoys whose rows need merging: two
    /// files (sharing a metric) or a file and a buffered chunk whose time ranges *for that
    /// buoy* overlap, or a tombstone that reaches the buoy's rows. Buoys outside the filter or
    /// whose rows lie outside its time window are ignored: no key of theirs can be read.
    fn mark_merge_buoys(
        &self,
        filter: &ReadFilter,
        chunk_ranges: &HashMap<&str, Vec<(TimestampNs, TimestampNs)>>,
        selected: &mut [SelectedFile],
    ) {
        // Buoy -> (file index, range) for every selected file holding it within the window.
        let mut by_buoy: HashMap<Arc<str>, Vec<(usize, TimestampNs, TimestampNs)>> = HashMap::new();
        for (i, f) in selected.iter().enumerate() {
            let mut add = |k: usize| {
                let (lo, hi) = f.meta.buoy_range_at(k);
                if lo <= hi && filter.time_overlaps(lo, hi) {
                    by_buoy.entry(f.meta.buoys[k].clone()).or_default().push((i, lo, hi));
                }
            };
            match &filter.buoys {
                // A few buoys asked for: look them up in the file's sorted list.
                Some(list) => list
                    .iter()
                    .filter_map(|b| f.meta.buoys.binary_search_by(|x| (**x).cmp(b)).ok())
                    .for_each(&mut add),
                None => (0..f.meta.buoys.len()).for_each(&mut add),
            }
        }
        let mut marked: Vec<Vec<Arc<str>>> = vec![Vec::new(); selected.len()];
        for (buoy, entries) in &by_buoy {
            let mut dirty = vec![false; entries.len()];
            for (x, &(i, lo, hi)) in entries.iter().enumerate() {
                for (y, &(j, lo2, hi2)) in entries.iter().enumerate().skip(x + 1) {
                    if lo <= hi2
                        && lo2 <= hi
                        && sorted_lists_intersect(&selected[i].meta.metrics, &selected[j].meta.metrics)
                    {
                        dirty[x] = true;
                        dirty[y] = true;
                    }
                }
                if chunk_ranges
                    .get(&**buoy)
                    .is_some_and(|r| r.iter().any(|&(c_lo, c_hi)| c_lo <= hi && lo <= c_hi))
                    || selected[i].tombstones.iter().any(|t| *t.buoy == **buoy && t.start <= hi && lo < t.end)
                {
                    dirty[x] = true;
                }
            }
            for (x, &(i, _, _)) in entries.iter().enumerate() {
                if dirty[x] {
                    marked[i].push(buoy.clone());
                }
            }
        }
        for (file, mut buoys) in selected.iter_mut().zip(marked) {
            buoys.sort();
            file.overlaps = !buoys.is_empty();
            file.merge_buoys = buoys;
        }
    }

    /// Calls `each(buoy, buoy_lo, buoy_hi, metrics)` for every committed file and buffered chunk
    /// that may hold rows within `filter`, once per buoy of it that the filter allows, with that
    /// buoy's time range in the source clamped to the filter's window (skipped when empty) and
    /// the source's metric list (a superset of the buoy's metrics there). Catalog metadata only.
    pub fn for_each_buoy_source(
        &self,
        filter: &ReadFilter,
        mut each: impl FnMut(&Arc<str>, TimestampNs, TimestampNs, &[Arc<str>]),
    ) {
        let start = filter.start.unwrap_or(TimestampNs::MIN);
        let last = filter.end.map_or(TimestampNs::MAX, |e| e.saturating_sub(1));
        let buoys = filter.buoy_set();
        let allowed = |buoy: &str| buoys.as_ref().is_none_or(|b| b.contains(buoy));
        let has_metric = |metrics: &[Arc<str>]| {
            filter.metrics.as_ref().is_none_or(|want| want.iter().any(|m| metrics.iter().any(|x| **x == **m)))
        };
        let mut visit = |buoy: &Arc<str>, (lo, hi): (TimestampNs, TimestampNs), metrics: &[Arc<str>]| {
            let (lo, hi) = (lo.max(start), hi.min(last));
            if lo <= hi && allowed(buoy) {
                each(buoy, lo, hi, metrics);
            }
        };
        // Partitions are keyed by start; one starting before `start` may still reach it.
        let first = self.view.partitions.range(..=start).next_back().map_or(TimestampNs::MIN, |(k, _)| *k);
        let files = self.view.partitions.range(first..).take_while(|(k, _)| **k <= last).flat_map(|(_, f)| f);
        for f in files {
            if !filter.time_overlaps(f.ts_min, f.ts_max) || !has_metric(&f.metrics) {
                continue;
            }
            for (k, buoy) in f.buoys.iter().enumerate() {
                visit(buoy, f.buoy_range_at(k), &f.metrics);
            }
        }
        for c in &self.chunks {
            if !filter.time_overlaps(c.ts_min, c.ts_max) || !has_metric(&c.metric_names) {
                continue;
            }
            for (k, buoy) in c.buoy_names.iter().enumerate() {
                visit(buoy, c.buoy_ranges.get(k).copied().unwrap_or((c.ts_min, c.ts_max)), &c.metric_names);
            }
        }
    }

    /// Where the newest data within `filter` lies, for "latest row per buoy" readers; `None`
    /// when nothing within the filter exists. Catalog metadata only.
    pub fn newest_window(&self, filter: &ReadFilter) -> Option<NewestWindow> {
        // Buoy -> (highest end, start of that source).
        let mut newest: HashMap<Arc<str>, (TimestampNs, TimestampNs)> = HashMap::new();
        let mut earliest = TimestampNs::MAX;
        self.for_each_buoy_source(filter, |buoy, lo, hi, _| {
            earliest = earliest.min(lo);
            let entry = newest.entry(buoy.clone()).or_insert((hi, lo));
            if hi > entry.0 || (hi == entry.0 && lo < entry.1) {
                *entry = (hi, lo);
            }
        });
        if newest.is_empty() {
            return None;
        }
        let middle = (newest.len() - 1) / 2;
        let mut ends: Vec<TimestampNs> = newest.values().map(|&(hi, _)| hi).collect();
        let mut spans: Vec<TimestampNs> = newest.values().map(|&(hi, lo)| hi.saturating_sub(lo)).collect();
        Some(NewestWindow {
            end: *ends.select_nth_unstable(newest.len() / NEWEST_END_QUANTILE_DIVISOR).1,
            span: *spans.select_nth_unstable(middle).1,
            earliest,
        })
    }

    /// Every reading that matches `filter`, one per key (last write wins), tombstones applied,
    /// sorted by `(buoy, metric, ts)`. Reads whole files: the reference against which the query
    /// layer's pruned scans are checked, and the engine of small tools (`bluewave inspect`).
    pub fn read(&self, storage: &dyn Storage, filter: &ReadFilter) -> Result<Vec<Row>> {
        filter.validate()?;
        // Key -> (precedence, row), last-write-wins by `Precedence::replaces`.
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
                let precedence = Precedence::file(selected.meta.generation);
                let key = (buoy.clone(), metric.clone(), ts);
                let candidate = (precedence, rows.values[i], rows.quality[i]);
                merged
                    .entry(key)
                    .and_modify(|e| {
                        if precedence.replaces(e.0) {
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
                let precedence = Precedence::buffered(seq);
                let candidate = (precedence, c.values[i], c.quality[i]);
                // `>=`: one batch may name a key twice (same sequence); its later row wins, as
                // in a flush. Rows of one chunk are visited in arrival order.
                merged
                    .entry((buoy.clone(), metric.clone(), ts))
                    .and_modify(|e| {
                        if precedence.replaces(e.0) {
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
