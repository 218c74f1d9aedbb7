//! The state every engine thread shares: the engine handle (callers' threads), the lane writers
//! (`pipeline`) and the flusher (`flush`). A leaf of the engine's threads: it imports the
//! modules below them (buffer, read view, catalog records, metrics, storage) and none of them, so
//! `pipeline` and `flush` depend on this module and never on `engine`.
//!
//! Who writes what is the contract that keeps the ingest path free of locks: every field is
//! either set once at open, an atomic with one kind of writer per direction, or an `ArcSwap`
//! replaced whole (copy-on-write) by the one thread that owns that kind of change.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::budget::{MemoryBudget, MemoryConsumer};
use crate::buffer::LaneBuffer;
use crate::catalog::{BuoyInfo, FileMeta, Tombstone};
use crate::config::EngineConfig;
use crate::metrics::EngineMetrics;
use crate::read::{ReadView, Snapshot};
use crate::storage::Storage;
use crate::types::ReadingBatch;

/// Suggested wait before retrying after `Busy(QueueFull | BufferFull | MemoryBudget)`: a
/// flush frees them.
pub(crate) const BUSY_RETRY_AFTER_MS: u64 = 50;
/// Suggested wait before retrying after `Busy(CompactionDebt)`: a compaction takes seconds.
pub(crate) const DEBT_RETRY_AFTER_MS: u64 = 1_000;

/// State shared by the engine handle, the lane writers and the flusher; one per open engine,
/// built by recovery at open and dropped when the last thread holding it ends (the engine
/// handle's drop joins the lane writers and the flusher).
pub(crate) struct Shared {
    /// The validated configuration. Set at open, never changed.
    pub config: EngineConfig,
    /// The file system every file goes through (a fault-injecting one in crash tests). Set at
    /// open, never changed.
    pub storage: Arc<dyn Storage>,
    /// Counters of every thread: each counter is bumped by the thread that does the counted
    /// work (lane writers: ingest, WAL, fsync; flusher: flushes; compactor: compactions, retention; the
    /// engine handle: busy refusals, out-of-range flags). Read by `Engine::metrics`.
    pub metrics: EngineMetrics,
    /// The next WAL sequence to give out, shared by every lane so sequences order all writes.
    /// Set at open above every sequence in the catalog and the WAL; taken (`fetch_add`) by the
    /// lane writers, one per entry. Lives as long as the engine; the WAL persists what it gave.
    pub next_seq: AtomicU64,
    /// Id of the next buffer chunk. Taken by recovery (replayed chunks) and by the lane writers
    /// (one per group commit). Ids are unique within one run only.
    pub next_chunk_id: AtomicU64,
    /// Bytes of the chunks in `lanes`. Added by a lane writer (and recovery) when it publishes
    /// a chunk; subtracted by the flusher once a committed flush removed its sealed chunks.
    /// Ingest answers `Busy(BufferFull)` at `buffer_bytes_max` and wakes the flusher at
    /// `flush_buffer_bytes`.
    pub buffer_bytes: AtomicUsize,
    /// Notified whenever ingest may find room again: by the flusher when a flush frees buffer
    /// memory, by the compactor when a compaction lowers the compaction debt. Awaited by
    /// `Engine::buffer_space` and `Engine::ingest_room`.
    pub room_freed: tokio::sync::Notify,
    /// Id of the next partition file. Set at open from the catalog; taken (`fetch_add`) by the
    /// flusher and the compactor for every file they write, and committed with their files
    /// (the catalog keeps the highest), so ids are never reused, not even after a crash.
    pub next_file_id: AtomicU64,
    /// Bytes of requests sitting in lane queues: added by `Engine::ingest` before it enqueues,
    /// released by the lane writer that takes the request (or by `ingest` when the send fails).
    /// Bounded by `queue_bytes_max`.
    pub queued_bytes: AtomicUsize,
    /// What readers see of durable state: committed files per partition, tombstones in force,
    /// the highest committed flush generation. Replaced whole (`rcu`) by the flusher after each
    /// catalog commit (flush, compaction, retention) and by a lane writer when a logged delete
    /// becomes visible; loaded by every snapshot. Old views live while a snapshot holds them.
    pub view: ArcSwap<ReadView>,
    /// The in-memory buffer, one chunk list per lane (index = lane). A lane's writer is the only
    /// one to push chunks and seal them; the flusher removes sealed chunks after its commit.
    /// Fixed length (`config.lanes`) for the engine's life.
    pub lanes: Vec<LaneBuffer>,
    /// Files removed from the catalog (by compaction or retention) whose bytes still exist:
    /// pushed by the compactor after its commit, deleted from disk by the flusher or the
    /// compactor (`flush::reap_unlinked`) once no snapshot holds them (the list then holds the
    /// last reference), each with its minute rollup (readings file first). A mutex between those two background threads only; a crash before the
    /// delete leaves orphans, which the next open removes.
    pub unlinked: std::sync::Mutex<Vec<Arc<FileMeta>>>,
    /// The one memory budget (`memory_bytes_max`): ingest reserves a request's bytes in
    /// `Engine::ingest` and the chunk built from it keeps them until it is dropped; flushes and
    /// compactions reserve their working sets; the server reserves the query caches. Set at
    /// open; reservations hold it alive.
    pub memory: Arc<MemoryBudget>,
    /// Registered buoys by id: loaded at open from the catalog, replaced whole (`rcu`) by
    /// `Engine::register_buoy` after its catalog write; read by every ingest.
    pub buoys: ArcSwap<HashMap<Arc<str>, BuoyInfo>>,
}

impl Shared {
    /// The buffer holds `buffer_bytes_max`: ingest answers `Busy(BufferFull)`.
    pub(crate) fn buffer_full(&self) -> bool {
        self.buffer_bytes.load(Ordering::Relaxed) >= self.config.buffer_bytes_max
    }

    /// Compaction debt: most flush generations in one partition of the current view.
    pub(crate) fn debt_generations(&self) -> usize {
        self.view.load().debt.generations_max
    }

    /// Ingest should wait before handing a batch over: the buffer is full, or the compaction
    /// debt is at `compaction_debt_slowdown_generations`.
    pub(crate) fn ingest_throttled(&self) -> bool {
        self.buffer_full()
            || self.debt_generations() >= self.config.compaction_debt_slowdown_generations
            || self.memory_short()
    }

    /// Less than an eighth of what ingest may reserve of the memory budget is left: ingest
    /// slows (before it is refused `Busy(MemoryBudget)` outright).
    pub(crate) fn memory_short(&self) -> bool {
        let room = self.memory.room(MemoryConsumer::Ingest);
        room < self.memory.ceiling(MemoryConsumer::Ingest) / 8
    }

    /// Makes a logged delete visible to readers at once.
    pub(crate) fn publish_tombstone(&self, tombstone: Tombstone) {
        let tombstone = Arc::new(tombstone);
        self.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            next.tombstones.push(tombstone.clone());
            next
        });
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        // Chunks first, then the view: a chunk missing from the lists was removed only after
        // its file was published, so the view loaded next already has the file.
        let lists: Vec<_> = self.lanes.iter().map(LaneBuffer::load).collect();
        let view = self.view.load_full();
        let chunks = lists
            .iter()
            .flat_map(|l| l.iter())
            .filter(|c| {
                let g = c.sealed_gen();
                g == 0 || g > view.flushed_gen
            })
            .cloned()
            .collect();
        Snapshot { view, chunks, data_dir: self.config.data_dir.clone() }
    }
}

/// Memory a queued ingest request holds: the batch columns, quality flags and the encoded entry.
pub(crate) fn queued_request_bytes(batch: &ReadingBatch) -> usize {
    const BYTES_PER_READING: usize = (8 + 2 + 8) + 1 + (8 + 2 + 8 + 1);
    batch.len() * BYTES_PER_READING + 256
}

/// Lane of a buoy: stable across runs with the same lane count.
pub(crate) fn lane_of(buoy: &str, lanes: usize) -> usize {
    crc32c::crc32c(buoy.as_bytes()) as usize % lanes
}
