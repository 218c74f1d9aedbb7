//! Fuzzes `decode_partition`, which reads partition files from disk (damaged by a bad disk, or
//! dropped into the data directory by hand). It may answer an error, never panic, and what it
//! returns must be safe to index the way the readers do (every key inside its dictionary, every
//! column as long as the timestamps).
//!
//! Input layout: `mode u8 | rest`.
//! - `mode` even: `rest` is a whole file.
//! - `mode` odd: structure-aware. `rest` is `row_count u8 | rows (6 bytes each) | damage`: the
//!   rows are encoded with `encode_partition` (which must decode back to the same rows), then
//!   each 3-byte chunk of `damage` (`at u16 LE, xor u8`) flips bits of the encoded file, whose
//!   decoding is checked as above. This reaches deep into the file format, whatever it is, where
//!   random bytes would stop at the first magic number.
//!
//! `decode_partition` runs parquet-rs behind `catch_unwind` (parquet-rs 59 still panics on some
//! damaged pages) and answers such a panic with an error, which is its contract. libFuzzer's
//! panic hook would abort on that caught panic, so this target lets panics raised *inside*
//! `decode_partition` unwind to the engine's boundary; every other panic still aborts. Set
//! `BLUEWAVE_FUZZ_STRICT_PANICS=1` to abort on the caught ones too (to find parquet-rs panics
//! worth reporting upstream).

#![no_main]

use std::cell::Cell;
use std::sync::{Arc, Once};

use bluewave_engine::{PartitionRows, PartitionWriteOptions, decode_partition, encode_partition};
use libfuzzer_sys::fuzz_target;

thread_local! {
    /// True while `decode_partition` runs on this thread.
    static IN_DECODER: Cell<bool> = const { Cell::new(false) };
}

/// Wraps libFuzzer's aborting panic hook so panics inside `decode_partition` reach the engine's
/// `catch_unwind` (unless `BLUEWAVE_FUZZ_STRICT_PANICS` is set).
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        if std::env::var_os("BLUEWAVE_FUZZ_STRICT_PANICS").is_some() {
            return;
        }
        let aborting = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODER.get() {
                aborting(info);
            }
        }));
    });
}

/// `decode_partition`, marked so the panic hook lets its caught panics unwind.
fn decode(bytes: bytes::Bytes) -> bluewave_engine::Result<PartitionRows> {
    IN_DECODER.set(true);
    let result = decode_partition(bytes);
    IN_DECODER.set(false);
    result
}

const METRICS: [&str; 2] = ["ph", "salinity_psu"];
const ROW_BYTES: usize = 6;

/// Panics unless `rows` is safe to index.
fn check(rows: &PartitionRows) {
    let n = rows.len();
    assert!(rows.buoy_keys.len() == n && rows.metric_keys.len() == n);
    assert!(rows.values.len() == n && rows.quality.len() == n);
    assert!(rows.buoy_keys.iter().all(|&k| (k as usize) < rows.buoy_names.len()), "buoy key out of range");
    assert!(
        rows.metric_keys.iter().all(|&k| (k as usize) < rows.metric_names.len()),
        "metric key out of range"
    );
}

/// A row as `(buoy, metric, ts, value bits, quality)`.
type Resolved = (Arc<str>, Arc<str>, i64, u64, u8);

/// Rows as comparable tuples, independent of dictionary order.
fn resolved(rows: &PartitionRows) -> Vec<Resolved> {
    let mut out: Vec<_> = (0..rows.len())
        .map(|i| {
            (
                rows.buoy_names[rows.buoy_keys[i] as usize].clone(),
                rows.metric_names[rows.metric_keys[i] as usize].clone(),
                rows.timestamps[i],
                rows.values[i].to_bits(),
                rows.quality[i],
            )
        })
        .collect();
    out.sort();
    out
}

/// Sorted, one row per key, as the flusher writes them.
fn rows_from(bytes: &[u8], count: usize) -> PartitionRows {
    let mut keyed: Vec<(u32, i64, f64, u8)> = bytes
        .chunks_exact(ROW_BYTES)
        .take(count)
        .map(|b| {
            let metric = u32::from(b[0] % 2);
            let ts = i64::from(i32::from_le_bytes([b[1], b[2], b[3], b[4]])) * 1_000_000;
            (metric, ts, f64::from(b[5]) / 8.0, b[0] % 3)
        })
        .collect();
    keyed.sort_by_key(|r| (r.0, r.1));
    keyed.dedup_by_key(|r| (r.0, r.1));
    PartitionRows {
        buoy_names: vec![Arc::from("b-1")],
        metric_names: METRICS.iter().map(|&m| Arc::from(m)).collect(),
        buoy_keys: vec![0; keyed.len()],
        metric_keys: keyed.iter().map(|r| r.0).collect(),
        timestamps: keyed.iter().map(|r| r.1).collect(),
        values: keyed.iter().map(|r| r.2).collect(),
        quality: keyed.iter().map(|r| r.3).collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    install_panic_hook();
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        if let Ok(rows) = decode(bytes::Bytes::copy_from_slice(rest)) {
            check(&rows);
        }
        return;
    }
    let Some((&count, rest)) = rest.split_first() else { return };
    let count = usize::from(count % 32) + 1;
    let row_bytes = (count * ROW_BYTES).min(rest.len() / ROW_BYTES * ROW_BYTES);
    let (row_input, damage) = rest.split_at(row_bytes);
    let rows = rows_from(row_input, count);
    if rows.is_empty() {
        return;
    }
    let mut file = encode_partition(&rows, &PartitionWriteOptions::default()).expect("encode").bytes;
    let decoded = decode(bytes::Bytes::from(file.clone())).expect("a valid partition decodes");
    check(&decoded);
    assert_eq!(resolved(&decoded), resolved(&rows), "decode(encode(rows)) != rows");
    if damage.is_empty() || file.is_empty() {
        return;
    }
    for d in damage.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([d[0], d[1]])) % file.len();
        file[at] ^= d[2].max(1);
    }
    if let Ok(rows) = decode(bytes::Bytes::from(file)) {
        check(&rows);
    }
});
