//! Proves retention from the configuration, globally and per metric:
//!
//! - `data_past_retention_disappears_and_other_metrics_keep_theirs`: with a 30-day default and
//!   a year for `ph`, a compaction pass drops the file of a 100-day-old hour that holds only
//!   expired metrics, rewrites the one holding `ph` beside an expired metric without the
//!   expired one, keeps the recent hour whole, records what it removed in the catalog (read
//!   back after a reopen), and has nothing left to do on the next pass;
//! - a crash during a retention pass is swept in `crash.rs`
//!   (`a_crash_during_a_retention_pass_loses_nothing_within_retention`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bluewave_engine::{Engine, EngineConfig, IngestOutcome, NANOS_PER_SECOND, Retention};

use crate::common::{
    RowMap, assert_stored_once, batch, buoy, config, decode_catalog_files, read_map, register,
};

const HOUR: i64 = 3_600 * NANOS_PER_SECOND;
const DAY: i64 = 24 * HOUR;

/// Retention of the tests: 30 days for every metric, a year for `ph`.
pub fn retention() -> Retention {
    let day = Duration::from_secs(86_400);
    Retention { default: Some(day * 30), metrics: [("ph".to_owned(), Some(day * 365))].into() }
}

/// Start of the current hour partition.
pub fn this_hour() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    now.div_euclid(HOUR) * HOUR
}

/// A value at sensor precision (millis), so every metric shares one value encoding (one file).
fn milli(v: i64) -> f64 {
    v as f64 / 1_000.0
}

/// Writes and flushes: a 100-day-old hour with salinity and pH of each buoy (one file), the next
/// hour with water temperature alone, and yesterday's hour with all three. Returns every row
/// and the rows within retention.
/// `hour` is [`this_hour`], taken once by the caller.
pub fn write_aged_data(engine: &Engine, buoys: &[&str], hour: i64) -> (RowMap, RowMap) {
    let (old, next, recent) = (hour - 100 * DAY, hour - 100 * DAY + HOUR, hour - DAY);
    let (mut all, mut kept) = (RowMap::new(), RowMap::new());
    for (i, &b) in buoys.iter().enumerate() {
        let i = i as i64;
        let rows = vec![
            ("salinity_psu", old + i * NANOS_PER_SECOND, milli(35_000 + i)),
            ("ph", old + i * NANOS_PER_SECOND, milli(8_000 + i)),
            ("water_temp_c", next + i * NANOS_PER_SECOND, milli(12_000 + i)),
            ("salinity_psu", recent + i * NANOS_PER_SECOND, milli(35_500 + i)),
            ("ph", recent + i * NANOS_PER_SECOND, milli(8_100 + i)),
            ("water_temp_c", recent + i * NANOS_PER_SECOND, milli(12_500 + i)),
        ];
        let outcome = engine.ingest(&buoy(b), 1, batch(&rows)).unwrap().wait().unwrap();
        assert!(matches!(outcome, IngestOutcome::Stored { .. }), "{b}: {outcome:?}");
        for (m, ts, v) in rows {
            let key = (b.to_string(), m.to_string(), ts);
            all.insert(key.clone(), (v, 0));
            if ts >= recent || m == "ph" {
                kept.insert(key, (v, 0));
            }
        }
    }
    engine.flush().unwrap();
    (all, kept)
}

fn retaining(dir: &std::path::Path) -> EngineConfig {
    let mut c = config(dir);
    c.compaction_background = false;
    c.retention = retention();
    c
}

#[test]
fn data_past_retention_disappears_and_other_metrics_keep_theirs() {
    const BUOYS: [&str; 2] = ["r-1", "r-2"];
    let dir = tempfile::tempdir().unwrap();
    let hour = this_hour();
    let old = hour - 100 * DAY;
    let (all, kept) = {
        let mut c = retaining(dir.path());
        c.retention = Retention::default();
        let engine = Engine::open(c).unwrap();
        register(&engine, &BUOYS);
        let written = write_aged_data(&engine, &BUOYS, hour);
        assert_eq!(read_map(&engine), written.0);
        assert_eq!(engine.last_retention().unwrap(), None);
        engine.shutdown().unwrap();
        written
    };
    let engine = Engine::open(retaining(dir.path())).unwrap();
    // The compactor applies retention on its own every second; an explicit pass may find it
    // done already, so the outcome is read from the catalog's record.
    engine.apply_retention().unwrap();
    let record = engine.last_retention().unwrap().expect("a retention record");
    assert_eq!(read_map(&engine), kept);
    assert_eq!((record.files_dropped, record.files_rewritten), (1, 1), "{record:?}");
    assert_eq!(record.rows_removed, 2 * BUOYS.len() as u64);
    assert_eq!(record.metrics, ["salinity_psu", "water_temp_c"]);
    assert_eq!(record.settings, "default 30d, ph 365d");
    assert_eq!((record.partition_first, record.partition_last_end), (old, old + 2 * HOUR));
    let metrics = engine.metrics();
    assert_eq!((metrics.partitions_dropped, metrics.retention_files_rewritten), (1, 1));
    assert_eq!(metrics.retention_rows_removed, record.rows_removed);
    // Nothing left to expire; the rewritten file holds pH alone.
    assert_eq!(engine.apply_retention().unwrap(), None);
    let old = engine.files().into_iter().filter(|f| f.partition_start == old).collect::<Vec<_>>();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].metrics.iter().map(|m| m.to_string()).collect::<Vec<_>>(), ["ph"]);
    decode_catalog_files(&engine);
    engine.shutdown().unwrap();
    drop(engine);
    // The record and the outcome survive a reopen; the removed rows do not come back.
    let engine = Engine::open(retaining(dir.path())).unwrap();
    assert_eq!(engine.last_retention().unwrap(), Some(record));
    assert_eq!(read_map(&engine), kept);
    assert_eq!(assert_stored_once(&engine), kept);
    assert!(all.len() > kept.len());
}
