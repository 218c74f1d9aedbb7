//! Sort of a flush's buffered rows by `(buoy, metric, ts)` and last-write-wins: of each key the
//! row of highest precedence is kept ([`crate::precedence`]); tombstones drop what they hide.
//! The k-way merge of compaction (`merge`) runs the same last-write-wins over slices of files.

use std::sync::Arc;

use crate::buffer::Chunk;
use crate::catalog::Tombstone;
use crate::partition::PartitionRows;
use crate::precedence::Precedence;

/// Rows ready for a partition file, with the WAL sequence range they came from.
pub(super) struct Merged {
    pub(super) rows: PartitionRows,
    pub(super) seq_min: u64,
    pub(super) seq_max: u64,
}

impl Merged {
    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Sorted dictionary of the names used by `lists`, and per list a map to sorted ranks.
pub(super) fn rank_dictionary<'a>(
    lists: impl Iterator<Item = &'a [Arc<str>]> + Clone,
) -> (Vec<Arc<str>>, Vec<Vec<u32>>) {
    let mut all: Vec<Arc<str>> = lists.clone().flat_map(|l| l.iter().cloned()).collect();
    all.sort();
    all.dedup();
    let maps =
        lists.map(|l| l.iter().map(|n| all.binary_search(n).map_or(0, |i| i as u32)).collect()).collect();
    (all, maps)
}

/// Rows to merge, column by column: key `(buoy rank, metric rank, ts)`, precedence (sequence or
/// generation; the highest wins a key) and where the row came from `(source, row)`.
#[derive(Default)]
pub(super) struct MergeRows {
    pub(super) buoy: Vec<u32>,
    pub(super) metric: Vec<u32>,
    pub(super) ts: Vec<i64>,
    pub(super) precedence: Vec<Precedence>,
    pub(super) source: Vec<u32>,
    pub(super) row: Vec<u32>,
}

impl MergeRows {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            buoy: Vec::with_capacity(n),
            metric: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            precedence: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            row: Vec::with_capacity(n),
        }
    }

    pub(super) fn push(
        &mut self,
        buoy: u32,
        metric: u32,
        ts: i64,
        precedence: Precedence,
        source: u32,
        row: u32,
    ) {
        self.buoy.push(buoy);
        self.metric.push(metric);
        self.ts.push(ts);
        self.precedence.push(precedence);
        self.source.push(source);
        self.row.push(row);
    }

    pub(super) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(super) fn key(&self, i: usize) -> (u32, u32, i64) {
        (self.buoy[i], self.metric[i], self.ts[i])
    }

    /// Positions in `(buoy, metric, ts, position)` order.
    ///
    /// The common case (no more possible `(buoy, metric)` pairs than rows, or than
    /// [`GROUPED_SORT_PAIRS_MIN`]) is a counting sort by pair that keeps positions in order
    /// within a pair, then a check that each pair's timestamps already ascend, as a buoy's
    /// readings mostly arrive; only the pairs that do not are sorted. That is two linear passes
    /// instead of an `n log n` sort of the whole flush (median merge of a 3 M-row flush 261 →
    /// 188 ms: BENCHMARKS.md, sixth session). A compaction's cut near the top buoy ranks may
    /// have more possible pairs (ranks index the whole dictionary) and take the next path.
    /// Otherwise each row is packed into one `u128` (buoy rank 32 bits, metric rank 16, ts
    /// relative to `base` 48, position 32) and those are sorted; rows that do not fit that
    /// (over 65,536 metrics, a ts outside `base .. base + 2^48` ns) take a comparison sort of
    /// positions. All three give the same order. Positions are `u32`: a flush or compaction
    /// handles fewer rows than that (sources index rows as `u32` too).
    pub(super) fn sort_order(&self, base: i64, input: SortInput) -> Vec<u32> {
        let pairs_max = self.len().max(GROUPED_SORT_PAIRS_MIN);
        self.grouped_order(input, pairs_max)
            .or_else(|| self.packed_order(base, input))
            .unwrap_or_else(|| self.compared_order())
    }

    /// Counting sort by `(buoy, metric)`, then per pair by `(ts, position)` where its rows do
    /// not already ascend. `None` when there are more than `pairs_max` possible pairs.
    pub(super) fn grouped_order(&self, input: SortInput, pairs_max: usize) -> Option<Vec<u32>> {
        let n = self.len();
        u32::try_from(n).ok()?;
        let buoys = self.buoy.iter().max().map_or(0, |&b| b as usize + 1);
        let metrics = self.metric.iter().max().map_or(0, |&m| m as usize + 1);
        let pairs = buoys.checked_mul(metrics).filter(|&p| p <= pairs_max)?;
        let pairs_of =
            || self.buoy.iter().zip(&self.metric).map(|(&b, &m)| b as usize * metrics + m as usize);
        // Start of each pair's run in `order`, then its write cursor.
        let mut cursor = vec![0u32; pairs + 1];
        for p in pairs_of() {
            cursor[p + 1] += 1;
        }
        for p in 1..=pairs {
            cursor[p] += cursor[p - 1];
        }
        let mut order = vec![0u32; n];
        for (i, p) in pairs_of().enumerate() {
            order[cursor[p] as usize] = i as u32;
            cursor[p] += 1;
        }
        // Each cursor now stands at the start of the next pair's run.
        let mut start = 0;
        for &end in &cursor[..pairs] {
            let run = &mut order[start as usize..end as usize];
            start = end;
            if run.windows(2).all(|w| self.ts[w[0] as usize] <= self.ts[w[1] as usize]) {
                continue;
            }
            let key = |&i: &u32| (self.ts[i as usize], i);
            match input {
                SortInput::Unordered => run.sort_unstable_by_key(key),
                // Keys are unique (they hold the position), so a stable sort gives the same
                // order; it merges the runs it finds instead of partitioning.
                SortInput::SortedRuns => run.sort_by_key(key),
            }
        }
        Some(order)
    }

    /// Sort of packed `u128` keys; `None` when a row does not fit the packing.
    pub(super) fn packed_order(&self, base: i64, input: SortInput) -> Option<Vec<u32>> {
        const TS_BITS: u32 = 48;
        let n = self.len();
        let fits = u32::try_from(n).is_ok()
            && self.metric.iter().all(|&m| m <= u32::from(u16::MAX))
            && self
                .ts
                .iter()
                .all(|&t| t.checked_sub(base).is_some_and(|d| (0..1i64 << TS_BITS).contains(&d)));
        if !fits {
            return None;
        }
        let mut keys: Vec<u128> = (0..n)
            .map(|i| {
                (u128::from(self.buoy[i]) << 96)
                    | (u128::from(self.metric[i]) << 80)
                    | (((self.ts[i] - base) as u128) << 32)
                    | i as u128
            })
            .collect();
        match input {
            SortInput::Unordered => keys.sort_unstable(),
            // As in `grouped_order`.
            SortInput::SortedRuns => keys.sort(),
        }
        Some(keys.into_iter().map(|k| k as u32).collect())
    }

    /// Comparison sort of positions by `(key, position)`.
    pub(super) fn compared_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len()).map(|i| i as u32).collect();
        order.sort_unstable_by_key(|&i| (self.key(i as usize), i));
        order
    }
}

/// [`MergeRows::sort_order`] counts rows per `(buoy, metric)` pair when there are at most
/// `max(rows, GROUPED_SORT_PAIRS_MIN)` possible pairs: its table of counts is then no larger
/// than the rows themselves (or 256 KiB).
pub(super) const GROUPED_SORT_PAIRS_MIN: usize = 1 << 16;

/// What [`MergeRows::sort_order`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SortInput {
    /// Rows in no useful order (buffered batches).
    Unordered,
    /// A concatenation of sorted runs (slices of sorted files).
    SortedRuns,
}

/// Sorts `rows` and keeps, of each key, the row of highest precedence (the latest position among
/// equals), if `keep` accepts it (`keep` sees the dictionaries, the key and the precedence).
/// `value_of(source, row)` gives value and quality. `base` is the partition start.
pub(super) fn last_write_wins(
    rows: &MergeRows,
    base: i64,
    input: SortInput,
    buoy_names: Vec<Arc<str>>,
    metric_names: Vec<Arc<str>>,
    mut keep: impl FnMut(&[Arc<str>], &[Arc<str>], (u32, u32, i64), Precedence) -> bool,
    value_of: impl Fn(u32, u32) -> (f64, u8),
) -> PartitionRows {
    let order = rows.sort_order(base, input);
    let mut out = PartitionRows {
        buoy_keys: Vec::with_capacity(order.len()),
        metric_keys: Vec::with_capacity(order.len()),
        timestamps: Vec::with_capacity(order.len()),
        values: Vec::with_capacity(order.len()),
        quality: Vec::with_capacity(order.len()),
        buoy_names,
        metric_names,
    };
    let mut i = 0;
    while i < order.len() {
        let first = order[i] as usize;
        let key = rows.key(first);
        let mut winner = first;
        i += 1;
        // Rewrites of one key are adjacent; the common case has none.
        while let Some(&next) = order.get(i) {
            let next = next as usize;
            if rows.key(next) != key {
                break;
            }
            if rows.precedence[next].replaces(rows.precedence[winner]) {
                winner = next;
            }
            i += 1;
        }
        if !keep(&out.buoy_names, &out.metric_names, key, rows.precedence[winner]) {
            continue;
        }
        let (value, quality) = value_of(rows.source[winner], rows.row[winner]);
        out.buoy_keys.push(key.0);
        out.metric_keys.push(key.1);
        out.timestamps.push(key.2);
        out.values.push(value);
        out.quality.push(quality);
    }
    out
}

/// Sort, last-write-wins (highest sequence) and tombstones over buffered rows of one partition
/// starting at `base`.
pub(super) fn merge_buffer_rows(
    chunks: &[Arc<Chunk>],
    rows: &[(u32, u32)],
    base: i64,
    tombstones: &[Arc<Tombstone>],
) -> Merged {
    let (buoys, buoy_maps) = rank_dictionary(chunks.iter().map(|c| c.buoy_names.as_slice()));
    let (metrics, metric_maps) = rank_dictionary(chunks.iter().map(|c| c.metric_names.as_slice()));
    let mut keyed = MergeRows::with_capacity(rows.len());
    for &(ci, r) in rows {
        let (c, r_us) = (&chunks[ci as usize], r as usize);
        keyed.push(
            buoy_maps[ci as usize][c.buoy_keys[r_us] as usize],
            metric_maps[ci as usize][c.metric_keys[r_us] as usize],
            c.timestamps[r_us],
            Precedence::buffered(c.seqs[r_us]),
            ci,
            r,
        );
    }
    let (mut seq_min, mut seq_max) = (u64::MAX, 0);
    let rows = last_write_wins(
        &keyed,
        base,
        SortInput::Unordered,
        buoys,
        metrics,
        |buoy_names, metric_names, (b, m, ts), precedence| {
            let seq = precedence.order();
            if !tombstones.is_empty() {
                let (buoy, metric) = (&buoy_names[b as usize], &metric_names[m as usize]);
                if tombstones.iter().any(|t| t.seq > seq && t.covers(buoy, metric, ts)) {
                    return false;
                }
            }
            seq_min = seq_min.min(seq);
            seq_max = seq_max.max(seq);
            true
        },
        |ci, r| (chunks[ci as usize].values[r as usize], chunks[ci as usize].quality[r as usize]),
    );
    Merged { rows, seq_min, seq_max }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    proptest::proptest! {
        /// Every sort path gives `(buoy, metric, ts, position)` order, and last-write-wins keeps
        /// exactly the highest precedence (latest position among equals) of every key.
        #[test]
        fn merge_order_and_last_write_wins_match_a_model(
            rows in proptest::collection::vec((0u32..4, 0u32..3, 0i64..6, 0u64..4), 0..200),
            wide_metric in proptest::bool::ANY,
            far_ts in proptest::bool::ANY,
            arrival_order in proptest::bool::ANY,
        ) {
            let mut keyed = MergeRows::default();
            for (i, &(b, m, ts, p)) in rows.iter().enumerate() {
                // A metric rank over 16 bits or a ts outside the 48-bit window cannot be
                // packed; `arrival_order` makes every pair's timestamps ascend with position
                // (the grouped sort's fast path), with rewrites of one key still possible.
                let m = if wide_metric { m << 17 } else { m };
                let ts = if arrival_order { i as i64 / 3 } else { ts };
                let ts = if far_ts { ts << 50 } else { ts };
                keyed.push(b, m, ts, Precedence::file(p), 0, i as u32);
            }
            let mut model: Vec<u32> = (0..keyed.len() as u32).collect();
            model.sort_by_key(|&i| (keyed.key(i as usize), i));
            for input in [SortInput::Unordered, SortInput::SortedRuns] {
                proptest::prop_assert_eq!(&keyed.sort_order(0, input), &model);
                // Every path that accepts the rows gives the model's order.
                let grouped = keyed.grouped_order(input, usize::MAX);
                proptest::prop_assert_eq!(grouped.as_ref(), Some(&model));
                // The bound is the possible pairs, (largest buoy rank + 1) * (largest metric rank + 1).
                let pairs = keyed.buoy.iter().max().map_or(0, |&b| b as usize + 1)
                    * keyed.metric.iter().max().map_or(0, |&m| m as usize + 1);
                proptest::prop_assert!(keyed.grouped_order(input, pairs).is_some());
                if pairs > 0 {
                    proptest::prop_assert!(keyed.grouped_order(input, pairs - 1).is_none());
                }
                if let Some(packed) = keyed.packed_order(0, input) {
                    proptest::prop_assert_eq!(&packed, &model);
                }
                let packable =
                    keyed.metric.iter().all(|&m| m <= 0xffff) && keyed.ts.iter().all(|&t| t < 1 << 48);
                proptest::prop_assert_eq!(keyed.packed_order(0, input).is_some(), packable);
            }
            proptest::prop_assert_eq!(keyed.compared_order(), model.clone());

            let mut expected: BTreeMap<(u32, u32, i64), (Precedence, u32)> = BTreeMap::new();
            for i in 0..keyed.len() {
                let candidate = (keyed.precedence[i], i as u32);
                let best = expected.entry(keyed.key(i)).or_insert(candidate);
                if candidate.0 >= best.0 {
                    *best = candidate;
                }
            }
            let names = |n: usize| (0..n).map(|i| Arc::from(format!("n{i}"))).collect::<Vec<Arc<str>>>();
            let out = last_write_wins(&keyed, 0, SortInput::Unordered, names(4), names(3), |_, _, _, _| true, |_, r| (f64::from(r), 0));
            let got: Vec<((u32, u32, i64), u32)> = (0..out.len())
                .map(|i| ((out.buoy_keys[i], out.metric_keys[i], out.timestamps[i]), out.values[i] as u32))
                .collect();
            let want: Vec<((u32, u32, i64), u32)> = expected.into_iter().map(|(k, (_, r))| (k, r)).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
