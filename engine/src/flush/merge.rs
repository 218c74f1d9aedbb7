//! The streaming k-way merge of sorted partition files that compaction runs: each input is read
//! a slice at a time, rows up to the smallest last key of the current slices are merged with
//! last-write-wins ([`super::sort`]), and the output is encoded as it goes, so a compaction never
//! holds all rows of a partition in memory.

use std::sync::Arc;

use bytes::Bytes;

use crate::catalog::{FileMeta, Tombstone};
use crate::error::{Error, PartitionError, Result};
use crate::partition::{
    EncodedPartition, PartitionReader, PartitionRows, PartitionWriteOptions, PartitionWriter, ValueEncoding,
};
use crate::precedence::Precedence;
use crate::rollup::RollupMemory;
use crate::types::TimestampNs;

use super::layout::FileSummary;
use super::parallel_map;
use super::sort::{MergeRows, SortInput, last_write_wins, rank_dictionary};

/// One input file of a compaction.
pub(super) struct CompactionFile {
    pub(super) meta: Arc<FileMeta>,
    pub(super) bytes: Bytes,
    /// Tombstones that apply to it.
    pub(super) tombstones: Vec<Arc<Tombstone>>,
    /// Metrics whose rows in this file retention removes (sorted; usually none).
    pub(super) expired_metrics: Vec<Arc<str>>,
}

/// One output file of a compaction.
pub(super) struct CompactionOutput {
    pub(super) encoded: EncodedPartition,
    pub(super) summary: FileSummary,
}

/// A compaction input as the merge reads it: the current slice, and the ranks of its
/// dictionary keys in the merge's sorted dictionaries.
pub(super) struct MergeCursor<'a> {
    pub(super) file: &'a CompactionFile,
    pub(super) reader: PartitionReader,
    pub(super) slice: PartitionRows,
    pub(super) buoy_rank: Vec<u32>,
    pub(super) metric_rank: Vec<u32>,
    /// Rows of `slice` already merged.
    pub(super) pos: usize,
    /// The file has no slice left.
    pub(super) done: bool,
}

impl MergeCursor<'_> {
    fn key(&self, row: usize) -> (u32, u32, TimestampNs) {
        (
            self.buoy_rank[self.slice.buoy_keys[row] as usize],
            self.metric_rank[self.slice.metric_keys[row] as usize],
            self.slice.timestamps[row],
        )
    }

    /// Reads slices until one has rows left or the file ends.
    fn refill(&mut self, buoys: &[Arc<str>], metrics: &[Arc<str>]) -> Result<()> {
        while self.pos >= self.slice.len() && !self.done {
            let Some(slice) = self.reader.next_slice()? else {
                self.done = true;
                break;
            };
            // Dictionaries only grow from slice to slice: rank the new names alone.
            let path = &self.file.meta.path;
            extend_ranks(&mut self.buoy_rank, &slice.buoy_names, buoys, "buoy", path)?;
            extend_ranks(&mut self.metric_rank, &slice.metric_names, metrics, "metric", path)?;
            self.slice = slice;
            self.pos = 0;
        }
        Ok(())
    }

    /// End of the rows from `pos` whose key is at most `cut` (the slice is sorted).
    fn end_at(&self, cut: (u32, u32, TimestampNs)) -> usize {
        let (mut lo, mut hi) = (self.pos, self.slice.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= cut {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// Ranks in `sorted` of the names of `names` past the ones `ranks` already holds.
pub(super) fn extend_ranks(
    ranks: &mut Vec<u32>,
    names: &[Arc<str>],
    sorted: &[Arc<str>],
    what: &str,
    path: &str,
) -> Result<()> {
    for name in names.iter().skip(ranks.len()) {
        let rank = sorted.binary_search(name).map_err(|_| {
            Error::Parquet(PartitionError::Corrupt(format!(
                "{path}: {what} {name:?} is not in its catalog entry"
            )))
        })?;
        ranks.push(rank as u32);
    }
    Ok(())
}

/// How a merge pass ended.
pub(super) enum MergePass {
    Done(Vec<CompactionOutput>),
    /// `yield_now` asked to stop; nothing was written.
    Yielded,
    /// A value of this metric (rank) does not fit its widened decimal encoding.
    DoesNotFit(usize),
}

/// Merges compaction inputs of the partition starting at `base`: the higher generation wins a
/// key; rows hidden by a tombstone that applies to their file are dropped. Output: one file per
/// value encoding. A metric stored with one encoding in every input keeps it; one stored with
/// several takes the widest ([`ValueEncoding::widen`]), or `Float64` if a value does not fit
/// that. Streams: each input is read `slice_rows` rows at a time, and a round merges the rows
/// of every input up to the smallest last key among the inputs' current slices (no later row
/// of any input can come before it). `None` when `yield_now` stopped it.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge_files(
    files: &[CompactionFile],
    base: i64,
    slice_rows: usize,
    threads: usize,
    options: &PartitionWriteOptions,
    rollup: Option<&RollupMemory>,
    yield_now: &dyn Fn() -> bool,
) -> Result<Option<Vec<CompactionOutput>>> {
    let (buoys, _) = rank_dictionary(files.iter().map(|f| f.meta.buoys.as_slice()));
    let (metrics, _) = rank_dictionary(files.iter().map(|f| f.meta.metrics.as_slice()));
    let merge = Merge { files, base, slice_rows, threads, options, rollup, yield_now, buoys, metrics };
    merge.run()
}

/// The settings of one [`merge_files`], shared by its passes.
pub(super) struct Merge<'a> {
    pub(super) files: &'a [CompactionFile],
    pub(super) base: i64,
    pub(super) slice_rows: usize,
    pub(super) threads: usize,
    pub(super) options: &'a PartitionWriteOptions,
    /// Who pays for each output's minute rollup, built as its rows are encoded (`None`: off).
    pub(super) rollup: Option<&'a RollupMemory>,
    pub(super) yield_now: &'a dyn Fn() -> bool,
    /// Sorted union of the inputs' buoys and metrics: the output dictionaries.
    pub(super) buoys: Vec<Arc<str>>,
    pub(super) metrics: Vec<Arc<str>>,
}

impl Merge<'_> {
    fn open_readers(&self) -> Result<Vec<PartitionReader>> {
        self.files.iter().map(|f| PartitionReader::open(f.bytes.clone(), self.slice_rows)).collect()
    }

    fn run(&self) -> Result<Option<Vec<CompactionOutput>>> {
        let mut readers = self.open_readers()?;
        let mut encodings: Vec<Option<ValueEncoding>> = vec![None; self.metrics.len()];
        let mut mixed = vec![false; self.metrics.len()];
        for (f, reader) in self.files.iter().zip(&readers) {
            let encoding = reader.value_encoding();
            for name in &f.meta.metrics {
                if let Ok(m) = self.metrics.binary_search(name) {
                    encodings[m] = Some(match encodings[m] {
                        None => encoding,
                        Some(before) => {
                            mixed[m] |= before != encoding;
                            before.widen(encoding)
                        }
                    });
                }
            }
        }
        let mut encodings: Vec<ValueEncoding> =
            encodings.into_iter().map(|e| e.unwrap_or(ValueEncoding::Float64)).collect();
        // At most one restart per metric: a metric that does not fit goes to Float64, which fits.
        loop {
            match self.pass(readers, &encodings, &mixed)? {
                MergePass::Done(outputs) => return Ok(Some(outputs)),
                MergePass::Yielded => return Ok(None),
                MergePass::DoesNotFit(m) => {
                    tracing::info!(metric = %self.metrics[m], "compaction stores a metric as float64: a value does not fit its widened decimal");
                    encodings[m] = ValueEncoding::Float64;
                    mixed[m] = false;
                    readers = self.open_readers()?;
                }
            }
        }
    }

    /// One pass over `readers` (fresh, one per input) with the encodings decided.
    fn pass(
        &self,
        readers: Vec<PartitionReader>,
        encodings: &[ValueEncoding],
        mixed: &[bool],
    ) -> Result<MergePass> {
        let (buoys, metrics) = (self.buoys.as_slice(), self.metrics.as_slice());
        let mut cursors: Vec<MergeCursor<'_>> = self
            .files
            .iter()
            .zip(readers)
            .map(|(file, reader)| MergeCursor {
                file,
                reader,
                slice: PartitionRows::default(),
                buoy_rank: Vec::new(),
                metric_rank: Vec::new(),
                pos: 0,
                done: false,
            })
            .collect();
        // One output per distinct encoding; rows go to theirs by metric.
        let mut groups: Vec<ValueEncoding> = Vec::new();
        let group_of: Vec<usize> = encodings
            .iter()
            .map(|e| {
                groups.iter().position(|g| g == e).unwrap_or_else(|| {
                    groups.push(*e);
                    groups.len() - 1
                })
            })
            .collect();
        let empty = PartitionRows {
            buoy_names: buoys.to_vec(),
            metric_names: metrics.to_vec(),
            ..Default::default()
        };
        let mut staged: Vec<PartitionRows> = vec![empty; groups.len()];
        // Per input, per metric rank: rows retention removes (empty when it removes none).
        let expired_masks: Vec<Vec<bool>> = self
            .files
            .iter()
            .map(|f| {
                if f.expired_metrics.is_empty() {
                    Vec::new()
                } else {
                    metrics.iter().map(|m| f.expired_metrics.binary_search(m).is_ok()).collect()
                }
            })
            .collect();
        let mut writers: Vec<Option<(PartitionWriter, FileSummary)>> = groups.iter().map(|_| None).collect();
        loop {
            if (self.yield_now)() {
                return Ok(MergePass::Yielded);
            }
            for cursor in &mut cursors {
                cursor.refill(buoys, metrics)?;
            }
            // Rows up to the smallest last key of the inputs' current slices are complete: no
            // later slice of any input holds a key at or below it.
            let Some(cut) =
                cursors.iter().filter(|c| c.pos < c.slice.len()).map(|c| c.key(c.slice.len() - 1)).min()
            else {
                break;
            };
            let ends: Vec<usize> = cursors.iter().map(|c| c.end_at(cut)).collect();
            let mut keyed = MergeRows::with_capacity(ends.iter().zip(&cursors).map(|(e, c)| e - c.pos).sum());
            for (ci, (cursor, &end)) in cursors.iter().zip(&ends).enumerate() {
                let tombstones = &cursor.file.tombstones;
                let expired = &expired_masks[ci];
                for r in cursor.pos..end {
                    let (b, m, ts) = cursor.key(r);
                    if expired.get(m as usize).copied().unwrap_or(false) {
                        continue;
                    }
                    if !tombstones.is_empty()
                        && tombstones.iter().any(|t| t.covers(&buoys[b as usize], &metrics[m as usize], ts))
                    {
                        continue;
                    }
                    keyed.push(b, m, ts, Precedence::file(cursor.file.meta.generation), ci as u32, r as u32);
                }
            }
            let merged = last_write_wins(
                &keyed,
                self.base,
                SortInput::SortedRuns,
                buoys.to_vec(),
                metrics.to_vec(),
                |_, _, _, _| true,
                |ci, r| {
                    let slice = &cursors[ci as usize].slice;
                    (slice.values[r as usize], slice.quality[r as usize])
                },
            );
            for (cursor, end) in cursors.iter_mut().zip(ends) {
                cursor.pos = end;
            }
            let any_mixed = mixed.contains(&true);
            if let Some(m) = (0..merged.len())
                .filter(|_| any_mixed)
                .map(|i| merged.metric_keys[i] as usize)
                .zip(&merged.values)
                .find(|&(m, &v)| mixed[m] && !encodings[m].fits(v))
                .map(|(m, _)| m)
            {
                return Ok(MergePass::DoesNotFit(m));
            }
            if let [only] = staged.as_mut_slice() {
                // One encoding: the merged rows are the output as they are.
                *only = merged;
            } else {
                for stage in &mut staged {
                    stage.buoy_keys.clear();
                    stage.metric_keys.clear();
                    stage.timestamps.clear();
                    stage.values.clear();
                    stage.quality.clear();
                }
                for i in 0..merged.len() {
                    let stage = &mut staged[group_of[merged.metric_keys[i] as usize]];
                    stage.buoy_keys.push(merged.buoy_keys[i]);
                    stage.metric_keys.push(merged.metric_keys[i]);
                    stage.timestamps.push(merged.timestamps[i]);
                    stage.values.push(merged.values[i]);
                    stage.quality.push(merged.quality[i]);
                }
            }
            // The outputs encode in parallel (`flush_threads`), as a flush's files do.
            let jobs: Vec<_> = staged
                .iter()
                .zip(&mut writers)
                .zip(&groups)
                .filter(|((stage, _), _)| !stage.is_empty())
                .map(|((stage, writer), &encoding)| (stage, writer, encoding))
                .collect();
            let rollup = self.rollup;
            let written = parallel_map(jobs, self.threads, |(stage, writer, encoding)| -> Result<()> {
                let (writer, summary) = match writer {
                    Some(w) => w,
                    None => writer.insert((
                        PartitionWriter::new(buoys, metrics, encoding, &stage.values, self.options)?,
                        FileSummary::new(buoys, metrics).with_rollup(rollup),
                    )),
                };
                writer.write(stage)?;
                summary.add(stage);
                Ok(())
            });
            written.into_iter().collect::<Result<()>>()?;
        }
        let mut outputs = Vec::new();
        for (writer, summary) in writers.into_iter().flatten() {
            outputs.push(CompactionOutput { encoded: writer.finish()?, summary });
        }
        Ok(MergePass::Done(outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use crate::catalog::MetricStats;
    use crate::partition;

    /// A compaction input of generation `generation` holding `rows` (sorted, unique keys).
    fn compaction_file(
        generation: u64,
        rows: &PartitionRows,
        tombstones: Vec<Arc<Tombstone>>,
    ) -> CompactionFile {
        let summary = FileSummary::of(rows, None);
        let (buoys, buoy_ranges, metrics, metric_stats) = summary.lists();
        let bytes = partition::encode_partition(rows, &PartitionWriteOptions::default())
            .unwrap_or_else(|e| panic!("encode: {e}"))
            .bytes;
        let meta = FileMeta {
            id: generation,
            partition_start: 0,
            partition_end: 1 << 40,
            path: format!("gen{generation}"),
            rows: summary.rows,
            bytes: bytes.len() as u64,
            ts_min: summary.ts_min,
            ts_max: summary.ts_max,
            generation,
            seq_min: 0,
            seq_max: 0,
            buoys,
            metrics,
            applied_tombstones: Vec::new(),
            buoy_ranges,
            metric_stats,
            series_stats: Vec::new(),
            rollup: None,
        };
        CompactionFile {
            meta: Arc::new(meta),
            bytes: Bytes::from(bytes),
            tombstones,
            expired_metrics: Vec::new(),
        }
    }

    /// Rows as `(buoy, metric, ts) -> (value, quality)`.
    type RowMap = BTreeMap<(String, String, i64), (f64, u8)>;
    /// A buoy's tombstone `(buoy, start, end)`.
    type ModelTombstone = Option<(String, i64, i64)>;

    /// Sorted rows from a [`RowMap`].
    fn rows_of(map: &RowMap) -> PartitionRows {
        let mut buoys: Vec<Arc<str>> = map.keys().map(|k| Arc::from(k.0.as_str())).collect();
        buoys.dedup();
        let mut metrics: Vec<Arc<str>> = map.keys().map(|k| Arc::from(k.1.as_str())).collect();
        metrics.sort();
        metrics.dedup();
        let mut rows =
            PartitionRows { buoy_names: buoys.clone(), metric_names: metrics.clone(), ..Default::default() };
        for ((b, m, ts), &(v, q)) in map {
            rows.buoy_keys.push(buoys.binary_search_by(|n| (**n).cmp(b.as_str())).unwrap_or(0) as u32);
            rows.metric_keys.push(metrics.binary_search_by(|n| (**n).cmp(m.as_str())).unwrap_or(0) as u32);
            rows.timestamps.push(*ts);
            rows.values.push(v);
            rows.quality.push(q);
        }
        rows
    }

    /// Every row of the outputs, decoded, as `(buoy, metric, ts) -> (value bits, quality)`;
    /// also checks that each output's summary matches its rows and no metric is in two outputs.
    fn decoded(outputs: &[CompactionOutput]) -> BTreeMap<(String, String, i64), (u64, u8)> {
        let mut all = BTreeMap::new();
        let mut seen_metrics: Vec<Arc<str>> = Vec::new();
        for output in outputs {
            let rows = partition::decode_partition(Bytes::from(output.encoded.bytes.clone()))
                .unwrap_or_else(|e| panic!("decode: {e}"));
            assert_eq!(output.summary.rows, rows.len() as u64);
            let (buoys, _, metrics, stats) = output.summary.lists();
            let mut used_buoys: Vec<Arc<str>> =
                rows.buoy_keys.iter().map(|&k| rows.buoy_names[k as usize].clone()).collect();
            used_buoys.sort();
            used_buoys.dedup();
            assert_eq!(buoys, used_buoys, "summary buoys");
            // Each metric's stats are those of the rows the file holds, in file order.
            let wanted: Vec<MetricStats> = metrics
                .iter()
                .map(|m| {
                    let mut s = MetricStats::EMPTY;
                    (0..rows.len())
                        .filter(|&i| rows.metric_names[rows.metric_keys[i] as usize] == *m)
                        .for_each(|i| s.add(rows.values[i]));
                    s
                })
                .collect();
            assert_eq!(stats, wanted, "summary metric stats");
            for m in &metrics {
                assert!(!seen_metrics.contains(m), "metric {m} in two outputs");
                seen_metrics.push(m.clone());
            }
            for i in 0..rows.len() {
                let key = (
                    rows.buoy_names[rows.buoy_keys[i] as usize].to_string(),
                    rows.metric_names[rows.metric_keys[i] as usize].to_string(),
                    rows.timestamps[i],
                );
                assert!(all.insert(key, (rows.values[i].to_bits(), rows.quality[i])).is_none(), "key twice");
            }
        }
        all
    }

    /// The model of a merge: files in generation order, later ones win; a file's tombstones
    /// hide its own rows.
    fn model_merge(files: &[(RowMap, ModelTombstone)]) -> BTreeMap<(String, String, i64), (u64, u8)> {
        let mut out = BTreeMap::new();
        for (rows, tombstone) in files {
            for ((b, m, ts), &(v, q)) in rows {
                if tombstone.as_ref().is_some_and(|(tb, start, end)| tb == b && ts >= start && ts < end) {
                    continue;
                }
                out.insert((b.clone(), m.clone(), *ts), (v.to_bits(), q));
            }
        }
        out
    }

    proptest::proptest! {
        /// The streaming merge equals last-write-wins over whole files, for any slice size:
        /// higher generations win, each file's tombstones hide its rows, values come back bit
        /// for bit (metrics stored at several decimal scales, or as doubles, included).
        #[test]
        fn streaming_compaction_matches_a_model(
            files in proptest::collection::vec(
                (
                    proptest::collection::btree_map((0u8..4, 0u8..3, 0i64..24), (-5000i64..5000, 0u8..3), 0..60),
                    0u8..5,
                    proptest::option::of((0u8..4, 0i64..24, 0i64..12)),
                ),
                1..5,
            ),
            slice_rows in 1usize..40,
        ) {
            let mut inputs = Vec::new();
            let mut model_files = Vec::new();
            for (g, (rows, scale, tombstone)) in files.iter().enumerate() {
                let generation = g as u64 + 1;
                // Scale 4 stands for doubles that no decimal holds.
                let value = |unscaled: i64| match scale {
                    4 => unscaled as f64 + 0.1 + 1e-9,
                    s => unscaled as f64 / 10f64.powi(i32::from(*s)),
                };
                let map: BTreeMap<(String, String, i64), (f64, u8)> = rows
                    .iter()
                    .map(|(&(b, m, ts), &(v, q))| ((format!("b{b}"), format!("m{m}"), ts), (value(v), q)))
                    .collect();
                let tombstone = tombstone.map(|(b, start, len)| (format!("b{b}"), start, start + len));
                if map.is_empty() {
                    continue;
                }
                let tombstones = tombstone
                    .iter()
                    .map(|(b, start, end)| {
                        Arc::new(Tombstone { seq: generation, generation, buoy: Arc::from(b.as_str()), metric: None, start: *start, end: *end })
                    })
                    .collect();
                inputs.push(compaction_file(generation, &rows_of(&map), tombstones));
                model_files.push((map, tombstone));
            }
            let outputs = merge_files(&inputs, 0, slice_rows, 2, &PartitionWriteOptions::default(), None, &|| false)
                .unwrap_or_else(|e| panic!("merge: {e}"))
                .unwrap_or_else(|| panic!("merge yielded"));
            proptest::prop_assert_eq!(decoded(&outputs), model_merge(&model_files));
        }
    }

    #[test]
    fn a_metric_whose_widened_decimal_cannot_hold_a_value_is_stored_as_doubles() {
        let one = |value: f64| BTreeMap::from([(("b0".to_owned(), "ph".to_owned(), 1), (value, 0))]);
        let big = BTreeMap::from([(("b0".to_owned(), "ph".to_owned(), 2), (1e12, 0))]);
        let fine = one(0.123_456_789);
        let inputs =
            vec![compaction_file(1, &rows_of(&big), vec![]), compaction_file(2, &rows_of(&fine), vec![])];
        let outputs = merge_files(&inputs, 0, 1, 2, &PartitionWriteOptions::default(), None, &|| false)
            .unwrap_or_else(|e| panic!("merge: {e}"))
            .unwrap_or_else(|| panic!("merge yielded"));
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].encoded.value_encoding, ValueEncoding::Float64);
        let expected = model_merge(&[(big, None), (fine, None)]);
        assert_eq!(decoded(&outputs), expected);
    }

    #[test]
    fn a_merge_that_yields_writes_nothing() {
        let rows: BTreeMap<(String, String, i64), (f64, u8)> =
            (0..100).map(|ts| (("b0".to_owned(), "ph".to_owned(), ts), (ts as f64, 0))).collect();
        let inputs =
            vec![compaction_file(1, &rows_of(&rows), vec![]), compaction_file(2, &rows_of(&rows), vec![])];
        let calls = std::cell::Cell::new(0);
        let yield_now = || {
            calls.set(calls.get() + 1);
            calls.get() > 3
        };
        let outcome = merge_files(&inputs, 0, 10, 1, &PartitionWriteOptions::default(), None, &yield_now)
            .unwrap_or_else(|e| panic!("merge: {e}"));
        assert!(outcome.is_none(), "the merge did not yield");
        assert_eq!(calls.get(), 4, "yield is asked once per round");
    }
}
