//! Time-bucket aggregates answered from minute rollups: `EXPLAIN` names the path and the
//! `rollups` setting turns it off; a model test drives random ingest, rewrites, late data,
//! deletes, flushes, compactions and reopens and checks that every query answers the same with
//! rollups on as with them off (counts, minimums, maximums, first and last values exactly, sums
//! and averages to 1e-12 relative), with windows cut on minute boundaries and inside minutes
//! (the edge minutes are scanned); the access policy (buoys, earliest timestamp, on a minute
//! boundary or inside one) applies to rollups exactly as to readings.

use std::sync::Arc;

use bluewave_engine::{
    BuoyId, BuoyInfo, DeleteRange, Durability, Engine, EngineConfig, MetricName, ReadingBatch,
};
use bluewave_query::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use bluewave_query::datafusion::arrow::compute::cast;
use bluewave_query::datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType,
};
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;
use bluewave_query::{AccessPolicy, QueryConfig, QueryService};

use crate::common::{SEC, T0};

const MINUTE: i64 = 60 * SEC;
const BUOYS: [&str; 3] = ["buoy-a", "buoy-b", "buoy-c"];
const METRICS: [&str; 2] = ["ph", "salinity_psu"];

/// An engine over a data dir and two services on it: rollups on and off.
struct Pair {
    engine: Arc<Engine>,
    on: QueryService,
    off: QueryService,
}

fn engine_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.durability = Durability::Relaxed;
    c.lanes = 2;
    c.flush_interval_ms = 3_600_000;
    // Compactions happen where the test says, so generations overlap in between.
    c.compaction_background = false;
    c
}

fn open(dir: &std::path::Path) -> Pair {
    let engine = Arc::new(Engine::open(engine_config(dir)).unwrap());
    for b in BUOYS {
        engine.register_buoy(BuoyInfo::new(&BuoyId::new(b).unwrap())).unwrap();
    }
    let on = QueryService::new(engine.clone(), QueryConfig::default()).unwrap();
    let off =
        QueryService::new(engine.clone(), QueryConfig { rollups: false, ..QueryConfig::default() }).unwrap();
    Pair { engine, on, off }
}

fn ingest(engine: &Engine, buoy: &str, seq: u64, rows: &[(usize, i64, f64)]) {
    let metrics: Vec<MetricName> = METRICS.iter().map(|m| MetricName::new(m).unwrap()).collect();
    let batch = ReadingBatch::new(
        metrics,
        rows.iter().map(|r| r.1).collect(),
        rows.iter().map(|r| r.0 as u16).collect(),
        rows.iter().map(|r| r.2).collect(),
    )
    .unwrap();
    engine.ingest(&BuoyId::new(buoy).unwrap(), seq, batch).unwrap().wait().unwrap();
}

fn run(service: &QueryService, sql: &str, policy: &AccessPolicy) -> Vec<RecordBatch> {
    service
        .block_on(async { service.sql(sql, policy).await?.collect_batches().await })
        .unwrap()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn text(service: &QueryService, sql: &str, policy: &AccessPolicy) -> String {
    pretty_format_batches(&run(service, sql, policy)).unwrap().to_string()
}

/// A cell of an answer: group keys and exact aggregates as text or integer, sums apart.
#[derive(Debug, PartialEq)]
enum Cell {
    Exact(String),
    Sum(f64),
}

/// The answer's rows; columns named `sum…`/`avg…` compare to rounding, the rest exactly.
fn cells(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        for row in 0..b.num_rows() {
            let mut cells = Vec::new();
            for (i, field) in schema.fields().iter().enumerate() {
                let column = b.column(i);
                let cell = match field.data_type() {
                    DataType::Float64 => {
                        let v = column.as_primitive::<Float64Type>().value(row);
                        if field.name().starts_with("sum") || field.name().starts_with("avg") {
                            Cell::Sum(v)
                        } else {
                            Cell::Exact(format!("{:?}", v.to_bits()))
                        }
                    }
                    DataType::Int64 => Cell::Exact(column.as_primitive::<Int64Type>().value(row).to_string()),
                    DataType::Timestamp(..) => {
                        let c = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None)).unwrap();
                        Cell::Exact(c.as_primitive::<TimestampNanosecondType>().value(row).to_string())
                    }
                    _ => {
                        let c = cast(column, &DataType::Utf8).unwrap();
                        Cell::Exact(c.as_string::<i32>().value(row).to_owned())
                    }
                };
                assert!(!column.is_null(row) || matches!(cell, Cell::Exact(_)), "null in {}", field.name());
                cells.push(cell);
            }
            out.push(cells);
        }
    }
    out
}

/// Rollups on and off answer `sql` alike. Returns whether the rollup path was planned.
fn same_answer(pair: &Pair, sql: &str, policy: &AccessPolicy, what: &str) -> bool {
    let (on, off) = (cells(&run(&pair.on, sql, policy)), cells(&run(&pair.off, sql, policy)));
    assert_eq!(on.len(), off.len(), "{what}: {sql}: row counts");
    for (a, b) in on.iter().zip(&off) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            match (x, y) {
                (Cell::Sum(x), Cell::Sum(y)) => {
                    assert!(
                        (x - y).abs() <= 1e-12 * y.abs().max(f64::MIN_POSITIVE),
                        "{what}: {sql}: {x} vs {y}"
                    )
                }
                _ => assert_eq!(x, y, "{what}: {sql}\n on: {a:?}\noff: {b:?}"),
            }
        }
    }
    text(&pair.on, &format!("EXPLAIN {sql}"), policy).contains("RollupAggregateExec")
}

/// `files_from_rollups` of `EXPLAIN ANALYZE`, `None` when the aggregate was not rewritten.
fn files_from_rollups(service: &QueryService, sql: &str, policy: &AccessPolicy) -> Option<usize> {
    let plan = text(service, &format!("EXPLAIN ANALYZE {sql}"), policy);
    let start = plan.find("RollupAggregateExec")?;
    let line = &plan[start..plan[start..].find('\n').map_or(plan.len(), |e| start + e)];
    let at = line.find("files_from_rollups=").unwrap_or_else(|| panic!("no metric in {line}"));
    let value = line[at + "files_from_rollups=".len()..].split([',', ']', ' ']).next().unwrap();
    Some(value.parse().unwrap())
}

fn ts_literal(ns: i64) -> String {
    let secs = ns.div_euclid(SEC);
    let nanos = ns.rem_euclid(SEC);
    format!("to_timestamp_nanos({})", secs as i128 * 1_000_000_000 + nanos as i128)
}

/// The queries every check runs: minute and coarser buckets, per series and fleet-wide, with
/// filters on buoy, metric and time (on minute boundaries and inside minutes), an origin.
fn queries() -> Vec<String> {
    let full = "count(*) AS n, sum(value) AS sum_v, avg(value) AS avg_v, min(value) AS lo, max(value) AS hi";
    let edges = |a: i64, b: i64| format!("ts >= {} AND ts < {}", ts_literal(a), ts_literal(b));
    vec![
        format!(
            "SELECT date_bin(INTERVAL '1 minute', ts) AS t, buoy_id, metric, {full}, \
             first_value(value ORDER BY ts) AS first_v, last_value(value ORDER BY ts) AS last_v \
             FROM readings GROUP BY t, buoy_id, metric ORDER BY t, buoy_id, metric"
        ),
        format!(
            "SELECT time_bucket(INTERVAL '5 minutes', ts) AS t, {full} FROM readings \
             WHERE metric = 'ph' GROUP BY t ORDER BY t"
        ),
        format!(
            "SELECT metric, date_bin(INTERVAL '1 hour', ts) AS t, {full} FROM readings WHERE {} \
             GROUP BY metric, t ORDER BY metric, t",
            edges(T0 + 7 * MINUTE, T0 + 95 * MINUTE)
        ),
        format!(
            "SELECT date_bin(INTERVAL '15 minutes', ts) AS t, buoy_id, {full} FROM readings WHERE {} \
             AND buoy_id IN ('buoy-a', 'buoy-c') GROUP BY t, buoy_id ORDER BY t, buoy_id",
            edges(T0 + 10 * MINUTE + 17 * SEC, T0 + 150 * MINUTE + 3)
        ),
        format!(
            "SELECT date_bin(INTERVAL '10 minutes', ts, {}) AS t, buoy_id, metric, {full}, \
             last_value(value ORDER BY ts) AS last_v FROM readings WHERE buoy_id = 'buoy-b' \
             GROUP BY t, buoy_id, metric ORDER BY t, buoy_id, metric",
            ts_literal(T0 + 3 * MINUTE)
        ),
        "SELECT date_bin(INTERVAL '2 minutes', ts) AS t, count(*) AS n FROM readings GROUP BY t ORDER BY t"
            .into(),
        // A window inside one minute: no whole minute, every row an edge row.
        format!(
            "SELECT date_bin(INTERVAL '1 minute', ts) AS t, buoy_id, metric, {full} FROM readings WHERE {} \
             GROUP BY t, buoy_id, metric ORDER BY t, buoy_id, metric",
            edges(T0 + 61 * MINUTE + 5 * SEC, T0 + 61 * MINUTE + 50 * SEC)
        ),
    ]
}

/// A small deterministic generator (splitmix64), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random timestamp within three hours of `T0`, at a random sub-minute offset.
fn random_ts(rng: &mut Rng) -> i64 {
    T0 + rng.below(180) as i64 * MINUTE + rng.below(60) as i64 * SEC + rng.below(3) as i64
}

#[test]
fn rollup_answers_equal_scanned_answers_through_rewrites_late_data_deletes_and_reopens() {
    let mut planned = 0;
    let mut checks = 0;
    for seed in [1u64, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let mut pair = open(dir.path());
        let mut rng = Rng(seed);
        let mut seqs = [0u64; 3];
        let everyone = AccessPolicy::unrestricted();
        for step in 0..36 {
            let what = format!("seed {seed} step {step}");
            match rng.below(10) {
                // Ingest: a run of readings of one buoy, sometimes rewriting earlier keys
                // (the same timestamps with new values) or arriving late.
                0..=3 => {
                    let b = rng.below(3) as usize;
                    seqs[b] += 1;
                    let start = random_ts(&mut rng);
                    let rows: Vec<(usize, i64, f64)> = (0..40)
                        .map(|i| {
                            let m = rng.below(2) as usize;
                            let ts =
                                if rng.below(4) == 0 { random_ts(&mut rng) } else { start + i * 7 * SEC };
                            (m, ts, 7.0 + rng.below(2_000) as f64 / 1_000.0)
                        })
                        .collect();
                    ingest(&pair.engine, BUOYS[b], seqs[b], &rows);
                }
                4 => {
                    let start = random_ts(&mut rng);
                    let range = DeleteRange {
                        buoy: BuoyId::new(BUOYS[rng.below(3) as usize]).unwrap(),
                        metric: (rng.below(2) == 0)
                            .then(|| MetricName::new(METRICS[rng.below(2) as usize]).unwrap()),
                        start,
                        end: start + rng.below(20) as i64 * MINUTE + 1,
                    };
                    pair.engine.delete(&range).unwrap().wait().unwrap();
                }
                5..=6 => {
                    pair.engine.flush().unwrap();
                }
                7 => {
                    pair.engine.flush().unwrap();
                    pair.engine.compact().unwrap();
                }
                8 => {
                    let Pair { engine, on, off } = pair;
                    drop((on, off));
                    engine.shutdown().unwrap();
                    drop(engine);
                    pair = open(dir.path());
                }
                _ => {}
            }
            for sql in queries() {
                if same_answer(&pair, &sql, &everyone, &what) {
                    planned += 1;
                }
                checks += 1;
            }
        }
        // Folded and compacted, every file has its rollup and the rollups answer.
        pair.engine.flush().unwrap();
        pair.engine.compact().unwrap();
        let sql = &queries()[0];
        same_answer(&pair, sql, &everyone, "final");
        assert!(
            files_from_rollups(&pair.on, sql, &everyone).is_some_and(|n| n > 0),
            "seed {seed}: no rollup used"
        );
        assert_eq!(files_from_rollups(&pair.off, sql, &everyone), None, "the setting turns rollups off");
    }
    assert_eq!(planned, checks, "every query of the test has a rollup shape");
}

#[test]
fn explain_names_the_path_and_other_shapes_are_left_to_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let pair = open(dir.path());
    let rows: Vec<(usize, i64, f64)> =
        (0..120).map(|i| (i as usize % 2, T0 + i * 5 * SEC, 8.0 + i as f64 / 100.0)).collect();
    ingest(&pair.engine, "buoy-a", 1, &rows);
    pair.engine.flush().unwrap();
    let everyone = AccessPolicy::unrestricted();
    let sql = "SELECT date_bin(INTERVAL '1 minute', ts) AS t, avg(value) AS avg_v FROM readings GROUP BY t ORDER BY t";
    let plan = text(&pair.on, &format!("EXPLAIN {sql}"), &everyone);
    assert!(
        plan.contains("RollupAggregate: minute rollups") && plan.contains("RollupAggregateExec"),
        "{plan}"
    );
    assert_eq!(files_from_rollups(&pair.on, sql, &everyone), Some(1));
    // Shapes a rollup cannot answer: a width that is not whole minutes, a filter on value or
    // quality, an aggregate of another column, first_value across series.
    for sql in [
        "SELECT date_bin(INTERVAL '90 seconds', ts) AS t, avg(value) FROM readings GROUP BY t",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS t, avg(value) FROM readings WHERE value > 8.2 GROUP BY t",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS t, count(*) FROM readings WHERE quality = 0 GROUP BY t",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS t, max(quality) FROM readings GROUP BY t",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS t, first_value(value ORDER BY ts) FROM readings GROUP BY t",
        "SELECT date_bin(INTERVAL '1 minute', ts, to_timestamp_nanos(30000000000)) AS t, sum(value) FROM readings GROUP BY t",
    ] {
        let plan = text(&pair.on, &format!("EXPLAIN {sql}"), &everyone);
        assert!(!plan.contains("RollupAggregate"), "{sql}\n{plan}");
    }
    // Live data: the buffer is merged in, the file whose buoy it overlaps is scanned.
    ingest(&pair.engine, "buoy-a", 2, &[(0, T0 + 30 * SEC, 9.5)]);
    assert_eq!(files_from_rollups(&pair.on, sql, &everyone), Some(0));
    same_answer(&pair, sql, &everyone, "buffered rewrite");
}

#[test]
fn the_access_policy_applies_to_rollups_as_to_readings() {
    let dir = tempfile::tempdir().unwrap();
    let pair = open(dir.path());
    for (k, b) in BUOYS.iter().enumerate() {
        let rows: Vec<(usize, i64, f64)> = (0..360)
            .map(|i| (i as usize % 2, T0 + i * 20 * SEC + k as i64, 7.0 + (i % 50) as f64 / 10.0))
            .collect();
        ingest(&pair.engine, b, 1, &rows);
    }
    pair.engine.flush().unwrap();
    let sql = "SELECT date_bin(INTERVAL '5 minutes', ts) AS t, buoy_id, count(*) AS n, sum(value) AS sum_v, \
               min(value) AS lo FROM readings GROUP BY t, buoy_id ORDER BY t, buoy_id";
    for (policy, what) in [
        (AccessPolicy::restricted(["buoy-b"], None), "one buoy"),
        (AccessPolicy::restricted(["buoy-a", "buoy-c"], Some(T0 + 40 * MINUTE)), "earliest on a minute"),
        (AccessPolicy::restricted(["buoy-a"], Some(T0 + 40 * MINUTE + 30 * SEC)), "earliest inside a minute"),
        (AccessPolicy::restricted(Vec::<String>::new(), None), "no buoy"),
    ] {
        assert!(same_answer(&pair, sql, &policy, what), "{what}: planned on rollups");
        let batches = run(&pair.on, sql, &policy);
        for b in &batches {
            let buoys = cast(b.column(1), &DataType::Utf8).unwrap();
            let times = cast(b.column(0), &DataType::Timestamp(TimeUnit::Nanosecond, None)).unwrap();
            for i in 0..b.num_rows() {
                let buoy = buoys.as_string::<i32>().value(i);
                assert!(policy.allows(buoy, i64::MAX), "{what}: {buoy} outside the policy");
                let bucket = times.as_primitive::<TimestampNanosecondType>().value(i);
                if let Some(earliest) = policy.earliest_ts {
                    assert!(bucket + 5 * MINUTE > earliest, "{what}: bucket {bucket} before the policy");
                }
            }
        }
    }
    // Two files, one an hour, both taken from their rollups whether the earliest bound lies
    // on a minute boundary or inside a minute (then that minute's rows are scanned).
    let inside = AccessPolicy::restricted(["buoy-a"], Some(T0 + 40 * MINUTE + 30 * SEC));
    assert_eq!(files_from_rollups(&pair.on, sql, &inside), Some(2));
    let on_minute = AccessPolicy::restricted(["buoy-a"], Some(T0 + 40 * MINUTE));
    assert_eq!(files_from_rollups(&pair.on, sql, &on_minute), Some(2));
}

#[test]
fn groups_answered_from_rollups_count_against_the_query_memory() {
    let dir = tempfile::tempdir().unwrap();
    let pair = open(dir.path());
    // One reading a minute for 100 hours: 6,000 one-reading buckets, each its own group.
    let rows: Vec<(usize, i64, f64)> = (0..6_000).map(|i| (0, T0 + i * MINUTE, 8.0)).collect();
    ingest(&pair.engine, "buoy-a", 1, &rows);
    pair.engine.flush().unwrap();
    let sql = "SELECT date_bin(INTERVAL '1 minute', ts) AS t, buoy_id, metric, count(*) FROM readings \
               GROUP BY t, buoy_id, metric";
    let everyone = AccessPolicy::unrestricted();
    assert!(files_from_rollups(&pair.on, sql, &everyone).is_some_and(|n| n > 0));
    let small =
        AccessPolicy { memory_max_bytes: bluewave_query::MEMORY_MIN_BYTES, ..AccessPolicy::unrestricted() };
    let outcome =
        pair.on.block_on(async { pair.on.sql(sql, &small).await?.collect_batches().await }).unwrap();
    assert!(
        matches!(outcome, Err(bluewave_query::Error::MemoryLimit { .. })),
        "6,000 groups in a 1 MiB pool: {outcome:?}"
    );
}
