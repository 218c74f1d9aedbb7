//! Proves the one memory budget (`memory_bytes_max`) holds:
//!
//! - `the_memory_budget_is_never_passed_and_every_acked_reading_is_stored_once`: four threads
//!   ingest about 20 MiB of buffered rows through a 16 MiB budget, while snapshots pin the
//!   buffered chunks they saw (so flushes free buffer slots but not the memory), the flusher
//!   writes in pieces and the compactor merges beside it. Ingest is refused
//!   `Busy(MemoryBudget)` at the budget, the accounting's high-water mark never passes it, and
//!   after retries every acknowledged reading is stored exactly once; once everything is
//!   flushed and no snapshot is held, nothing stays reserved.
//! - `a_budget_too_small_for_the_buffer_is_refused_at_open`: the limits are checked together.
//! - `a_wal_replayed_above_a_smaller_budget_is_flushed_and_the_budget_recovers`: the one case
//!   the accounting may pass the limit (acknowledged data replayed at open) never stalls the
//!   flush that frees it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluewave_engine::{
    BusyReason, Engine, Error, IngestOutcome, MEMORY_BYTES_MIN, NANOS_PER_SECOND, Snapshot,
};

use crate::common::{
    RowMap, assert_stored_once, batch, buoy, config, decode_catalog_files, read_map, register,
};

/// 2026-06-01T13:00:00Z, on an hour boundary.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;
/// Guard against a hang; the test never asserts on time.
const WAIT_MAX: Duration = Duration::from_secs(180);

#[test]
fn the_memory_budget_is_never_passed_and_every_acked_reading_is_stored_once() {
    const WRITERS: usize = 4;
    const BATCHES: u64 = 50;
    const ROWS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memory_bytes_max = MEMORY_BYTES_MIN;
    c.queue_bytes_max = 4 << 20;
    c.buffer_bytes_max = 6 << 20;
    c.flush_buffer_bytes = 2 << 20;
    c.compaction_files_min = 2;
    c.compaction_rows_max = 20_000;
    let limit = c.memory_bytes_max as u64;
    let ingest_ceiling = limit - c.flush_reserve_bytes() as u64;
    let engine = Engine::open(c).unwrap();
    let names: Vec<String> = (0..WRITERS).map(|i| format!("m-{i}")).collect();
    register(&engine, &names.iter().map(String::as_str).collect::<Vec<_>>());
    // Snapshots held by the writers until the first refusal: they pin every chunk they saw.
    let pins: Arc<Mutex<Vec<Snapshot>>> = Arc::new(Mutex::new(Vec::new()));
    let pinning = Arc::new(AtomicBool::new(true));
    let started = Instant::now();
    let writers: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(w, name)| {
            let (engine, pins, pinning, name) = (engine.clone(), pins.clone(), pinning.clone(), name.clone());
            std::thread::spawn(move || {
                let mut expected = RowMap::new();
                let mut refused_memory = 0u64;
                for s in 0..BATCHES {
                    // Data time runs over an hour boundary, so one partition closes while ingest goes on.
                    let rows: Vec<(&str, i64, f64)> = (0..ROWS)
                        .map(|r| {
                            let ts = T0 + (s as i64 * ROWS as i64 + r as i64) * 24_000_000;
                            let (metric, base) =
                                if r % 2 == 0 { ("ph", 7.0) } else { ("water_temp_c", 10.0) };
                            (metric, ts, base + ((w * 1_000 + r) % 100) as f64 / 100.0)
                        })
                        .collect();
                    loop {
                        assert!(started.elapsed() < WAIT_MAX, "{name}/{s}: not stored within {WAIT_MAX:?}");
                        match engine.ingest(&buoy(&name), s, batch(&rows)) {
                            Ok(ticket) => {
                                let outcome = ticket.wait();
                                assert!(
                                    matches!(outcome, Ok(IngestOutcome::Stored { .. })),
                                    "{name}/{s}: {outcome:?}"
                                );
                                break;
                            }
                            Err(Error::Busy { reason, .. }) => {
                                if reason == BusyReason::MemoryBudget {
                                    refused_memory += 1;
                                    pinning.store(false, Ordering::SeqCst);
                                    pins.lock().unwrap().clear();
                                }
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err(e) => panic!("{name}/{s}: {e}"),
                        }
                    }
                    for (metric, ts, value) in rows {
                        expected.insert((name.clone(), metric.to_string(), ts), (value, 0));
                    }
                    if pinning.load(Ordering::SeqCst) {
                        pins.lock().unwrap().push(engine.snapshot());
                    }
                }
                (expected, refused_memory)
            })
        })
        .collect();
    let mut expected = RowMap::new();
    let mut refused_memory = 0;
    for w in writers {
        let (rows, refused) = w.join().unwrap();
        expected.extend(rows);
        refused_memory += refused;
    }
    pins.lock().unwrap().clear();
    let metrics = engine.metrics();
    assert_eq!(metrics.memory_bytes_max, limit);
    assert!(refused_memory > 0, "the workload never reached the budget");
    assert_eq!(metrics.batches_refused_memory, refused_memory);
    // The accounting never passed the budget, and came close to what ingest may take of it.
    assert!(
        metrics.memory_high_water_bytes <= limit,
        "high water {} above {limit}",
        metrics.memory_high_water_bytes
    );
    assert!(
        metrics.memory_high_water_bytes + (1 << 20) > ingest_ceiling,
        "high water {} never near the ingest ceiling {ingest_ceiling}",
        metrics.memory_high_water_bytes
    );
    // About 20 MiB of buffered rows went through: several flushes of several pieces each.
    assert!(metrics.flushes >= 5, "{metrics:?}");
    // Compared as a count first: a difference of a million rows would not print usefully.
    let shown = read_map(&engine);
    assert_eq!(shown.len(), expected.len());
    assert!(shown == expected, "the engine shows other values than were acknowledged");
    let stored = assert_stored_once(&engine);
    assert!(stored == expected, "the files hold other rows than were acknowledged");
    decode_catalog_files(&engine);
    assert!(engine.metrics().memory_high_water_bytes <= limit);
    // Nothing flushed is still held: the buffer's chunks gave their bytes back.
    let deadline = Instant::now() + WAIT_MAX;
    while engine.metrics().memory_used_bytes > 0 {
        assert!(Instant::now() < deadline, "memory still reserved: {:?}", engine.metrics());
        std::thread::sleep(Duration::from_millis(10));
    }
    let m = engine.metrics();
    assert_eq!((m.memory_ingest_bytes, m.memory_flush_bytes, m.memory_compaction_bytes), (0, 0, 0));
    engine.shutdown().unwrap();
}

#[test]
fn a_budget_too_small_for_the_buffer_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.memory_bytes_max = MEMORY_BYTES_MIN - 1;
    assert!(matches!(Engine::open(c.clone()), Err(Error::Config(m)) if m.contains("memory_bytes_max")));
    c.memory_bytes_max = MEMORY_BYTES_MIN;
    // 4 MiB buffer + 64 MiB queue do not fit in three quarters of 16 MiB.
    assert!(matches!(Engine::open(c.clone()), Err(Error::Config(m)) if m.contains("three quarters")));
    c.queue_bytes_max = 4 << 20;
    Engine::open(c).unwrap().shutdown().unwrap();
}

/// A WAL written under a larger budget and replayed at open under a smaller one is acknowledged
/// data: it is replayed all the same (counted over the budget), and the flush that frees it
/// goes ahead instead of waiting for memory that only it can free; then the budget holds again.
#[test]
fn a_wal_replayed_above_a_smaller_budget_is_flushed_and_the_budget_recovers() {
    const WRITERS: usize = 4;
    const BATCHES: u64 = 34;
    const ROWS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let mut large = config(dir.path());
    large.flush_buffer_bytes = 48 << 20;
    large.buffer_bytes_max = 64 << 20;
    let names: Vec<String> = (0..WRITERS).map(|i| format!("w-{i}")).collect();
    let mut expected = RowMap::new();
    {
        let engine = Engine::open(large).unwrap();
        register(&engine, &names.iter().map(String::as_str).collect::<Vec<_>>());
        for (w, name) in names.iter().enumerate() {
            for s in 0..BATCHES {
                let rows: Vec<(&str, i64, f64)> = (0..ROWS)
                    .map(|r| {
                        (
                            "ph",
                            T0 + (s as i64 * ROWS as i64 + r as i64) * 1_000_000,
                            7.0 + (w + r % 100) as f64 / 100.0,
                        )
                    })
                    .collect();
                engine.ingest(&buoy(name), s, batch(&rows)).unwrap().wait().unwrap();
                for (m, ts, v) in rows {
                    expected.insert((name.clone(), m.to_string(), ts), (v, 0));
                }
            }
        }
        assert_eq!(engine.metrics().flushes, 0);
        // Dropped without a shutdown: nothing is flushed, the WAL holds it all.
    }
    let mut small = config(dir.path());
    small.memory_bytes_max = MEMORY_BYTES_MIN;
    small.queue_bytes_max = 4 << 20;
    small.buffer_bytes_max = 6 << 20;
    small.flush_buffer_bytes = 2 << 20;
    let ceiling = (small.memory_bytes_max - small.flush_reserve_bytes()) as u64;
    let engine = Engine::open(small).unwrap();
    assert_eq!(engine.recovery_report().entries_replayed, WRITERS * BATCHES as usize);
    assert!(engine.metrics().memory_high_water_bytes > ceiling, "the replay fits the small budget: no test");
    let shown = read_map(&engine);
    assert!(shown == expected, "replayed rows differ");
    engine.flush().unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    while engine.metrics().memory_used_bytes > 0 {
        assert!(Instant::now() < deadline, "memory still reserved: {:?}", engine.metrics());
        std::thread::sleep(Duration::from_millis(10));
    }
    // The budget holds again: ingest is taken within it.
    let outcome = engine.ingest(&buoy("w-0"), BATCHES, batch(&[("ph", T0 - 1, 7.5)])).unwrap().wait();
    assert!(matches!(outcome, Ok(IngestOutcome::Stored { .. })), "{outcome:?}");
    expected.insert(("w-0".to_string(), "ph".to_string(), T0 - 1), (7.5, 0));
    let stored = assert_stored_once(&engine);
    assert!(stored == expected, "stored rows differ");
    engine.shutdown().unwrap();
}
