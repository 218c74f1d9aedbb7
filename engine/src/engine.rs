//! [`Engine`]: opening (with recovery), ingest, deletes, snapshots, flush and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use crate::budget::{MemoryBudget, MemoryConsumer};
use crate::catalog::{BuoyInfo, Catalog, FileMeta};
use crate::config::{Durability, EngineConfig};
use crate::dedup::UNSEQUENCED;
use crate::error::{BusyReason, CatalogError, Error, InputError, Result};
use crate::flush::{COMPACTOR_QUEUE_DEPTH, Compactor, CompactorMsg, FlushReport, Flusher, FlusherMsg};
use crate::metrics::MetricsSnapshot;
use crate::pipeline::{
    DeleteRequest, IngestOutcome, IngestRequest, LaneMsg, LaneStart, LaneWriter, lane_dir_name,
};
use crate::read::Snapshot;
use crate::recovery::{Recovered, Recovery, RecoveryReport, recover};
use crate::retention::RetentionRecord;
use crate::state::{BUSY_RETRY_AFTER_MS, DEBT_RETRY_AFTER_MS, lane_of, queued_request_bytes};
use crate::storage::{FsStorage, Storage, create_dir_durable};
use crate::types::{BuoyId, MetricName, PhysicalRange, Quality, ReadingBatch, TimestampNs};
use crate::wal::{self, DeleteEntry, SegmentWriter};

/// Resolves once a batch is durable (or refused). `.await` it, or call [`IngestTicket::wait`]
/// from a thread that is not driving an async runtime.
#[derive(Debug)]
pub struct IngestTicket(oneshot::Receiver<Result<IngestOutcome>>);

impl IngestTicket {
    /// Blocks until the acknowledgement.
    pub fn wait(self) -> Result<IngestOutcome> {
        self.0.blocking_recv().unwrap_or(Err(Error::ShuttingDown))
    }
}

impl Future for IngestTicket {
    type Output = Result<IngestOutcome>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(Error::ShuttingDown)))
    }
}

/// Resolves once a delete is durable and visible; yields its WAL sequence.
#[derive(Debug)]
pub struct DeleteTicket(oneshot::Receiver<Result<u64>>);

impl DeleteTicket {
    /// Blocks until the delete is durable.
    pub fn wait(self) -> Result<u64> {
        self.0.blocking_recv().unwrap_or(Err(Error::ShuttingDown))
    }
}

impl Future for DeleteTicket {
    type Output = Result<u64>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or(Err(Error::ShuttingDown)))
    }
}

/// What a delete removes: every reading of `buoy` (of `metric` only, when set) with
/// `start <= ts < end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRange {
    /// The buoy.
    pub buoy: BuoyId,
    /// One metric, or all.
    pub metric: Option<MetricName>,
    /// Inclusive start, ns.
    pub start: TimestampNs,
    /// Exclusive end, ns.
    pub end: TimestampNs,
}

struct Threads {
    lanes: Vec<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    compactor: Option<JoinHandle<()>>,
}

struct Inner {
    shared: Arc<crate::state::Shared>,
    catalog: Arc<Catalog>,
    threads: std::sync::Mutex<Option<Threads>>,
    lane_txs: Vec<Sender<LaneMsg>>,
    flusher_tx: Sender<FlusherMsg>,
    compactor_tx: Sender<CompactorMsg>,
    /// Tells the compactor to give up a merge in progress (set before its `Shutdown`).
    compactor_stop: Arc<AtomicBool>,
    closed: AtomicBool,
    recovery: RecoveryReport,
}

/// The storage engine. Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("data_dir", &self.inner.shared.config.data_dir).finish()
    }
}

impl Engine {
    /// Opens (or creates) the engine in `config.data_dir` on the real file system, recovering
    /// from the WAL. See [`Engine::open_with_storage`].
    pub fn open(config: EngineConfig) -> Result<Self> {
        Self::open_with_storage(config, Arc::new(FsStorage))
    }

    /// Opens the engine over `storage` (tests pass a fault-injecting one). Recovery: removes
    /// temp and orphan files, loads the catalog, replays WAL entries above the flushed
    /// watermarks (cutting a torn tail, refusing corruption elsewhere), then flushes what it
    /// replayed so the old segments can go, before the first new write is taken.
    pub fn open_with_storage(config: EngineConfig, storage: Arc<dyn Storage>) -> Result<Self> {
        config.validate()?;
        if config.durability == Durability::Relaxed {
            tracing::warn!(
                "durability is RELAXED: acknowledged data is not fsynced and an OS crash or power \
                 loss loses it. Use this for benchmarks only."
            );
        }
        let Recovered { shared, catalog, lane_dedup, flushed_gen, persisted_tombstones, report, handover } =
            recover(config, storage.clone())?;
        let data_dir = shared.config.data_dir.clone();
        let wal_dir = data_dir.join("wal");
        let sync = shared.config.durability == Durability::Strict;
        let mut lane_handles = Vec::new();
        let mut lane_txs = Vec::new();
        for (lane, dedup) in lane_dedup.into_iter().enumerate() {
            let dir = wal_dir.join(lane_dir_name(lane));
            create_dir_durable(storage.as_ref(), &dir).map_err(|e| Error::io("create directory", &dir, e))?;
            let (tx, rx) = crossbeam_channel::bounded(shared.config.queue_depth);
            let writer =
                SegmentWriter::new(storage.clone(), dir, lane as u32, shared.config.wal_segment_bytes, sync);
            let start = LaneStart { dedup, seal_gen: flushed_gen };
            let lane_writer = LaneWriter::new(lane, rx, writer, shared.clone(), start);
            let handle = std::thread::Builder::new()
                .name(format!("bluewave-wal-{lane}"))
                .spawn(move || lane_writer.run())
                .map_err(|e| Error::io("spawn WAL writer", &wal_dir, e))?;
            lane_handles.push(handle);
            lane_txs.push(tx);
        }
        let catalog = Arc::new(catalog);
        // The flusher's queue only carries control messages; a small bound is plenty.
        const FLUSHER_QUEUE_DEPTH: usize = 64;
        let (flusher_tx, flusher_rx) = crossbeam_channel::bounded(FLUSHER_QUEUE_DEPTH);
        let (compactor_tx, compactor_rx) = crossbeam_channel::bounded(COMPACTOR_QUEUE_DEPTH);
        let compactor_stop = Arc::new(AtomicBool::new(false));
        let compactor = Compactor::new(shared.clone(), catalog.clone(), compactor_rx, compactor_stop.clone());
        let compaction_nice = shared.config.compaction_nice;
        let compactor_handle = std::thread::Builder::new()
            .name("bluewave-compact".into())
            .spawn(move || {
                crate::flush::lower_thread_priority(compaction_nice);
                compactor.run()
            })
            .map_err(|e| Error::io("spawn compactor", &data_dir, e))?;
        let flusher = Flusher::new(
            shared.clone(),
            catalog.clone(),
            lane_txs.clone(),
            flusher_rx,
            compactor_tx.clone(),
            flushed_gen + 1,
            // Only the catalog's own: tombstones replayed from the WAL still have to be written.
            persisted_tombstones,
        );
        let flush_nice = shared.config.flush_nice;
        let flusher_handle = std::thread::Builder::new()
            .name("bluewave-flush".into())
            .spawn(move || {
                crate::flush::lower_thread_priority(flush_nice);
                flusher.run()
            })
            .map_err(|e| Error::io("spawn flusher", &data_dir, e))?;

        let engine = Self {
            inner: Arc::new(Inner {
                shared,
                catalog,
                threads: std::sync::Mutex::new(Some(Threads {
                    lanes: lane_handles,
                    flusher: Some(flusher_handle),
                    compactor: Some(compactor_handle),
                })),
                lane_txs,
                flusher_tx,
                compactor_tx,
                compactor_stop,
                closed: AtomicBool::new(false),
                recovery: report,
            }),
        };
        if !handover.segments.is_empty() {
            engine.request_flush(Some(handover))?;
        }
        Ok(engine)
    }

    /// What recovery found when this engine was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.shared.config
    }

    /// Registers (or updates) a buoy so it may write.
    pub fn register_buoy(&self, info: BuoyInfo) -> Result<()> {
        BuoyId::new(&info.id)?;
        self.inner.catalog.put_buoy(&info)?;
        self.inner.shared.buoys.rcu(|m| {
            let mut next = HashMap::clone(m);
            next.insert(info.id.clone(), info.clone());
            next
        });
        Ok(())
    }

    /// Registered buoys, sorted by id.
    pub fn buoys(&self) -> Vec<BuoyInfo> {
        let mut out: Vec<BuoyInfo> = self.inner.shared.buoys.load().values().cloned().collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Submits a batch. Validation (registered buoy, quality flags) happens here, in the
    /// caller's thread; the returned ticket resolves after the WAL fsync covering the batch
    /// (`Stored`), at once for a known retry (`Duplicate`, after the original is durable), or
    /// with an error. Never blocks: a full queue or buffer answers [`Error::Busy`].
    pub fn ingest(&self, buoy: &BuoyId, batch_seq: u64, batch: ReadingBatch) -> Result<IngestTicket> {
        if batch_seq == UNSEQUENCED {
            return Err(InputError::ReservedSequence(batch_seq).into());
        }
        self.submit(buoy, batch_seq, batch)
    }

    /// Writes a batch outside the buoy's sequence (an operator's correction of stored values):
    /// durable and last-write-wins like [`Self::ingest`], but never deduplicated, so a retry
    /// writes the same values again, which is harmless for a correction. Never touches the
    /// buoy's deduplication window, so the device's own numbering is unaffected.
    pub fn write_unsequenced(&self, buoy: &BuoyId, batch: ReadingBatch) -> Result<IngestTicket> {
        self.submit(buoy, UNSEQUENCED, batch)
    }

    fn submit(&self, buoy: &BuoyId, batch_seq: u64, batch: ReadingBatch) -> Result<IngestTicket> {
        let shared = &self.inner.shared;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if !shared.buoys.load().contains_key(buoy.as_str()) {
            return Err(InputError::UnknownBuoy(buoy.to_string()).into());
        }
        if shared.buffer_full() {
            let _ = self.inner.flusher_tx.try_send(FlusherMsg::Wake);
            shared.metrics.batches_refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy { reason: BusyReason::BufferFull, retry_after_ms: BUSY_RETRY_AFTER_MS });
        }
        if shared.debt_generations() >= shared.config.compaction_debt_busy_generations {
            let _ = self.inner.compactor_tx.try_send(CompactorMsg::Wake);
            shared.metrics.batches_refused_busy.fetch_add(1, Ordering::Relaxed);
            shared.metrics.batches_refused_compaction_debt.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy {
                reason: BusyReason::CompactionDebt,
                retry_after_ms: DEBT_RETRY_AFTER_MS,
            });
        }
        let request_bytes = queued_request_bytes(&batch);
        if shared.queued_bytes.fetch_add(request_bytes, Ordering::AcqRel) + request_bytes
            > shared.config.queue_bytes_max
        {
            shared.queued_bytes.fetch_sub(request_bytes, Ordering::AcqRel);
            shared.metrics.batches_refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy { reason: BusyReason::QueueFull, retry_after_ms: BUSY_RETRY_AFTER_MS });
        }
        let Some(memory) = shared.memory.try_reserve(MemoryConsumer::Ingest, request_bytes) else {
            shared.queued_bytes.fetch_sub(request_bytes, Ordering::AcqRel);
            let _ = self.inner.flusher_tx.try_send(FlusherMsg::Wake);
            shared.metrics.batches_refused_busy.fetch_add(1, Ordering::Relaxed);
            shared.metrics.batches_refused_memory.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Busy {
                reason: BusyReason::MemoryBudget,
                retry_after_ms: BUSY_RETRY_AFTER_MS,
            });
        };
        let quality = self.flag_quality(&batch);
        let entry = wal::encode_batch_entry(buoy.as_str(), batch_seq, &batch, &quality);
        let (ack, rx) = oneshot::channel();
        let lane = lane_of(buoy.as_str(), shared.lanes.len());
        let request = IngestRequest { buoy: buoy.clone(), batch_seq, batch, quality, entry, ack, memory };
        let sent = self.inner.lane_txs[lane].try_send(LaneMsg::Ingest(request));
        if sent.is_err() {
            // The writer never sees this request, so its bytes are released here.
            shared.queued_bytes.fetch_sub(request_bytes, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                shared.metrics.batches_refused_busy.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Busy {
                    reason: BusyReason::QueueFull,
                    retry_after_ms: BUSY_RETRY_AFTER_MS,
                });
            }
            Err(TrySendError::Disconnected(_)) => return Err(Error::ShuttingDown),
        }
        if shared.buffer_bytes.load(Ordering::Relaxed) >= shared.config.flush_buffer_bytes {
            let _ = self.inner.flusher_tx.try_send(FlusherMsg::Wake);
        }
        Ok(IngestTicket(rx))
    }

    fn flag_quality(&self, batch: &ReadingBatch) -> Vec<u8> {
        let ranges: Vec<Option<PhysicalRange>> = batch
            .metric_names()
            .iter()
            .map(|m| self.inner.shared.config.metric_ranges.get(m.as_str()).copied())
            .collect();
        let mut out_of_range = 0u64;
        let quality: Vec<u8> = batch
            .metric_ids()
            .iter()
            .zip(batch.values())
            .map(|(&id, &v)| {
                let q = ranges[usize::from(id)].map_or(Quality::Good, |r| r.quality(v));
                out_of_range += u64::from(q != Quality::Good);
                q as u8
            })
            .collect();
        if out_of_range > 0 {
            self.inner.shared.metrics.readings_out_of_range.fetch_add(out_of_range, Ordering::Relaxed);
        }
        quality
    }

    /// Logs a delete. Once the ticket resolves the readings are durable-deleted and invisible
    /// to new snapshots; compaction removes them from files.
    pub fn delete(&self, range: &DeleteRange) -> Result<DeleteTicket> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        if range.end < range.start {
            return Err(InputError::InvalidTimeRange { start: range.start, end: range.end }.into());
        }
        let delete = DeleteEntry {
            buoy: range.buoy.to_string(),
            metric: range.metric.as_ref().map(ToString::to_string),
            start: range.start,
            end: range.end,
        };
        let entry = wal::encode_delete_entry(&delete);
        let (ack, rx) = oneshot::channel();
        let lane = lane_of(range.buoy.as_str(), self.inner.shared.lanes.len());
        match self.inner.lane_txs[lane].try_send(LaneMsg::Delete(DeleteRequest { delete, entry, ack })) {
            Ok(()) => Ok(DeleteTicket(rx)),
            Err(TrySendError::Full(_)) => {
                Err(Error::Busy { reason: BusyReason::QueueFull, retry_after_ms: BUSY_RETRY_AFTER_MS })
            }
            Err(TrySendError::Disconnected(_)) => Err(Error::ShuttingDown),
        }
    }

    /// A consistent snapshot of committed files, tombstones and buffered chunks.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.shared.snapshot()
    }

    /// The storage the engine writes through (for readers of partition files).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.shared.storage
    }

    /// Files of the current view (for `inspect` and tests).
    pub fn files(&self) -> Vec<Arc<FileMeta>> {
        self.inner.shared.view.load().files().cloned().collect()
    }

    /// Flushes everything buffered now and waits for the catalog commit.
    pub fn flush(&self) -> Result<FlushReport> {
        self.request_flush(None)
    }

    fn request_flush(&self, recovery: Option<Recovery>) -> Result<FlushReport> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .flusher_tx
            .send(FlusherMsg::Flush { recovery, reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().unwrap_or(Err(Error::ShuttingDown))
    }

    /// Compacts every partition with more than one file or with tombstones to apply.
    pub fn compact(&self) -> Result<usize> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .compactor_tx
            .send(CompactorMsg::CompactAll { reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().unwrap_or(Err(Error::ShuttingDown))
    }

    /// Applies the configured retention now (the compactor also does so every second):
    /// returns what it removed, `None` when nothing had expired.
    pub fn apply_retention(&self) -> Result<Option<RetentionRecord>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .compactor_tx
            .send(CompactorMsg::ApplyRetention { reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().unwrap_or(Err(Error::ShuttingDown))
    }

    /// The record of the last retention pass that removed something, from the catalog.
    pub fn last_retention(&self) -> Result<Option<RetentionRecord>> {
        match self.inner.catalog.last_retention()? {
            None => Ok(None),
            Some(bytes) => RetentionRecord::decode(&bytes).map(Some).ok_or_else(|| {
                Error::Catalog(CatalogError::Undecodable { table: "retention".into(), key: "last".into() })
            }),
        }
    }

    /// Drops partitions that ended before `cutoff` (ns); returns files dropped.
    pub fn drop_before(&self, cutoff: TimestampNs) -> Result<usize> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner
            .compactor_tx
            .send(CompactorMsg::DropBefore { cutoff, reply: tx })
            .map_err(|_| Error::ShuttingDown)?;
        rx.recv().unwrap_or(Err(Error::ShuttingDown))
    }

    /// True while ingest answers `Busy(BufferFull)`: the buffer holds `buffer_bytes_max` and
    /// waits for a flush.
    pub fn buffer_full(&self) -> bool {
        self.inner.shared.buffer_full()
    }

    /// Completes once the buffer is below `buffer_bytes_max` (at once when it is). A network
    /// server awaits this, under its own deadline, before handing a batch over while the buffer
    /// is full: the sender waits for its ack, so its in-flight window throttles it, instead of
    /// resending a refused batch every `retry_after_ms`. It never completes while the engine
    /// is shut down with a full buffer, so always bound the wait.
    pub async fn buffer_space(&self) {
        let shared = &self.inner.shared;
        loop {
            let freed = shared.room_freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before the check, so a flush in between is not missed.
            freed.as_mut().enable();
            if !shared.buffer_full() {
                return;
            }
            freed.await;
        }
    }

    /// True while ingest should slow down: the buffer is full (ingest answers
    /// `Busy(BufferFull)`), or the compaction debt (most flush generations in one partition) is
    /// at `compaction_debt_slowdown_generations`. A network server then waits, under its own
    /// deadline, on [`Engine::ingest_room`] before handing a batch over, so acks take longer and
    /// a sender's in-flight window slows it; past `compaction_debt_busy_generations` ingest
    /// answers `Busy(CompactionDebt)`.
    pub fn ingest_throttled(&self) -> bool {
        self.inner.shared.ingest_throttled()
    }

    /// Completes once [`Engine::ingest_throttled`] is false (at once when it is): a flush freed
    /// the buffer and the compactor brought the debt under the slowdown bound. As with
    /// [`Engine::buffer_space`], always bound the wait.
    pub async fn ingest_room(&self) {
        let shared = &self.inner.shared;
        loop {
            let freed = shared.room_freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Registered before the check, so a flush or compaction in between is not missed.
            freed.as_mut().enable();
            if !shared.ingest_throttled() {
                return;
            }
            freed.await;
        }
    }

    /// Counters, with the current buffer bytes and queue depth.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.inner.shared.metrics.snapshot();
        m.buffer_bytes = self.inner.shared.buffer_bytes.load(Ordering::Relaxed) as u64;
        m.queue_depth = self.inner.lane_txs.iter().map(|t| t.len() as u64).sum();
        let debt = self.inner.shared.view.load().debt;
        m.compaction_generations_max = debt.generations_max as u64;
        m.compaction_generations_total = debt.generations_total as u64;
        m.compaction_partitions_waiting = debt.partitions_waiting as u64;
        m.compaction_bytes_waiting = debt.bytes_waiting;
        let memory = &self.inner.shared.memory;
        m.memory_bytes_max = memory.limit() as u64;
        m.memory_used_bytes = memory.used() as u64;
        m.memory_high_water_bytes = memory.high_water() as u64;
        m.memory_ingest_bytes = memory.used_by(MemoryConsumer::Ingest) as u64;
        m.memory_flush_bytes = memory.used_by(MemoryConsumer::Flush) as u64;
        m.memory_compaction_bytes = memory.used_by(MemoryConsumer::Compaction) as u64;
        m.memory_query_cache_bytes = memory.used_by(MemoryConsumer::QueryCache) as u64;
        m.memory_refusals = memory.refusals();
        m
    }

    /// The engine's memory budget (`memory_bytes_max`), for the query side's caches to reserve
    /// their capacity in ([`MemoryConsumer::QueryCache`]).
    pub fn memory_budget(&self) -> Arc<MemoryBudget> {
        self.inner.shared.memory.clone()
    }

    /// Stops taking work, flushes what is buffered, and stops the flusher and the compactor (a
    /// compaction in progress gives up; the next open compacts). Idempotent. The
    /// lane writers end when the last handle of the engine is dropped.
    pub fn shutdown(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = self.flush();
        self.inner.stop_flusher();
        self.inner.stop_compactor();
        flushed.map(|_| ())
    }
}

impl Inner {
    fn stop_compactor(&self) {
        self.compactor_stop.store(true, Ordering::Relaxed);
        let _ = self.compactor_tx.send(CompactorMsg::Shutdown);
        let compactor = match self.threads.lock() {
            Ok(mut guard) => guard.as_mut().and_then(|t| t.compactor.take()),
            Err(poisoned) => poisoned.into_inner().as_mut().and_then(|t| t.compactor.take()),
        };
        if let Some(handle) = compactor {
            let _ = handle.join();
        }
    }

    fn stop_flusher(&self) {
        let _ = self.flusher_tx.send(FlusherMsg::Shutdown);
        let flusher = match self.threads.lock() {
            Ok(mut guard) => guard.as_mut().and_then(|t| t.flusher.take()),
            Err(poisoned) => poisoned.into_inner().as_mut().and_then(|t| t.flusher.take()),
        };
        if let Some(handle) = flusher {
            let _ = handle.join();
        }
    }
}

impl Drop for Inner {
    /// Closing without `shutdown` loses nothing: buffered data is in the WAL and is replayed at
    /// the next open. The threads are joined so the data dir can be reopened at once.
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.stop_flusher();
        self.stop_compactor();
        self.lane_txs.clear();
        let threads = match self.threads.get_mut() {
            Ok(t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(t) = threads {
            for handle in t.lanes {
                let _ = handle.join();
            }
        }
    }
}

/// Buoys that share a lane with `buoy` never block it; exported for tests of the sharding.
pub fn lane_for_buoy(buoy: &BuoyId, lanes: usize) -> usize {
    lane_of(buoy.as_str(), lanes.max(1))
}
