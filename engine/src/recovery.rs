//! Recovery at open (DESIGN.md, contract 6): leftover temp and orphan files removed, missing
//! files reported, the catalog loaded, WAL entries above the flushed watermarks replayed into the
//! buffer (a torn tail cut, corruption elsewhere refused), and the WAL state handed to the first
//! flush so the replayed segments can go. Worked example in `engine/WAL.md`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::budget::{MemoryBudget, MemoryConsumer};
use crate::buffer::{ChunkBuilder, LaneBuffer};
use crate::catalog::{Catalog, Tombstone};
use crate::config::EngineConfig;
use crate::dedup::{DedupWindow, UNSEQUENCED};
use crate::error::{Error, Result};
use crate::metrics::EngineMetrics;
use crate::read::ReadView;
use crate::state::{Shared, lane_of};
use crate::storage::{Storage, create_dir_durable};
use crate::types::MetricName;
use crate::wal::{self, Entry};

/// What recovery found at open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// WAL entries replayed (above the flushed watermarks).
    pub entries_replayed: usize,
    /// Torn tails cut off: (segment, offset, bytes dropped).
    pub torn_tails: Vec<(PathBuf, u64, u64)>,
    /// Leftover temporary files removed.
    pub temp_files_removed: usize,
    /// Parquet files without a catalog entry (a crash before the commit) removed.
    pub orphan_files_removed: usize,
    /// Catalog entries whose file is missing: data loss the operator must know about. These
    /// files are left out of reads.
    pub missing_files: Vec<String>,
    /// Rollups the catalog lists whose file is missing: their readings files are read from
    /// the readings (answers stay exact) until compaction writes a new rollup.
    pub missing_rollups: Vec<String>,
}

/// WAL state handed over by recovery: flush it, then the old segments can go.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub watermarks: Vec<(String, u64)>,
    pub segments: Vec<PathBuf>,
    /// Windows of the buoys whose batches were replayed: persisted with the recovery flush.
    pub dedup: Vec<(String, DedupWindow)>,
}

/// What [`recover`] hands the engine to start its threads with.
pub(crate) struct Recovered {
    /// The shared state, with the replayed rows in the buffer.
    pub shared: Arc<Shared>,
    /// The open catalog.
    pub catalog: Catalog,
    /// Per lane: the deduplication windows of its buoys (catalog, then replay).
    pub lane_dedup: Vec<HashMap<Arc<str>, DedupWindow>>,
    /// Highest committed flush generation.
    pub flushed_gen: u64,
    /// Tombstones already in the catalog (those replayed from the WAL still have to be written).
    pub persisted_tombstones: HashSet<u64>,
    /// What recovery found, for the operator.
    pub report: RecoveryReport,
    /// WAL state for the first flush (`segments` empty when nothing was replayed).
    pub handover: Recovery,
}

/// Recovers the data dir of `config` over `storage` (see the module docs). Creates the data,
/// WAL and Parquet directories if needed.
pub(crate) fn recover(config: EngineConfig, storage: Arc<dyn Storage>) -> Result<Recovered> {
    let data_dir = config.data_dir.clone();
    let wal_dir = data_dir.join("wal");
    let parquet_dir = data_dir.join("parquet");
    for dir in [&data_dir, &wal_dir, &parquet_dir] {
        create_dir_durable(storage.as_ref(), dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let (catalog, state) = Catalog::open(&data_dir.join("catalog.redb"))?;
    catalog.check_partition_duration(config.partition_duration.as_nanos())?;
    let mut report = RecoveryReport::default();

    // Files: drop temp and orphan files, note missing ones.
    // Readings files and their rollups: anything else under `parquet/` is an orphan.
    let known: HashMap<String, u64> = state
        .files
        .values()
        .flat_map(|f| {
            std::iter::once((f.path.clone(), f.id)).chain(f.rollup.as_ref().map(|r| (r.path.clone(), f.id)))
        })
        .collect();
    let mut present = std::collections::HashSet::new();
    walk_files(storage.as_ref(), &parquet_dir, &mut |path| {
        let rel = relative_path(&data_dir, path);
        if rel.ends_with(".tmp") {
            storage.remove_file(path).map_err(|e| Error::io("remove temp file", path, e))?;
            report.temp_files_removed += 1;
        } else if rel.ends_with(".parquet") && !known.contains_key(&rel) {
            storage.remove_file(path).map_err(|e| Error::io("remove orphan file", path, e))?;
            report.orphan_files_removed += 1;
        } else {
            present.insert(rel);
        }
        Ok(())
    })?;
    let mut view = ReadView { flushed_gen: state.flushed_gen, ..ReadView::default() };
    for f in state.files.values() {
        if !present.contains(&f.path) {
            tracing::error!(file = %f.path, "catalog lists a file that is missing; its rows are lost");
            report.missing_files.push(f.path.clone());
            continue;
        }
        let mut f = f.clone();
        if let Some(r) = f.rollup.take_if(|r| !present.contains(&r.path)) {
            // Only an accelerator: the file is read from its readings instead.
            tracing::warn!(file = %f.path, rollup = %r.path, "catalog lists a rollup that is missing; its file is scanned");
            report.missing_rollups.push(r.path);
        }
        view.partitions.entry(f.partition_start).or_default().push(Arc::new(f));
    }
    view.tombstones = state.tombstones.values().cloned().map(Arc::new).collect();
    view.recompute_debt();
    let persisted_tombstones: std::collections::HashSet<u64> = state.tombstones.keys().copied().collect();

    // WAL replay.
    let lanes = config.lanes;
    let mut lane_dedup: Vec<HashMap<Arc<str>, DedupWindow>> = vec![HashMap::new(); lanes];
    for (buoy, window) in state.dedup {
        let buoy: Arc<str> = Arc::from(buoy.as_str());
        lane_dedup[lane_of(&buoy, lanes)].insert(buoy, window);
    }
    let mut seq_max = state.watermarks.values().copied().max().unwrap_or(0);
    seq_max = seq_max.max(state.tombstones.keys().copied().max().unwrap_or(0));
    let mut builders: Vec<ChunkBuilder> = (0..lanes).map(|_| ChunkBuilder::new()).collect();
    let mut handover = Recovery::default();
    let mut lane_dirs: Vec<PathBuf> = storage
        .list_dir(&wal_dir)
        .map_err(|e| Error::io("list WAL directory", &wal_dir, e))?
        .into_iter()
        .filter(|p| storage.is_dir(p))
        .collect();
    lane_dirs.sort();
    let mut replay_entries: Vec<Entry> = Vec::new();
    for dir in &lane_dirs {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let replay = wal::read_lane(storage.as_ref(), dir)?;
        let watermark = state.watermarks.get(&name).copied().unwrap_or(0);
        if let Some(torn) = replay.torn_tail.clone() {
            tracing::warn!(segment = %torn.0.display(), offset = torn.1, bytes = torn.2, "cut torn WAL tail");
            report.torn_tails.push(torn);
        }
        seq_max = seq_max.max(replay.seq_max);
        if !replay.segments.is_empty() {
            handover.watermarks.push((name, replay.seq_max.max(watermark)));
            handover.segments.extend(replay.segments);
        }
        replay_entries.extend(replay.entries.into_iter().filter(|e| e.seq() > watermark));
    }
    replay_entries.sort_by_key(Entry::seq);
    report.entries_replayed = replay_entries.len();
    let mut replayed_buoys: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    for entry in replay_entries {
        match entry {
            Entry::Batch(b) => {
                let lane = lane_of(&b.buoy, lanes);
                let buoy: Arc<str> = Arc::from(b.buoy.as_str());
                if b.batch_seq != UNSEQUENCED {
                    lane_dedup[lane].entry(buoy.clone()).or_default().record(b.batch_seq);
                }
                replayed_buoys.insert(buoy.clone());
                let metric_names = b
                    .metric_names
                    .iter()
                    .map(|m| MetricName::new(m))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Corrupt {
                        file: wal_dir.clone(),
                        offset: 0,
                        reason: e.to_string(),
                    })?;
                builders[lane].push_batch(
                    &buoy,
                    &metric_names,
                    &b.timestamps,
                    &b.metric_ids,
                    &b.values,
                    &b.quality,
                    b.seq,
                );
            }
            Entry::Delete { seq, delete } => {
                if !view.tombstones.iter().any(|t| t.seq == seq) {
                    view.tombstones.push(Arc::new(Tombstone {
                        seq,
                        generation: view.flushed_gen,
                        buoy: Arc::from(delete.buoy.as_str()),
                        metric: delete.metric.as_deref().map(Arc::from),
                        start: delete.start,
                        end: delete.end,
                    }));
                }
            }
        }
    }

    for buoy in &replayed_buoys {
        if let Some(w) = lane_dedup[lane_of(buoy, lanes)].get(buoy) {
            handover.dedup.push((buoy.to_string(), w.clone()));
        }
    }
    let shared = Arc::new(Shared {
        storage: storage.clone(),
        metrics: EngineMetrics::default(),
        next_seq: AtomicU64::new(seq_max + 1),
        next_chunk_id: AtomicU64::new(1),
        buffer_bytes: AtomicUsize::new(0),
        room_freed: tokio::sync::Notify::new(),
        unlinked: std::sync::Mutex::new(Vec::new()),
        next_file_id: AtomicU64::new(state.next_file_id),
        queued_bytes: AtomicUsize::new(0),
        view: ArcSwap::from_pointee(view),
        lanes: (0..lanes).map(|_| LaneBuffer::default()).collect(),
        memory: MemoryBudget::new(config.memory_bytes_max, config.flush_reserve_bytes()),
        buoys: ArcSwap::from_pointee(
            state.buoys.into_values().map(|b| (b.id.clone(), b)).collect::<HashMap<_, _>>(),
        ),
        config,
    });
    for (lane, mut builder) in builders.into_iter().enumerate() {
        if !builder.is_empty() {
            let id = shared.next_chunk_id.fetch_add(1, Ordering::Relaxed);
            let chunk = builder.finish(id);
            // The replayed buffer held at most `buffer_bytes_max + queue_bytes_max`, which
            // `validate` fits in the budget; a WAL written under a larger budget is replayed
            // all the same (it is acknowledged data), counted, and refuses ingest until a
            // flush frees it.
            let memory =
                shared.memory.try_reserve(MemoryConsumer::Ingest, chunk.bytes()).unwrap_or_else(|| {
                    tracing::warn!(
                        bytes = chunk.bytes(),
                        "replayed WAL is above the memory budget; ingest waits for the first flush"
                    );
                    shared.memory.reserve_forced(MemoryConsumer::Ingest, chunk.bytes())
                });
            let chunk = Arc::new(chunk.with_memory(memory));
            shared.buffer_bytes.fetch_add(chunk.bytes(), Ordering::Relaxed);
            shared.lanes[lane].push(chunk);
        }
    }

    Ok(Recovered {
        shared,
        catalog,
        lane_dedup,
        flushed_gen: state.flushed_gen,
        persisted_tombstones,
        report,
        handover,
    })
}

fn walk_files(storage: &dyn Storage, dir: &Path, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    let entries = storage.list_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for path in entries {
        if storage.is_dir(&path) {
            walk_files(storage, &path, f)?;
        } else {
            f(&path)?;
        }
    }
    Ok(())
}

/// `/`-separated path of `path` below `base`.
fn relative_path(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}
