//! Criterion benchmarks of the engine's hot paths on the shared marine workload.
//!
//! - `ingest/durable/<batch>/<lanes>`: readings/s from `Engine::ingest` to the fsynced ack,
//!   batches pre-generated outside the timed region, pipelined (a window of tickets).
//! - `flush/encode`: sort-free Parquet encoding of one partition (readings/s); prints bytes per
//!   reading and the per-column breakdown once.
//! - `catalog/select`: choosing the files of one buoy and hour among 10,000 catalog files.
//!
//! Run: `cargo bench -p bluewave-benches --bench engine` (release profile).

use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_engine::{
    BuoyInfo, Durability, Engine, EngineConfig, FileMeta, IngestTicket, PartitionRows, PartitionWriteOptions,
    ReadFilter, ReadView, ReadingBatch, Snapshot, encode_partition,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Readings sent per timed iteration of the ingest bench.
const INGEST_BLOCK_READINGS: usize = 200_000;
/// Tickets in flight before the bench waits for the oldest ack.
const INGEST_WINDOW: usize = 512;

fn fleet(buoys: usize) -> Workload {
    Workload::new(WorkloadConfig { buoys, ..WorkloadConfig::default() })
        .unwrap_or_else(|e| panic!("workload: {e}"))
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest/durable");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(2));
    let workload = fleet(1_000);
    for batch_readings in [100usize, 1_000, 10_000] {
        for lanes in [1usize, 2, 4] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
            let mut config = EngineConfig::new(dir.path());
            config.lanes = lanes;
            config.durability = Durability::Strict;
            // Keep flushes out of this measurement: it times the durable ack path alone.
            config.flush_buffer_bytes = 8 << 30;
            config.buffer_bytes_max = 16 << 30;
            // The memory budget must hold that buffer (an accounting; the run stays far below).
            config.memory_bytes_max = 32 << 30;
            config.flush_interval_ms = 3_600_000;
            config.queue_depth = 4_096;
            let engine = Engine::open(config).unwrap_or_else(|e| panic!("open: {e}"));
            for id in workload.buoy_ids() {
                engine.register_buoy(BuoyInfo::new(id)).unwrap_or_else(|e| panic!("register: {e}"));
            }
            let template: Vec<(usize, ReadingBatch)> = workload
                .iter_batches(batch_readings, INGEST_BLOCK_READINGS as u64)
                .unwrap_or_else(|e| panic!("batches: {e}"))
                .map(|(b, _, batch)| (b, batch))
                .collect();
            let mut next_seq = vec![0u64; workload.buoy_ids().len()];
            group.throughput(Throughput::Elements(INGEST_BLOCK_READINGS as u64));
            group.bench_function(
                BenchmarkId::new(format!("batch{batch_readings}"), format!("lanes{lanes}")),
                |b| {
                    b.iter_custom(|iters| {
                        // Setup outside the timed region: the batches of every iteration.
                        let mut work = Vec::with_capacity(template.len() * iters as usize);
                        for _ in 0..iters {
                            for (buoy, batch) in &template {
                                work.push((*buoy, next_seq[*buoy], batch.clone()));
                                next_seq[*buoy] += 1;
                            }
                        }
                        let started = Instant::now();
                        let mut window: VecDeque<IngestTicket> = VecDeque::with_capacity(INGEST_WINDOW);
                        for (buoy, seq, batch) in work {
                            let id = &workload.buoy_ids()[buoy];
                            let mut batch = Some(batch);
                            while let Some(bt) = batch.take() {
                                match engine.ingest(id, seq, bt.clone()) {
                                    Ok(t) => window.push_back(t),
                                    Err(bluewave_engine::Error::Busy { .. }) => {
                                        batch = Some(bt);
                                        if let Some(t) = window.pop_front() {
                                            black_box(t.wait().unwrap_or_else(|e| panic!("ack: {e}")));
                                        }
                                    }
                                    Err(e) => panic!("ingest: {e}"),
                                }
                            }
                            if window.len() >= INGEST_WINDOW
                                && let Some(t) = window.pop_front()
                            {
                                black_box(t.wait().unwrap_or_else(|e| panic!("ack: {e}")));
                            }
                        }
                        for t in window {
                            black_box(t.wait().unwrap_or_else(|e| panic!("ack: {e}")));
                        }
                        started.elapsed()
                    });
                },
            );
            drop(engine);
        }
    }
    group.finish();
}

/// One hour of `buoys` buoys as sorted partition rows (what a flush hands the encoder).
fn partition_rows(buoys: usize) -> PartitionRows {
    let workload = fleet(buoys);
    let mut sorted: BTreeMap<(usize, usize, i64), f64> = BTreeMap::new();
    let names: Vec<Arc<str>> = workload.metric_names().iter().map(|m| m.shared().clone()).collect();
    let mut metric_order: Vec<usize> = (0..names.len()).collect();
    metric_order.sort_by(|&a, &b| names[a].cmp(&names[b]));
    let rank: Vec<usize> = {
        let mut r = vec![0; names.len()];
        for (i, &m) in metric_order.iter().enumerate() {
            r[m] = i;
        }
        r
    };
    for buoy in 0..buoys {
        let batch = workload.batch(buoy, 0, 3_600).unwrap_or_else(|e| panic!("batch: {e}"));
        for i in 0..batch.len() {
            let m = usize::from(batch.metric_ids()[i]);
            let metric_name = batch.metric_names()[m].as_str();
            let global = names.iter().position(|n| &**n == metric_name).unwrap_or(0);
            sorted.insert((buoy, rank[global], batch.timestamps()[i]), batch.values()[i]);
        }
    }
    let mut rows = PartitionRows {
        buoy_names: workload.buoy_ids().iter().map(|b| b.shared().clone()).collect(),
        metric_names: metric_order.iter().map(|&m| names[m].clone()).collect(),
        buoy_keys: Vec::with_capacity(sorted.len()),
        metric_keys: Vec::with_capacity(sorted.len()),
        timestamps: Vec::with_capacity(sorted.len()),
        values: Vec::with_capacity(sorted.len()),
        quality: Vec::with_capacity(sorted.len()),
    };
    for ((b, m, ts), v) in sorted {
        rows.buoy_keys.push(b as u32);
        rows.metric_keys.push(m as u32);
        rows.timestamps.push(ts);
        rows.values.push(v);
        rows.quality.push(0);
    }
    rows
}

fn flush(c: &mut Criterion) {
    let rows = partition_rows(100);
    let options = PartitionWriteOptions::default();
    let encoded = encode_partition(&rows, &options).unwrap_or_else(|e| panic!("encode: {e}"));
    eprintln!(
        "flush/encode: {} readings -> {} bytes = {:.3} bytes/reading; columns: {:?}",
        rows.len(),
        encoded.bytes.len(),
        encoded.bytes.len() as f64 / rows.len() as f64,
        encoded.column_bytes
    );
    let mut group = c.benchmark_group("flush");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("encode/100buoys_1h", |b| {
        b.iter(|| black_box(encode_partition(&rows, &options).unwrap_or_else(|e| panic!("encode: {e}"))))
    });
    group.finish();
}

fn catalog(c: &mut Criterion) {
    // 10,000 files: 1,000 buoys, 10 files per hour (100 buoys each), 1,000 hours.
    const HOUR: i64 = 3_600 * 1_000_000_000;
    let mut view = ReadView::default();
    let buoy_names: Vec<Arc<str>> = (0..1_000).map(|i| Arc::from(format!("buoy-{i:04}").as_str())).collect();
    let metrics: Vec<Arc<str>> =
        ["ph", "salinity_psu", "water_temp_c"].iter().map(|m| Arc::from(*m)).collect();
    let mut id = 0;
    for hour in 0..1_000i64 {
        for group in 0..10usize {
            id += 1;
            let mut buoys: Vec<Arc<str>> = buoy_names[group * 100..(group + 1) * 100].to_vec();
            buoys.sort();
            view.partitions.entry(hour * HOUR).or_default().push(Arc::new(FileMeta {
                id,
                partition_start: hour * HOUR,
                partition_end: (hour + 1) * HOUR,
                path: format!("f{id}"),
                rows: 288_000,
                bytes: 200_000,
                ts_min: hour * HOUR,
                ts_max: (hour + 1) * HOUR - 1,
                generation: id,
                seq_min: 0,
                seq_max: 0,
                buoys,
                metrics: metrics.clone(),
                applied_tombstones: Vec::new(),
                buoy_ranges: Vec::new(),
                metric_stats: Vec::new(),
                series_stats: Vec::new(),
                rollup: None,
            }));
        }
    }
    let snapshot = Snapshot::from_view(Arc::new(view), std::path::PathBuf::from("."));
    let filter = ReadFilter {
        start: Some(500 * HOUR + 60_000_000_000),
        end: Some(500 * HOUR + 120_000_000_000),
        buoys: Some(vec!["buoy-0457".into()]),
        metrics: Some(vec!["ph".into()]),
    };
    assert_eq!(snapshot.select_files(&filter).len(), 1);
    c.bench_function("catalog/select_one_buoy_hour_of_10000_files", |b| {
        b.iter(|| black_box(snapshot.select_files(black_box(&filter))))
    });
}

criterion_group!(benches, ingest, flush, catalog);
criterion_main!(benches);
