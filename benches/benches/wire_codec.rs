//! Criterion benchmarks of the `bluewave/1` frame codec on the shared marine workload.
//!
//! - `wire_codec/encode`: `encode_batch` of a 1,000-reading marine batch (8 metrics sampled
//!   together each second) into a reused buffer; throughput in readings.
//! - `wire_codec/decode`: `decode_batch` of that frame into a validated `ReadingBatch`, as the
//!   server does for every batch stream; throughput in readings.
//!
//! Prints the encoded size (bytes per reading) once. Issue 2 targets: decode ≥ 100 M
//! readings/s per core, ≤ 11 bytes per reading.
//!
//! Run: `cargo bench -p bluewave-benches --bench wire_codec` (release profile).

use std::hint::black_box;

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_wire::{MetricDictionary, decode_batch, encode_batch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Readings per benchmarked batch (the batch size).
const BATCH_READINGS: usize = 1_000;

fn codec(c: &mut Criterion) {
    let workload = Workload::new(WorkloadConfig { buoys: 1, ..WorkloadConfig::default() })
        .unwrap_or_else(|e| panic!("workload: {e}"));
    let batch = workload.batch_of_readings(0, 0, BATCH_READINGS).unwrap_or_else(|e| panic!("batch: {e}"));
    assert_eq!(batch.len(), BATCH_READINGS);
    let dictionary =
        MetricDictionary::new(workload.metric_names().to_vec()).unwrap_or_else(|e| panic!("{e}"));
    let mut frame = Vec::new();
    encode_batch(1, &batch, &dictionary, &mut frame).unwrap_or_else(|e| panic!("encode: {e}"));
    println!(
        "wire_codec: {} readings, {} metrics -> {} bytes per frame, {:.3} bytes/reading (header included)",
        BATCH_READINGS,
        dictionary.len(),
        frame.len(),
        frame.len() as f64 / BATCH_READINGS as f64
    );

    let mut group = c.benchmark_group("wire_codec");
    group.throughput(Throughput::Elements(BATCH_READINGS as u64));
    let mut out = Vec::with_capacity(frame.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            encode_batch(1, black_box(&batch), &dictionary, &mut out)
                .unwrap_or_else(|e| panic!("encode: {e}"));
            black_box(out.len())
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let decoded =
                decode_batch(black_box(&frame), &dictionary).unwrap_or_else(|e| panic!("decode: {e}"));
            black_box(decoded)
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
