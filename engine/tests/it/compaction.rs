//! Proves that compaction keeps up beside ingest, and that ingest is held back by compaction
//! debt:
//!
//! - `the_background_compactor_keeps_up_with_concurrent_ingest`: three threads ingest while the
//!   test thread flushes in a loop; the compactor thread (never the flusher's) merges what the
//!   flushes write, on its own, and every acknowledged reading is there exactly once;
//! - `compaction_debt_slows_ingest_then_refuses_it_then_lets_it_go_on`: with the background
//!   compactor off, each flush adds one generation to a partition; at the slowdown bound ingest
//!   is throttled (`ingest_throttled`, `ingest_room` pending) but stored, at the busy bound it is
//!   refused `Busy(CompactionDebt)` with its retry delay, and a compaction lets it go on; reopened
//!   with the background compactor on, the compactor alone brings the debt back and ingest
//!   resumes.
//!
//! Outcomes are exact; where the test waits for the compactor thread it polls its result, with
//! a generous deadline as a guard against a hang, never a timing assertion.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bluewave_engine::{BusyReason, Engine, Error, IngestOutcome, NANOS_PER_SECOND};

use crate::common::{RowMap, assert_stored_once, batch, buoy, config, read_map, register};

const MINUTE: i64 = 60 * NANOS_PER_SECOND;
/// 2026-06-01T13:00:00Z, on an hour boundary.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;
/// Guard against a hung compactor; the tests never assert on time.
const WAIT_MAX: Duration = Duration::from_secs(120);

/// Polls `done` until it holds; panics naming `what` past [`WAIT_MAX`].
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < WAIT_MAX, "{what}: not reached within {WAIT_MAX:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls a future once.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn the_background_compactor_keeps_up_with_concurrent_ingest() {
    const BUOYS: [&str; 3] = ["c-0", "c-1", "c-2"];
    const BATCHES: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_files_min = 2;
    let engine = Engine::open(c).unwrap();
    register(&engine, &BUOYS);
    let done = Arc::new(AtomicUsize::new(0));
    let flushes = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = BUOYS
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let (engine, done, flushes) = (engine.clone(), done.clone(), flushes.clone());
            std::thread::spawn(move || {
                let mut expected = RowMap::new();
                for s in 0..BATCHES {
                    // Every tenth batch waits for one more flush that wrote rows, so flushes
                    // interleave with ingest however fast the disk is.
                    let block = (s / 10) as usize;
                    while flushes.load(Ordering::SeqCst) < block {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    // Two hours of data: the first hour closes while ingest goes on.
                    let ts = T0 + s as i64 * 2 * MINUTE;
                    let value = (7_000 + i as i64 * 100 + s as i64) as f64 / 1_000.0;
                    let outcome = engine.ingest(&buoy(name), s, batch(&[("ph", ts, value)])).unwrap().wait();
                    assert!(matches!(outcome, Ok(IngestOutcome::Stored { .. })), "{name}/{s}: {outcome:?}");
                    expected.insert((name.to_string(), "ph".to_string(), ts), (value, 0));
                }
                done.fetch_add(1, Ordering::SeqCst);
                expected
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < BUOYS.len() {
        if engine.flush().unwrap().rows > 0 {
            flushes.fetch_add(1, Ordering::SeqCst);
        }
    }
    engine.flush().unwrap();
    let expected: RowMap = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    // No explicit compaction: the compactor thread alone folds the closed hour and merges the
    // open one's generations.
    wait_until("the background compactor catches up", || engine.metrics().compaction_generations_max <= 1);
    let metrics = engine.metrics();
    assert!(metrics.compactions > 0, "nothing was compacted in the background");
    assert_eq!(metrics.compaction_partitions_waiting, 0);
    assert_eq!(metrics.compaction_bytes_waiting, 0);
    assert_eq!(metrics.compaction_generations_total, 2, "one generation in each of the two hours");
    assert_eq!(read_map(&engine), expected);
    assert_eq!(assert_stored_once(&engine), expected);
}

#[test]
fn compaction_debt_slows_ingest_then_refuses_it_then_lets_it_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.compaction_background = false;
    c.compaction_debt_slowdown_generations = 3;
    c.compaction_debt_busy_generations = 5;
    let engine = Engine::open(c.clone()).unwrap();
    register(&engine, &["d"]);
    let mut expected = RowMap::new();
    // Each flush adds one generation to the one partition.
    for s in 0..5u64 {
        let generations = engine.metrics().compaction_generations_max;
        assert_eq!(generations, s, "generations before flush {s}");
        assert_eq!(engine.ingest_throttled(), generations >= 3, "throttled at {generations} generations");
        assert!(
            matches!(ingest_one(&engine, &mut expected, s), Ok(Ok(IngestOutcome::Stored { .. }))),
            "stored at {s}"
        );
        engine.flush().unwrap();
    }
    let metrics = engine.metrics();
    assert_eq!((metrics.compaction_generations_max, metrics.compaction_generations_total), (5, 5));
    assert_eq!(metrics.compaction_partitions_waiting, 1);
    assert_eq!(metrics.compaction_bytes_waiting, engine.files().iter().map(|f| f.bytes).sum::<u64>());
    // Past the busy bound: refused, with the debt's retry delay, and nothing stored.
    match ingest_one(&engine, &mut expected, 5) {
        Err(Error::Busy { reason: BusyReason::CompactionDebt, retry_after_ms: 1_000 }) => {}
        other => panic!("expected Busy(CompactionDebt), got {other:?}"),
    }
    let metrics = engine.metrics();
    assert_eq!((metrics.batches_refused_busy, metrics.batches_refused_compaction_debt), (1, 1));
    // A throttled sender waits on `ingest_room` until compaction catches up.
    {
        let room = engine.ingest_room();
        let mut room = std::pin::pin!(room);
        assert!(poll_once(room.as_mut()).is_pending(), "room while the debt is above the slowdown bound");
        assert_eq!(engine.compact().unwrap(), 1);
        assert!(poll_once(room.as_mut()).is_ready(), "no room after the compaction");
    }
    assert!(!engine.ingest_throttled());
    assert_eq!(engine.metrics().compaction_generations_max, 1);
    // The refused batch, sent again, is stored.
    assert!(matches!(ingest_one(&engine, &mut expected, 5), Ok(Ok(IngestOutcome::Stored { .. }))));
    assert_eq!(read_map(&engine), expected);

    // Debt past the busy bound again, then reopened with the background compactor on: the
    // compactor alone brings the debt down and ingest goes on.
    for s in 6..10u64 {
        assert!(
            matches!(ingest_one(&engine, &mut expected, s), Ok(Ok(IngestOutcome::Stored { .. }))),
            "stored at {s}"
        );
        engine.flush().unwrap();
    }
    assert_eq!(engine.metrics().compaction_generations_max, 5);
    assert!(matches!(
        ingest_one(&engine, &mut expected, 10),
        Err(Error::Busy { reason: BusyReason::CompactionDebt, .. })
    ));
    engine.shutdown().unwrap();
    drop(engine);
    c.compaction_background = true;
    let engine = Engine::open(c).unwrap();
    wait_until("the compactor brings the debt under the slowdown bound", || !engine.ingest_throttled());
    assert!(engine.metrics().compaction_generations_max < 3);
    assert!(matches!(ingest_one(&engine, &mut expected, 10), Ok(Ok(IngestOutcome::Stored { .. }))));
    assert_eq!(read_map(&engine), expected);
    assert_eq!(assert_stored_once(&engine), expected);
}

/// Ingests buoy `d`'s batch `s` (one pH reading at minute `s`), noting it in `expected` when
/// stored.
fn ingest_one(
    engine: &Engine,
    expected: &mut RowMap,
    s: u64,
) -> bluewave_engine::Result<bluewave_engine::Result<IngestOutcome>> {
    let ts = T0 + s as i64 * MINUTE;
    let outcome = engine.ingest(&buoy("d"), s, batch(&[("ph", ts, 8.0)])).map(|t| t.wait());
    if matches!(outcome, Ok(Ok(IngestOutcome::Stored { .. }))) {
        expected.insert(("d".to_string(), "ph".to_string(), ts), (8.0, 0));
    }
    outcome
}
