//! The in-memory buffer: immutable columnar chunks, one per group commit, published per lane.
//!
//! A lane writer builds one [`Chunk`] from the batches of a group commit after the WAL fsync and
//! publishes it by swapping the lane's chunk list (`arc_swap`), so readers take a snapshot with
//! two atomic loads and never block the writer. A flush *seals* chunks (marks them with its
//! generation) and removes them from the list once its files are visible; a reader keeps a
//! chunk only while its flush is not yet visible in the read view it holds (see
//! [`crate::Snapshot`]), so no row is ever missed or seen twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::budget::MemoryReservation;
use crate::types::{MetricName, TimestampNs};

/// An immutable group of buffered rows. Rows are in arrival order.
#[derive(Debug)]
pub struct Chunk {
    /// Unique id within the engine run.
    pub id: u64,
    /// When it was built (for age-based flushing).
    pub created: Instant,
    /// Buoy dictionary of this chunk.
    pub buoy_names: Vec<Arc<str>>,
    /// Metric dictionary of this chunk.
    pub metric_names: Vec<Arc<str>>,
    /// Per row: index into `buoy_names`.
    pub buoy_keys: Vec<u32>,
    /// Per row: index into `metric_names`.
    pub metric_keys: Vec<u32>,
    /// Per row: timestamp, ns.
    pub timestamps: Vec<TimestampNs>,
    /// Per row: value.
    pub values: Vec<f64>,
    /// Per row: quality flag.
    pub quality: Vec<u8>,
    /// Per row: WAL sequence (orders rewrites of one key).
    pub seqs: Vec<u64>,
    /// Smallest timestamp.
    pub ts_min: TimestampNs,
    /// Largest timestamp.
    pub ts_max: TimestampNs,
    /// Per buoy (aligned with `buoy_names`): smallest and largest timestamp. Readers decide
    /// overlap per buoy, so a chunk of in-order data overlaps no file even when the fleet's
    /// clocks are skewed.
    pub buoy_ranges: Vec<(TimestampNs, TimestampNs)>,
    /// Generation of the flush that sealed it; 0 while unsealed.
    sealed_gen: AtomicU64,
    /// Its bytes held against the engine's memory budget (taken by the batches it was built
    /// from when they were submitted), given back when the last holder drops the chunk.
    memory: MemoryReservation,
}

/// Approximate heap bytes per buffered row (the columns above).
pub const CHUNK_BYTES_PER_ROW: usize = 4 + 4 + 8 + 8 + 1 + 8;

impl Chunk {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    /// True when the chunk has no rows (never published).
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Accounted memory of the chunk.
    pub fn bytes(&self) -> usize {
        self.len() * CHUNK_BYTES_PER_ROW + 128
    }

    /// The generation of the flush that sealed it, 0 when unsealed.
    pub fn sealed_gen(&self) -> u64 {
        self.sealed_gen.load(Ordering::Acquire)
    }

    /// The chunk with its bytes held by `memory` (trimmed to [`Self::bytes`]).
    pub(crate) fn with_memory(mut self, mut memory: MemoryReservation) -> Self {
        memory.shrink_to(self.bytes());
        self.memory = memory;
        self
    }

    pub(crate) fn seal(&self, generation: u64) {
        self.sealed_gen.store(generation, Ordering::Release);
    }
}

/// Builds a chunk from the batches of one group commit.
#[derive(Debug, Default)]
pub struct ChunkBuilder {
    buoy_names: Vec<Arc<str>>,
    metric_names: Vec<Arc<str>>,
    buoy_keys: Vec<u32>,
    metric_keys: Vec<u32>,
    timestamps: Vec<TimestampNs>,
    values: Vec<f64>,
    quality: Vec<u8>,
    seqs: Vec<u64>,
    ts_min: TimestampNs,
    ts_max: TimestampNs,
    buoy_ranges: Vec<(TimestampNs, TimestampNs)>,
    metric_map: Vec<u32>,
}

impl ChunkBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self { ts_min: i64::MAX, ts_max: i64::MIN, ..Self::default() }
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    fn intern(names: &mut Vec<Arc<str>>, name: &str, make: impl FnOnce() -> Arc<str>) -> u32 {
        // Dictionaries are tiny (a group's buoys and metrics), a linear scan beats hashing.
        match names.iter().position(|n| &**n == name) {
            Some(i) => i as u32,
            None => {
                names.push(make());
                (names.len() - 1) as u32
            }
        }
    }

    /// Appends one batch's columns, all rows with WAL sequence `seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn push_batch(
        &mut self,
        buoy: &Arc<str>,
        metric_names: &[MetricName],
        timestamps: &[TimestampNs],
        metric_ids: &[u16],
        values: &[f64],
        quality: &[u8],
        seq: u64,
    ) {
        let rows = timestamps.len();
        debug_assert!(metric_ids.len() == rows && values.len() == rows && quality.len() == rows);
        let buoy_key = Self::intern(&mut self.buoy_names, buoy, || buoy.clone());
        self.metric_map.clear();
        for m in metric_names {
            let key = Self::intern(&mut self.metric_names, m.as_str(), || m.shared().clone());
            self.metric_map.push(key);
        }
        self.buoy_keys.extend(std::iter::repeat_n(buoy_key, rows));
        let map = &self.metric_map;
        self.metric_keys.extend(metric_ids.iter().map(|&id| map[usize::from(id)]));
        self.timestamps.extend_from_slice(timestamps);
        self.values.extend_from_slice(values);
        self.quality.extend_from_slice(quality);
        self.seqs.extend(std::iter::repeat_n(seq, rows));
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for &t in timestamps {
            lo = lo.min(t);
            hi = hi.max(t);
        }
        self.ts_min = self.ts_min.min(lo);
        self.ts_max = self.ts_max.max(hi);
        let key = buoy_key as usize;
        if self.buoy_ranges.len() <= key {
            self.buoy_ranges.resize(key + 1, (i64::MAX, i64::MIN));
        }
        if let Some(range) = self.buoy_ranges.get_mut(key) {
            range.0 = range.0.min(lo);
            range.1 = range.1.max(hi);
        }
    }

    /// Finishes the chunk; the builder is left empty for reuse.
    pub fn finish(&mut self, id: u64) -> Chunk {
        let mut taken = std::mem::replace(self, Self::new());
        // Growth by doubling can leave half of each column unused; buffered chunks live until
        // the next flush, so give the slack back (large shrinks are in-place remaps).
        taken.buoy_keys.shrink_to_fit();
        taken.metric_keys.shrink_to_fit();
        taken.timestamps.shrink_to_fit();
        taken.values.shrink_to_fit();
        taken.quality.shrink_to_fit();
        taken.seqs.shrink_to_fit();
        Chunk {
            id,
            created: Instant::now(),
            buoy_names: taken.buoy_names,
            metric_names: taken.metric_names,
            buoy_keys: taken.buoy_keys,
            metric_keys: taken.metric_keys,
            timestamps: taken.timestamps,
            values: taken.values,
            quality: taken.quality,
            seqs: taken.seqs,
            ts_min: taken.ts_min,
            ts_max: taken.ts_max,
            buoy_ranges: taken.buoy_ranges,
            sealed_gen: AtomicU64::new(0),
            memory: MemoryReservation::empty(),
        }
    }
}

/// A lane's published chunk list.
#[derive(Debug, Default)]
pub struct LaneBuffer {
    chunks: ArcSwap<Vec<Arc<Chunk>>>,
}

impl LaneBuffer {
    /// The current chunks.
    pub fn load(&self) -> Arc<Vec<Arc<Chunk>>> {
        self.chunks.load_full()
    }

    /// Publishes one more chunk.
    pub(crate) fn push(&self, chunk: Arc<Chunk>) {
        self.chunks.rcu(|list| {
            let mut next = Vec::with_capacity(list.len() + 1);
            next.extend(list.iter().cloned());
            next.push(chunk.clone());
            next
        });
    }

    /// Removes the chunks sealed by `generation`; returns their accounted bytes.
    pub(crate) fn remove_sealed(&self, generation: u64) -> usize {
        let mut freed = 0;
        self.chunks.rcu(|list| {
            freed = 0;
            list.iter()
                .filter(|c| {
                    let gone = c.sealed_gen() == generation;
                    if gone {
                        freed += c.bytes();
                    }
                    !gone
                })
                .cloned()
                .collect::<Vec<_>>()
        });
        freed
    }
}
