//! Per-buoy overlap: a fleet whose clocks are skewed writes flush files whose *file-wide* time
//! ranges overlap although no key is written twice. Those files are read by the plain Parquet
//! scan (nothing merged); only the buoys that really have rewrites, late data or deletes go
//! through the last-write-wins merge, and the answers stay exactly the reference reader's.

use bluewave_engine::{BuoyId, DeleteRange, MetricName};
use bluewave_query::AccessPolicy;
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;

use crate::common::{Fixture, SEC, T0, fixture, model};

const BUOYS: [&str; 3] = ["buoy-a", "buoy-b", "buoy-c"];

/// The scan line of `EXPLAIN` for `sql`.
fn scan_line(f: &Fixture, sql: &str) -> String {
    let batches = f.sql(&format!("EXPLAIN {sql}"), &AccessPolicy::unrestricted()).unwrap();
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let start = text.find("ReadingsScanExec").unwrap_or_else(|| panic!("no scan in {text}"));
    let line = &text[start..];
    line[..line.find(", partitions=").unwrap()].to_owned()
}

/// Buoy `b` writes 10 s of ph and salinity starting at `start` (its own clock).
fn write(f: &Fixture, b: usize, seq: u64, start: i64) {
    let mut rows = Vec::new();
    for i in 0..10 {
        rows.push(("ph", start + i * SEC, 8.0 + (b as f64) + i as f64 / 100.0));
        rows.push(("salinity_psu", start + i * SEC, 35.0 + seq as f64));
    }
    f.ingest(BUOYS[b], seq, &rows);
}

fn all_rows_sql() -> &'static str {
    "SELECT buoy_id, metric, ts, value, quality FROM readings ORDER BY buoy_id, metric, ts"
}

#[test]
fn skewed_in_order_flushes_are_read_without_merging() {
    let f = fixture(&BUOYS);
    // Clocks skewed by up to 40 s; each flush holds 10 s of every buoy, so consecutive files
    // overlap in time as a whole, but never for one buoy.
    let skew = [0, 25 * SEC, 40 * SEC];
    for round in 0..3u64 {
        for (b, clock) in skew.iter().enumerate() {
            write(&f, b, round + 1, T0 + clock + round as i64 * 10 * SEC);
        }
        f.engine.flush().unwrap();
    }
    let files = f.engine.files();
    // Two files per flush: ph (0.01 steps) and salinity (whole units) have their own encoding.
    assert_eq!(files.len(), 6);
    let (first, second) = (
        files.iter().find(|f| f.generation == 1).unwrap(),
        files.iter().find(|f| f.generation == 2).unwrap(),
    );
    assert!(first.ts_max >= second.ts_min, "file-wide ranges overlap");
    assert_eq!(
        scan_line(&f, "SELECT * FROM readings"),
        "ReadingsScanExec: policy=[buoys=all], files_selected=6, files_pruned=0, files_merged=0, \
         buoys_merged=0, buffer_chunks=0"
    );
    let expected = model(&f.engine);
    assert_eq!(expected.len(), 3 * 3 * 20);
    assert_eq!(f.sql_rows(all_rows_sql(), &AccessPolicy::unrestricted()).unwrap(), expected);

    // The live buffer continues each buoy in order: still nothing merged from files. (One
    // chunk per batch: each waited for its ack, so each was its own group commit.)
    for (b, clock) in skew.iter().enumerate() {
        write(&f, b, 4, T0 + clock + 30 * SEC);
    }
    assert_eq!(
        scan_line(&f, "SELECT * FROM readings"),
        "ReadingsScanExec: policy=[buoys=all], files_selected=6, files_pruned=0, files_merged=0, \
         buoys_merged=0, buffer_chunks=3"
    );
    assert_eq!(f.sql_rows(all_rows_sql(), &AccessPolicy::unrestricted()).unwrap(), model(&f.engine));
}

#[test]
fn only_buoys_with_rewrites_or_deletes_are_merged() {
    let f = fixture(&BUOYS);
    let skew = [0, 25 * SEC, 40 * SEC];
    for round in 0..2u64 {
        for (b, clock) in skew.iter().enumerate() {
            write(&f, b, round + 1, T0 + clock + round as i64 * 10 * SEC);
        }
        f.engine.flush().unwrap();
    }
    // buoy-b rewrites its first 10 s (a correction) and the rewrite is flushed: its rows in
    // the first and the new file overlap; the other buoys stay plain.
    write(&f, 1, 3, T0 + skew[1]);
    f.engine.flush().unwrap();
    assert_eq!(
        scan_line(&f, "SELECT * FROM readings"),
        "ReadingsScanExec: policy=[buoys=all], files_selected=6, files_pruned=0, files_merged=6, \
         buoys_merged=1, buffer_chunks=0"
    );
    // A query that never asks for buoy-b merges nothing.
    assert_eq!(
        scan_line(&f, "SELECT * FROM readings WHERE buoy_id = 'buoy-c'"),
        "ReadingsScanExec: policy=[buoys=all], files_selected=4, files_pruned=2, files_merged=0, \
         buoys_merged=0, buffer_chunks=0"
    );
    let expected = model(&f.engine);
    let rewritten: Vec<_> = expected.iter().filter(|r| r.0 == "buoy-b" && r.1 == "salinity_psu").collect();
    assert_eq!(rewritten.len(), 20);
    assert_eq!(rewritten.iter().filter(|r| r.3 == 38.0).count(), 10, "the correction won");
    assert_eq!(f.sql_rows(all_rows_sql(), &AccessPolicy::unrestricted()).unwrap(), expected);

    // A delete of buoy-c's ph in its second file: buoy-c is merged too, the rows are gone.
    let range = DeleteRange {
        buoy: BuoyId::new("buoy-c").unwrap(),
        metric: Some(MetricName::new("ph").unwrap()),
        start: T0 + skew[2] + 10 * SEC,
        end: T0 + skew[2] + 15 * SEC,
    };
    f.engine.delete(&range).unwrap().wait().unwrap();
    assert_eq!(
        scan_line(&f, "SELECT * FROM readings"),
        "ReadingsScanExec: policy=[buoys=all], files_selected=6, files_pruned=0, files_merged=6, \
         buoys_merged=2, buffer_chunks=0"
    );
    let expected = model(&f.engine);
    assert_eq!(expected.iter().filter(|r| r.0 == "buoy-c" && r.1 == "ph").count(), 15);
    assert_eq!(f.sql_rows(all_rows_sql(), &AccessPolicy::unrestricted()).unwrap(), expected);
    let count = f.sql_count("SELECT count(*) FROM readings", &AccessPolicy::unrestricted()).unwrap();
    assert_eq!(count, expected.len() as i64);
}
