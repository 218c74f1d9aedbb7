//! Compaction policy: which of a partition's files one compaction takes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{FileMeta, Tombstone};

/// Least rows per input slice of a compaction, however many inputs share
/// `compaction_rows_max`.
pub(super) const COMPACTION_SLICE_ROWS_MIN: usize = 4_096;

/// What a compaction takes of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompactionScope {
    /// The longest run of consecutive generations within `compaction_rows_max` rows: the
    /// partition may still be written to, so one compaction rewrites a bounded amount.
    Bounded,
    /// Every generation into one: a partition that flushes no longer write to (a newer one has
    /// data), or an explicit [`crate::Engine::compact`]. With `yield_to_ingest` it gives up, and
    /// is queued again, once the buffer fills past the midpoint of `flush_buffer_bytes` and
    /// `buffer_bytes_max`, so a long fold never holds up the flush that frees ingest.
    Fold { yield_to_ingest: bool },
}

/// Chooses what to compact in a partition: the longest run of consecutive flush generations
/// (at least two) holding at most `rows_max` rows, so compaction memory stays bounded; or, if
/// no such run exists, a single generation that a tombstone still applies to. Any run of
/// consecutive generations may be merged: its output takes the run's highest generation, so it
/// still loses to every newer file and beats every older one.
pub(super) fn compaction_run(
    files: &[Arc<FileMeta>],
    tombstones: &[Arc<Tombstone>],
    rows_max: usize,
) -> Option<Vec<Arc<FileMeta>>> {
    let mut by_gen: BTreeMap<u64, (u64, Vec<Arc<FileMeta>>)> = BTreeMap::new();
    for f in files {
        let entry = by_gen.entry(f.generation).or_default();
        entry.0 += f.rows;
        entry.1.push(f.clone());
    }
    let gens: Vec<(u64, Vec<Arc<FileMeta>>)> = by_gen.into_values().collect();
    let rows_max = rows_max as u64;
    let mut best: Option<(usize, usize)> = None;
    for start in 0..gens.len() {
        let mut rows = 0;
        for (end, (gen_rows, _)) in gens.iter().enumerate().skip(start) {
            rows += gen_rows;
            if rows > rows_max {
                break;
            }
            let len = end - start + 1;
            if len >= 2 && best.is_none_or(|(s, e)| len > e - s + 1) {
                best = Some((start, end));
            }
        }
    }
    if let Some((start, end)) = best {
        return Some(gens[start..=end].iter().flat_map(|(_, f)| f.iter().cloned()).collect());
    }
    gens.into_iter()
        .find(|(rows, f)| {
            *rows <= rows_max && f.iter().any(|f| tombstones.iter().any(|t| t.applies_to_file(f)))
        })
        .map(|(_, f)| f)
}

/// Distinct flush generations among a partition's files: how many flushes a read may have to
/// merge. Compaction brings it back to one.
pub(super) fn generations(files: &[Arc<FileMeta>]) -> usize {
    let mut gens: Vec<u64> = files.iter().map(|f| f.generation).collect();
    gens.sort_unstable();
    gens.dedup();
    gens.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(generation: u64, rows: u64) -> Arc<FileMeta> {
        Arc::new(FileMeta {
            id: generation,
            partition_start: 0,
            partition_end: 10,
            path: String::new(),
            rows,
            bytes: 0,
            ts_min: 0,
            ts_max: 9,
            generation,
            seq_min: 0,
            seq_max: 0,
            buoys: vec![Arc::from("b")],
            metrics: vec![Arc::from("ph")],
            applied_tombstones: Vec::new(),
            buoy_ranges: Vec::new(),
            metric_stats: Vec::new(),
        })
    }

    #[test]
    fn compaction_takes_the_longest_run_of_consecutive_generations_under_the_row_bound() {
        let files = vec![file(1, 3_000), file(2, 1_000), file(3, 500), file(4, 400), file(5, 2_000)];
        let ids = |run: Option<Vec<Arc<FileMeta>>>| run.map(|r| r.iter().map(|f| f.id).collect::<Vec<_>>());
        assert_eq!(ids(compaction_run(&files, &[], 2_000)), Some(vec![2, 3, 4]));
        assert_eq!(ids(compaction_run(&files, &[], 10_000)), Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(ids(compaction_run(&files, &[], 100)), None);
        let tombstone = Arc::new(Tombstone {
            seq: 9,
            generation: 5,
            buoy: Arc::from("b"),
            metric: None,
            start: 0,
            end: 5,
        });
        assert_eq!(ids(compaction_run(&files[4..], &[tombstone], 2_000)), Some(vec![5]));
    }
}
