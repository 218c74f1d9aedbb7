//! Compaction, folds and retention, as the flusher runs them: which partitions are due, the
//! merge of a run of files ([`super::merge`]) into new ones, the catalog swap, and the deletion of
//! the old files once no snapshot reads them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::catalog::{CatalogCommit, FileMeta, Tombstone};
use crate::error::{Error, Result};
use crate::read::ReadView;
use crate::types::TimestampNs;

use super::Flusher;
use super::layout::FileToWrite;
use super::merge::{CompactionFile, merge_files};
use super::policy::{COMPACTION_SLICE_ROWS_MIN, CompactionScope, compaction_run, generations};

impl Flusher {
    /// Queues the partitions that a compaction put off before the last stop (or a crash) left
    /// with `compaction_files_min` generations: no flush may ever touch them again.
    pub(super) fn with_due_compactions(mut self) -> Self {
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
    pub(super) fn queue_folds(&mut self, candidates: impl Iterator<Item = TimestampNs>) {
        let view = self.shared.view.load();
        let Some(&newest) = view.partitions.keys().next_back() else { return };
        for start in candidates {
            if start < newest && view.partitions.get(&start).is_some_and(|files| generations(files) > 1) {
                self.fold_due.insert(start);
            }
        }
    }

    /// Flush generations of a partition's files.
    pub(super) fn generations_of(&self, partition_start: TimestampNs) -> usize {
        self.shared.view.load().partitions.get(&partition_start).map_or(0, |f| generations(f))
    }

    /// Compacts the partition if it holds `compaction_files_min` flush generations.
    pub(super) fn compact_if_due(&mut self, partition_start: TimestampNs) -> Result<bool> {
        Ok(self.generations_of(partition_start) >= self.shared.config.compaction_files_min
            && self.compact_partition(partition_start, CompactionScope::Bounded)?)
    }

    pub(super) fn compact_all(&mut self) -> Result<usize> {
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
    pub(super) fn compact_partition(
        &mut self,
        partition_start: TimestampNs,
        scope: CompactionScope,
    ) -> Result<bool> {
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
    pub(super) fn drop_before(&mut self, cutoff: TimestampNs) -> Result<usize> {
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
