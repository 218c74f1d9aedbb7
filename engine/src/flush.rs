//! The flusher thread: seals the buffer, writes sorted, deduplicated Parquet partitions,
//! commits them to the catalog, trims the WAL; also compaction and retention.
//!
//! Order of a flush (each step durable before the next):
//! seal every lane (generation `g`) → per touched partition: sort by (buoy, metric, ts), last
//! write wins, tombstones applied → write `<id>.parquet.tmp` → fsync → rename → fsync dir →
//! one catalog transaction (files, WAL watermarks, dedup windows, tombstones, generation) →
//! publish the new read view → drop the sealed chunks → delete WAL segments below the
//! watermarks. A crash anywhere before the catalog commit leaves only temp or orphan files,
//! which the next open removes; the WAL still holds every row.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::buffer::Chunk;
use crate::catalog::{Catalog, CatalogCommit, FileMeta, MetricStats, Tombstone};
use crate::dedup::DedupWindow;
use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::partition::{
    self, EncodedPartition, PartitionReader, PartitionRows, PartitionWriteOptions, PartitionWriter,
    ValueEncoding,
};
use crate::pipeline::{LaneMsg, SealReply};
use crate::read::ReadView;
use crate::storage::create_dir_durable;
use crate::types::TimestampNs;
use crate::wal;

/// How often the flusher checks buffer age, size and retention without being woken.
const FLUSHER_TICK: Duration = Duration::from_millis(100);
/// Name of the readings table's directory under `parquet/`.
pub const READINGS_TABLE: &str = "readings";

/// What one flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Files written.
    pub files: usize,
    /// Rows written (after last-write-wins and tombstones).
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Rows read from the buffer.
    pub rows_buffered: u64,
    /// Partitions compacted afterwards. Under ingest pressure compactions are put off to the
    /// flusher's quiet ticks and not counted here.
    pub compactions: usize,
}

/// WAL state handed over by recovery: flush it, then the old segments can go.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub watermarks: Vec<(String, u64)>,
    pub segments: Vec<PathBuf>,
    /// Windows of the buoys whose batches were replayed: persisted with the recovery flush.
    pub dedup: Vec<(String, DedupWindow)>,
}

pub(crate) enum FlusherMsg {
    Wake,
    Flush { recovery: Option<Recovery>, reply: Sender<Result<FlushReport>> },
    CompactAll { reply: Sender<Result<usize>> },
    DropBefore { cutoff: TimestampNs, reply: Sender<Result<usize>> },
    Shutdown,
}

pub(crate) struct Flusher {
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
    lane_txs: Vec<Sender<LaneMsg>>,
    rx: Receiver<FlusherMsg>,
    next_gen: u64,
    next_file_id: u64,
    /// Dedup windows handed over by seals whose flush has not committed yet.
    pending_dedup: BTreeMap<String, DedupWindow>,
    /// Tombstones already in the catalog.
    persisted_tombstones: std::collections::HashSet<u64>,
    /// Files removed from the catalog, deleted from disk once no snapshot holds them.
    unlinked: Vec<Arc<FileMeta>>,
    /// Partitions whose compaction a flush under ingest pressure put off to a quiet tick.
    compaction_due: std::collections::BTreeSet<TimestampNs>,
    /// Closed partitions (a newer one has files) with more than one generation, folded whole
    /// at quiet ticks ([`CompactionScope::Fold`]).
    fold_due: std::collections::BTreeSet<TimestampNs>,
}

impl Flusher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        catalog: Arc<Catalog>,
        lane_txs: Vec<Sender<LaneMsg>>,
        rx: Receiver<FlusherMsg>,
        next_gen: u64,
        next_file_id: u64,
        persisted_tombstones: std::collections::HashSet<u64>,
    ) -> Self {
        Self {
            shared,
            catalog,
            lane_txs,
            rx,
            next_gen,
            next_file_id,
            pending_dedup: BTreeMap::new(),
            persisted_tombstones,
            unlinked: Vec::new(),
            compaction_due: std::collections::BTreeSet::new(),
            fold_due: std::collections::BTreeSet::new(),
        }
        .with_due_compactions()
    }

    /// Queues the partitions that a compaction put off before the last stop (or a crash) left
    /// with `compaction_files_min` generations: no flush may ever touch them again.
    fn with_due_compactions(mut self) -> Self {
        let view = self.shared.view.load_full();
        self.compaction_due = view
            .partitions
            .iter()
            .filter(|(_, files)| generations(files) >= self.shared.config.compaction_files_min)
            .map(|(&start, _)| start)
            .collect();
        self.queue_folds(view.partitions.keys().copied());
        self
    }

    /// Queues for a fold those of `candidates` that are closed (a newer partition has files)
    /// and hold more than one generation.
    fn queue_folds(&mut self, candidates: impl Iterator<Item = TimestampNs>) {
        let view = self.shared.view.load();
        let Some(&newest) = view.partitions.keys().next_back() else { return };
        for start in candidates {
            if start < newest && view.partitions.get(&start).is_some_and(|files| generations(files) > 1) {
                self.fold_due.insert(start);
            }
        }
    }

    /// Deletes files no longer in the catalog once no snapshot references them (the list here
    /// holds the last reference). A crash before that leaves orphans, which open removes.
    fn reap_unlinked(&mut self) {
        let (free, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.unlinked).into_iter().partition(|f| Arc::strong_count(f) == 1);
        self.unlinked = held;
        for f in free {
            let path = self.shared.config.data_dir.join(&f.path);
            self.remove_quietly(&path);
            // Drops the partition directory once it is empty; fails harmlessly otherwise.
            if let Some(dir) = path.parent() {
                let _ = self.shared.storage.remove_dir(dir);
            }
        }
    }

    pub(crate) fn run(mut self) {
        let mut failures = 0u32;
        loop {
            self.reap_unlinked();
            let msg = match self.rx.recv_timeout(FLUSHER_TICK) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match msg {
                Some(FlusherMsg::Shutdown) => {
                    self.reap_unlinked();
                    return;
                }
                Some(FlusherMsg::Flush { recovery, reply }) => {
                    let result = self.flush(recovery);
                    // Files nobody reads any more go before the caller hears back.
                    self.reap_unlinked();
                    let _ = reply.send(result);
                }
                Some(FlusherMsg::CompactAll { reply }) => {
                    let result = self.compact_all();
                    // Files nobody reads any more go before the caller hears back.
                    self.reap_unlinked();
                    let _ = reply.send(result);
                }
                Some(FlusherMsg::DropBefore { cutoff, reply }) => {
                    let result = self.drop_before(cutoff);
                    // Files nobody reads any more go before the caller hears back.
                    self.reap_unlinked();
                    let _ = reply.send(result);
                }
                Some(FlusherMsg::Wake) | None => {
                    if self.flush_due() {
                        match self.flush(None) {
                            Ok(_) => failures = 0,
                            Err(e) => {
                                failures += 1;
                                tracing::error!(error = %e, failures, "background flush failed; will retry");
                                // Back off so a full disk is not hammered.
                                std::thread::sleep(FLUSHER_TICK * failures.min(50));
                            }
                        }
                    } else if !self.ingest_pressure() {
                        // One deferred compaction, or else one fold, per quiet tick.
                        if let Some(partition_start) = self.compaction_due.pop_first() {
                            if let Err(e) = self.compact_if_due(partition_start) {
                                tracing::error!(error = %e, "deferred compaction failed");
                            }
                        } else if let Some(partition_start) = self.fold_due.pop_first() {
                            let scope = CompactionScope::Fold { yield_to_ingest: true };
                            if let Err(e) = self.compact_partition(partition_start, scope) {
                                tracing::error!(error = %e, "fold of a closed partition failed");
                            }
                        }
                    }
                    if let Some(retention) = self.shared.config.retention {
                        let now = now_ns();
                        let cutoff =
                            now.saturating_sub(i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX));
                        if let Err(e) = self.drop_before(cutoff) {
                            tracing::error!(error = %e, "retention pass failed");
                        }
                    }
                }
            }
        }
    }

    fn flush_due(&self) -> bool {
        let config = &self.shared.config;
        if self.shared.buffer_bytes.load(Ordering::Relaxed) >= config.flush_buffer_bytes {
            return true;
        }
        let age_max = Duration::from_millis(config.flush_interval_ms);
        self.shared.lanes.iter().any(|l| l.load().first().is_some_and(|c| c.created.elapsed() >= age_max))
    }

    fn seal(&mut self, generation: u64) -> Result<Vec<SealReply>> {
        let (tx, rx) = crossbeam_channel::bounded(self.lane_txs.len());
        for lane in &self.lane_txs {
            lane.send(LaneMsg::Seal { generation, reply: tx.clone() }).map_err(|_| Error::ShuttingDown)?;
        }
        drop(tx);
        let mut replies = Vec::with_capacity(self.lane_txs.len());
        for _ in 0..self.lane_txs.len() {
            replies.push(rx.recv().map_err(|_| Error::ShuttingDown)?);
        }
        Ok(replies)
    }

    pub(crate) fn flush(&mut self, recovery: Option<Recovery>) -> Result<FlushReport> {
        let started = Instant::now();
        let generation = self.next_gen;
        self.next_gen += 1;
        let replies = self.seal(generation)?;
        let mut chunks: Vec<Arc<Chunk>> = Vec::new();
        let mut watermarks: Vec<(String, u64)> = Vec::new();
        for reply in replies {
            chunks.extend(reply.chunks);
            if let Some(w) = reply.watermark {
                watermarks.push((reply.lane_dir, w));
            }
            self.pending_dedup.extend(reply.dedup);
        }
        if let Some(r) = &recovery {
            self.pending_dedup.extend(r.dedup.iter().cloned());
            for (dir, w) in &r.watermarks {
                match watermarks.iter_mut().find(|(d, _)| d == dir) {
                    Some(existing) => existing.1 = existing.1.max(*w),
                    None => watermarks.push((dir.clone(), *w)),
                }
            }
        }
        let view = self.shared.view.load_full();
        let new_tombstones: Vec<Tombstone> = view
            .tombstones
            .iter()
            .filter(|t| !self.persisted_tombstones.contains(&t.seq))
            .map(|t| Tombstone::clone(t))
            .collect();
        let mut report = FlushReport {
            rows_buffered: chunks.iter().map(|c| c.len() as u64).sum(),
            ..FlushReport::default()
        };
        if chunks.is_empty()
            && recovery.is_none()
            && self.pending_dedup.is_empty()
            && new_tombstones.is_empty()
        {
            return Ok(report);
        }

        let mut written: Vec<FileMeta> = Vec::new();
        let result = self.write_partitions(&chunks, &view, generation, &mut written);
        if let Err(e) = result {
            self.remove_written(&written);
            return Err(e);
        }
        let change = CatalogCommit {
            add_files: written.clone(),
            watermarks: watermarks.clone(),
            dedup: self.pending_dedup.iter().map(|(b, w)| (b.clone(), w.clone())).collect(),
            put_tombstones: new_tombstones.clone(),
            flushed_gen: Some(generation),
            next_file_id: Some(self.next_file_id),
            ..CatalogCommit::default()
        };
        if let Err(e) = self.catalog.commit(&change) {
            self.remove_written(&written);
            return Err(e);
        }
        self.pending_dedup.clear();
        self.persisted_tombstones.extend(new_tombstones.iter().map(|t| t.seq));
        let touched: Vec<TimestampNs> = written.iter().map(|f| f.partition_start).collect();
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            for f in &written {
                next.partitions.entry(f.partition_start).or_default().push(Arc::new(f.clone()));
            }
            next.flushed_gen = generation;
            next
        });
        report.files = written.len();
        report.rows = written.iter().map(|f| f.rows).sum();
        report.bytes = written.iter().map(|f| f.bytes).sum();
        // Counted before the buffer is freed: an ingest that waited for this flush (and its
        // client) sees it in the metrics, however late the flusher is scheduled after the wake.
        let metrics = &self.shared.metrics;
        metrics.flushes.fetch_add(1, Ordering::Relaxed);
        metrics.flush_rows.fetch_add(report.rows, Ordering::Relaxed);
        metrics.flush_bytes.fetch_add(report.bytes, Ordering::Relaxed);
        metrics.flush_micros_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let mut freed = 0;
        for lane in &self.shared.lanes {
            freed += lane.remove_sealed(generation);
        }
        self.shared.buffer_bytes.fetch_sub(freed, Ordering::Relaxed);
        self.shared.buffer_freed.notify_waiters();

        // The WAL below the watermarks is now redundant.
        if let Some(r) = &recovery {
            for segment in &r.segments {
                self.remove_quietly(segment);
            }
        }
        self.trim_wal(&watermarks);
        self.collect_tombstones()?;
        // Compaction runs on this thread: under ingest pressure it waits for a quiet tick, so it
        // never holds up the flush that frees ingest.
        let pressure = self.ingest_pressure();
        let mut touched = touched;
        touched.dedup();
        for &partition_start in &touched {
            // Put off, but not without bound: at twice `compaction_files_min` generations the
            // partition is compacted even under pressure.
            let overdue = self.generations_of(partition_start) >= 2 * self.shared.config.compaction_files_min;
            if pressure && !overdue {
                self.compaction_due.insert(partition_start);
            } else if self.compact_if_due(partition_start)? {
                report.compactions += 1;
            }
        }
        // A partition closes when a newer one gets files: the one newest before this flush,
        // and any late rows this flush wrote to older ones.
        let newest_before = view.partitions.keys().next_back().copied();
        self.queue_folds(touched.into_iter().chain(newest_before));
        tracing::debug!(
            generation,
            rows = report.rows,
            files = report.files,
            compactions = report.compactions,
            total_ms = started.elapsed().as_millis(),
            "flush done"
        );
        Ok(report)
    }

    /// Flush generations of a partition's files.
    fn generations_of(&self, partition_start: TimestampNs) -> usize {
        self.shared.view.load().partitions.get(&partition_start).map_or(0, |f| generations(f))
    }

    /// True while the buffer holds over a quarter of `flush_buffer_bytes`: ingest is running
    /// fast enough that a compaction (seconds for a large run) would let the buffer reach
    /// `buffer_bytes_max` before the next flush, stalling ingest.
    fn ingest_pressure(&self) -> bool {
        self.shared.buffer_bytes.load(Ordering::Relaxed) > self.shared.config.flush_buffer_bytes / 4
    }

    /// Compacts the partition if it holds `compaction_files_min` flush generations.
    fn compact_if_due(&mut self, partition_start: TimestampNs) -> Result<bool> {
        Ok(self.generations_of(partition_start) >= self.shared.config.compaction_files_min
            && self.compact_partition(partition_start, CompactionScope::Bounded)?)
    }

    fn write_partitions(
        &mut self,
        chunks: &[Arc<Chunk>],
        view: &ReadView,
        generation: u64,
        written: &mut Vec<FileMeta>,
    ) -> Result<()> {
        let duration = self.shared.config.partition_duration;
        // (chunk, row) per partition.
        let mut by_partition: BTreeMap<TimestampNs, Vec<(u32, u32)>> = BTreeMap::new();
        for (ci, c) in chunks.iter().enumerate() {
            if duration.start_of(c.ts_min) == duration.start_of(c.ts_max) {
                by_partition
                    .entry(duration.start_of(c.ts_min))
                    .or_default()
                    .extend((0..c.len() as u32).map(|r| (ci as u32, r)));
            } else {
                for (r, &ts) in c.timestamps.iter().enumerate() {
                    by_partition.entry(duration.start_of(ts)).or_default().push((ci as u32, r as u32));
                }
            }
        }
        let started = Instant::now();
        let threads = self.shared.config.flush_threads;
        // Partitions are sorted and merged in parallel, then their files encoded in parallel.
        let merged = parallel_map(by_partition.into_iter().collect(), threads, |(partition_start, rows)| {
            let merged = merge_buffer_rows(chunks, &rows, partition_start, &view.tombstones);
            drop(rows);
            let mut jobs = Vec::new();
            if !merged.is_empty() {
                split_by_encoding(partition_start, merged.rows, merged.seq_min, merged.seq_max, &mut jobs);
            }
            jobs
        });
        let merge_ms = started.elapsed().as_millis();
        self.write_jobs(merged.into_iter().flatten().collect(), generation, written)?;
        tracing::debug!(
            generation,
            merge_ms,
            encode_and_write_ms = started.elapsed().as_millis() - merge_ms,
            "flush wrote its files"
        );
        Ok(())
    }

    /// Encodes the files of `jobs` in parallel (`flush_threads`, zstd at `flush_zstd_level`),
    /// then writes each durably under its final name and pushes its metadata (not yet committed)
    /// to `written`, in job order, so a failure can remove what was written.
    fn write_jobs(&mut self, jobs: Vec<FileJob>, generation: u64, written: &mut Vec<FileMeta>) -> Result<()> {
        let written_options = &self.shared.config.partition_write;
        let options = &PartitionWriteOptions {
            zstd_level: written_options.flush_zstd_level,
            ..written_options.clone()
        };
        let encoded = parallel_map(jobs, self.shared.config.flush_threads, |job| {
            let encoded = partition::encode_partition_as(&job.rows, job.encoding, options);
            (job, encoded)
        });
        for (job, encoded) in encoded {
            let summary = FileSummary::of(&job.rows);
            let file = FileToWrite {
                partition_start: job.partition_start,
                summary: &summary,
                seq_min: job.seq_min,
                seq_max: job.seq_max,
            };
            let meta = self.write_file(file, &encoded?.bytes, generation)?;
            written.push(meta);
        }
        Ok(())
    }

    /// Writes one encoded partition file durably under its final name and returns its metadata
    /// (not yet committed).
    fn write_file(&mut self, file: FileToWrite<'_>, bytes: &[u8], generation: u64) -> Result<FileMeta> {
        let FileToWrite { partition_start, summary, seq_min, seq_max } = file;
        let storage = &self.shared.storage;
        let id = self.next_file_id;
        self.next_file_id += 1;
        let dir_rel = partition_dir(partition_start);
        let rel = format!("{dir_rel}/{id:016x}.parquet");
        let dir = self.shared.config.data_dir.join(&dir_rel);
        let path = self.shared.config.data_dir.join(&rel);
        let tmp = path.with_extension("parquet.tmp");
        create_dir_durable(storage.as_ref(), &dir)
            .map_err(|e| Error::io("create partition directory", &dir, e))?;
        let mut out = storage.create(&tmp).map_err(|e| Error::io("create partition file", &tmp, e))?;
        out.write_all(bytes).map_err(|e| Error::io("write partition file", &tmp, e))?;
        out.sync_data().map_err(|e| Error::io("fsync partition file", &tmp, e))?;
        drop(out);
        storage.rename(&tmp, &path).map_err(|e| Error::io("rename partition file", &path, e))?;
        storage.sync_dir(&dir).map_err(|e| Error::io("fsync partition directory", &dir, e))?;
        let (buoys, buoy_ranges, metrics, metric_stats) = summary.lists();
        Ok(FileMeta {
            id,
            partition_start,
            partition_end: partition_start + self.shared.config.partition_duration.as_nanos(),
            path: rel,
            rows: summary.rows,
            bytes: bytes.len() as u64,
            ts_min: summary.ts_min,
            ts_max: summary.ts_max,
            generation,
            seq_min,
            seq_max,
            buoys,
            metrics,
            applied_tombstones: Vec::new(),
            buoy_ranges,
            metric_stats,
        })
    }

    fn remove_written(&self, written: &[FileMeta]) {
        for f in written {
            self.remove_quietly(&self.shared.config.data_dir.join(&f.path));
        }
    }

    fn remove_quietly(&self, path: &std::path::Path) {
        if let Err(e) = self.shared.storage.remove_file(path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove file");
        }
    }

    /// Deletes segments whose every entry is at or below the lane's watermark. The newest
    /// segment of a lane is never touched: its writer may still append to it.
    fn trim_wal(&self, watermarks: &[(String, u64)]) {
        let wal_dir = self.shared.config.data_dir.join("wal");
        for (lane, watermark) in watermarks {
            let dir = wal_dir.join(lane);
            let Ok(segments) = wal::list_segments(self.shared.storage.as_ref(), &dir) else { continue };
            let firsts: Vec<u64> = segments
                .iter()
                .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()))
                .collect();
            for (segment, next_first) in segments.iter().zip(firsts.iter().skip(1)) {
                // Entries of a segment end before the next segment's first sequence.
                if *next_first > 0 && next_first - 1 <= *watermark {
                    self.remove_quietly(segment);
                }
            }
        }
    }

    /// Drops tombstones that no longer hide anything: every file they applied to was rewritten
    /// and the buffer rows they hid were flushed.
    fn collect_tombstones(&mut self) -> Result<()> {
        let view = self.shared.view.load_full();
        let dead: Vec<u64> = view
            .tombstones
            .iter()
            .filter(|t| {
                self.persisted_tombstones.contains(&t.seq)
                    && view.flushed_gen > t.generation
                    && !view.files().any(|f| t.applies_to_file(f))
            })
            .map(|t| t.seq)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        self.catalog
            .commit(&CatalogCommit { remove_tombstones: dead.clone(), ..CatalogCommit::default() })?;
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            next.tombstones.retain(|t| !dead.contains(&t.seq));
            next
        });
        for seq in dead {
            self.persisted_tombstones.remove(&seq);
        }
        Ok(())
    }

    fn compact_all(&mut self) -> Result<usize> {
        let view = self.shared.view.load_full();
        let partitions: Vec<TimestampNs> = view.partitions.keys().copied().collect();
        let mut compacted = 0;
        for p in partitions {
            if self.compact_partition(p, CompactionScope::Fold { yield_to_ingest: false })? {
                compacted += 1;
            }
        }
        Ok(compacted)
    }

    /// Merges a run of a partition's files (see [`CompactionScope`]) into one sorted,
    /// deduplicated file per value encoding without deleted rows, streaming: a slice of each
    /// input at a time (`compaction_rows_max` rows in all), so memory stays bounded whatever
    /// the partition's size. The swap is one catalog transaction; the old files are deleted
    /// only after it. Returns whether anything was compacted (`false` also when a fold yielded
    /// to ingest: the partition is queued again).
    fn compact_partition(&mut self, partition_start: TimestampNs, scope: CompactionScope) -> Result<bool> {
        let started = Instant::now();
        let view = self.shared.view.load_full();
        let Some(all) = view.partitions.get(&partition_start) else { return Ok(false) };
        let rows_max = match scope {
            CompactionScope::Bounded => self.shared.config.compaction_rows_max,
            CompactionScope::Fold { .. } => usize::MAX,
        };
        let Some(files) = compaction_run(all, &view.tombstones, rows_max) else {
            return Ok(false);
        };
        let mut inputs = Vec::with_capacity(files.len());
        for f in &files {
            let path = self.shared.config.data_dir.join(&f.path);
            let bytes =
                self.shared.storage.read(&path).map_err(|e| Error::io("read partition file", &path, e))?;
            let tombstones: Vec<Arc<Tombstone>> =
                view.tombstones.iter().filter(|t| t.applies_to_file(f)).cloned().collect();
            inputs.push(CompactionFile { meta: f.clone(), bytes: bytes.into(), tombstones });
        }
        let slice_rows =
            (self.shared.config.compaction_rows_max / inputs.len().max(1)).max(COMPACTION_SLICE_ROWS_MIN);
        let yield_above = match scope {
            CompactionScope::Fold { yield_to_ingest: true } => {
                let config = &self.shared.config;
                Some(config.flush_buffer_bytes / 2 + config.buffer_bytes_max / 2)
            }
            _ => None,
        };
        let buffer_bytes = &self.shared.buffer_bytes;
        let yield_now = || yield_above.is_some_and(|limit| buffer_bytes.load(Ordering::Relaxed) >= limit);
        let options = &self.shared.config.partition_write;
        let threads = self.shared.config.flush_threads;
        let outputs = match merge_files(&inputs, partition_start, slice_rows, threads, options, &yield_now)? {
            Some(outputs) => outputs,
            None => {
                self.shared.metrics.compactions_yielded.fetch_add(1, Ordering::Relaxed);
                self.fold_due.insert(partition_start);
                return Ok(false);
            }
        };
        let generation = files.iter().map(|f| f.generation).max().unwrap_or(0);
        let seq_min = files.iter().map(|f| f.seq_min).min().unwrap_or(0);
        let seq_max = files.iter().map(|f| f.seq_max).max().unwrap_or(0);
        let mut written = Vec::new();
        for output in outputs {
            let file = FileToWrite { partition_start, summary: &output.summary, seq_min, seq_max };
            match self.write_file(file, &output.encoded.bytes, generation) {
                Ok(meta) => written.push(meta),
                Err(e) => {
                    self.remove_written(&written);
                    return Err(e);
                }
            }
        }
        // The output no longer holds what these tombstones hid; those still in force are noted
        // so they stop applying to it and can be collected.
        let mut applied: Vec<u64> = inputs
            .iter()
            .flat_map(|input| {
                input.meta.applied_tombstones.iter().copied().chain(input.tombstones.iter().map(|t| t.seq))
            })
            .filter(|seq| view.tombstones.iter().any(|t| t.seq == *seq))
            .collect();
        applied.sort_unstable();
        applied.dedup();
        for meta in &mut written {
            meta.applied_tombstones = applied.clone();
        }
        let change = CatalogCommit {
            add_files: written.clone(),
            remove_files: files.iter().map(|f| f.id).collect(),
            next_file_id: Some(self.next_file_id),
            ..CatalogCommit::default()
        };
        if let Err(e) = self.catalog.commit(&change) {
            self.remove_written(&written);
            return Err(e);
        }
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            let list = next.partitions.entry(partition_start).or_default();
            list.retain(|f| !files.iter().any(|old| old.id == f.id));
            list.extend(written.iter().cloned().map(Arc::new));
            if list.is_empty() {
                next.partitions.remove(&partition_start);
            }
            next
        });
        // Open snapshots may still read the old files: they go once the last one is dropped.
        let input_files = files.len();
        self.unlinked.extend(files);
        self.shared.metrics.compactions.fetch_add(1, Ordering::Relaxed);
        self.collect_tombstones()?;
        tracing::debug!(
            partition_start,
            ?scope,
            input_files,
            rows = written.iter().map(|f| f.rows).sum::<u64>(),
            ms = started.elapsed().as_millis(),
            "compaction done"
        );
        Ok(true)
    }

    /// Retention: removes partitions that ended at or before `cutoff` (catalog first).
    fn drop_before(&mut self, cutoff: TimestampNs) -> Result<usize> {
        let view = self.shared.view.load_full();
        let doomed: Vec<Arc<FileMeta>> =
            view.files().filter(|f| f.partition_end <= cutoff).cloned().collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        self.catalog.commit(&CatalogCommit {
            remove_files: doomed.iter().map(|f| f.id).collect(),
            ..CatalogCommit::default()
        })?;
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            next.partitions.retain(|_, files| {
                files.retain(|f| f.partition_end > cutoff);
                !files.is_empty()
            });
            next
        });
        let dropped = doomed.len();
        self.shared.metrics.partitions_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        self.unlinked.extend(doomed);
        self.collect_tombstones()?;
        Ok(dropped)
    }
}

/// Rows ready for a partition file, with the WAL sequence range they came from.
struct Merged {
    rows: PartitionRows,
    seq_min: u64,
    seq_max: u64,
}

impl Merged {
    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Sorted dictionary of the names used by `lists`, and per list a map to sorted ranks.
fn rank_dictionary<'a>(
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
struct MergeRows {
    buoy: Vec<u32>,
    metric: Vec<u32>,
    ts: Vec<i64>,
    precedence: Vec<u64>,
    source: Vec<u32>,
    row: Vec<u32>,
}

impl MergeRows {
    fn with_capacity(n: usize) -> Self {
        Self {
            buoy: Vec::with_capacity(n),
            metric: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            precedence: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            row: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, buoy: u32, metric: u32, ts: i64, precedence: u64, source: u32, row: u32) {
        self.buoy.push(buoy);
        self.metric.push(metric);
        self.ts.push(ts);
        self.precedence.push(precedence);
        self.source.push(source);
        self.row.push(row);
    }

    fn len(&self) -> usize {
        self.ts.len()
    }

    fn key(&self, i: usize) -> (u32, u32, i64) {
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
    fn sort_order(&self, base: i64, input: SortInput) -> Vec<u32> {
        let pairs_max = self.len().max(GROUPED_SORT_PAIRS_MIN);
        self.grouped_order(input, pairs_max)
            .or_else(|| self.packed_order(base, input))
            .unwrap_or_else(|| self.compared_order())
    }

    /// Counting sort by `(buoy, metric)`, then per pair by `(ts, position)` where its rows do
    /// not already ascend. `None` when there are more than `pairs_max` possible pairs.
    fn grouped_order(&self, input: SortInput, pairs_max: usize) -> Option<Vec<u32>> {
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
    fn packed_order(&self, base: i64, input: SortInput) -> Option<Vec<u32>> {
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
    fn compared_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.len()).map(|i| i as u32).collect();
        order.sort_unstable_by_key(|&i| (self.key(i as usize), i));
        order
    }
}

/// [`MergeRows::sort_order`] counts rows per `(buoy, metric)` pair when there are at most
/// `max(rows, GROUPED_SORT_PAIRS_MIN)` possible pairs: its table of counts is then no larger
/// than the rows themselves (or 256 KiB).
const GROUPED_SORT_PAIRS_MIN: usize = 1 << 16;

/// What [`MergeRows::sort_order`] is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortInput {
    /// Rows in no useful order (buffered batches).
    Unordered,
    /// A concatenation of sorted runs (slices of sorted files).
    SortedRuns,
}

/// Sorts `rows` and keeps, of each key, the row of highest precedence (the latest position among
/// equals), if `keep` accepts it (`keep` sees the dictionaries, the key and the precedence).
/// `value_of(source, row)` gives value and quality. `base` is the partition start.
fn last_write_wins(
    rows: &MergeRows,
    base: i64,
    input: SortInput,
    buoy_names: Vec<Arc<str>>,
    metric_names: Vec<Arc<str>>,
    mut keep: impl FnMut(&[Arc<str>], &[Arc<str>], (u32, u32, i64), u64) -> bool,
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
            if rows.precedence[next] >= rows.precedence[winner] {
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
fn merge_buffer_rows(
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
            c.seqs[r_us],
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
        |buoy_names, metric_names, (b, m, ts), seq| {
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

/// Least rows per input slice of a compaction, however many inputs share
/// `compaction_rows_max`.
const COMPACTION_SLICE_ROWS_MIN: usize = 4_096;

/// What a compaction takes of a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompactionScope {
    /// The longest run of consecutive generations within `compaction_rows_max` rows: the
    /// partition may still be written to, so one compaction rewrites a bounded amount.
    Bounded,
    /// Every generation into one: a partition that flushes no longer write to (a newer one has
    /// data), or an explicit [`crate::Engine::compact`]. With `yield_to_ingest` it gives up, and
    /// is queued again, once the buffer fills past the midpoint of `flush_buffer_bytes` and
    /// `buffer_bytes_max`, so a long fold never holds up the flush that frees ingest.
    Fold { yield_to_ingest: bool },
}

/// One input file of a compaction.
struct CompactionFile {
    meta: Arc<FileMeta>,
    bytes: Bytes,
    /// Tombstones that apply to it.
    tombstones: Vec<Arc<Tombstone>>,
}

/// One output file of a compaction.
struct CompactionOutput {
    encoded: EncodedPartition,
    summary: FileSummary,
}

/// A file's buoys (sorted), their time ranges (aligned), its metrics (sorted) and their value
/// stats (aligned).
type FileLists = (Vec<Arc<str>>, Vec<(TimestampNs, TimestampNs)>, Vec<Arc<str>>, Vec<MetricStats>);

/// What the catalog records of a file's rows, gathered as they are written.
struct FileSummary {
    buoy_names: Vec<Arc<str>>,
    metric_names: Vec<Arc<str>>,
    rows: u64,
    ts_min: TimestampNs,
    ts_max: TimestampNs,
    /// Per buoy key: smallest and largest timestamp (`(MAX, MIN)` for a key with no row).
    buoy_ranges: Vec<(TimestampNs, TimestampNs)>,
    /// Per metric key: its rows' value stats (no rows: the metric is absent).
    metric_stats: Vec<MetricStats>,
}

impl FileSummary {
    fn new(buoy_names: &[Arc<str>], metric_names: &[Arc<str>]) -> Self {
        Self {
            buoy_names: buoy_names.to_vec(),
            metric_names: metric_names.to_vec(),
            rows: 0,
            ts_min: i64::MAX,
            ts_max: i64::MIN,
            buoy_ranges: vec![(i64::MAX, i64::MIN); buoy_names.len()],
            metric_stats: vec![MetricStats::EMPTY; metric_names.len()],
        }
    }

    fn of(rows: &PartitionRows) -> Self {
        let mut summary = Self::new(&rows.buoy_names, &rows.metric_names);
        summary.add(rows);
        summary
    }

    /// Adds rows keyed into this summary's dictionaries.
    fn add(&mut self, rows: &PartitionRows) {
        self.rows += rows.len() as u64;
        let keys = rows.timestamps.iter().zip(&rows.buoy_keys).zip(&rows.metric_keys);
        for (((&t, &buoy), &metric), &value) in keys.zip(&rows.values) {
            self.ts_min = self.ts_min.min(t);
            self.ts_max = self.ts_max.max(t);
            if let Some(range) = self.buoy_ranges.get_mut(buoy as usize) {
                range.0 = range.0.min(t);
                range.1 = range.1.max(t);
            }
            if let Some(stats) = self.metric_stats.get_mut(metric as usize) {
                stats.add(value);
            }
        }
    }

    /// The buoys present (sorted) with their time ranges, and the metrics present (sorted).
    fn lists(&self) -> FileLists {
        let mut by_name: Vec<(Arc<str>, (TimestampNs, TimestampNs))> = self
            .buoy_names
            .iter()
            .zip(&self.buoy_ranges)
            .filter(|(_, range)| range.0 <= range.1)
            .map(|(name, &range)| (name.clone(), range))
            .collect();
        by_name.sort_by(|a, b| a.0.cmp(&b.0));
        let (buoys, ranges) = by_name.into_iter().unzip();
        let mut metrics: Vec<(Arc<str>, MetricStats)> = self
            .metric_names
            .iter()
            .zip(&self.metric_stats)
            .filter(|(_, stats)| stats.rows > 0)
            .map(|(name, &stats)| (name.clone(), stats))
            .collect();
        metrics.sort_by(|a, b| a.0.cmp(&b.0));
        let (metrics, stats) = metrics.into_iter().unzip();
        (buoys, ranges, metrics, stats)
    }
}

/// A compaction input as the merge reads it: the current slice, and the ranks of its
/// dictionary keys in the merge's sorted dictionaries.
struct MergeCursor<'a> {
    file: &'a CompactionFile,
    reader: PartitionReader,
    slice: PartitionRows,
    buoy_rank: Vec<u32>,
    metric_rank: Vec<u32>,
    /// Rows of `slice` already merged.
    pos: usize,
    /// The file has no slice left.
    done: bool,
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
fn extend_ranks(
    ranks: &mut Vec<u32>,
    names: &[Arc<str>],
    sorted: &[Arc<str>],
    what: &str,
    path: &str,
) -> Result<()> {
    for name in names.iter().skip(ranks.len()) {
        let rank = sorted.binary_search(name).map_err(|_| {
            Error::Parquet(format!(
                "corrupt partition file {path}: {what} {name:?} is not in its catalog entry"
            ))
        })?;
        ranks.push(rank as u32);
    }
    Ok(())
}

/// How a merge pass ended.
enum MergePass {
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
fn merge_files(
    files: &[CompactionFile],
    base: i64,
    slice_rows: usize,
    threads: usize,
    options: &PartitionWriteOptions,
    yield_now: &dyn Fn() -> bool,
) -> Result<Option<Vec<CompactionOutput>>> {
    let (buoys, _) = rank_dictionary(files.iter().map(|f| f.meta.buoys.as_slice()));
    let (metrics, _) = rank_dictionary(files.iter().map(|f| f.meta.metrics.as_slice()));
    let merge = Merge { files, base, slice_rows, threads, options, yield_now, buoys, metrics };
    merge.run()
}

/// The settings of one [`merge_files`], shared by its passes.
struct Merge<'a> {
    files: &'a [CompactionFile],
    base: i64,
    slice_rows: usize,
    threads: usize,
    options: &'a PartitionWriteOptions,
    yield_now: &'a dyn Fn() -> bool,
    /// Sorted union of the inputs' buoys and metrics: the output dictionaries.
    buoys: Vec<Arc<str>>,
    metrics: Vec<Arc<str>>,
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
                for r in cursor.pos..end {
                    let (b, m, ts) = cursor.key(r);
                    if !tombstones.is_empty()
                        && tombstones.iter().any(|t| t.covers(&buoys[b as usize], &metrics[m as usize], ts))
                    {
                        continue;
                    }
                    keyed.push(b, m, ts, cursor.file.meta.generation, ci as u32, r as u32);
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
            let written = parallel_map(jobs, self.threads, |(stage, writer, encoding)| -> Result<()> {
                let (writer, summary) = match writer {
                    Some(w) => w,
                    None => writer.insert((
                        PartitionWriter::new(buoys, metrics, encoding, &stage.values, self.options)?,
                        FileSummary::new(buoys, metrics),
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

/// Chooses what to compact in a partition: the longest run of consecutive flush generations
/// (at least two) holding at most `rows_max` rows, so compaction memory stays bounded; or, if
/// no such run exists, a single generation that a tombstone still applies to. Any run of
/// consecutive generations may be merged: its output takes the run's highest generation, so it
/// still loses to every newer file and beats every older one.
fn compaction_run(
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
fn generations(files: &[Arc<FileMeta>]) -> usize {
    let mut gens: Vec<u64> = files.iter().map(|f| f.generation).collect();
    gens.sort_unstable();
    gens.dedup();
    gens.len()
}

/// One file to write: sorted rows of one partition, all fitting one value encoding.
struct FileJob {
    partition_start: TimestampNs,
    rows: PartitionRows,
    encoding: ValueEncoding,
    seq_min: u64,
    seq_max: u64,
}

/// A file's catalog facts besides its bytes, for [`Flusher::write_file`].
struct FileToWrite<'a> {
    partition_start: TimestampNs,
    summary: &'a FileSummary,
    seq_min: u64,
    seq_max: u64,
}

/// Splits a partition's sorted rows into one file per value encoding: a Parquet DECIMAL column
/// has one scale, so metrics measured at different precisions (salinity at 0.001, temperature
/// at 0.01) are stored apart, each at its own scale (0.64 instead of 0.80 bytes per reading on
/// the marine workload, see `engine/PARTITION.md`). A single encoding keeps the rows as they are.
fn split_by_encoding(
    partition_start: TimestampNs,
    rows: PartitionRows,
    seq_min: u64,
    seq_max: u64,
    jobs: &mut Vec<FileJob>,
) {
    let groups = value_encoding_groups(&rows);
    if let [(encoding, _)] = groups.as_slice() {
        jobs.push(FileJob { partition_start, rows, encoding: *encoding, seq_min, seq_max });
        return;
    }
    for (encoding, keep) in groups {
        let rows = subset_by_metric(&rows, &keep);
        jobs.push(FileJob { partition_start, rows, encoding, seq_min, seq_max });
    }
}

/// Raises the calling thread's nice value to `nice` (never lowers it: that needs privilege).
/// On Linux the nice value is the thread's own, and threads it starts inherit it; elsewhere
/// it is the process's, so nothing is done. A refusal is logged, not an error: the flush
/// still runs, at the thread's current priority.
pub(crate) fn lower_thread_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // `None` is the calling thread on Linux.
        let set = getpriority_process(None)
            .and_then(|current| if current < nice { setpriority_process(None, nice) } else { Ok(()) });
        if let Err(e) = set {
            tracing::warn!(nice, %e, "flusher priority not lowered; flushes compete with acks");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// `f` over `items` on up to `threads` scoped threads (the caller's thread is one of them);
/// results in item order. Items are taken one at a time, so uneven items balance.
fn parallel_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let count = items.len();
    let (work_tx, work_rx) = crossbeam_channel::bounded(count);
    for item in items.into_iter().enumerate() {
        // Cannot fail: the channel holds every item and its receiver lives below.
        let _ = work_tx.send(item);
    }
    drop(work_tx);
    let (done_tx, done_rx) = crossbeam_channel::bounded(count);
    let work = || {
        while let Ok((i, item)) = work_rx.recv() {
            let _ = done_tx.send((i, f(item)));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A thread the OS refuses is no error: the caller's thread takes its share.
            let _ =
                std::thread::Builder::new().name("bluewave-flush-worker".into()).spawn_scoped(scope, work);
        }
        work();
    });
    drop(done_tx);
    let mut results: Vec<(usize, R)> = done_rx.into_iter().collect();
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Groups the metrics of sorted rows by the value encoding their values choose: the encoding and
/// one mask over the metric dictionary per group. A single group means the rows are written as
/// they are.
fn value_encoding_groups(rows: &PartitionRows) -> Vec<(ValueEncoding, Vec<bool>)> {
    let metric_count = rows.metric_names.len();
    let mut values_by_metric: Vec<Vec<f64>> = vec![Vec::new(); metric_count];
    for (i, &m) in rows.metric_keys.iter().enumerate() {
        if let Some(v) = values_by_metric.get_mut(m as usize) {
            v.push(rows.values[i]);
        }
    }
    let encodings: Vec<Option<ValueEncoding>> =
        values_by_metric.iter().map(|v| (!v.is_empty()).then(|| ValueEncoding::choose(v))).collect();
    let mut distinct: Vec<ValueEncoding> = Vec::new();
    for e in encodings.iter().flatten() {
        if !distinct.contains(e) {
            distinct.push(*e);
        }
    }
    distinct
        .into_iter()
        .map(|encoding| (encoding, encodings.iter().map(|e| *e == Some(encoding)).collect()))
        .collect()
}

/// The rows whose metric is kept, with dictionaries reduced to the names still used.
fn subset_by_metric(rows: &PartitionRows, keep_metric: &[bool]) -> PartitionRows {
    let mut buoy_used = vec![false; rows.buoy_names.len()];
    let mut picked = Vec::new();
    for (i, &m) in rows.metric_keys.iter().enumerate() {
        if keep_metric.get(m as usize).copied().unwrap_or(false) {
            picked.push(i);
            buoy_used[rows.buoy_keys[i] as usize] = true;
        }
    }
    let remap = |used: &[bool], names: &[Arc<str>]| {
        let mut map = vec![u32::MAX; used.len()];
        let mut out = Vec::new();
        for (k, &u) in used.iter().enumerate() {
            if u {
                map[k] = out.len() as u32;
                out.push(names[k].clone());
            }
        }
        (map, out)
    };
    let (buoy_map, buoy_names) = remap(&buoy_used, &rows.buoy_names);
    let (metric_map, metric_names) = remap(keep_metric, &rows.metric_names);
    PartitionRows {
        buoy_names,
        metric_names,
        buoy_keys: picked.iter().map(|&i| buoy_map[rows.buoy_keys[i] as usize]).collect(),
        metric_keys: picked.iter().map(|&i| metric_map[rows.metric_keys[i] as usize]).collect(),
        timestamps: picked.iter().map(|&i| rows.timestamps[i]).collect(),
        values: picked.iter().map(|&i| rows.values[i]).collect(),
        quality: picked.iter().map(|&i| rows.quality[i]).collect(),
    }
}

fn now_ns() -> TimestampNs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `parquet/readings/date=YYYY-MM-DD/hour=HH` for a partition start.
pub(crate) fn partition_dir(partition_start: TimestampNs) -> String {
    let secs = partition_start.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let hour = secs.rem_euclid(86_400) / 3_600;
    let (y, m, d) = civil_from_days(days);
    format!("parquet/{READINGS_TABLE}/date={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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
                keyed.push(b, m, ts, p, 0, i as u32);
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

            let mut expected: BTreeMap<(u32, u32, i64), (u64, u32)> = BTreeMap::new();
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

    #[cfg(target_os = "linux")]
    #[test]
    fn the_flusher_priority_is_lowered_never_raised_and_inherited() {
        use rustix::process::getpriority_process;
        let nice_of = |nice: i32| {
            std::thread::spawn(move || {
                lower_thread_priority(nice);
                let own = getpriority_process(None).unwrap_or_else(|e| panic!("getpriority: {e}"));
                let inherited = std::thread::spawn(|| getpriority_process(None))
                    .join()
                    .unwrap_or_else(|_| panic!("child thread"))
                    .unwrap_or_else(|e| panic!("getpriority: {e}"));
                (own, inherited)
            })
            .join()
            .unwrap_or_else(|_| panic!("thread"))
        };
        let base = getpriority_process(None).unwrap_or_else(|e| panic!("getpriority: {e}"));
        let target = (base + 3).min(19);
        assert_eq!(nice_of(target), (target, target));
        // Never below the thread's own: 0 keeps the inherited value.
        assert_eq!(nice_of(0), (base, base));
        // The test thread itself is untouched.
        assert_eq!(getpriority_process(None).ok(), Some(base));
    }

    #[test]
    fn partition_dirs_use_civil_dates() {
        assert_eq!(partition_dir(0), "parquet/readings/date=1970-01-01/hour=00");
        // 2026-06-01T13:00:00Z
        assert_eq!(partition_dir(1_780_318_800 * 1_000_000_000), "parquet/readings/date=2026-06-01/hour=13");
        assert_eq!(partition_dir(-3_600 * 1_000_000_000), "parquet/readings/date=1969-12-31/hour=23");
    }

    /// A compaction input of generation `generation` holding `rows` (sorted, unique keys).
    fn compaction_file(
        generation: u64,
        rows: &PartitionRows,
        tombstones: Vec<Arc<Tombstone>>,
    ) -> CompactionFile {
        let summary = FileSummary::of(rows);
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
        };
        CompactionFile { meta: Arc::new(meta), bytes: Bytes::from(bytes), tombstones }
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
            let outputs = merge_files(&inputs, 0, slice_rows, 2, &PartitionWriteOptions::default(), &|| false)
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
        let outputs = merge_files(&inputs, 0, 1, 2, &PartitionWriteOptions::default(), &|| false)
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
        let outcome = merge_files(&inputs, 0, 10, 1, &PartitionWriteOptions::default(), &yield_now)
            .unwrap_or_else(|e| panic!("merge: {e}"));
        assert!(outcome.is_none(), "the merge did not yield");
        assert_eq!(calls.get(), 4, "yield is asked once per round");
    }
}
