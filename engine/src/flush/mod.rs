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
//!
//! # Layout
//!
//! - this file: the flusher loop and the flush itself (seal, write, commit, trim).
//! - `sort`: sort of buffered rows by key and last-write-wins ([`crate::precedence`]).
//! - `merge`: the streaming k-way merge of sorted partition files that compaction runs.
//! - `policy`: which files a compaction takes ([`policy::CompactionScope`]).
//! - `compact`: compaction, folds and retention as the flusher runs them.
//! - `layout`: partition directories, file summaries for the catalog, one file per value
//!   encoding.

mod compact;
mod layout;
mod merge;
mod policy;
mod sort;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::buffer::Chunk;
use crate::catalog::{Catalog, CatalogCommit, FileMeta, Tombstone};
use crate::dedup::DedupWindow;
use crate::error::{Error, Result};
use crate::partition::{self, PartitionWriteOptions};
use crate::pipeline::{LaneMsg, SealReply};
use crate::read::ReadView;
use crate::recovery::Recovery;
use crate::state::Shared;
use crate::storage::create_dir_durable;
use crate::types::TimestampNs;
use crate::wal;

pub use layout::READINGS_TABLE;
pub(crate) use layout::partition_dir;
use layout::{FileJob, FileSummary, FileToWrite, split_by_encoding};
use policy::CompactionScope;
use sort::merge_buffer_rows;

/// How often the flusher checks buffer age, size and retention without being woken.
const FLUSHER_TICK: Duration = Duration::from_millis(100);
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

    /// True while the buffer holds over a quarter of `flush_buffer_bytes`: ingest is running
    /// fast enough that a compaction (seconds for a large run) would let the buffer reach
    /// `buffer_bytes_max` before the next flush, stalling ingest.
    fn ingest_pressure(&self) -> bool {
        self.shared.buffer_bytes.load(Ordering::Relaxed) > self.shared.config.flush_buffer_bytes / 4
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

fn now_ns() -> TimestampNs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
