//! The last-write-wins merge of overlapping files streams: many uncompacted generations that
//! rewrite each other's keys (and a delete) are merged batch by batch, so
//! `SELECT buoy_id, count(*) … GROUP BY buoy_id` answers exactly within a query memory pool far
//! smaller than the merged rows; random overlapping generations with rewrites, late data and
//! deletes, read through merge inputs of a few rows per batch, give exactly the reference
//! reader's rows; and a runaway query over the merge still times out, freeing its slot.

use std::collections::BTreeMap;
use std::time::Duration;

use bluewave_engine::{BuoyId, DeleteRange, MetricName};
use bluewave_query::datafusion::arrow::array::AsArray;
use bluewave_query::datafusion::arrow::datatypes::Int64Type;
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;
use bluewave_query::{AccessPolicy, Error, QueryConfig};

use crate::common::{Fixture, HOUR, Row, SEC, T0, fixture_configured, model};

/// A fixture whose files stay as flushed (no background compaction).
fn uncompacted(buoys: &[&str], config: QueryConfig) -> Fixture {
    fixture_configured(buoys, config, |engine| engine.compaction_background = false)
}

const METRICS: [&str; 2] = ["ph", "salinity_psu"];

/// Buoy names `buoy-00`…
fn buoy_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("buoy-{i:02}")).collect()
}

/// `buoy_id, count(*)` rows of a result.
fn counts(batches: &[bluewave_query::datafusion::arrow::array::RecordBatch]) -> BTreeMap<String, i64> {
    let names = crate::common::strings(batches);
    let counts = batches.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec());
    names.into_iter().zip(counts).collect()
}

/// The `ReadingsScanExec` line of `EXPLAIN` of `sql`.
fn scan_line(f: &Fixture, sql: &str) -> String {
    let plan = f.sql(&format!("EXPLAIN {sql}"), &AccessPolicy::unrestricted()).unwrap();
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    let start = plan.find("ReadingsScanExec").unwrap_or_else(|| panic!("no scan: {plan}"));
    plan[start..].lines().next().unwrap().to_owned()
}

/// Generation `g` writes, for every buoy and metric, `GENERATION_SECONDS` seconds from
/// `g * GENERATION_STEP_SECONDS`: each generation rewrites the second half of the one before.
const GENERATIONS: i64 = 12;
const GENERATION_SECONDS: i64 = 1_000;
const GENERATION_STEP_SECONDS: i64 = 500;

#[test]
fn group_by_over_many_overlapping_generations_fits_a_small_memory_pool() {
    let names = buoy_names(16);
    let buoys: Vec<&str> = names.iter().map(String::as_str).collect();
    let f = uncompacted(&buoys, QueryConfig::default());
    let mut seq = 0;
    for g in 0..GENERATIONS {
        seq += 1;
        for b in &buoys {
            let mut rows = Vec::new();
            for s in 0..GENERATION_SECONDS {
                let ts = T0 + (g * GENERATION_STEP_SECONDS + s) * SEC;
                for m in METRICS {
                    rows.push((m, ts, (g * 1_000 + s) as f64 / 100.0));
                }
            }
            f.ingest(b, seq, &rows);
        }
        f.engine.flush().unwrap();
    }
    // A delete hides 100 s of one metric of one buoy in every generation below it.
    let delete = DeleteRange {
        buoy: BuoyId::new("buoy-03").unwrap(),
        metric: Some(MetricName::new("ph").unwrap()),
        start: T0 + 2_000 * SEC,
        end: T0 + 2_100 * SEC,
    };
    f.engine.delete(&delete).unwrap().wait().unwrap();

    let sql = "SELECT buoy_id, count(*) FROM readings GROUP BY buoy_id ORDER BY buoy_id";
    // The scan under the aggregate (which takes no file from statistics: every one is merged).
    let line = scan_line(&f, "SELECT buoy_id FROM readings");
    let files = f.engine.snapshot().view.file_count();
    assert!(files >= GENERATIONS as usize, "{files} files");
    assert!(line.contains(&format!("files_merged={files}")), "every file is merged: {line}");
    let analyzed = f.sql(&format!("EXPLAIN ANALYZE {sql}"), &AccessPolicy::unrestricted()).unwrap();
    let analyzed = pretty_format_batches(&analyzed).unwrap().to_string();
    assert!(analyzed.contains(&format!("files_from_statistics=0, files_scanned={files}")), "{analyzed}");

    // Distinct keys per buoy: the union of the generations' windows, for both metrics.
    let seconds = (GENERATIONS - 1) * GENERATION_STEP_SECONDS + GENERATION_SECONDS;
    let per_buoy = 2 * seconds;
    let written = GENERATIONS * GENERATION_SECONDS * 2 * buoys.len() as i64;
    let mut expected: BTreeMap<String, i64> = names.iter().map(|b| (b.clone(), per_buoy)).collect();
    *expected.get_mut("buoy-03").unwrap() -= 100;
    // The reference reader agrees.
    let mut reference: BTreeMap<String, i64> = BTreeMap::new();
    for row in model(&f.engine) {
        *reference.entry(row.0).or_default() += 1;
    }
    assert_eq!(reference, expected);

    // 8 MiB: a materialising merge would hold every one of the written rows (about 64 bytes
    // each, 25 MB) before answering.
    assert!(written * 64 > 2 * (8 << 20), "{written} rows written");
    let small = AccessPolicy { memory_max_bytes: 8 << 20, ..AccessPolicy::unrestricted() };
    assert_eq!(counts(&f.sql(sql, &small).unwrap()), expected);
    // A typed column too, and a filter the merge must apply after last-write-wins: only the
    // newest generation's values of a key are seen.
    let newest = f
        .sql_count(
            &format!(
                "SELECT count(*) FROM readings WHERE buoy_id = 'buoy-07' AND value >= {}",
                ((GENERATIONS - 1) * 1_000) as f64 / 100.0
            ),
            &small,
        )
        .unwrap();
    assert_eq!(newest, 2 * GENERATION_SECONDS);

    // Cancellation still works over the merge: a runaway join times out and frees its slot.
    let bounded = AccessPolicy { timeout: Duration::from_millis(1_000), ..small.clone() };
    match f.sql("SELECT count(*) FROM readings a CROSS JOIN readings b", &bounded) {
        Err(Error::Timeout { timeout_ms: 1_000 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(&f.sql(sql, &small).unwrap()), expected);
    assert!(f.service.metrics().timed_out >= 1);
}

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
}

#[test]
fn random_overlapping_generations_merge_like_the_reference_reader() {
    for seed in [0x2545_F491_4F6C_DD1Du64, 0x9E37_79B9_7F4A_7C15, 7] {
        run(seed);
    }
}

fn run(seed: u64) {
    let names = buoy_names(4);
    let buoys: Vec<&str> = names.iter().map(String::as_str).collect();
    // Batches of a few rows: every merge input crosses many batch boundaries.
    let config = QueryConfig { batch_rows: 7, ..QueryConfig::default() };
    let f = uncompacted(&buoys, config);
    let mut rng = Rng(seed);
    let mut seqs = vec![0u64; buoys.len()];
    for step in 0..48 {
        match rng.below(12) {
            // Writes: rewrites of earlier keys and late data, over two partitions.
            0..=6 => {
                let b = rng.below(buoys.len() as u64) as usize;
                let base = T0 + rng.below(2) as i64 * HOUR + rng.below(60) as i64 * SEC;
                let rows: Vec<(&str, i64, f64)> = (0..(1 + rng.below(40)))
                    .map(|i| {
                        let m = METRICS[rng.below(2) as usize];
                        (m, base + (i as i64) * SEC, rng.below(10_000) as f64 / 100.0)
                    })
                    .collect();
                seqs[b] += 1;
                f.ingest(buoys[b], seqs[b], &rows);
            }
            7 => {
                let start = T0 + rng.below(2) as i64 * HOUR + rng.below(60) as i64 * SEC;
                let range = DeleteRange {
                    buoy: BuoyId::new(buoys[rng.below(buoys.len() as u64) as usize]).unwrap(),
                    metric: (rng.below(2) == 0)
                        .then(|| MetricName::new(METRICS[rng.below(2) as usize]).unwrap()),
                    start,
                    end: start + rng.below(15) as i64 * SEC + 1,
                };
                f.engine.delete(&range).unwrap().wait().unwrap();
            }
            8..=10 => {
                f.engine.flush().unwrap();
            }
            _ if rng.below(4) == 0 => {
                f.engine.compact().unwrap();
            }
            _ => {}
        }
        if step % 6 == 5 {
            check(&f, &mut rng, &buoys);
        }
    }
    check(&f, &mut rng, &buoys);
}

fn check(f: &Fixture, rng: &mut Rng, buoys: &[&str]) {
    let all = model(&f.engine);
    let everything = AccessPolicy::unrestricted();
    let sql = "SELECT buoy_id, metric, ts, value, quality FROM readings ORDER BY buoy_id, metric, ts";
    assert_eq!(f.sql_rows(sql, &everything).unwrap(), all);
    // Filtered by buoy, metric and time (pruning of each merge input), and under a policy.
    let buoy = buoys[rng.below(buoys.len() as u64) as usize];
    let metric = METRICS[rng.below(2) as usize];
    let start = T0 + rng.below(2 * 3_600) as i64 * SEC;
    let end = start + rng.below(3_600) as i64 * SEC;
    let keep = |r: &Row| r.0 == buoy && r.1 == metric && r.2 >= start && r.2 < end;
    let expected: Vec<Row> = all.iter().filter(|r| keep(r)).cloned().collect();
    let text = format!(
        "SELECT buoy_id, metric, ts, value, quality FROM readings WHERE buoy_id = '{buoy}' AND \
         metric = '{metric}' AND ts >= to_timestamp_nanos({start}) AND ts < to_timestamp_nanos({end}) \
         ORDER BY buoy_id, metric, ts"
    );
    assert_eq!(f.sql_rows(&text, &everything).unwrap(), expected, "{text}");
    let policy = AccessPolicy::restricted([buoys[0], buoys[2]], Some(T0 + HOUR / 2));
    let expected: Vec<Row> = all.iter().filter(|r| policy.allows(&r.0, r.2)).cloned().collect();
    assert_eq!(f.sql_rows(sql, &policy).unwrap(), expected);
    // Counts per buoy (the merge under an aggregate).
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for r in &all {
        *want.entry(r.0.clone()).or_default() += 1;
    }
    let got = counts(
        &f.sql("SELECT buoy_id, count(*) FROM readings GROUP BY buoy_id ORDER BY 1", &everything).unwrap(),
    );
    assert_eq!(got, want);
}
