//! The compactor thread: compaction, folds and retention, beside the flusher (never on its
//! thread), at its own lower priority (`compaction_nice`), so flushes take the cores first and
//! compaction uses what ingest and flushes leave.
//!
//! Every pass looks at the current read view and does the most urgent job, one at a time:
//!
//! - a partition being written (the newest) gets size-tiered compactions ([`tiered_run`]): a run
//!   of `compaction_files_min` flush generations of one size merged into one of the next size;
//! - a closed partition (a newer one has files) is folded whole into one generation;
//!
//! the partition with the most generations first, since that is the debt ingest is measured
//! against (`compaction_debt_*_generations`). Only this thread removes files from the catalog
//! (compaction, folds, retention), so a fold never races a retention pass; the flusher only adds
//! files, which a compaction leaves in place (a merged run takes its highest generation and still
//! loses to every newer file).
//!
//! Known cost, not yet measured: a closed partition is folded whole each time a late flush
//! gives it another generation, so rows arriving late near an hour boundary rewrite the whole
//! closed hour each time. To measure: a release run of the real-time shape
//! (`bluewave-loadtest ingest --spawn --sample-interval-ms 4 --rate 2000000`) with debug logs,
//! counting `compaction done` lines of scope `Fold` per closed partition and their rows against
//! the late rows. If it matters, merge only the late generations of a closed partition (a
//! tiered run that leaves its folded generation alone) while they hold under `1 /
//! compaction_files_min` of its rows, and count a closed partition of two generations as
//! folded in the debt.
//!
//! Order of a compaction (each step durable before the next): read the inputs, stream-merge
//! them (`merge`), write `<id>.parquet.tmp` → fsync → rename → fsync dir, one catalog
//! transaction swapping inputs for outputs, publish the view, delete the inputs once no snapshot
//! holds them. A crash before the commit leaves orphans, which the next open removes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::budget::{MemoryConsumer, MemoryReservation};
use crate::catalog::{Catalog, CatalogCommit, FileMeta, Tombstone};
use crate::error::{Error, Result};
use crate::read::ReadView;
use crate::retention::RetentionRecord;
use crate::state::Shared;
use crate::types::TimestampNs;

use super::layout::FileToWrite;
use super::merge::{CompactionFile, merge_files};
use super::policy::{
    COMPACTION_BYTES_PER_ROW, COMPACTION_SLICE_ROWS_MIN, CompactionScope, compaction_run, generations,
    tiered_run,
};
use super::{
    collect_tombstones, finish_rollup, now_ns, reap_unlinked, remove_written, rollup_memory, unlink,
    write_file,
};

/// How often the compactor looks for work (and applies retention) without being woken.
const COMPACTOR_TICK: Duration = Duration::from_millis(100);

/// How often the compactor applies the configured retention on its own.
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);

/// The compactor's queue carries control messages only; a wake-up finds it non-empty.
pub(crate) const COMPACTOR_QUEUE_DEPTH: usize = 64;

pub(crate) enum CompactorMsg {
    /// A flush committed new files: look for work now.
    Wake,
    /// Fold every partition (an explicit `Engine::compact`); replies with partitions compacted.
    CompactAll { reply: Sender<Result<usize>> },
    /// Apply the configured retention now; replies with what it removed (`None`: nothing).
    ApplyRetention { reply: Sender<Result<Option<RetentionRecord>>> },
    /// Drop partitions that ended before `cutoff`; replies with files dropped.
    DropBefore { cutoff: TimestampNs, reply: Sender<Result<usize>> },
    /// Stop (a merge in progress gives up first, see `stop`).
    Shutdown,
}

pub(crate) struct Compactor {
    shared: Arc<Shared>,
    catalog: Arc<Catalog>,
    rx: Receiver<CompactorMsg>,
    /// Set by the engine before it sends `Shutdown`: a long merge gives up at its next slice.
    stop: Arc<AtomicBool>,
    /// The view in which the last pass found nothing to do: the next pass skips until it
    /// changes. Weak, so it never keeps the files of an old view from being deleted (the
    /// allocation stays, so its address is never taken by a newer view).
    idle_view: Weak<ReadView>,
    /// When the background loop last applied retention (it does so every
    /// [`RETENTION_INTERVAL`]).
    retention_checked: Option<Instant>,
}

impl Compactor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        catalog: Arc<Catalog>,
        rx: Receiver<CompactorMsg>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self { shared, catalog, rx, stop, idle_view: Weak::new(), retention_checked: None }
    }

    pub(crate) fn run(mut self) {
        let mut failures = 0u32;
        loop {
            reap_unlinked(&self.shared);
            let msg = match self.rx.recv_timeout(COMPACTOR_TICK) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match msg {
                Some(CompactorMsg::Shutdown) => {
                    reap_unlinked(&self.shared);
                    return;
                }
                Some(CompactorMsg::CompactAll { reply }) => {
                    let result = self.compact_all();
                    // Files nobody reads any more go before the caller hears back.
                    reap_unlinked(&self.shared);
                    let _ = reply.send(result);
                }
                Some(CompactorMsg::ApplyRetention { reply }) => {
                    let result = self.apply_retention(now_ns());
                    reap_unlinked(&self.shared);
                    let _ = reply.send(result);
                }
                Some(CompactorMsg::DropBefore { cutoff, reply }) => {
                    let result = self.drop_before(cutoff);
                    reap_unlinked(&self.shared);
                    let _ = reply.send(result);
                }
                Some(CompactorMsg::Wake) | None => {
                    if self.shared.config.compaction_background {
                        // Job after job while work is due, but an explicit request or a stop
                        // waits for one job at most.
                        while self.rx.is_empty() && !self.stop.load(Ordering::Relaxed) {
                            match self.compact_next() {
                                Ok(true) => {
                                    failures = 0;
                                    reap_unlinked(&self.shared);
                                }
                                Ok(false) => break,
                                Err(e) => {
                                    failures += 1;
                                    tracing::error!(error = %e, failures, "background compaction failed; will retry");
                                    // Back off so a full disk is not hammered.
                                    std::thread::sleep(COMPACTOR_TICK * failures.min(50));
                                    break;
                                }
                            }
                        }
                    }
                    if !self.shared.config.retention.keeps_everything()
                        && self.retention_checked.is_none_or(|at| at.elapsed() >= RETENTION_INTERVAL)
                    {
                        self.retention_checked = Some(Instant::now());
                        if let Err(e) = self.apply_retention(now_ns()) {
                            tracing::error!(error = %e, "retention pass failed; will retry");
                        }
                    }
                }
            }
        }
    }

    /// Does the most urgent job of the current view, if any: the partition with the most
    /// generations that has a job due (a fold when closed, a tiered run when being written).
    /// Returns whether it compacted something.
    fn compact_next(&mut self) -> Result<bool> {
        let view = self.shared.view.load_full();
        if Weak::ptr_eq(&self.idle_view, &Arc::downgrade(&view)) {
            return Ok(false);
        }
        let newest = view.partitions.keys().next_back().copied();
        let mut candidates: Vec<(usize, TimestampNs, CompactionScope)> = view
            .partitions
            .iter()
            .filter_map(|(&start, files)| {
                let gens = generations(files);
                if Some(start) != newest && gens > 1 {
                    Some((gens, start, CompactionScope::Fold))
                } else if gens >= self.shared.config.compaction_files_min {
                    Some((gens, start, CompactionScope::Tiered))
                } else {
                    None
                }
            })
            .collect();
        // Most generations first; among equals the older partition.
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, start, scope) in candidates {
            if self.compact_partition(start, scope)? {
                return Ok(true);
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
        }
        self.idle_view = Arc::downgrade(&view);
        Ok(false)
    }

    /// Folds every partition with more than one generation, or with tombstones to apply.
    fn compact_all(&mut self) -> Result<usize> {
        let view = self.shared.view.load_full();
        let partitions: Vec<TimestampNs> = view.partitions.keys().copied().collect();
        let mut compacted = 0;
        for p in partitions {
            if self.compact_partition(p, CompactionScope::Fold)? {
                compacted += 1;
            }
        }
        Ok(compacted)
    }

    /// Merges a run of a partition's files (see [`CompactionScope`]) into one sorted,
    /// deduplicated file per value encoding without deleted rows, streaming: a slice of each
    /// input at a time (`compaction_rows_max` rows in all), so memory stays bounded whatever
    /// the partition's size. The swap is one catalog transaction; the old files are deleted
    /// only after it (and once no snapshot reads them). Returns whether anything was compacted
    /// (`false` also when the engine is stopping: the merge gives up, nothing is written).
    fn compact_partition(&mut self, partition_start: TimestampNs, scope: CompactionScope) -> Result<bool> {
        let started = Instant::now();
        let view = self.shared.view.load_full();
        let Some(all) = view.partitions.get(&partition_start) else { return Ok(false) };
        let run = match scope {
            CompactionScope::Tiered => tiered_run(all, self.shared.config.compaction_files_min),
            CompactionScope::Fold => compaction_run(all, &view.tombstones, usize::MAX),
        };
        let Some(files) = run else { return Ok(false) };
        let stop = &self.stop;
        let Some((files, slice_rows, _memory)) =
            self.reserve_memory(files, scope, &|| stop.load(Ordering::Relaxed))
        else {
            return Ok(false);
        };
        let mut inputs = Vec::with_capacity(files.len());
        for f in &files {
            let path = self.shared.config.data_dir.join(&f.path);
            let bytes =
                self.shared.storage.read(&path).map_err(|e| Error::io("read partition file", &path, e))?;
            let tombstones: Vec<Arc<Tombstone>> =
                view.tombstones.iter().filter(|t| t.applies_to_file(f)).cloned().collect();
            inputs.push(CompactionFile {
                meta: f.clone(),
                bytes: bytes.into(),
                tombstones,
                expired_metrics: Vec::new(),
            });
        }
        let yield_now = || stop.load(Ordering::Relaxed);
        let options = &self.shared.config.partition_write;
        let threads = self.shared.config.flush_threads;
        let rollup = rollup_memory(&self.shared, MemoryConsumer::Compaction);
        let outputs = match merge_files(
            &inputs,
            partition_start,
            slice_rows,
            threads,
            options,
            rollup.as_ref(),
            &yield_now,
        )? {
            Some(outputs) => outputs,
            None => {
                self.shared.metrics.compactions_yielded.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        };
        let generation = files.iter().map(|f| f.generation).max().unwrap_or(0);
        let seq_min = files.iter().map(|f| f.seq_min).min().unwrap_or(0);
        let seq_max = files.iter().map(|f| f.seq_max).max().unwrap_or(0);
        let mut written = Vec::new();
        for mut output in outputs {
            let rollup = match finish_rollup(&self.shared, &mut output.summary) {
                Ok(rollup) => rollup,
                Err(e) => {
                    remove_written(&self.shared, &written);
                    return Err(e);
                }
            };
            let file = FileToWrite {
                partition_start,
                summary: &output.summary,
                seq_min,
                seq_max,
                rollup: rollup.as_ref(),
            };
            match write_file(&self.shared, file, &output.encoded.bytes, generation) {
                Ok(meta) => written.push(meta),
                Err(e) => {
                    remove_written(&self.shared, &written);
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
            next_file_id: Some(self.shared.next_file_id.load(Ordering::Relaxed)),
            ..CatalogCommit::default()
        };
        if let Err(e) = self.catalog.commit(&change) {
            remove_written(&self.shared, &written);
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
            next.recompute_debt();
            next
        });
        // Ingest held back by the debt may go on.
        self.shared.room_freed.notify_waiters();
        // Open snapshots may still read the old files: they go once the last one is dropped.
        let input_files = files.len();
        unlink(&self.shared, files);
        self.shared.metrics.compactions.fetch_add(1, Ordering::Relaxed);
        collect_tombstones(&self.shared, &self.catalog)?;
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

    /// Reserves a compaction's working set in the memory budget: its input files (read whole)
    /// and the output as it is encoded (about as many bytes again), plus each input's slice of
    /// rows ([`COMPACTION_BYTES_PER_ROW`]). Short of memory it takes smaller slices (down to
    /// [`COMPACTION_SLICE_ROWS_MIN`]), then, when even those could never fit, the oldest
    /// generations of the run alone (a run of consecutive generations stays one: its output
    /// still loses to every newer file), and otherwise waits for memory. Returns the files to
    /// merge, the slice size and the reservation; `None` when nothing fits at all (logged; the
    /// debt stays and ingest is held to it) or the engine is stopping.
    fn reserve_memory(
        &self,
        mut files: Vec<Arc<FileMeta>>,
        scope: CompactionScope,
        give_up: &dyn Fn() -> bool,
    ) -> Option<(Vec<Arc<FileMeta>>, usize, MemoryReservation)> {
        let budget = &self.shared.memory;
        let ceiling = budget.ceiling(MemoryConsumer::Compaction);
        let need = |files: &[Arc<FileMeta>], slice_rows: usize| {
            let input: u64 = files.iter().map(|f| f.bytes).sum();
            (input as usize).saturating_mul(2).saturating_add(
                slice_rows.saturating_mul(files.len()).saturating_mul(COMPACTION_BYTES_PER_ROW),
            )
        };
        files.sort_by_key(|f| (f.generation, f.id));
        // Oldest generations first while even the smallest slices could never fit.
        let fewest = if scope == CompactionScope::Fold { 1 } else { 2 };
        while need(&files, COMPACTION_SLICE_ROWS_MIN) > ceiling {
            let last = files.last().map(|f| f.generation)?;
            let kept: Vec<Arc<FileMeta>> = files.iter().filter(|f| f.generation != last).cloned().collect();
            let generations = {
                let mut g: Vec<u64> = kept.iter().map(|f| f.generation).collect();
                g.dedup();
                g.len()
            };
            if generations < fewest {
                tracing::warn!(
                    files = files.len(),
                    bytes = need(&files, COMPACTION_SLICE_ROWS_MIN),
                    memory_bytes_max = budget.limit(),
                    "compaction does not fit the memory budget; skipped"
                );
                return None;
            }
            self.shared.metrics.compactions_narrowed.fetch_add(1, Ordering::Relaxed);
            files = kept;
        }
        let mut slice_rows =
            (self.shared.config.compaction_rows_max / files.len().max(1)).max(COMPACTION_SLICE_ROWS_MIN);
        loop {
            if let Some(memory) = budget.try_reserve(MemoryConsumer::Compaction, need(&files, slice_rows)) {
                return Some((files, slice_rows, memory));
            }
            if slice_rows <= COMPACTION_SLICE_ROWS_MIN {
                break;
            }
            slice_rows = (slice_rows / 2).max(COMPACTION_SLICE_ROWS_MIN);
        }
        let memory = budget.reserve_waiting(MemoryConsumer::Compaction, need(&files, slice_rows), give_up)?;
        Some((files, slice_rows, memory))
    }

    /// Applies the configured retention at `now`: every file whose metrics have all expired in
    /// its partition is dropped; a file holding expired and kept metrics is rewritten without
    /// the expired ones (its generation and applied tombstones kept: it holds a subset of its
    /// rows). Rewritten files are written first; then one catalog transaction removes the old
    /// files, adds the rewritten ones and records the pass; the old bytes go once no snapshot
    /// reads them. A crash before the commit leaves the old files (orphans are removed at the
    /// next open), after it the new ones: nothing within retention is ever lost. Logged
    /// (`event = "retention_applied"`) and counted; returns the record (`None`: nothing had
    /// expired, or the engine is stopping).
    fn apply_retention(&mut self, now: TimestampNs) -> Result<Option<RetentionRecord>> {
        let policy = &self.shared.config.retention;
        if policy.keeps_everything() {
            return Ok(None);
        }
        let view = self.shared.view.load_full();
        let mut doomed: Vec<Arc<FileMeta>> = Vec::new();
        let mut trimmed: Vec<(Arc<FileMeta>, Vec<Arc<str>>)> = Vec::new();
        for f in view.files() {
            let expired: Vec<Arc<str>> =
                f.metrics.iter().filter(|m| policy.expired(m, f.partition_end, now)).cloned().collect();
            if expired.is_empty() {
                continue;
            }
            if expired.len() == f.metrics.len() {
                doomed.push(f.clone());
            } else {
                trimmed.push((f.clone(), expired));
            }
        }
        if doomed.is_empty() && trimmed.is_empty() {
            return Ok(None);
        }
        let mut record = RetentionRecord {
            applied_at: now,
            settings: policy.to_string(),
            partition_first: i64::MAX,
            partition_last_end: i64::MIN,
            ..RetentionRecord::default()
        };
        let mut metrics: std::collections::BTreeSet<Arc<str>> = std::collections::BTreeSet::new();
        for f in &doomed {
            record.files_dropped += 1;
            record.rows_removed += f.rows;
            record.bytes_released += f.bytes;
            metrics.extend(f.metrics.iter().cloned());
        }
        let mut written: Vec<FileMeta> = Vec::new();
        let mut replaced: Vec<Arc<FileMeta>> = Vec::new();
        for (f, expired) in trimmed {
            let stop = &self.stop;
            let Some((_, slice_rows, _memory)) =
                self.reserve_memory(vec![f.clone()], CompactionScope::Fold, &|| stop.load(Ordering::Relaxed))
            else {
                // Stopping, or a file too large for the budget (logged): the next pass retries.
                continue;
            };
            let path = self.shared.config.data_dir.join(&f.path);
            let bytes = match self.shared.storage.read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    remove_written(&self.shared, &written);
                    return Err(Error::io("read partition file", &path, e));
                }
            };
            let input = [CompactionFile {
                meta: f.clone(),
                bytes: bytes.into(),
                tombstones: Vec::new(),
                expired_metrics: expired.clone(),
            }];
            let yield_now = || stop.load(Ordering::Relaxed);
            let options = &self.shared.config.partition_write;
            let threads = self.shared.config.flush_threads;
            let rollup = rollup_memory(&self.shared, MemoryConsumer::Compaction);
            let outputs = match merge_files(
                &input,
                f.partition_start,
                slice_rows,
                threads,
                options,
                rollup.as_ref(),
                &yield_now,
            ) {
                Ok(Some(outputs)) => outputs,
                Ok(None) => {
                    remove_written(&self.shared, &written);
                    return Ok(None);
                }
                Err(e) => {
                    remove_written(&self.shared, &written);
                    return Err(e);
                }
            };
            let mut kept_rows = 0;
            for mut output in outputs {
                let rollup = match finish_rollup(&self.shared, &mut output.summary) {
                    Ok(rollup) => rollup,
                    Err(e) => {
                        remove_written(&self.shared, &written);
                        return Err(e);
                    }
                };
                let file = FileToWrite {
                    partition_start: f.partition_start,
                    summary: &output.summary,
                    seq_min: f.seq_min,
                    seq_max: f.seq_max,
                    rollup: rollup.as_ref(),
                };
                match write_file(&self.shared, file, &output.encoded.bytes, f.generation) {
                    Ok(mut meta) => {
                        meta.applied_tombstones = f.applied_tombstones.clone();
                        kept_rows += meta.rows;
                        written.push(meta);
                    }
                    Err(e) => {
                        remove_written(&self.shared, &written);
                        return Err(e);
                    }
                }
            }
            record.files_rewritten += 1;
            record.rows_removed += f.rows.saturating_sub(kept_rows);
            record.bytes_released += f.bytes;
            metrics.extend(expired);
            replaced.push(f);
        }
        for f in doomed.iter().chain(&replaced) {
            record.partition_first = record.partition_first.min(f.partition_start);
            record.partition_last_end = record.partition_last_end.max(f.partition_end);
        }
        if doomed.is_empty() && replaced.is_empty() {
            return Ok(None);
        }
        record.metrics = metrics
            .iter()
            .take(crate::retention::RETENTION_RECORD_METRICS_MAX)
            .map(|m| m.to_string())
            .collect();
        let change = CatalogCommit {
            add_files: written.clone(),
            remove_files: doomed.iter().chain(&replaced).map(|f| f.id).collect(),
            next_file_id: Some(self.shared.next_file_id.load(Ordering::Relaxed)),
            retention_record: Some(record.encode()),
            ..CatalogCommit::default()
        };
        if let Err(e) = self.catalog.commit(&change) {
            remove_written(&self.shared, &written);
            return Err(e);
        }
        let gone: std::collections::HashSet<u64> = change.remove_files.iter().copied().collect();
        self.shared.view.rcu(|v| {
            let mut next = ReadView::clone(v);
            for f in &written {
                next.partitions.entry(f.partition_start).or_default().push(Arc::new(f.clone()));
            }
            next.partitions.retain(|_, files| {
                files.retain(|f| !gone.contains(&f.id));
                !files.is_empty()
            });
            next.recompute_debt();
            next
        });
        self.shared.metrics.partitions_dropped.fetch_add(record.files_dropped, Ordering::Relaxed);
        self.shared.metrics.retention_files_rewritten.fetch_add(record.files_rewritten, Ordering::Relaxed);
        self.shared.metrics.retention_rows_removed.fetch_add(record.rows_removed, Ordering::Relaxed);
        self.shared.room_freed.notify_waiters();
        unlink(&self.shared, doomed);
        unlink(&self.shared, replaced);
        collect_tombstones(&self.shared, &self.catalog)?;
        tracing::info!(
            event = "retention_applied",
            settings = %record.settings,
            files_dropped = record.files_dropped,
            files_rewritten = record.files_rewritten,
            rows_removed = record.rows_removed,
            bytes_released = record.bytes_released,
            partition_first = record.partition_first,
            partition_last_end = record.partition_last_end,
            metrics = ?record.metrics,
            "retention applied"
        );
        Ok(Some(record))
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
            next.recompute_debt();
            next
        });
        let dropped = doomed.len();
        self.shared.metrics.partitions_dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        unlink(&self.shared, doomed);
        collect_tombstones(&self.shared, &self.catalog)?;
        Ok(dropped)
    }
}
