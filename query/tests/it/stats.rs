//! Aggregates answered from the catalog's per-file metric statistics: `EXPLAIN ANALYZE` shows
//! how many files were answered without being opened, only files a filter and the policy take
//! whole are (never one a tombstone or a rewrite touches), and the answers equal a model of
//! the rows through the buffer, deletes, rewrites, time cuts and a restricted policy.

use std::collections::BTreeMap;

use bluewave_engine::{BuoyId, DeleteRange, MetricName};
use bluewave_query::AccessPolicy;
use bluewave_query::datafusion::arrow::array::{Array, AsArray};
use bluewave_query::datafusion::arrow::datatypes::{Float64Type, Int64Type};
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;

use crate::common::{Fixture, HOUR, Row, SEC, T0, fixture, model};

const BUOYS: [&str; 2] = ["buoy-a", "buoy-b"];

const PER_METRIC: &str = "SELECT metric, count(*), sum(value), avg(value), min(value), max(value) \
                          FROM readings GROUP BY metric ORDER BY metric";

fn text(f: &Fixture, sql: &str, policy: &AccessPolicy) -> String {
    pretty_format_batches(&f.sql(sql, policy).unwrap()).unwrap().to_string()
}

/// `files_from_statistics` of the `CatalogAggregateExec` line of `EXPLAIN ANALYZE`, `None` when
/// the aggregate was not rewritten.
fn files_from_statistics(f: &Fixture, sql: &str, policy: &AccessPolicy) -> Option<usize> {
    let plan = text(f, &format!("EXPLAIN ANALYZE {sql}"), policy);
    let start = plan.find("CatalogAggregateExec")?;
    let line = &plan[start..plan[start..].find('\n').map_or(plan.len(), |e| start + e)];
    let at = line.find("files_from_statistics=").unwrap_or_else(|| panic!("no metric in {line}"));
    let value = line[at + "files_from_statistics=".len()..].split([',', ']', ' ']).next().unwrap();
    Some(value.parse().unwrap())
}

/// Per group: (count, sum, min, max) of the model's rows that `keep` passes.
type Groups = BTreeMap<String, (i64, f64, f64, f64)>;

fn model_groups(rows: &[Row], keep: impl Fn(&Row) -> bool) -> Groups {
    let mut out = Groups::new();
    for r in rows.iter().filter(|r| keep(r)) {
        let g = out.entry(r.1.clone()).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        g.0 += 1;
        g.1 += r.3;
        g.2 = g.2.min(r.3);
        g.3 = g.3.max(r.3);
    }
    out
}

/// The per-metric answer of `sql` (shaped like [`PER_METRIC`]); checks `avg = sum / count`.
fn answer(f: &Fixture, sql: &str, policy: &AccessPolicy) -> Groups {
    let batches = f.sql(sql, policy).unwrap();
    let names = crate::common::strings(&batches);
    let mut values = Vec::new();
    for b in &batches {
        let (count, sum, avg) = (
            b.column(1).as_primitive::<Int64Type>(),
            b.column(2).as_primitive::<Float64Type>(),
            b.column(3).as_primitive::<Float64Type>(),
        );
        let (min, max) =
            (b.column(4).as_primitive::<Float64Type>(), b.column(5).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            assert!((avg.value(i) - sum.value(i) / count.value(i) as f64).abs() < 1e-9, "{sql}");
            values.push((count.value(i), sum.value(i), min.value(i), max.value(i)));
        }
    }
    names.into_iter().zip(values).collect()
}

/// Counts, minimums and maximums exact; sums to rounding (added in another order).
fn assert_groups(got: &Groups, want: &Groups, what: &str) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}");
    for (k, g) in got {
        let w = &want[k];
        assert_eq!((g.0, g.2, g.3), (w.0, w.2, w.3), "{what}: {k}");
        assert!((g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0), "{what}: {k} sum {} vs {}", g.1, w.1);
    }
}

/// Buoy `b` writes `n` seconds of ph and salinity from `start`.
fn write(f: &Fixture, b: usize, seq: u64, start: i64, n: i64, base: f64) {
    let mut rows = Vec::new();
    for i in 0..n {
        rows.push(("ph", start + i * SEC, base + (i % 50) as f64 / 100.0));
        rows.push(("salinity_psu", start + i * SEC, 30.0 + base + (i % 7) as f64 / 8.0));
    }
    f.ingest(BUOYS[b], seq, &rows);
}

/// Files of the partition starting at `start`.
fn files_in(f: &Fixture, start: i64) -> usize {
    f.engine.snapshot().view.partitions.get(&start).map_or(0, Vec::len)
}

/// Per-metric aggregates over `conds` (a `WHERE` clause) must equal the model's `expected` rows.
pub fn assert_per_metric(f: &Fixture, conds: &str, policy: &AccessPolicy, expected: &[Row]) {
    let sql = format!(
        "SELECT metric, count(*), sum(value), avg(value), min(value), max(value) FROM readings \
         WHERE {conds} GROUP BY metric ORDER BY metric"
    );
    assert!(files_from_statistics(f, &sql, policy).is_some(), "not rewritten: {sql}");
    assert_groups(&answer(f, &sql, policy), &model_groups(expected, |_| true), &sql);
}

/// Two hours of both buoys flushed (one file per hour), and a few rows only in the buffer.
fn two_hours() -> Fixture {
    let f = fixture(&BUOYS);
    for b in 0..2 {
        write(&f, b, 1, T0, 120, 7.0 + b as f64);
    }
    f.engine.flush().unwrap();
    for b in 0..2 {
        write(&f, b, 2, T0 + HOUR, 120, 8.0 - b as f64);
    }
    f.engine.flush().unwrap();
    write(&f, 0, 3, T0 + 2 * HOUR, 5, 6.5);
    f
}

#[test]
fn files_taken_whole_are_answered_from_statistics() {
    let f = two_hours();
    let all = AccessPolicy::unrestricted();
    let (first, second) = (files_in(&f, T0), files_in(&f, T0 + HOUR));
    assert!(first >= 1 && second >= 1);
    let rows = model(&f.engine);
    assert_eq!(files_from_statistics(&f, PER_METRIC, &all), Some(first + second));
    assert_groups(&answer(&f, PER_METRIC, &all), &model_groups(&rows, |_| true), PER_METRIC);

    // A time filter that cuts the second hour: the first file whole, the second scanned.
    let cut = T0 + HOUR + 30 * SEC;
    let sql = format!(
        "SELECT metric, count(*), sum(value), avg(value), min(value), max(value) FROM readings \
         WHERE ts < to_timestamp_nanos({cut}) GROUP BY metric ORDER BY metric"
    );
    assert_eq!(files_from_statistics(&f, &sql, &all), Some(first));
    assert_groups(&answer(&f, &sql, &all), &model_groups(&rows, |r| r.2 < cut), &sql);

    // One metric and both buoys named: the files are still taken whole, for that metric.
    let sql = "SELECT metric, count(value), sum(value), avg(value), min(value), max(value) FROM readings \
               WHERE metric = 'ph' AND buoy_id IN ('buoy-a', 'buoy-b') GROUP BY metric ORDER BY metric";
    let with_ph = |start| {
        f.engine
            .snapshot()
            .view
            .partitions
            .get(&start)
            .map_or(0, |v| v.iter().filter(|m| m.has_metric("ph")).count())
    };
    assert_eq!(files_from_statistics(&f, sql, &all), Some(with_ph(T0) + with_ph(T0 + HOUR)));
    assert_groups(&answer(&f, sql, &all), &model_groups(&rows, |r| r.1 == "ph"), sql);

    // No GROUP BY: one row, also over no rows at all.
    let count = f.sql_count("SELECT count(*) FROM readings", &all).unwrap();
    assert_eq!(count, rows.len() as i64);
    let empty = "SELECT count(*), avg(value), max(value) FROM readings WHERE metric = 'no_such_metric'";
    assert!(files_from_statistics(&f, empty, &all).is_some());
    let batches = f.sql(empty, &all).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let b = &batches[0];
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 0);
    assert!(b.column(1).is_null(0) && b.column(2).is_null(0));
}

#[test]
fn a_policy_files_straddle_are_scanned_and_only_its_rows_count() {
    let f = two_hours();
    let rows = model(&f.engine);
    // Both files hold both buoys: neither is taken whole for a caller who sees one of them.
    let only_a = AccessPolicy::restricted(["buoy-a"], None);
    assert_eq!(files_from_statistics(&f, PER_METRIC, &only_a), Some(0));
    assert_groups(&answer(&f, PER_METRIC, &only_a), &model_groups(&rows, |r| r.0 == "buoy-a"), "buoy-a");
    // A history limit inside the second hour: the first file is outside it, the second cut.
    let recent = AccessPolicy::restricted(BUOYS, Some(T0 + HOUR + 60 * SEC));
    assert_eq!(files_from_statistics(&f, PER_METRIC, &recent), Some(0));
    assert_groups(
        &answer(&f, PER_METRIC, &recent),
        &model_groups(&rows, |r| r.2 >= T0 + HOUR + 60 * SEC),
        "recent",
    );
    // Both buoys, all history: every file whole again.
    let both = AccessPolicy::restricted(BUOYS, Some(T0));
    assert_eq!(
        files_from_statistics(&f, PER_METRIC, &both),
        Some(files_in(&f, T0) + files_in(&f, T0 + HOUR))
    );
}

#[test]
fn deletes_and_rewrites_keep_their_files_out_of_the_statistics() {
    let f = two_hours();
    let all = AccessPolicy::unrestricted();
    // A delete in the first hour (pending tombstone) and a rewrite of second-hour keys in the
    // buffer: both files need merging for that buoy, so neither is answered from statistics.
    let range = DeleteRange {
        buoy: BuoyId::new("buoy-b").unwrap(),
        metric: Some(MetricName::new("ph").unwrap()),
        start: T0,
        end: T0 + 30 * SEC,
    };
    f.engine.delete(&range).unwrap().wait().unwrap();
    f.ingest("buoy-a", 4, &[("ph", T0 + HOUR + 3 * SEC, 1.25), ("salinity_psu", T0 + HOUR + 3 * SEC, 99.5)]);
    let rows = model(&f.engine);
    assert_eq!(files_from_statistics(&f, PER_METRIC, &all), Some(0));
    assert_groups(&answer(&f, PER_METRIC, &all), &model_groups(&rows, |_| true), "after delete and rewrite");
    // Flushed and compacted, the delete and the rewrite are in the files: statistics again.
    f.engine.flush().unwrap();
    f.engine.compact().unwrap();
    let compacted = model(&f.engine);
    assert_eq!(compacted, rows);
    let files: usize = f.engine.snapshot().view.partitions.values().map(Vec::len).sum();
    assert_eq!(files_from_statistics(&f, PER_METRIC, &all), Some(files));
    assert_groups(&answer(&f, PER_METRIC, &all), &model_groups(&compacted, |_| true), "compacted");
}

#[test]
fn only_shapes_statistics_can_answer_are_rewritten() {
    let f = two_hours();
    let all = AccessPolicy::unrestricted();
    let rewritten = |sql: &str| text(&f, &format!("EXPLAIN {sql}"), &all).contains("CatalogAggregateExec");
    for sql in [
        PER_METRIC,
        "SELECT count(*) FROM readings",
        "SELECT max(value), min(value) FROM readings WHERE metric = 'ph' OR metric = 'salinity_psu'",
        "SELECT metric, avg(value) FROM readings WHERE ts BETWEEN to_timestamp_nanos(0) AND now() GROUP BY metric",
        "SELECT count(*) FROM (SELECT metric, value FROM readings WHERE buoy_id = 'buoy-a') r",
    ] {
        assert!(rewritten(sql), "{sql}");
    }
    for sql in [
        // Grouped by something the statistics do not keep.
        "SELECT buoy_id, count(*) FROM readings GROUP BY buoy_id",
        "SELECT metric, quality, count(*) FROM readings GROUP BY metric, quality",
        // Aggregates of other columns or of expressions, or not plain.
        "SELECT metric, max(ts) FROM readings GROUP BY metric",
        "SELECT avg(value * 2) FROM readings",
        "SELECT count(DISTINCT value) FROM readings",
        "SELECT sum(value) FILTER (WHERE quality = 0) FROM readings",
        "SELECT stddev(value) FROM readings",
        // Filters the catalog cannot tell exactly.
        "SELECT count(*) FROM readings WHERE value > 7.5",
        "SELECT count(*) FROM readings WHERE quality = 0",
        "SELECT count(*) FROM readings WHERE buoy_id = 'buoy-a' OR metric = 'ph'",
        "SELECT count(*) FROM readings WHERE buoy_id <> 'buoy-a'",
        // Not a bare scan underneath.
        "SELECT count(*) FROM (SELECT * FROM readings LIMIT 3) r",
    ] {
        assert!(!rewritten(sql), "{sql}");
    }
    // Every one of them still answers: one count against the model.
    let rows = model(&f.engine);
    let n = f.sql_count("SELECT count(*) FROM readings WHERE value > 7.5", &all).unwrap();
    assert_eq!(n, rows.iter().filter(|r| r.3 > 7.5).count() as i64);
}
