//! The flusher thread: seals the buffer, writes sorted, deduplicated Parquet partitions,
//! commits them to the catalog, trims the WAL. Compaction and retention run on the compactor's
//! own thread (`compactor`), so a flush never waits behind a merge.
//!
//! Order of a flush (each step durable before the next):
//! seal every lane (generation `g`) → per touched partition: sort by (buoy, metric, ts), last
//! write wins, tombstones applied (the file's minute rollup built from the same sorted rows,
//! `crate::rollup`) → write the rollup, then the readings, each as `<id>.parquet.tmp` → fsync
//! → rename → fsync dir → one catalog transaction (files, WAL watermarks, dedup windows, tombstones, generation) →
//! publish the new read view → drop the sealed chunks → delete WAL segments below the
//! watermarks. A crash anywhere before the catalog commit leaves only temp or orphan files,
//! which the next open removes; the WAL still holds every row.
//!
//! # Layout
//!
//! - this file: the flusher loop and the flush itself (seal, write, commit, trim).
//! - `sort`: sort of buffered rows by key and last-write-wins ([`crate::precedence`]).
//! - `merge`: the streaming k-way merge of sorted partition files that compaction runs.
//! - `policy`: which files a compaction takes ([`policy::CompactionScope`]): size-tiered runs
//!   of a partition being written, folds of closed ones.
//! - `compactor`: the compactor thread: compaction, folds and retention, beside the flusher.
//! - `pieces`: how a flush cuts a partition's rows into pieces that fit the memory budget.
//! - `layout`: partition directories, file summaries for the catalog, one file per value
//!   encoding.

mod compactor;
mod layout;
mod merge;
mod pieces;
mod policy;
mod sort;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::budget::MemoryConsumer;
use crate::buffer::Chunk;
use crate::catalog::{Catalog, CatalogCommit, FileMeta, RollupRef, Tombstone};
use crate::dedup::DedupWindow;
use crate::error::{Error, Result};
use crate::partition::{self, PartitionWriteOptions};
use crate::pipeline::{LaneMsg, SealReply};
use crate::read::ReadView;
use crate::recovery::Recovery;
use crate::rollup::{EncodedRollup, RollupMemory};
use crate::state::Shared;
use crate::storage::create_dir_durable;
use crate::types::TimestampNs;
use crate::wal;

pub(crate) use compactor::{COMPACTOR_QUEUE_DEPTH, Compactor, CompactorMsg};
pub(crate) use layout::partition_dir;
use layout::rollup_dir;
use layout::{FileSummary, FileToWrite, subset_by_metric, value_encoding_groups};
pub use layout::{READINGS_TABLE, utc_text};
use pieces::{FLUSH_BYTES_PER_ROW, FLUSH_PIECE_OVERHEAD_BYTES, Piece, RankedChunks};
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
}

pub(crate) enum FlusherMsg {
    Wake,
    Flush { recovery: Option<Recovery>, reply: Sender<Result<FlushReport>> },
    Shutdown,
}

pub(crate) struct Flusher {
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
    lane_txs: Vec<Sender<LaneMsg>>,
    rx: Receiver<FlusherMsg>,
    /// Wakes the compactor after a commit that gave a partition a new generation.
    compactor_tx: Sender<CompactorMsg>,
    next_gen: u64,
    /// Dedup windows handed over by seals whose flush has not committed yet.
    pending_dedup: BTreeMap<String, DedupWindow>,
    /// Tombstones already in the catalog.
    persisted_tombstones: std::collections::HashSet<u64>,
}

impl Flusher {
    pub(crate) fn new(
        shared: Arc<Shared>,
        catalog: Arc<Catalog>,
        lane_txs: Vec<Sender<LaneMsg>>,
        rx: Receiver<FlusherMsg>,
        compactor_tx: Sender<CompactorMsg>,
        next_gen: u64,
        persisted_tombstones: std::collections::HashSet<u64>,
    ) -> Self {
        Self {
            shared,
            catalog,
            lane_txs,
            rx,
            compactor_tx,
            next_gen,
            pending_dedup: BTreeMap::new(),
            persisted_tombstones,
        }
    }

    pub(crate) fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let msg = match self.rx.recv_timeout(FLUSHER_TICK) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match msg {
                Some(FlusherMsg::Shutdown) => {
                    reap_unlinked(&self.shared);
                    return;
                }
                Some(FlusherMsg::Flush { recovery, reply }) => {
                    let result = self.flush(recovery);
                    // Files nobody reads any more go before the caller hears back.
                    reap_unlinked(&self.shared);
                    let _ = reply.send(result);
                }
                Some(FlusherMsg::Wake) | None => {
                    if self.flush_due() {
                        let result = self.flush(None);
                        reap_unlinked(&self.shared);
                        match result {
                            Ok(_) => failures = 0,
                            Err(e) => {
                                failures += 1;
                                tracing::error!(error = %e, failures, "background flush failed; will retry");
                                // Back off so a full disk is not hammered.
                                std::thread::sleep(FLUSHER_TICK * failures.min(50));
                            }
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
        // Tombstones the compactor collected are gone from the view and from the catalog.
        self.persisted_tombstones.retain(|seq| view.tombstones.iter().any(|t| t.seq == *seq));
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
            remove_written(&self.shared, &written);
            return Err(e);
        }
        let change = CatalogCommit {
            add_files: written.clone(),
            watermarks: watermarks.clone(),
            dedup: self.pending_dedup.iter().map(|(b, w)| (b.clone(), w.clone())).collect(),
            put_tombstones: new_tombstones.clone(),
            flushed_gen: Some(generation),
            next_file_id: Some(self.shared.next_file_id.load(Ordering::Relaxed)),
            ..CatalogCommit::default()
        };
        if let Err(e) = self.catalog.commit(&change) {
            remove_written(&self.shared, &written);
            return Err(e);
        }
        self.pending_dedup.clear();
        self.persisted_tombstones.extend(new_tombstones.iter().map(|t| t.seq));
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            for f in &written {
                next.partitions.entry(f.partition_start).or_default().push(Arc::new(f.clone()));
            }
            next.flushed_gen = generation;
            next.recompute_debt();
            next
        });
        if !written.is_empty() {
            // A full queue already holds a wake-up.
            let _ = self.compactor_tx.try_send(CompactorMsg::Wake);
        }
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
        self.shared.room_freed.notify_waiters();

        // The WAL below the watermarks is now redundant.
        if let Some(r) = &recovery {
            for segment in &r.segments {
                remove_quietly(&self.shared, segment);
            }
        }
        self.trim_wal(&watermarks);
        collect_tombstones(&self.shared, &self.catalog)?;
        tracing::debug!(
            generation,
            rows = report.rows,
            files = report.files,
            total_ms = started.elapsed().as_millis(),
            "flush done"
        );
        Ok(report)
    }

    fn write_partitions(
        &mut self,
        chunks: &[Arc<Chunk>],
        view: &ReadView,
        generation: u64,
        written: &mut Vec<FileMeta>,
    ) -> Result<()> {
        let started = Instant::now();
        let config = &self.shared.config;
        let threads = config.flush_threads;
        // Pieces of at most the flush reserve each: one always fits the budget (no other
        // consumer can take the reserve), and the rest of the budget usually lets
        // `flush_threads` of them run at once.
        let ranked = RankedChunks::new(chunks);
        let piece_rows = (config.flush_reserve_bytes().saturating_sub(FLUSH_PIECE_OVERHEAD_BYTES)
            / FLUSH_BYTES_PER_ROW) as u64;
        let pieces = ranked.plan(config.partition_duration, piece_rows);
        // One piece (the usual flush) encodes its value-encoding groups in parallel; several
        // pieces run in parallel and encode their groups one after the other.
        let group_threads = if pieces.len() == 1 { threads } else { 1 };
        let count = pieces.len();
        let written_options = &config.partition_write;
        let options = &PartitionWriteOptions {
            zstd_level: written_options.flush_zstd_level,
            ..written_options.clone()
        };
        let shared = &self.shared;
        let results = parallel_map(pieces, threads, |piece| {
            let mut metas = Vec::new();
            let outcome = write_piece(
                shared,
                &ranked,
                chunks,
                &piece,
                view,
                generation,
                group_threads,
                options,
                &mut metas,
            );
            (metas, outcome)
        });
        let mut first_error = None;
        for (metas, outcome) in results {
            written.extend(metas);
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        tracing::debug!(
            generation,
            pieces = count,
            ms = started.elapsed().as_millis(),
            "flush wrote its files"
        );
        Ok(())
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
                    remove_quietly(&self.shared, segment);
                }
            }
        }
    }
}

/// Writes one piece of a flush: reserves its working set in the memory budget (waiting for
/// it: a piece never needs more than the flush reserve), gathers and sorts its rows with
/// last-write-wins and tombstones, then encodes and writes one file per value encoding
/// (`group_threads` at once), pushing each file's metadata (not yet committed) to `written`.
#[allow(clippy::too_many_arguments)]
fn write_piece(
    shared: &Shared,
    ranked: &RankedChunks<'_>,
    chunks: &[Arc<Chunk>],
    piece: &Piece,
    view: &ReadView,
    generation: u64,
    group_threads: usize,
    options: &PartitionWriteOptions,
    written: &mut Vec<FileMeta>,
) -> Result<()> {
    let need = piece.memory_bytes();
    let memory = &shared.memory;
    // Other consumers stay below the flush reserve, so a piece gets its memory once the other
    // pieces of this flush are done. The one exception is a WAL replayed at open above the
    // budget (`reserve_forced`): only a flush frees it, so the flush then goes over the limit
    // rather than wait for ever (logged; the high-water mark shows it).
    let over_budget_replay = || {
        memory.used_by(MemoryConsumer::Flush) == 0 && memory.used() > memory.ceiling(MemoryConsumer::Ingest)
    };
    let _memory = match memory.reserve_waiting(MemoryConsumer::Flush, need, &over_budget_replay) {
        Some(reservation) => reservation,
        None => {
            tracing::warn!(
                need,
                used = memory.used(),
                "flush piece over the memory budget (a WAL replayed above it, or one key rewritten more often than a piece holds)"
            );
            memory.reserve_forced(MemoryConsumer::Flush, need)
        }
    };
    let rollup_memory = rollup_memory(shared, MemoryConsumer::Flush);
    let rows = ranked.rows_of(piece);
    let merged = merge_buffer_rows(chunks, &rows, piece.partition_start, &view.tombstones);
    drop(rows);
    if merged.is_empty() {
        return Ok(());
    }
    let (seq_min, seq_max) = (merged.seq_min, merged.seq_max);
    let groups = value_encoding_groups(&merged.rows);
    let single = groups.len() == 1;
    let encoded = parallel_map(groups, group_threads, |(encoding, keep)| {
        let subset;
        let rows = if single {
            &merged.rows
        } else {
            subset = subset_by_metric(&merged.rows, &keep);
            &subset
        };
        let mut summary = FileSummary::of(rows, rollup_memory.as_ref());
        let encoded = partition::encode_partition_as(rows, encoding, options)?;
        let rollup = finish_rollup(shared, &mut summary)?;
        Ok::<_, Error>((summary, encoded, rollup))
    });
    drop(merged);
    for result in encoded {
        let (summary, encoded, rollup) = result?;
        let file = FileToWrite {
            partition_start: piece.partition_start,
            summary: &summary,
            seq_min,
            seq_max,
            rollup: rollup.as_ref(),
        };
        written.push(write_file(shared, file, &encoded.bytes, generation)?);
    }
    Ok(())
}

/// Who pays for the rollups a flush or compaction builds (`None`: rollups are off).
fn rollup_memory(shared: &Shared, consumer: MemoryConsumer) -> Option<RollupMemory> {
    shared.config.rollups.then(|| RollupMemory { budget: shared.memory.clone(), consumer })
}

/// Encodes the rollup `summary` built, if any; counts a rollup the budget refused.
fn finish_rollup(shared: &Shared, summary: &mut FileSummary) -> Result<Option<EncodedRollup>> {
    let Some(builder) = summary.rollup.take() else { return Ok(None) };
    let rollup = builder.finish()?;
    if rollup.is_none() {
        shared.metrics.rollups_skipped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("rollup of a file skipped: the memory budget refused it");
    }
    Ok(rollup)
}

/// Writes one encoded partition file durably under its final name (temp file, fsync, rename,
/// directory fsync) and returns its metadata, not yet committed. Takes its id from
/// `shared.next_file_id`; the flusher and the compactor both write through it.
///
/// A file with a rollup has it written first, the same way, under
/// `parquet/rollups_1m/<partition>/<id>.parquet` (the readings file's id): both are durable
/// before the catalog commit that makes them visible together, and a crash before it leaves
/// orphans the next open removes. When the readings file cannot be written the rollup just
/// written is removed again (the caller removes the files of the metadata it got).
fn write_file(shared: &Shared, file: FileToWrite<'_>, bytes: &[u8], generation: u64) -> Result<FileMeta> {
    let FileToWrite { partition_start, summary, seq_min, seq_max, rollup } = file;
    let id = shared.next_file_id.fetch_add(1, Ordering::Relaxed);
    let rollup = match rollup {
        Some(r) => {
            let rel = format!("{}/{id:016x}.parquet", rollup_dir(partition_start));
            write_durably(shared, &rel, &r.bytes, "rollup")?;
            Some(RollupRef { path: rel, bytes: r.bytes.len() as u64, buckets: r.buckets })
        }
        None => None,
    };
    let rel = format!("{}/{id:016x}.parquet", partition_dir(partition_start));
    if let Err(e) = write_durably(shared, &rel, bytes, "partition") {
        if let Some(r) = &rollup {
            remove_quietly(shared, &shared.config.data_dir.join(&r.path));
        }
        return Err(e);
    }
    if rollup.is_some() {
        shared.metrics.rollups_written.fetch_add(1, Ordering::Relaxed);
    }
    let (buoys, buoy_ranges, metrics, metric_stats) = summary.lists();
    let series_stats = summary.series.finish(&summary.buoy_names, &summary.metric_names, &buoys, &metrics);
    Ok(FileMeta {
        id,
        partition_start,
        partition_end: partition_start + shared.config.partition_duration.as_nanos(),
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
        series_stats,
        rollup,
    })
}

/// Writes `bytes` as the file `rel` (relative to the data dir) durably: temp file, fsync,
/// rename, directory fsync (its directory created durably first). `what` names the file kind
/// in errors (`partition`, `rollup`).
fn write_durably(shared: &Shared, rel: &str, bytes: &[u8], what: &'static str) -> Result<()> {
    let storage = &shared.storage;
    let path = shared.config.data_dir.join(rel);
    let Some(dir) = path.parent().map(std::path::Path::to_path_buf) else {
        return Err(Error::Config(format!("{what} file path {rel} has no directory")));
    };
    let tmp = path.with_extension("parquet.tmp");
    let op =
        |partition: &'static str, rollup: &'static str| if what == "rollup" { rollup } else { partition };
    create_dir_durable(storage.as_ref(), &dir)
        .map_err(|e| Error::io(op("create partition directory", "create rollup directory"), &dir, e))?;
    let mut out = storage
        .create(&tmp)
        .map_err(|e| Error::io(op("create partition file", "create rollup file"), &tmp, e))?;
    out.write_all(bytes).map_err(|e| Error::io(op("write partition file", "write rollup file"), &tmp, e))?;
    out.sync_data().map_err(|e| Error::io(op("fsync partition file", "fsync rollup file"), &tmp, e))?;
    drop(out);
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io(op("rename partition file", "rename rollup file"), &path, e))?;
    storage
        .sync_dir(&dir)
        .map_err(|e| Error::io(op("fsync partition directory", "fsync rollup directory"), &dir, e))?;
    Ok(())
}

/// Hands files just removed from the catalog to [`reap_unlinked`].
fn unlink(shared: &Shared, files: Vec<Arc<FileMeta>>) {
    match shared.unlinked.lock() {
        Ok(mut list) => list.extend(files),
        Err(poisoned) => poisoned.into_inner().extend(files),
    }
}

/// Deletes the unlinked files no snapshot references any more (the list holds the last
/// reference), and their partition directory once empty.
fn reap_unlinked(shared: &Shared) {
    let free: Vec<Arc<FileMeta>> = {
        let mut list = match shared.unlinked.lock() {
            Ok(list) => list,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (free, held) = std::mem::take(&mut *list).into_iter().partition(|f| Arc::strong_count(f) == 1);
        *list = held;
        free
    };
    for f in free {
        // The readings file first: a crash between the two leaves an orphan rollup, which the
        // next open removes.
        for rel in std::iter::once(&f.path).chain(f.rollup.as_ref().map(|r| &r.path)) {
            let path = shared.config.data_dir.join(rel);
            remove_quietly(shared, &path);
            // Drops the partition directory once it is empty; fails harmlessly otherwise.
            if let Some(dir) = path.parent() {
                let _ = shared.storage.remove_dir(dir);
            }
        }
    }
}

/// Removes files written but not committed (a failed flush or compaction), rollups included.
fn remove_written(shared: &Shared, written: &[FileMeta]) {
    for f in written {
        remove_quietly(shared, &shared.config.data_dir.join(&f.path));
        if let Some(r) = &f.rollup {
            remove_quietly(shared, &shared.config.data_dir.join(&r.path));
        }
    }
}

fn remove_quietly(shared: &Shared, path: &std::path::Path) {
    if let Err(e) = shared.storage.remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove file");
    }
}

/// Drops tombstones that no longer hide anything: every file they applied to was rewritten and
/// the buffer rows they hid were flushed. A committed flush of a later generation than the
/// tombstone's wrote it to the catalog (every flush persists the tombstones in the view it seals
/// against), so the view's `flushed_gen` says it is persisted. Run by the flusher after a flush
/// and by the compactor after a compaction; either may find a tombstone the other just removed,
/// which is harmless (removing an absent one is a no-op).
fn collect_tombstones(shared: &Shared, catalog: &Catalog) -> Result<()> {
    let view = shared.view.load_full();
    let dead: Vec<u64> = view
        .tombstones
        .iter()
        .filter(|t| view.flushed_gen > t.generation && !view.files().any(|f| t.applies_to_file(f)))
        .map(|t| t.seq)
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    catalog.commit(&CatalogCommit { remove_tombstones: dead.clone(), ..CatalogCommit::default() })?;
    shared.view.rcu(|v| {
        let mut next = ReadView::clone(v);
        next.tombstones.retain(|t| !dead.contains(&t.seq));
        next
    });
    Ok(())
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
