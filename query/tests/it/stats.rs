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
    // Both files hold both buoys: a caller who sees one of them gets that buoy's series
    // statistics of each, never the other's.
    let only_a = AccessPolicy::restricted(["buoy-a"], None);
    assert_eq!(
        files_from_statistics(&f, PER_METRIC, &only_a),
        Some(files_in(&f, T0) + files_in(&f, T0 + HOUR))
    );
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
        "SELECT buoy_id, count(*) FROM readings GROUP BY buoy_id",
        "SELECT metric, buoy_id, max(value) FROM readings GROUP BY metric, buoy_id",
        "SELECT buoy_id, max(value) AS m FROM readings WHERE metric = 'ph' GROUP BY buoy_id ORDER BY m DESC LIMIT 10",
    ] {
        assert!(rewritten(sql), "{sql}");
    }
    for sql in [
        // Grouped by something the statistics do not keep.
        "SELECT metric, quality, count(*) FROM readings GROUP BY metric, quality",
        "SELECT upper(buoy_id), count(*) FROM readings GROUP BY upper(buoy_id)",
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

/// Per `(buoy, metric)` group: (count, sum, min, max) of the model's rows that `keep` passes.
type SeriesGroups = BTreeMap<(String, String), (i64, f64, f64, f64)>;

fn model_series(rows: &[Row], keep: impl Fn(&Row) -> bool) -> SeriesGroups {
    let mut out = SeriesGroups::new();
    for r in rows.iter().filter(|r| keep(r)) {
        let g = out.entry((r.0.clone(), r.1.clone())).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        g.0 += 1;
        g.1 += r.3;
        g.2 = g.2.min(r.3);
        g.3 = g.3.max(r.3);
    }
    out
}

/// Groups by buoy alone (the model's groups folded over metrics).
fn by_buoy(series: &SeriesGroups) -> Groups {
    let mut out = Groups::new();
    for ((buoy, _), g) in series {
        let e = out.entry(buoy.clone()).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
        e.0 += g.0;
        e.1 += g.1;
        e.2 = e.2.min(g.2);
        e.3 = e.3.max(g.3);
    }
    out
}

/// `buoy_id, metric, count, sum, avg, min, max` rows of `sql`: counts, minimums and maximums
/// exact, sums and means within 1e-12 relative of the model's.
fn assert_series_answer(f: &Fixture, sql: &str, policy: &AccessPolicy, want: &SeriesGroups) {
    let batches = f.sql(sql, policy).unwrap();
    let mut got = SeriesGroups::new();
    for b in &batches {
        let text = |i: usize| {
            bluewave_query::datafusion::arrow::compute::cast(
                b.column(i),
                &bluewave_query::datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap()
        };
        let (buoy, metric) = (text(0), text(1));
        let (count, sum, avg) = (
            b.column(2).as_primitive::<Int64Type>(),
            b.column(3).as_primitive::<Float64Type>(),
            b.column(4).as_primitive::<Float64Type>(),
        );
        let (min, max) =
            (b.column(5).as_primitive::<Float64Type>(), b.column(6).as_primitive::<Float64Type>());
        for i in 0..b.num_rows() {
            let key =
                (buoy.as_string::<i32>().value(i).to_owned(), metric.as_string::<i32>().value(i).to_owned());
            let w = want.get(&key).unwrap_or_else(|| panic!("{sql}: unexpected group {key:?}"));
            let mean = w.1 / w.0 as f64;
            assert!(
                (avg.value(i) - mean).abs() <= 1e-12 * mean.abs(),
                "{sql}: {key:?} avg {} vs {mean}",
                avg.value(i)
            );
            got.insert(key, (count.value(i), sum.value(i), min.value(i), max.value(i)));
        }
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{sql}");
    for (k, g) in &got {
        let w = &want[k];
        assert_eq!((g.0, g.2, g.3), (w.0, w.2, w.3), "{sql}: {k:?}");
        assert!((g.1 - w.1).abs() <= 1e-12 * w.1.abs(), "{sql}: {k:?} sum {} vs {}", g.1, w.1);
    }
}

/// Per-buoy and per-series aggregates over `conds` must equal the model's `expected` rows; the
/// aggregates are answered from statistics where files are taken whole (and scanned otherwise).
pub fn assert_per_buoy(f: &Fixture, conds: &str, policy: &AccessPolicy, expected: &[Row]) {
    let want = model_series(expected, |_| true);
    let sql = format!(
        "SELECT buoy_id, metric, count(*), sum(value), avg(value), min(value), max(value) FROM readings \
         WHERE {conds} GROUP BY buoy_id, metric"
    );
    assert!(files_from_statistics(f, &sql, policy).is_some(), "not rewritten: {sql}");
    assert_series_answer(f, &sql, policy, &want);
    // Grouped by buoy alone, in the shape of `answer` (buoy first).
    let sql = format!(
        "SELECT buoy_id, count(*), sum(value), avg(value), min(value), max(value) FROM readings \
         WHERE {conds} GROUP BY buoy_id ORDER BY buoy_id"
    );
    assert!(files_from_statistics(f, &sql, policy).is_some(), "not rewritten: {sql}");
    let got = answer(f, &sql, policy);
    let want = by_buoy(&want);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{sql}");
    for (k, g) in &got {
        let w = &want[k];
        assert_eq!((g.0, g.2, g.3), (w.0, w.2, w.3), "{sql}: {k}");
        assert!((g.1 - w.1).abs() <= 1e-12 * w.1.abs(), "{sql}: {k} sum {} vs {}", g.1, w.1);
    }
}

/// Six buoys, two flushed hours, and a few buffered rows.
fn fleet() -> (Fixture, Vec<String>) {
    let names: Vec<String> = (0..6).map(|i| format!("buoy-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = fixture(&refs);
    for (hour, seq) in [(0, 1), (1, 2)] {
        for (b, name) in names.iter().enumerate() {
            let mut rows = Vec::new();
            for i in 0..90 {
                let ts = T0 + hour * HOUR + i * SEC;
                rows.push(("ph", ts, 7.0 + ((b as i64 * 13 + i + hour * 7) % 97) as f64 / 100.0));
                rows.push(("nitrate_mg_l", ts, ((b as i64 * 29 + i * 3 + hour) % 211) as f64 / 8.0));
            }
            f.ingest(name, seq, &rows);
        }
        f.engine.flush().unwrap();
    }
    f.ingest(&names[2], 3, &[("nitrate_mg_l", T0 + 2 * HOUR, 99.5)]);
    (f, names)
}

#[test]
fn per_buoy_extremes_and_top_n_come_from_series_statistics() {
    let (f, names) = fleet();
    let all = AccessPolicy::unrestricted();
    let rows = model(&f.engine);
    let files = files_in(&f, T0) + files_in(&f, T0 + HOUR);
    assert!(f.engine.snapshot().view.files().all(|m| m.has_series_stats()));

    // Q6: the top 3 buoys by their largest nitrate reading, no file opened.
    let top = "SELECT buoy_id, max(value) AS m FROM readings WHERE metric = 'nitrate_mg_l' \
               GROUP BY buoy_id ORDER BY m DESC, buoy_id LIMIT 3";
    let with_nitrate = f.engine.snapshot().view.files().filter(|m| m.has_metric("nitrate_mg_l")).count();
    assert_eq!(files_from_statistics(&f, top, &all), Some(with_nitrate));
    let mut want: Vec<(String, f64)> =
        by_buoy(&model_series(&rows, |r| r.1 == "nitrate_mg_l")).into_iter().map(|(b, g)| (b, g.3)).collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    want.truncate(3);
    let batches = f.sql(top, &all).unwrap();
    let got: Vec<(String, f64)> = crate::common::strings(&batches)
        .into_iter()
        .zip(batches.iter().flat_map(|b| b.column(1).as_primitive::<Float64Type>().values().to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[0], (names[2].clone(), 99.5), "the buffered reading counts");

    // Count, sum, mean, min and max per buoy and per series, over every file.
    let sql = "SELECT buoy_id, metric, count(*), sum(value), avg(value), min(value), max(value) FROM readings \
               GROUP BY buoy_id, metric";
    assert_eq!(files_from_statistics(&f, sql, &all), Some(files));
    assert_per_buoy(&f, "true", &all, &rows);

    // A time filter that cuts the second hour: its files are scanned, the first hour's not.
    let cut = T0 + HOUR + 30 * SEC;
    let conds = format!("ts < to_timestamp_nanos({cut})");
    let sql = format!("SELECT buoy_id, count(*) FROM readings WHERE {conds} GROUP BY buoy_id");
    assert_eq!(files_from_statistics(&f, &sql, &all), Some(files_in(&f, T0)));
    let cut_rows: Vec<Row> = rows.iter().filter(|r| r.2 < cut).cloned().collect();
    assert_per_buoy(&f, &conds, &all, &cut_rows);

    // A caller limited to two buoys sees their statistics only, from the same files.
    let two = AccessPolicy::restricted([names[1].as_str(), names[4].as_str()], None);
    assert_eq!(files_from_statistics(&f, sql.as_str(), &two), Some(files_in(&f, T0)));
    assert_eq!(files_from_statistics(&f, top, &two), Some(with_nitrate));
    let theirs: Vec<Row> = rows.iter().filter(|r| two.allows(&r.0, r.2)).cloned().collect();
    assert_per_buoy(&f, "true", &two, &theirs);
    let batches = f.sql(top, &two).unwrap();
    let mut seen = crate::common::strings(&batches);
    seen.sort();
    assert_eq!(seen, vec![names[1].clone(), names[4].clone()]);
    // A history limit inside the second hour: first-hour files are outside it, second-hour
    // files cut and scanned.
    let recent = AccessPolicy::restricted(names.iter().map(String::as_str), Some(T0 + HOUR + 45 * SEC));
    let recent_rows: Vec<Row> = rows.iter().filter(|r| recent.allows(&r.0, r.2)).cloned().collect();
    assert_per_buoy(&f, "true", &recent, &recent_rows);
}

#[test]
fn catalog_growth_of_series_statistics_is_40_bytes_a_series() {
    // 50 buoys, 8 metrics, 10 minutes at 1 Hz in one hourly partition: one flush.
    let names: Vec<String> = (0..50).map(|i| format!("buoy-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = fixture(&refs);
    let metrics = [
        "ph",
        "salinity_psu",
        "water_temp_c",
        "nitrate_mg_l",
        "turbidity_ntu",
        "oxygen_mg_l",
        "chlorophyll_ug_l",
        "battery_v",
    ];
    for (b, name) in names.iter().enumerate() {
        let mut rows = Vec::new();
        for i in 0..600i64 {
            for (m, metric) in metrics.iter().enumerate() {
                rows.push((
                    *metric,
                    T0 + i * SEC,
                    ((b as i64 * 31 + i * 7 + m as i64) % 1_000) as f64 / 100.0,
                ));
            }
        }
        f.ingest(name, 1, &rows);
    }
    f.engine.flush().unwrap();
    let snapshot = f.engine.snapshot();
    let mut entry_bytes = 0;
    let mut series = 0;
    let mut file_bytes = 0;
    let mut readings = 0;
    for meta in snapshot.view.files() {
        entry_bytes += meta.encode().len();
        series += meta.series_stats.len();
        file_bytes += meta.bytes as usize;
        readings += meta.rows as usize;
        let mut without = (**meta).clone();
        without.series_stats.clear();
        assert_eq!(meta.encode().len(), without.encode().len() + 40 * meta.series_stats.len());
    }
    assert_eq!(series, names.len() * metrics.len());
    assert_eq!(readings, names.len() * metrics.len() * 600);
    let files = snapshot.view.file_count();
    eprintln!(
        "catalog growth: {files} files, {readings} readings, {file_bytes} Parquet bytes; catalog entries {entry_bytes} bytes \
         ({} without series stats), series stats {} bytes ({:.2} % of the Parquet bytes, {:.3} B/reading)",
        entry_bytes - 40 * series,
        40 * series,
        100.0 * (40 * series) as f64 / file_bytes as f64,
        (40 * series) as f64 / readings as f64
    );
}
