//! How a flush cuts its rows into pieces of bounded size, so its working set fits the memory
//! budget whatever the buffer holds: one piece per partition when it fits, else runs of whole
//! buoys (by name), and a buoy with more rows than a piece holds is cut by time. Pieces of one
//! partition share no key `(buoy, metric, ts)`, so they are written as separate files of the
//! same flush generation (last-write-wins never has to choose between them), exactly as the
//! files of one partition's value encodings are.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use crate::buffer::Chunk;
use crate::config::PartitionDuration;
use crate::types::TimestampNs;

use super::sort::rank_dictionary;

/// Bytes a flush holds per row of the piece it is writing, at its peak: the row list (8), the
/// keyed rows (32) and their order (4) while sorting, the merged rows (25), one encoding
/// group's copy of them (25) and the encoder's column arrays (25). Rounded up; not measured
/// per allocation.
pub(super) const FLUSH_BYTES_PER_ROW: usize = 128;

/// Fixed bytes of a piece besides its rows (dictionaries, encoder state, file footer).
pub(super) const FLUSH_PIECE_OVERHEAD_BYTES: usize = 1 << 20;

/// Fewest rows a piece is cut to (a smaller budget is refused by `EngineConfig::validate`).
const PIECE_ROWS_MIN: u64 = 1_024;

/// The buoys (ranks in the flush's sorted buoy dictionary) and times of one partition that one
/// piece writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Piece {
    pub(super) partition_start: TimestampNs,
    pub(super) buoys: Range<u32>,
    pub(super) ts: Range<TimestampNs>,
    pub(super) rows: u64,
}

impl Piece {
    /// Bytes to reserve before writing it.
    pub(super) fn memory_bytes(&self) -> usize {
        (self.rows as usize).saturating_mul(FLUSH_BYTES_PER_ROW).saturating_add(FLUSH_PIECE_OVERHEAD_BYTES)
    }
}

/// The chunks of one flush with their buoys ranked in one sorted dictionary.
pub(super) struct RankedChunks<'a> {
    chunks: &'a [Arc<Chunk>],
    /// Per chunk: rank of each of its buoy keys.
    buoy_ranks: Vec<Vec<u32>>,
    buoys: usize,
}

impl<'a> RankedChunks<'a> {
    pub(super) fn new(chunks: &'a [Arc<Chunk>]) -> Self {
        let (buoys, buoy_ranks) = rank_dictionary(chunks.iter().map(|c| c.buoy_names.as_slice()));
        Self { chunks, buoy_ranks, buoys: buoys.len() }
    }

    /// Rows of `piece` as `(chunk, row)`, in chunk and row order.
    pub(super) fn rows_of(&self, piece: &Piece) -> Vec<(u32, u32)> {
        let mut rows = Vec::with_capacity(piece.rows as usize);
        for (ci, c) in self.chunks.iter().enumerate() {
            if c.ts_max < piece.ts.start || c.ts_min >= piece.ts.end {
                continue;
            }
            let ranks = &self.buoy_ranks[ci];
            for (r, (&b, &ts)) in c.buoy_keys.iter().zip(&c.timestamps).enumerate() {
                if piece.ts.contains(&ts) && piece.buoys.contains(&ranks[b as usize]) {
                    rows.push((ci as u32, r as u32));
                }
            }
        }
        rows
    }

    /// Rows of buoy `rank` within `ts`.
    fn count(&self, rank: u32, ts: &Range<TimestampNs>) -> u64 {
        let piece = Piece { partition_start: 0, buoys: rank..rank + 1, ts: ts.clone(), rows: 0 };
        self.chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.ts_max >= piece.ts.start && c.ts_min < piece.ts.end)
            .map(|(ci, c)| {
                let ranks = &self.buoy_ranks[ci];
                c.buoy_keys
                    .iter()
                    .zip(&c.timestamps)
                    .filter(|&(&b, ts)| ranks[b as usize] == rank && piece.ts.contains(ts))
                    .count() as u64
            })
            .sum()
    }

    /// The pieces of the flush, partition by partition, none above `piece_rows` rows unless a
    /// single nanosecond of one buoy holds more (one row per metric at most).
    pub(super) fn plan(&self, duration: PartitionDuration, piece_rows: u64) -> Vec<Piece> {
        let piece_rows = piece_rows.max(PIECE_ROWS_MIN);
        // Rows per partition and buoy rank.
        let mut counts: BTreeMap<TimestampNs, Vec<u64>> = BTreeMap::new();
        for (ci, c) in self.chunks.iter().enumerate() {
            let ranks = &self.buoy_ranks[ci];
            if duration.start_of(c.ts_min) == duration.start_of(c.ts_max) {
                let per_buoy =
                    counts.entry(duration.start_of(c.ts_min)).or_insert_with(|| vec![0; self.buoys]);
                for &b in &c.buoy_keys {
                    per_buoy[ranks[b as usize] as usize] += 1;
                }
            } else {
                for (&b, &ts) in c.buoy_keys.iter().zip(&c.timestamps) {
                    counts.entry(duration.start_of(ts)).or_insert_with(|| vec![0; self.buoys])
                        [ranks[b as usize] as usize] += 1;
                }
            }
        }
        let mut pieces = Vec::new();
        for (start, per_buoy) in counts {
            let ts = start..start.saturating_add(duration.as_nanos());
            let mut open: Option<Piece> = None;
            for (rank, &n) in per_buoy.iter().enumerate() {
                let rank = rank as u32;
                if n == 0 {
                    continue;
                }
                if n > piece_rows {
                    pieces.extend(open.take());
                    self.cut_by_time(start, rank, ts.clone(), n, piece_rows, &mut pieces);
                    continue;
                }
                match &mut open {
                    Some(p) if p.rows + n <= piece_rows => {
                        p.buoys.end = rank + 1;
                        p.rows += n;
                    }
                    _ => {
                        pieces.extend(open.take());
                        open = Some(Piece {
                            partition_start: start,
                            buoys: rank..rank + 1,
                            ts: ts.clone(),
                            rows: n,
                        });
                    }
                }
            }
            pieces.extend(open);
        }
        pieces
    }

    /// Cuts the `rows` rows of buoy `rank` within `ts` in halves of time until each fits.
    fn cut_by_time(
        &self,
        start: TimestampNs,
        rank: u32,
        ts: Range<TimestampNs>,
        rows: u64,
        piece_rows: u64,
        pieces: &mut Vec<Piece>,
    ) {
        if rows == 0 {
            return;
        }
        if rows <= piece_rows || ts.end - ts.start <= 1 {
            pieces.push(Piece { partition_start: start, buoys: rank..rank + 1, ts, rows });
            return;
        }
        let mid = ts.start + (ts.end - ts.start) / 2;
        let first = self.count(rank, &(ts.start..mid));
        self.cut_by_time(start, rank, ts.start..mid, first, piece_rows, pieces);
        self.cut_by_time(start, rank, mid..ts.end, rows - first, piece_rows, pieces);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ChunkBuilder;
    use crate::types::NANOS_PER_SECOND;

    fn chunk(id: u64, rows: &[(&str, i64)]) -> Arc<Chunk> {
        let mut b = ChunkBuilder::new();
        let metric = crate::types::MetricName::new("ph").unwrap_or_else(|e| panic!("{e}"));
        for (i, &(buoy, ts)) in rows.iter().enumerate() {
            b.push_batch(
                &Arc::from(buoy),
                std::slice::from_ref(&metric),
                &[ts],
                &[0],
                &[7.0],
                &[0],
                i as u64 + 1,
            );
        }
        Arc::new(b.finish(id))
    }

    #[test]
    fn pieces_cover_every_row_once_and_stay_within_the_bound() {
        let hour = 3_600 * NANOS_PER_SECOND;
        let mut rows_a = Vec::new();
        let mut rows_b = Vec::new();
        for i in 0..5_000i64 {
            // One buoy far above the bound, others small, two partitions.
            rows_a.push(("big", i * 1_000_000));
            if i % 10 == 0 {
                rows_a.push(("small-1", i));
                rows_b.push(("small-2", hour + i));
                rows_b.push(("small-3", hour - 1 - i));
            }
        }
        let chunks = vec![chunk(1, &rows_a), chunk(2, &rows_b)];
        let ranked = RankedChunks::new(&chunks);
        let duration = PartitionDuration::HOUR;
        let pieces = ranked.plan(duration, 1_024);
        let mut seen = std::collections::HashSet::new();
        for p in &pieces {
            assert!(p.rows <= 1_024, "{p:?}");
            let rows = ranked.rows_of(p);
            assert_eq!(rows.len() as u64, p.rows, "{p:?}");
            for r in rows {
                let c = &chunks[r.0 as usize];
                assert_eq!(duration.start_of(c.timestamps[r.1 as usize]), p.partition_start);
                assert!(seen.insert(r), "row {r:?} in two pieces");
            }
        }
        assert_eq!(seen.len(), rows_a.len() + rows_b.len());
        // A flush that fits is one piece per partition.
        assert_eq!(ranked.plan(duration, 1 << 20).len(), 2);
    }
}
