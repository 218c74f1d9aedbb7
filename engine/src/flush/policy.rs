//! Compaction policy: which of a partition's files one compaction takes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{FileMeta, Tombstone};

/// Least rows per input slice of a compaction, however many inputs share
/// `compaction_rows_max`.
pub(super) const COMPACTION_SLICE_ROWS_MIN: usize = 4_096;

/// Bytes a compaction holds per row of its inputs' current slices at its peak (the decoded
/// slice, the keyed rows and their order, the merged rows, the encoder's columns), as
/// `compaction_rows_max` documents.
pub(super) const COMPACTION_BYTES_PER_ROW: usize = 130;

/// What a compaction takes of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CompactionScope {
    /// A run of generations of one size tier ([`tiered_run`]): the partition may still be
    /// written to, so a compaction merges what flushes just wrote into one larger generation,
    /// and those into larger ones in turn, whatever the size of one flush.
    Tiered,
    /// Every generation into one: a partition that flushes no longer write to (a newer one has
    /// data), or an explicit [`crate::Engine::compact`].
    Fold,
}

/// Rows of a generation in the lowest size tier: smaller generations share tier 0.
pub(super) const TIER_ROWS_BASE: u64 = 65_536;

/// Most generations one tiered compaction merges.
pub(super) const TIER_INPUTS_MAX: usize = 32;

/// Size tier of a generation of `rows` rows: 0 up to `4 * TIER_ROWS_BASE` rows (for a fan-in of
/// 4), then one more per factor `fan_in`. Merging `fan_in` generations of one tier gives about
/// one generation of the next.
pub(super) fn size_tier(rows: u64, fan_in: usize) -> u32 {
    let fan_in = (fan_in as u64).max(2);
    let mut tier = 0;
    let mut bound = TIER_ROWS_BASE.saturating_mul(fan_in);
    while rows >= bound && bound < u64::MAX {
        tier += 1;
        bound = bound.saturating_mul(fan_in);
    }
    tier
}

/// Chooses the generations of a partition still being written that one compaction merges,
/// size-tiered (as Cassandra's size-tiered and time-window strategies do): generations are
/// put in tiers by their rows ([`size_tier`]); the lowest tier that holds a run of at least
/// `fan_in` consecutive generations gives that run (its oldest [`TIER_INPUTS_MAX`]). While a
/// mix of sizes leaves no such run but the partition holds `2 * fan_in` generations or more,
/// the `fan_in` consecutive generations of fewest rows are merged, so the count always comes
/// down. `None`: nothing is due.
///
/// The run is of consecutive generations, so its output (which takes the run's highest
/// generation) still loses to every newer file and beats every older one. One flush larger
/// than `compaction_rows_max` changes nothing here: that bound is the merge's memory (it streams
/// its inputs), not what a compaction may rewrite.
pub(super) fn tiered_run(files: &[Arc<FileMeta>], fan_in: usize) -> Option<Vec<Arc<FileMeta>>> {
    let fan_in = fan_in.max(2);
    let gens = by_generation(files);
    if gens.len() < fan_in {
        return None;
    }
    let tiers: Vec<u32> = gens.iter().map(|(rows, _)| size_tier(*rows, fan_in)).collect();
    // Maximal runs of one tier: (tier, start, end exclusive).
    let mut best: Option<(u32, usize, usize)> = None;
    let mut start = 0;
    while start < tiers.len() {
        let mut end = start + 1;
        while end < tiers.len() && tiers[end] == tiers[start] {
            end += 1;
        }
        if end - start >= fan_in && best.is_none_or(|(tier, _, _)| tiers[start] < tier) {
            best = Some((tiers[start], start, end.min(start + TIER_INPUTS_MAX)));
        }
        start = end;
    }
    let range = match best {
        Some((_, start, end)) => start..end,
        None if gens.len() >= 2 * fan_in => {
            let start = (0..=gens.len() - fan_in)
                .min_by_key(|&s| gens[s..s + fan_in].iter().map(|(rows, _)| rows).sum::<u64>())?;
            start..start + fan_in
        }
        None => return None,
    };
    Some(gens[range].iter().flat_map(|(_, f)| f.iter().cloned()).collect())
}

/// A partition's files grouped by generation, oldest first, with each generation's rows.
fn by_generation(files: &[Arc<FileMeta>]) -> Vec<(u64, Vec<Arc<FileMeta>>)> {
    let mut by_gen: BTreeMap<u64, (u64, Vec<Arc<FileMeta>>)> = BTreeMap::new();
    for f in files {
        let entry = by_gen.entry(f.generation).or_default();
        entry.0 += f.rows;
        entry.1.push(f.clone());
    }
    by_gen.into_values().collect()
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
    let gens = by_generation(files);
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
            series_stats: Vec::new(),
            rollup: None,
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

    #[test]
    fn size_tiers_grow_by_the_fan_in() {
        assert_eq!(size_tier(0, 4), 0);
        assert_eq!(size_tier(4 * TIER_ROWS_BASE - 1, 4), 0);
        assert_eq!(size_tier(4 * TIER_ROWS_BASE, 4), 1);
        assert_eq!(size_tier(16 * TIER_ROWS_BASE, 4), 2);
        // A 3 M-row flush (96 MiB of buffer) sits in tier 2 of fan-in 4, four of them in tier 3.
        assert_eq!(size_tier(3_000_000, 4), 2);
        assert_eq!(size_tier(12_000_000, 4), 3);
        assert_eq!(size_tier(u64::MAX, 4), size_tier(u64::MAX - 1, 4));
    }

    #[test]
    fn tiered_runs_merge_flushes_of_one_size_whatever_their_size() {
        let ids = |run: Option<Vec<Arc<FileMeta>>>| run.map(|r| r.iter().map(|f| f.id).collect::<Vec<_>>());
        // Four 3 M-row flushes: above any `compaction_rows_max`, still merged.
        let big: Vec<_> = (1..=4).map(|g| file(g, 3_000_000)).collect();
        assert_eq!(ids(tiered_run(&big, 4)), Some(vec![1, 2, 3, 4]));
        assert_eq!(ids(tiered_run(&big[..3], 4)), None);
        // An older merged generation (tier 3) and three new flushes: nothing due yet.
        let mut mixed = vec![file(1, 12_000_000)];
        mixed.extend((2..=4).map(|g| file(g, 3_000_000)));
        assert_eq!(ids(tiered_run(&mixed, 4)), None);
        // A fourth flush makes a run of tier 2 after the tier-3 generation.
        mixed.push(file(5, 3_000_000));
        assert_eq!(ids(tiered_run(&mixed, 4)), Some(vec![2, 3, 4, 5]));
        // The lowest tier with a run goes first.
        let mut two_runs: Vec<_> = (1..=4).map(|g| file(g, 3_000_000)).collect();
        two_runs.extend((5..=8).map(|g| file(g, 1_000)));
        assert_eq!(ids(tiered_run(&two_runs, 4)), Some(vec![5, 6, 7, 8]));
        // Alternating sizes form no run; at 2 * fan_in generations the window of fewest rows
        // goes (the oldest among equals).
        let alternating: Vec<_> =
            (1..=8).map(|g| file(g, if g % 2 == 0 { 1_000 } else { 3_000_000 })).collect();
        assert_eq!(ids(tiered_run(&alternating[..7], 4)), None);
        assert_eq!(ids(tiered_run(&alternating, 4)), Some(vec![1, 2, 3, 4]));
        let mut lighter_tail = alternating.clone();
        lighter_tail.push(file(9, 1_000));
        lighter_tail[6] = file(7, 500_000);
        assert_eq!(ids(tiered_run(&lighter_tail, 4)), Some(vec![6, 7, 8, 9]));
        // Long runs are cut at TIER_INPUTS_MAX, oldest first.
        let many: Vec<_> = (1..=40).map(|g| file(g, 1_000)).collect();
        assert_eq!(ids(tiered_run(&many, 4)), Some((1..=TIER_INPUTS_MAX as u64).collect()));
    }
}
