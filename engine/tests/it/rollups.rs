//! Proves that minute rollups follow their readings files: a flush writes one beside each file
//! (one per value encoding), equal to the file's rows bucket by bucket; compaction and
//! retention replace them with their outputs' and the replaced ones go with their files;
//! rollups off writes none; and at open an orphan rollup is removed while a missing one only
//! costs its file the rollup (reported, the readings stay).

use bluewave_engine::{DeleteRange, Engine, MetricName, NANOS_PER_SECOND, Retention, rollup::ROLLUPS_TABLE};

use crate::common::{batch, buoy, check_rollups, config, read_map, register};

const MINUTE: i64 = 60 * NANOS_PER_SECOND;
/// 2026-06-01T13:00:00Z, the start of an hour partition.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;

/// Readings of two buoys over three minutes of two hours, two metrics stored at different
/// decimal scales (so each flush writes two files per partition).
fn ingest(engine: &Engine, seq: u64, offset: f64) {
    for (i, b) in ["b-1", "b-2"].iter().enumerate() {
        let mut rows = Vec::new();
        for s in (0..180).step_by(7) {
            for hour in [0, 1] {
                let ts = T0 + hour * 60 * MINUTE + s * NANOS_PER_SECOND + i as i64;
                rows.push(("salinity_psu", ts, 35.0 + s as f64 / 1000.0 + offset));
                rows.push(("water_temp_c", ts, 12.5 + s as f64 / 100.0 + offset));
            }
        }
        engine.ingest(&buoy(b), seq, batch(&rows)).unwrap().wait().unwrap();
    }
}

#[test]
fn flushes_write_a_rollup_beside_each_file_equal_to_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_background = false;
    let engine = Engine::open(c).unwrap();
    register(&engine, &["b-1", "b-2"]);
    ingest(&engine, 1, 0.0);
    engine.flush().unwrap();
    // Held file entries keep their files from being deleted: only in this block.
    let files = engine.files();
    assert_eq!(files.len(), 4, "two partitions, two value encodings each");
    assert_eq!(check_rollups(&engine, true, "first flush"), 4);
    for f in &files {
        let r = f.rollup.as_ref().unwrap();
        assert!(r.path.starts_with(&format!("parquet/{ROLLUPS_TABLE}/date=2026-06-01/hour=1")), "{}", r.path);
        // 26 readings a series over three minutes: three buckets a series.
        assert_eq!(r.buckets, 2 * 3, "{}", r.path);
    }
    drop(files);
    assert_eq!(engine.metrics().rollups_written, 4);
    assert_eq!(engine.metrics().rollups_skipped, 0);

    // A rewrite of every key, late data, a delete: new generations, then one compaction.
    ingest(&engine, 2, 1.0);
    engine.flush().unwrap();
    let late = [("salinity_psu", T0 + 30 * MINUTE, 35.5)];
    engine.ingest(&buoy("b-1"), 3, batch(&late)).unwrap().wait().unwrap();
    engine
        .delete(&DeleteRange {
            buoy: buoy("b-2"),
            metric: Some(MetricName::new("water_temp_c").unwrap()),
            start: T0,
            end: T0 + MINUTE + 30 * NANOS_PER_SECOND,
        })
        .unwrap()
        .wait()
        .unwrap();
    engine.flush().unwrap();
    assert_eq!(check_rollups(&engine, true, "three generations"), engine.files().len());
    let before = read_map(&engine);
    engine.compact().unwrap();
    assert_eq!(engine.files().len(), 4, "folded to one generation");
    // The replaced rollups went with their files; the new ones equal the merged rows.
    assert_eq!(check_rollups(&engine, true, "after compaction"), 4);
    assert_eq!(read_map(&engine), before);
    engine.shutdown().unwrap();
    drop(engine);

    // Reopened: the same rollups, none missing.
    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(engine.recovery_report().missing_rollups.is_empty());
    assert_eq!(check_rollups(&engine, true, "reopened"), 4);
}

#[test]
fn rollups_off_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.rollups = false;
    let engine = Engine::open(c).unwrap();
    register(&engine, &["b-1", "b-2"]);
    ingest(&engine, 1, 0.0);
    engine.flush().unwrap();
    assert!(engine.files().iter().all(|f| f.rollup.is_none()));
    assert_eq!(check_rollups(&engine, true, "rollups off"), 0);
    assert_eq!(engine.metrics().rollups_written, 0);
}

#[test]
fn retention_rewrites_keep_rollups_of_what_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_background = false;
    // One metric expires long before the other: a file holding both is rewritten.
    let day = std::time::Duration::from_secs(86_400);
    c.retention = Retention { default: None, metrics: [("salinity_psu".to_owned(), Some(day))].into() };
    let engine = Engine::open(c).unwrap();
    register(&engine, &["b-1"]);
    let rows =
        [("salinity_psu", T0, 35.0), ("salinity_psu", T0 + MINUTE, 35.1), ("ph", T0 + 2 * MINUTE, 8.1)];
    engine.ingest(&buoy("b-1"), 1, batch(&rows)).unwrap().wait().unwrap();
    engine.flush().unwrap();
    // The compactor applies retention on its own too: whichever pass ran, salinity is gone.
    engine.apply_retention().unwrap();
    assert_eq!(check_rollups(&engine, true, "after retention"), engine.files().len());
    let metrics: Vec<String> =
        engine.files().iter().flat_map(|f| f.metrics.iter().map(|m| m.to_string())).collect();
    assert_eq!(metrics, vec!["ph".to_owned()]);
}

#[test]
fn at_open_an_orphan_rollup_is_removed_and_a_missing_one_only_costs_its_file_the_rollup() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_background = false;
    let engine = Engine::open(c.clone()).unwrap();
    register(&engine, &["b-1", "b-2"]);
    ingest(&engine, 1, 0.0);
    engine.flush().unwrap();
    let files = engine.files();
    let rows = read_map(&engine);
    let lost = files[0].rollup.clone().unwrap();
    let count = files.len();
    drop(files);
    engine.shutdown().unwrap();
    drop(engine);
    std::fs::remove_file(dir.path().join(&lost.path)).unwrap();
    let orphan =
        dir.path().join(format!("parquet/{ROLLUPS_TABLE}/date=2026-06-01/hour=13/00000000000fffff.parquet"));
    std::fs::write(&orphan, b"left by a crash before its commit").unwrap();
    let engine = Engine::open(c).unwrap_or_else(|e| panic!("reopen: {e}"));
    assert_eq!(engine.recovery_report().missing_rollups, vec![lost.path.clone()]);
    assert_eq!(engine.recovery_report().orphan_files_removed, 1);
    assert!(!orphan.exists());
    assert_eq!(read_map(&engine), rows, "readings untouched");
    assert_eq!(check_rollups(&engine, true, "reopened"), count - 1);
    // The next compaction gives the file a rollup again.
    ingest(&engine, 2, 1.0);
    engine.flush().unwrap();
    engine.compact().unwrap();
    assert_eq!(check_rollups(&engine, true, "compacted"), engine.files().len());
}
