//! Criterion benchmarks of the `bluewave/1` frame codec on the shared marine workload.
//!
//! - `wire_codec/encode`: `encode_batch` of a 1,000-reading marine batch (8 metrics sampled
//!   together each second) into a reused buffer; throughput in readings.
//! - `wire_codec/decode`: `decode_batch` of that frame into a validated `ReadingBatch`, as the
//!   server does for every batch stream; throughput in readings.
//!
//! Prints the encoded size (bytes per reading) once, and readings per CPU-second of the
//! benchmark thread for encode and decode (from `/proc/thread-self/schedstat`, Linux), which
//! stays a per-core figure when other processes share the cores. Issue 2 targets: decode ≥
//! 100 M readings/s per core, ≤ 11 bytes per reading.
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

    let mut scratch = Vec::with_capacity(frame.len());
    per_cpu_second("encode", || {
        scratch.clear();
        encode_batch(1, black_box(&batch), &dictionary, &mut scratch)
            .unwrap_or_else(|e| panic!("encode: {e}"));
        black_box(scratch.len());
    });
    per_cpu_second("decode", || {
        black_box(decode_batch(black_box(&frame), &dictionary).unwrap_or_else(|e| panic!("decode: {e}")));
    });

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

/// Iterations of the CPU-time measurement.
const CPU_ITERATIONS: u32 = 100_000;

/// Runs `f` [`CPU_ITERATIONS`] times and prints readings per CPU-second of this thread.
fn per_cpu_second(name: &str, mut f: impl FnMut()) {
    let Some(start) = thread_cpu_ns() else {
        println!("wire_codec/{name}: thread CPU time not available on this system");
        return;
    };
    for _ in 0..CPU_ITERATIONS {
        f();
    }
    let Some(end) = thread_cpu_ns() else { return };
    let cpu_s = end.saturating_sub(start) as f64 / 1e9;
    let readings = f64::from(CPU_ITERATIONS) * BATCH_READINGS as f64;
    println!(
        "wire_codec/{name}: {:.1} M readings per CPU-second ({:.2} µs CPU per {BATCH_READINGS}-reading batch)",
        readings / cpu_s / 1e6,
        cpu_s * 1e6 / f64::from(CPU_ITERATIONS)
    );
}

/// Nanoseconds this thread spent on a CPU (Linux: first field of `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

criterion_group!(benches, codec);
criterion_main!(benches);
