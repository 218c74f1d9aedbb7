//! The lock-free ingest pipeline: per-lane bounded queues drained by one WAL writer each.
//!
//! ```text
//! caller (network task) ── validate, flag quality, encode WAL entry ──▶ try_send (bounded, lane = hash(buoy))
//! lane writer thread: recv → gather more (up to group_bytes_max) → dedup check → one WAL record
//!                     → one write + one fdatasync → build one Chunk → publish → complete acks
//! ```
//! No mutex sits between callers and writers: the queue is a crossbeam channel, the buffer is an
//! `ArcSwap` list, counters are atomics. A lane owns the deduplication windows of its buoys, so
//! the idempotency check needs no sharing either.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::budget::MemoryReservation;
use crate::buffer::{Chunk, ChunkBuilder};
use crate::catalog::Tombstone;
use crate::dedup::{DEDUP_WINDOW, DedupWindow, Seen, UNSEQUENCED};
use crate::error::{Error, InputError, Result};
use crate::state::{Shared, queued_request_bytes};
use crate::types::{BuoyId, ReadingBatch};
use crate::wal::{self, DeleteEntry, SegmentWriter};

/// How a stored batch was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now; durable (per the configured durability) under this WAL sequence.
    Stored {
        /// WAL sequence of the batch.
        seq: u64,
    },
    /// The same `(buoy, batch_seq)` was stored before; nothing stored again.
    Duplicate,
}

pub(crate) struct IngestRequest {
    pub buoy: BuoyId,
    pub batch_seq: u64,
    pub batch: ReadingBatch,
    pub quality: Vec<u8>,
    pub entry: Vec<u8>,
    pub ack: oneshot::Sender<Result<IngestOutcome>>,
    /// The request's bytes in the memory budget, taken by `Engine::ingest`; passed on to the
    /// chunk built from it (released at once for a duplicate or a refusal).
    pub memory: MemoryReservation,
}

pub(crate) struct DeleteRequest {
    pub delete: DeleteEntry,
    pub entry: Vec<u8>,
    pub ack: oneshot::Sender<Result<u64>>,
}

/// What a lane hands the flusher when it seals its buffer.
pub(crate) struct SealReply {
    pub lane_dir: String,
    pub chunks: Vec<Arc<Chunk>>,
    /// Every entry this lane wrote up to here is in `chunks` or was flushed before.
    pub watermark: Option<u64>,
    pub dedup: Vec<(String, DedupWindow)>,
}

pub(crate) enum LaneMsg {
    Ingest(IngestRequest),
    Delete(DeleteRequest),
    Seal { generation: u64, reply: Sender<SealReply> },
}

/// Name of lane `i`'s WAL directory.
pub(crate) fn lane_dir_name(lane: usize) -> String {
    format!("lane-{lane:02}")
}

/// State a lane starts with (recovered from the catalog and WAL replay).
pub(crate) struct LaneStart {
    pub dedup: HashMap<Arc<str>, DedupWindow>,
    pub seal_gen: u64,
}

pub(crate) struct LaneWriter {
    lane: usize,
    rx: Receiver<LaneMsg>,
    wal: SegmentWriter,
    shared: Arc<Shared>,
    dedup: HashMap<Arc<str>, DedupWindow>,
    dirty: HashSet<Arc<str>>,
    /// `(buoy, batch_seq)` of the group being gathered, recorded in `dedup` after its fsync.
    group_batches: HashSet<(Arc<str>, u64)>,
    seal_gen: u64,
    last_seq_written: Option<u64>,
    /// The WAL error that stopped this lane (text, error); every later request is answered with it.
    failed: Option<(String, Arc<Error>)>,
    record: Vec<u8>,
    builder: ChunkBuilder,
    /// Memory reservations of the batches in `builder`, handed to the chunk it becomes.
    builder_memory: MemoryReservation,
}

enum Ack {
    Stored(oneshot::Sender<Result<IngestOutcome>>, u64, usize),
    Duplicate(oneshot::Sender<Result<IngestOutcome>>),
    Deleted(oneshot::Sender<Result<u64>>, Tombstone),
}

impl LaneWriter {
    pub(crate) fn new(
        lane: usize,
        rx: Receiver<LaneMsg>,
        wal: SegmentWriter,
        shared: Arc<Shared>,
        start: LaneStart,
    ) -> Self {
        Self {
            lane,
            rx,
            wal,
            shared,
            dedup: start.dedup,
            dirty: HashSet::new(),
            group_batches: HashSet::new(),
            seal_gen: start.seal_gen,
            last_seq_written: None,
            failed: None,
            record: Vec::with_capacity(1 << 20),
            builder: ChunkBuilder::new(),
            builder_memory: MemoryReservation::empty(),
        }
    }

    /// Runs until every sender is gone.
    pub(crate) fn run(mut self) {
        let group_bytes_max = self.shared.config.group_bytes_max;
        let mut acks: Vec<Ack> = Vec::new();
        while let Ok(first) = self.rx.recv() {
            wal::begin_record(&mut self.record);
            let mut entries = 0u32;
            // First and last sequence of the group: sequences are shared by every lane, so a
            // group's are increasing but not contiguous (other lanes take some in between).
            let mut seqs = None;
            let mut seal = None;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    LaneMsg::Ingest(req) => self.accept_batch(req, &mut acks, &mut entries, &mut seqs),
                    LaneMsg::Delete(req) => self.accept_delete(req, &mut acks, &mut entries, &mut seqs),
                    LaneMsg::Seal { generation, reply } => {
                        // Everything received before the seal belongs to it: stop gathering.
                        seal = Some((generation, reply));
                        break;
                    }
                }
                if self.record.len() < group_bytes_max {
                    next = self.rx.try_recv().ok();
                }
            }
            self.commit_group(entries, seqs, &mut acks);
            if let Some((generation, reply)) = seal {
                self.seal(generation, &reply);
            }
        }
    }

    fn accept_batch(
        &mut self,
        mut req: IngestRequest,
        acks: &mut Vec<Ack>,
        entries: &mut u32,
        seqs: &mut Option<(u64, u64)>,
    ) {
        self.shared.queued_bytes.fetch_sub(queued_request_bytes(&req.batch), Ordering::AcqRel);
        if let Some(failed) = &self.failed {
            let _ = req.ack.send(Err(self.writer_failed(failed)));
            return;
        }
        let sequenced = req.batch_seq != UNSEQUENCED;
        let seen = match self.dedup.get(req.buoy.shared()) {
            Some(window) if sequenced => window.check(req.batch_seq),
            _ => Seen::New,
        };
        // Windows only learn a sequence once its record is durable (see `commit_group`); a
        // retry inside the same group is caught by the group's own set.
        let key = (req.buoy.shared().clone(), req.batch_seq);
        let seen =
            if seen == Seen::New && self.group_batches.contains(&key) { Seen::Duplicate } else { seen };
        match seen {
            Seen::Duplicate => {
                // Acked with the group, so never before the original is durable.
                acks.push(Ack::Duplicate(req.ack));
                return;
            }
            Seen::Stale => {
                let _ = req.ack.send(Err(Error::Input(InputError::StaleSequence {
                    buoy: req.buoy.to_string(),
                    batch_seq: req.batch_seq,
                    window: DEDUP_WINDOW,
                })));
                return;
            }
            Seen::New => {}
        }
        if sequenced {
            self.group_batches.insert(key);
        }
        self.builder_memory.absorb(std::mem::take(&mut req.memory));
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        *seqs = Some(seqs.map_or((seq, seq), |(first, _)| (first, seq)));
        wal::patch_sequence(&mut req.entry, seq);
        self.record.extend_from_slice(&req.entry);
        *entries += 1;
        self.builder.push_batch(
            req.buoy.shared(),
            req.batch.metric_names(),
            req.batch.timestamps(),
            req.batch.metric_ids(),
            req.batch.values(),
            &req.quality,
            seq,
        );
        acks.push(Ack::Stored(req.ack, seq, req.batch.len()));
    }

    fn accept_delete(
        &mut self,
        mut req: DeleteRequest,
        acks: &mut Vec<Ack>,
        entries: &mut u32,
        seqs: &mut Option<(u64, u64)>,
    ) {
        if let Some(failed) = &self.failed {
            let _ = req.ack.send(Err(self.writer_failed(failed)));
            return;
        }
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        *seqs = Some(seqs.map_or((seq, seq), |(first, _)| (first, seq)));
        wal::patch_sequence(&mut req.entry, seq);
        self.record.extend_from_slice(&req.entry);
        *entries += 1;
        let d = &req.delete;
        let tombstone = Tombstone {
            seq,
            generation: self.seal_gen,
            buoy: Arc::from(d.buoy.as_str()),
            metric: d.metric.as_deref().map(Arc::from),
            start: d.start,
            end: d.end,
        };
        acks.push(Ack::Deleted(req.ack, tombstone));
    }

    fn commit_group(&mut self, entries: u32, seqs: Option<(u64, u64)>, acks: &mut Vec<Ack>) {
        if let (Some((first_seq, last_seq)), true) = (seqs, entries > 0) {
            let started = Instant::now();
            let written = self.wal.prepare(first_seq).and_then(|tag| {
                wal::finish_record(&mut self.record, entries, tag);
                self.wal.append(&self.record)
            });
            let metrics = &self.shared.metrics;
            match written {
                Ok(()) => {
                    metrics.record_fsync(started.elapsed().as_micros() as u64);
                    metrics.wal_records.fetch_add(1, Ordering::Relaxed);
                    metrics.wal_bytes.fetch_add(self.record.len() as u64, Ordering::Relaxed);
                    // The group's own last sequence: `first + entries - 1` would fall short when
                    // another lane took sequences in between, and the flush watermark taken from
                    // it would have the next open replay rows already in files.
                    self.last_seq_written = Some(self.last_seq_written.map_or(last_seq, |l| l.max(last_seq)));
                    for (buoy, batch_seq) in self.group_batches.drain() {
                        self.dedup.entry(buoy.clone()).or_default().record(batch_seq);
                        self.dirty.insert(buoy);
                    }
                }
                Err(e) => {
                    // Fatal: after a failed fsync the page cache may claim data the disk lost.
                    let reason = format!("WAL append failed: {e}");
                    tracing::error!(lane = self.lane, %reason, "WAL writer stopped; reopen the engine to recover");
                    self.failed = Some((reason, Arc::new(Error::io("append WAL record", self.wal.dir(), e))));
                    self.builder = ChunkBuilder::new();
                    self.builder_memory = MemoryReservation::empty();
                    // Never stored, so never to be answered `Duplicate` later.
                    self.group_batches.clear();
                }
            }
        }
        if self.failed.is_none() && !self.builder.is_empty() {
            let id = self.shared.next_chunk_id.fetch_add(1, Ordering::Relaxed);
            let memory = std::mem::take(&mut self.builder_memory);
            let chunk = Arc::new(self.builder.finish(id).with_memory(memory));
            self.shared.buffer_bytes.fetch_add(chunk.bytes(), Ordering::Relaxed);
            self.shared.lanes[self.lane].push(chunk);
        }
        let mut tombstones = Vec::new();
        for ack in acks.drain(..) {
            match (ack, &self.failed) {
                (Ack::Stored(tx, _, _), Some(failed)) | (Ack::Duplicate(tx), Some(failed)) => {
                    let _ = tx.send(Err(self.writer_failed(failed)));
                }
                (Ack::Deleted(tx, _), Some(failed)) => {
                    let _ = tx.send(Err(self.writer_failed(failed)));
                }
                (Ack::Stored(tx, seq, rows), None) => {
                    self.shared.metrics.batches_ingested.fetch_add(1, Ordering::Relaxed);
                    self.shared.metrics.readings_ingested.fetch_add(rows as u64, Ordering::Relaxed);
                    let _ = tx.send(Ok(IngestOutcome::Stored { seq }));
                }
                (Ack::Duplicate(tx), None) => {
                    self.shared.metrics.batches_duplicate.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(Ok(IngestOutcome::Duplicate));
                }
                (Ack::Deleted(tx, tombstone), None) => {
                    let seq = tombstone.seq;
                    tombstones.push((tx, seq));
                    self.shared.publish_tombstone(tombstone);
                }
            }
        }
        for (tx, seq) in tombstones {
            self.shared.metrics.deletes.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Ok(seq));
        }
    }

    /// The answer of a stopped lane.
    fn writer_failed(&self, (reason, cause): &(String, Arc<Error>)) -> Error {
        Error::WriterFailed { lane: self.lane, reason: reason.clone(), cause: cause.clone() }
    }

    fn seal(&mut self, generation: u64, reply: &Sender<SealReply>) {
        self.seal_gen = generation;
        let chunks = self.shared.lanes[self.lane].load();
        for c in chunks.iter() {
            c.seal(generation);
        }
        let dedup = self
            .dirty
            .drain()
            .filter_map(|b| self.dedup.get(&b).map(|w| (b.to_string(), w.clone())))
            .collect();
        let _ = reply.send(SealReply {
            lane_dir: lane_dir_name(self.lane),
            chunks: chunks.iter().cloned().collect(),
            watermark: self.last_seq_written,
            dedup,
        });
    }
}
