//! Query benchmarks Q1–Q6 of issue 3 on the marine workload, through BlueWave's query service
//! (catalog selection + buffer merge + policy) and, for comparison, through plain DataFusion
//! `ListingTable` over the same Parquet files (no catalog). The time-bucket queries (Q3, Q4) run
//! twice through BlueWave: from the minute rollups (the default) and with rollups off
//! (`/bluewave_scan`). Setup prints the rollups' bytes against the readings'.
//!
//! The dataset is built once, outside the timed loop, into a cache dir keyed by the workload
//! size and reused across runs:
//!
//! ```text
//! BW_QUERY_BUOYS=1000 BW_QUERY_HOURS=3.5 cargo bench -p bluewave-benches --bench query
//! ```
//!
//! `BW_QUERY_DATA_DIR` chooses the cache root (default: the OS temp dir). `bluewave
//! ingest-demo --buoys 1000 --hours 3.5 --durability relaxed` in release builds the same data.

use std::path::PathBuf;
use std::sync::Arc;

use bluewave_engine::workload::{DEFAULT_START_TS, Workload, WorkloadConfig};
use bluewave_engine::{BuoyInfo, Durability, Engine, EngineConfig, Error, ValueEncoding, partition_schema};
use bluewave_query::datafusion::prelude::{ParquetReadOptions, SessionContext};
use bluewave_query::{AccessPolicy, QueryConfig, QueryService};
use criterion::{Criterion, criterion_group, criterion_main};

const MINUTE_NS: i64 = 60_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Builds (or reuses) the flushed dataset; returns its data dir.
fn dataset(buoys: usize, hours: f64) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let root = std::env::var_os("BW_QUERY_DATA_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    // Named by what shapes the files (folded closed partitions, `Decimal64` values), so a
    // dataset written by an older layout is rebuilt rather than measured.
    let dir = root.join(format!("bluewave-query-bench-{buoys}b-{hours}h-folded-d64-rollups"));
    let marker = dir.join("COMPLETE");
    if marker.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = EngineConfig::new(&dir);
    config.durability = Durability::Relaxed;
    let workload = Workload::new(WorkloadConfig { buoys, ..WorkloadConfig::default() })?;
    let total = (hours * 3_600.0) as u64 * buoys as u64 * 8;
    eprintln!("building the query dataset: {total} readings in {}", dir.display());
    let engine = Engine::open(config)?;
    for id in workload.buoy_ids() {
        engine.register_buoy(BuoyInfo::new(id))?;
    }
    let mut tickets = std::collections::VecDeque::new();
    for (buoy, seq, batch) in workload.iter_batches(1_000, total)? {
        loop {
            match engine.ingest(&workload.buoy_ids()[buoy], seq, batch.clone()) {
                Ok(t) => {
                    tickets.push_back(t);
                    break;
                }
                Err(Error::Busy { .. }) => match tickets.pop_front() {
                    Some(t) => {
                        t.wait()?;
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(5)),
                },
                Err(e) => return Err(e.into()),
            }
        }
        if tickets.len() > 256
            && let Some(t) = tickets.pop_front()
        {
            t.wait()?;
        }
    }
    for t in tickets {
        t.wait()?;
    }
    engine.flush()?;
    // The steady state of a server: the compactor thread folds every closed partition (all but
    // the newest) into one file per value encoding. Wait for it.
    let folded = |engine: &Engine| {
        let view = engine.snapshot().view;
        let newest = view.partitions.keys().next_back().copied();
        view.partitions.iter().filter(|(start, _)| Some(**start) != newest).all(|(_, files)| {
            let mut generations: Vec<u64> = files.iter().map(|f| f.generation).collect();
            generations.sort_unstable();
            generations.dedup();
            generations.len() == 1
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1_800);
    while !folded(&engine) {
        if std::time::Instant::now() > deadline {
            return Err("closed partitions were not folded within 30 minutes".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    engine.shutdown()?;
    std::fs::write(&marker, b"ok")?;
    Ok(dir)
}

fn queries(buoy: &str) -> Vec<(&'static str, String)> {
    let t0 = DEFAULT_START_TS;
    let ts = |t: i64| format!("to_timestamp_nanos({t})");
    vec![
        (
            "q1_last_value_per_buoy",
            "SELECT buoy_id, last_value(value ORDER BY ts) FROM readings WHERE metric = 'salinity_psu' GROUP BY buoy_id"
                .to_owned(),
        ),
        (
            "q2_one_series_10_min",
            format!(
                "SELECT ts, value FROM readings WHERE buoy_id = '{buoy}' AND metric = 'ph' AND ts >= {} AND ts < {}",
                ts(t0 + 60 * MINUTE_NS),
                ts(t0 + 70 * MINUTE_NS)
            ),
        ),
        (
            "q3_one_buoy_minute_means_day",
            format!(
                "SELECT date_bin(INTERVAL '1 minute', ts) AS m, metric, avg(value) FROM readings \
                 WHERE buoy_id = '{buoy}' AND ts >= {} AND ts < {} GROUP BY 1, 2",
                ts(t0),
                ts(t0 + 1_440 * MINUTE_NS)
            ),
        ),
        (
            "q4_fleet_salinity_minute_means_day",
            format!(
                "SELECT date_bin(INTERVAL '1 minute', ts) AS m, avg(value) FROM readings \
                 WHERE metric = 'salinity_psu' AND ts >= {} AND ts < {} GROUP BY 1",
                ts(t0),
                ts(t0 + 1_440 * MINUTE_NS)
            ),
        ),
        ("q5_count_mean_per_metric", "SELECT metric, count(*), avg(value) FROM readings GROUP BY metric".to_owned()),
        (
            "q6_top10_pollutant",
            "SELECT buoy_id, max(value) AS m FROM readings WHERE metric = 'pollutant_ppb' \
             GROUP BY buoy_id ORDER BY m DESC LIMIT 10"
                .to_owned(),
        ),
    ]
}

fn query(c: &mut Criterion) {
    let buoys: usize = env_or("BW_QUERY_BUOYS", 1_000);
    let hours: f64 = env_or("BW_QUERY_HOURS", 3.5);
    let dir = match dataset(buoys, hours) {
        Ok(d) => d,
        Err(e) => panic!("dataset: {e}"),
    };
    let engine = match Engine::open(EngineConfig::new(&dir)) {
        Ok(e) => Arc::new(e),
        Err(e) => panic!("open: {e}"),
    };
    let service = match QueryService::new(engine.clone(), QueryConfig::default()) {
        Ok(s) => s,
        Err(e) => panic!("service: {e}"),
    };
    let scanning =
        match QueryService::new(engine.clone(), QueryConfig { rollups: false, ..QueryConfig::default() }) {
            Ok(s) => s,
            Err(e) => panic!("service: {e}"),
        };
    let files = engine.files();
    let readings_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let rollup_bytes: u64 = files.iter().filter_map(|f| f.rollup.as_ref()).map(|r| r.bytes).sum();
    let with_rollup = files.iter().filter(|f| f.rollup.is_some()).count();
    eprintln!(
        "storage: readings {readings_bytes} bytes in {} files, minute rollups {rollup_bytes} bytes ({:.1}% of \
         the readings) for {with_rollup} of them",
        files.len(),
        100.0 * rollup_bytes as f64 / readings_bytes.max(1) as f64
    );
    drop(files);
    let policy = AccessPolicy::unrestricted();
    let buoy = engine.buoys().get(buoys / 2).map(|b| b.id.to_string()).unwrap_or_default();
    // Plain DataFusion over the same files: the baseline without catalog or buffer.
    let listing = SessionContext::new();
    let parquet_dir = dir.join("parquet").join("readings");
    // Files carry `value` as DECIMAL at their own scale (or DOUBLE); one table schema with
    // DOUBLE lets DataFusion's schema adapter cast each file, as BlueWave's own scan does.
    let table_schema = partition_schema(ValueEncoding::Float64);
    let registered = service.block_on(listing.register_parquet(
        "readings",
        format!("{}/", parquet_dir.display()),
        ParquetReadOptions::default().schema(&table_schema),
    ));
    let mut group = c.benchmark_group(format!("query_{buoys}b_{hours}h"));
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(4));
    for (name, sql) in queries(&buoy) {
        group.bench_function(format!("{name}/bluewave"), |b| {
            b.iter(|| {
                service
                    .block_on(async { service.sql(&sql, &policy).await?.collect_batches().await })
                    .map(|r| r.map(|batches| batches.len()))
            })
        });
        if name.starts_with("q3") || name.starts_with("q4") {
            group.bench_function(format!("{name}/bluewave_scan"), |b| {
                b.iter(|| {
                    scanning
                        .block_on(async { scanning.sql(&sql, &policy).await?.collect_batches().await })
                        .map(|r| r.map(|batches| batches.len()))
                })
            });
        }
        if matches!(registered, Ok(Ok(()))) {
            group.bench_function(format!("{name}/listing_table"), |b| {
                b.iter(|| service.block_on(async { listing.sql(&sql).await?.collect().await }))
            });
        }
    }
    if let Ok(Err(e)) = &registered {
        eprintln!("ListingTable baseline unavailable: {e}");
    }
    group.finish();
    let _ = engine.shutdown();
}

criterion_group!(benches, query);
criterion_main!(benches);
