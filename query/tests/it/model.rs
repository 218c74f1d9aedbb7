//! Randomized model test: random writes, rewrites, late data, deletes, flushes and compactions,
//! then random filtered SQL and typed reads (with and without a restricted policy) must give
//! exactly the rows of the engine's reference merge reader.

use std::collections::BTreeSet;

use bluewave_engine::{BuoyId, DeleteRange, MetricName};
use bluewave_query::{AccessPolicy, BuoyScope, TelemetryFilter};

use crate::common::{HOUR, Row, SEC, T0, fixture, model};

const BUOYS: [&str; 3] = ["buoy-a", "buoy-b", "buoy-c"];
const METRICS: [&str; 3] = ["ph", "salinity_psu", "water_temp_c"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

fn keeps(row: &Row, buoy: Option<&str>, metric: Option<&str>, start: Option<i64>, end: Option<i64>) -> bool {
    buoy.is_none_or(|b| row.0 == b)
        && metric.is_none_or(|m| row.1 == m)
        && start.is_none_or(|s| row.2 >= s)
        && end.is_none_or(|e| row.2 < e)
}

fn ts_sql(t: i64) -> String {
    format!("to_timestamp_nanos({t})")
}

#[test]
fn random_operations_match_the_reference_reader() {
    for seed in [0x9E37_79B9_7F4A_7C15u64, 0xD1B5_4A32_D192_ED03, 42] {
        run(seed);
    }
}

fn run(seed: u64) {
    let f = fixture(&BUOYS);
    let mut rng = Rng(seed);
    let mut seqs = [0u64; 3];
    for step in 0..40 {
        match rng.below(10) {
            // Writes (often rewrites of earlier keys, and late data hours back).
            0..=5 => {
                let b = rng.below(3) as usize;
                let mut rows = Vec::new();
                let base = T0 + rng.below(3) as i64 * HOUR + rng.below(40) as i64 * SEC;
                for i in 0..(1 + rng.below(30)) {
                    let m = rng.pick(&METRICS);
                    let ts = base + i as i64 * SEC;
                    rows.push((m, ts, (rng.below(10_000) as f64) / 100.0));
                }
                seqs[b] += 1;
                f.ingest(BUOYS[b], seqs[b], &rows);
            }
            6 => {
                let start = T0 + rng.below(3) as i64 * HOUR + rng.below(40) as i64 * SEC;
                let range = DeleteRange {
                    buoy: BuoyId::new(rng.pick(&BUOYS)).unwrap(),
                    metric: (rng.below(2) == 0).then(|| MetricName::new(rng.pick(&METRICS)).unwrap()),
                    start,
                    end: start + rng.below(20) as i64 * SEC + 1,
                };
                f.engine.delete(&range).unwrap().wait().unwrap();
            }
            7 | 8 => {
                f.engine.flush().unwrap();
            }
            _ => {
                f.engine.compact().unwrap();
            }
        }
        if step % 4 == 3 {
            check(&f, &mut rng);
        }
    }
    check(&f, &mut rng);
}

fn check(f: &crate::common::Fixture, rng: &mut Rng) {
    let all = model(&f.engine);
    for _ in 0..4 {
        let buoy = (rng.below(2) == 0).then(|| rng.pick(&BUOYS));
        let metric = (rng.below(2) == 0).then(|| rng.pick(&METRICS));
        let start = (rng.below(2) == 0).then(|| T0 + rng.below(3 * 3_600) as i64 * SEC);
        let end = (rng.below(2) == 0).then(|| T0 + rng.below(3 * 3_600) as i64 * SEC);
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e < s => (Some(e), Some(s)),
            other => other,
        };
        let restricted = rng.below(3) == 0;
        let policy = if restricted {
            AccessPolicy::restricted([rng.pick(&BUOYS), rng.pick(&BUOYS)], Some(T0 + HOUR))
        } else {
            AccessPolicy::unrestricted()
        };
        let expected: Vec<Row> = all
            .iter()
            .filter(|r| keeps(r, buoy, metric, start, end) && policy.allows(&r.0, r.2))
            .cloned()
            .collect();

        // SQL.
        let mut conds = vec!["true".to_owned()];
        if let Some(b) = buoy {
            conds.push(format!("buoy_id = '{b}'"));
        }
        if let Some(m) = metric {
            conds.push(format!("metric IN ('{m}', 'no_such_metric')"));
        }
        if let Some(s) = start {
            conds.push(format!("ts >= {}", ts_sql(s)));
        }
        if let Some(e) = end {
            conds.push(format!("ts < {}", ts_sql(e)));
        }
        let text = format!(
            "SELECT buoy_id, metric, ts, value, quality FROM readings WHERE {} ORDER BY buoy_id, metric, ts",
            conds.join(" AND ")
        );
        let got = f.sql_rows(&text, &policy).unwrap();
        assert_eq!(got, expected, "{text}");

        // Aggregates over the same rows.
        let count_text = format!("SELECT count(*) FROM readings WHERE {}", conds.join(" AND "));
        assert_eq!(f.sql_count(&count_text, &policy).unwrap(), expected.len() as i64, "{count_text}");

        // Per-metric aggregates (from file statistics where the filters take files whole).
        crate::stats::assert_per_metric(f, &conds.join(" AND "), &policy, &expected);
        // Per-buoy and per-series aggregates (from series statistics where files are taken whole).
        crate::stats::assert_per_buoy(f, &conds.join(" AND "), &policy, &expected);

        // Latest-row aggregates (run newest data first) over the same rows.
        latest_rows(f, &conds.join(" AND "), &policy, &expected);

        // Typed read, in pages.
        if let BuoyScope::Only(set) = &policy.buoys
            && buoy.is_some_and(|b| !set.contains(b))
        {
            continue;
        }
        let mut filter = TelemetryFilter {
            buoy_id: buoy.map(str::to_owned),
            metric: metric.map(str::to_owned),
            start,
            end,
            limit: Some(1 + rng.below(50) as usize),
            ..TelemetryFilter::default()
        };
        let mut got = Vec::new();
        let mut keys = BTreeSet::new();
        loop {
            let (page, cursor) = f
                .service
                .block_on(async {
                    let mut s = f.service.read(&filter, &policy).await?;
                    let mut batches = Vec::new();
                    while let Some(b) = futures::StreamExt::next(&mut s).await {
                        batches.push(b?);
                    }
                    Ok::<_, bluewave_query::Error>((batches, s.next_cursor()))
                })
                .unwrap()
                .unwrap();
            for row in crate::common::rows(&page) {
                assert!(keys.insert((row.0.clone(), row.1.clone(), row.2)), "row seen twice: {row:?}");
                got.push(row);
            }
            match cursor {
                Some(c) => filter.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, expected, "typed read {filter:?}");
    }
}

/// `last_value(… ORDER BY ts)` / `max(ts)` grouped by buoy and metric, by buoy, and by metric
/// must equal each group's newest row of `expected` (the newest-first rounds must never miss a
/// group whose newest row lies in an older file, nor keep a stale or deleted one).
fn latest_rows(f: &crate::common::Fixture, conds: &str, policy: &AccessPolicy, expected: &[Row]) {
    use std::collections::BTreeMap;
    let mut by_key: BTreeMap<(String, String), (i64, f64)> = BTreeMap::new();
    let mut by_buoy: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_metric: BTreeMap<String, i64> = BTreeMap::new();
    for r in expected {
        by_key.insert((r.0.clone(), r.1.clone()), (r.2, r.3)); // rows come sorted by ts
        let b = by_buoy.entry(r.0.clone()).or_insert(r.2);
        *b = (*b).max(r.2);
        let m = by_metric.entry(r.1.clone()).or_insert(r.2);
        *m = (*m).max(r.2);
    }
    let text = format!(
        "SELECT buoy_id, metric, last_value(value ORDER BY ts) AS v, max(ts) AS t FROM readings \
         WHERE {conds} GROUP BY buoy_id, metric ORDER BY buoy_id, metric"
    );
    let plan = f.sql(&format!("EXPLAIN {text}"), policy).unwrap();
    let plan =
        bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("NewestFirstExec"), "not run newest first: {plan}");
    let batches = f.sql(&text, policy).unwrap();
    let mut got = BTreeMap::new();
    for b in &batches {
        use bluewave_query::datafusion::arrow::array::{AsArray, StringArray};
        use bluewave_query::datafusion::arrow::datatypes::{Float64Type, TimestampNanosecondType};
        let buoy = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let metric = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let v = b.column(2).as_primitive::<Float64Type>();
        let t = b.column(3).as_primitive::<TimestampNanosecondType>();
        for i in 0..b.num_rows() {
            got.insert((buoy.value(i).to_owned(), metric.value(i).to_owned()), (t.value(i), v.value(i)));
        }
    }
    assert_eq!(got, by_key, "{text}");
    for (column, want) in [("buoy_id", &by_buoy), ("metric", &by_metric)] {
        let text = format!(
            "SELECT {column}, CAST(max(ts) AS BIGINT) FROM readings WHERE {conds} GROUP BY {column} ORDER BY {column}"
        );
        let batches = f.sql(&text, policy).unwrap();
        let names = crate::common::strings(&batches);
        let mut times = Vec::new();
        for b in &batches {
            use bluewave_query::datafusion::arrow::array::AsArray;
            let c = b.column(1).as_primitive::<bluewave_query::datafusion::arrow::datatypes::Int64Type>();
            times.extend((0..c.len()).map(|i| c.value(i)));
        }
        let got: BTreeMap<String, i64> = names.into_iter().zip(times).collect();
        assert_eq!(&got, want, "{text}");
    }
}
