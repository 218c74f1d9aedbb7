//! Helpers shared by the engine's integration tests.

use bluewave_engine::{BuoyId, BuoyInfo, Engine, EngineConfig, MetricName, ReadFilter, ReadingBatch, Row};
use std::path::Path;

/// A small config: two lanes, small buffers so flushes are cheap.
pub fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.lanes = 2;
    c.flush_buffer_bytes = 1 << 20;
    c.buffer_bytes_max = 4 << 20;
    c.flush_interval_ms = 3_600_000;
    c
}

pub fn buoy(name: &str) -> BuoyId {
    BuoyId::new(name).unwrap()
}

pub fn register(engine: &Engine, names: &[&str]) {
    for n in names {
        engine.register_buoy(BuoyInfo::new(&buoy(n))).unwrap();
    }
}

/// A batch of `(metric, ts, value)` rows.
pub fn batch(rows: &[(&str, i64, f64)]) -> ReadingBatch {
    let mut b = bluewave_engine::ReadingBatchBuilder::with_capacity(rows.len());
    for &(m, ts, v) in rows {
        b.push(&MetricName::new(m).unwrap(), ts, v).unwrap();
    }
    b.finish().unwrap()
}

/// Every row the engine shows, as comparable tuples.
pub fn read_all(engine: &Engine) -> Vec<(String, String, i64, f64, u8)> {
    rows(engine, &ReadFilter::default())
}

pub fn rows(engine: &Engine, filter: &ReadFilter) -> Vec<(String, String, i64, f64, u8)> {
    engine
        .snapshot()
        .read(engine.storage().as_ref(), filter)
        .unwrap()
        .into_iter()
        .map(|Row { buoy, metric, ts, value, quality }| {
            (buoy.to_string(), metric.to_string(), ts, value, quality)
        })
        .collect()
}

/// A reading's key and value as the tests compare them: `(buoy, metric, ts) -> (value, quality)`.
pub type RowMap = std::collections::BTreeMap<(String, String, i64), (f64, u8)>;

/// [`read_all`] as a map; panics if the engine shows one key twice.
pub fn read_map(engine: &Engine) -> RowMap {
    let mut out = RowMap::new();
    for (b, m, ts, v, q) in read_all(engine) {
        let key = (b, m, ts);
        assert!(out.insert(key.clone(), (v, q)).is_none(), "key {key:?} shown twice");
    }
    out
}

/// Reads and decodes every file of the current catalog view; panics naming the first file that
/// is missing, does not decode, or holds a row count other than its catalog entry says.
pub fn decode_catalog_files(
    engine: &Engine,
) -> Vec<(bluewave_engine::FileMeta, bluewave_engine::PartitionRows)> {
    let snapshot = engine.snapshot();
    let mut out = Vec::new();
    for meta in engine.files() {
        let path = snapshot.file_path(&meta);
        let bytes = engine
            .storage()
            .read(&path)
            .unwrap_or_else(|e| panic!("catalog file {} cannot be read: {e}", meta.path));
        let rows = bluewave_engine::decode_partition(bytes.into())
            .unwrap_or_else(|e| panic!("catalog file {} does not decode: {e}", meta.path));
        assert_eq!(rows.len() as u64, meta.rows, "row count of {}", meta.path);
        out.push((bluewave_engine::FileMeta::clone(&meta), rows));
    }
    out
}

/// Proves that every reading is stored exactly once: flushes and compacts, then checks that the
/// buffer is empty, no key appears twice across the decoded files, and the files hold exactly
/// the rows reads show. Returns the rows.
pub fn assert_stored_once(engine: &Engine) -> RowMap {
    let before = read_map(engine);
    engine.flush().unwrap();
    engine.compact().unwrap();
    assert!(engine.snapshot().chunks.is_empty(), "buffer not empty after flush");
    let mut stored = RowMap::new();
    for (meta, rows) in decode_catalog_files(engine) {
        for i in 0..rows.len() {
            let key = (
                rows.buoy_names[rows.buoy_keys[i] as usize].to_string(),
                rows.metric_names[rows.metric_keys[i] as usize].to_string(),
                rows.timestamps[i],
            );
            let previous = stored.insert(key.clone(), (rows.values[i], rows.quality[i]));
            assert!(previous.is_none(), "key {key:?} stored twice (second copy in {})", meta.path);
        }
    }
    assert_eq!(stored, before, "files after flush+compaction differ from what reads showed before");
    assert_eq!(read_map(engine), before, "reads changed across flush+compaction");
    stored
}

/// Copies a directory tree with `std::fs` (regular files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
