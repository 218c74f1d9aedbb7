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

/// A rollup bucket as the tests compare it: `(count, sum bits, min, max, (first ts, first),
/// (last ts, last))`.
pub type Bucket = (u64, u64, f64, f64, (i64, f64), (i64, f64));
/// Buckets by `(buoy, metric, minute)`.
pub type BucketMap = std::collections::BTreeMap<(String, String, i64), Bucket>;

/// The minute buckets of sorted readings, computed here the plain way (values added in row
/// order, as the engine's builder does, so sums compare bit for bit).
pub fn buckets_of(rows: &bluewave_engine::PartitionRows) -> BucketMap {
    let minute = bluewave_engine::rollup::ROLLUP_WIDTH_NS;
    let mut out = BucketMap::new();
    for i in 0..rows.len() {
        let key = (
            rows.buoy_names[rows.buoy_keys[i] as usize].to_string(),
            rows.metric_names[rows.metric_keys[i] as usize].to_string(),
            rows.timestamps[i].div_euclid(minute) * minute,
        );
        let (ts, v) = (rows.timestamps[i], rows.values[i]);
        let b = out.entry(key).or_insert((0, 0f64.to_bits(), v, v, (ts, v), (ts, v)));
        b.0 += 1;
        b.1 = (f64::from_bits(b.1) + v).to_bits();
        b.2 = b.2.min(v);
        b.3 = b.3.max(v);
        if ts < b.4.0 {
            b.4 = (ts, v);
        }
        if ts >= b.5.0 {
            b.5 = (ts, v);
        }
    }
    out
}

/// The buckets of a decoded rollup file.
pub fn buckets_of_rollup(r: &bluewave_engine::rollup::RollupRows) -> BucketMap {
    let mut out = BucketMap::new();
    for i in 0..r.len() {
        let key = (
            r.buoy_names[r.buoy_keys[i] as usize].to_string(),
            r.metric_names[r.metric_keys[i] as usize].to_string(),
            r.minutes[i],
        );
        let bucket = (
            r.counts[i],
            r.sums[i].to_bits(),
            r.mins[i],
            r.maxs[i],
            (r.first_ts[i], r.first_values[i]),
            (r.last_ts[i], r.last_values[i]),
        );
        assert!(out.insert(key.clone(), bucket).is_none(), "bucket {key:?} twice in one rollup");
    }
    out
}

/// Checks every rollup of the current catalog view: it exists, decodes, holds as many buckets
/// as its entry says and equals the buckets of its readings file; and no rollup file lies under
/// `parquet/rollups_1m` that no catalog entry names when `no_orphans` (after a reopen, or once
/// the files compaction replaced are reaped). Returns how many files have a rollup.
pub fn check_rollups(engine: &Engine, no_orphans: bool, what: &str) -> usize {
    let snapshot = engine.snapshot();
    let mut with_rollup = 0;
    let mut named = std::collections::BTreeSet::new();
    for (meta, rows) in decode_catalog_files(engine) {
        let Some(r) = &meta.rollup else { continue };
        with_rollup += 1;
        named.insert(snapshot.rollup_path(r));
        let bytes = engine
            .storage()
            .read(&snapshot.rollup_path(r))
            .unwrap_or_else(|e| panic!("{what}: rollup {} cannot be read: {e}", r.path));
        assert_eq!(bytes.len() as u64, r.bytes, "{what}: size of {}", r.path);
        let decoded = bluewave_engine::rollup::decode_rollup(bytes.into())
            .unwrap_or_else(|e| panic!("{what}: rollup {} does not decode: {e}", r.path));
        assert_eq!(decoded.len() as u64, r.buckets, "{what}: bucket count of {}", r.path);
        assert_eq!(
            buckets_of_rollup(&decoded),
            buckets_of(&rows),
            "{what}: rollup {} of {}",
            r.path,
            meta.path
        );
    }
    let root = snapshot.data_dir().join("parquet").join(bluewave_engine::rollup::ROLLUPS_TABLE);
    let mut present = std::collections::BTreeSet::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        if !engine.storage().is_dir(&dir) {
            continue;
        }
        for p in engine.storage().list_dir(&dir).unwrap() {
            if engine.storage().is_dir(&p) {
                stack.push(p);
            } else {
                present.insert(p);
            }
        }
    }
    assert!(named.is_subset(&present), "{what}: rollup files missing on disk");
    if no_orphans {
        assert_eq!(present, named, "{what}: rollup files on disk that no catalog entry names");
    }
    with_rollup
}
