//! Proves the engine's contracts end to end on real files: ack means visible, retries are
//! stored once (also across a restart), last write wins across flushes, deletes hide data at
//! once and compaction removes it, quality flags are kept, bad input is refused alone.

use bluewave_engine::{
    DeleteRange, Engine, Error, IngestOutcome, InputError, MetricName, ReadFilter, ReadingBatch, UNSEQUENCED,
};

use crate::common::{batch, buoy, config, read_all, register, rows};

#[test]
fn acked_readings_are_visible_and_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b-1", "b-2"]);
    let out =
        engine.ingest(&buoy("b-1"), 0, batch(&[("ph", 10, 8.1), ("salinity_psu", 10, 35.127)])).unwrap();
    assert!(matches!(out.wait().unwrap(), IngestOutcome::Stored { .. }));
    engine.ingest(&buoy("b-2"), 0, batch(&[("ph", 5, 7.9)])).unwrap().wait().unwrap();
    let expected = vec![
        ("b-1".to_string(), "ph".to_string(), 10, 8.1, 0),
        ("b-1".to_string(), "salinity_psu".to_string(), 10, 35.127, 0),
        ("b-2".to_string(), "ph".to_string(), 5, 7.9, 0),
    ];
    assert_eq!(read_all(&engine), expected);
    let report = engine.flush().unwrap();
    // One partition, two value scales (8.1 and 7.9 at 0.1; 35.127 at 0.001): two files.
    assert_eq!((report.files, report.rows), (2, 3));
    assert_eq!(read_all(&engine), expected);
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&engine), expected);
    assert_eq!(engine.files().len(), 2);
}

#[test]
fn retries_are_stored_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        register(&engine, &["b"]);
        let first = engine.ingest(&buoy("b"), 7, batch(&[("ph", 1, 8.0)])).unwrap();
        let again = engine.ingest(&buoy("b"), 7, batch(&[("ph", 1, 9.0)])).unwrap();
        assert!(matches!(first.wait().unwrap(), IngestOutcome::Stored { .. }));
        assert_eq!(again.wait().unwrap(), IngestOutcome::Duplicate);
        // Not flushed: the window is rebuilt from the WAL.
    }
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        assert_eq!(engine.recovery_report().entries_replayed, 1);
        let again = engine.ingest(&buoy("b"), 7, batch(&[("ph", 1, 9.0)])).unwrap();
        assert_eq!(again.wait().unwrap(), IngestOutcome::Duplicate);
        engine.flush().unwrap();
        engine.shutdown().unwrap();
    }
    // Flushed: the window comes from the catalog.
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.recovery_report().entries_replayed, 0);
    assert_eq!(
        engine.ingest(&buoy("b"), 7, batch(&[("ph", 1, 9.0)])).unwrap().wait().unwrap(),
        IngestOutcome::Duplicate
    );
    assert!(matches!(
        engine.ingest(&buoy("b"), 8, batch(&[("ph", 2, 9.0)])).unwrap().wait().unwrap(),
        IngestOutcome::Stored { .. }
    ));
    assert_eq!(
        read_all(&engine),
        vec![("b".into(), "ph".into(), 1, 8.0, 0), ("b".into(), "ph".into(), 2, 9.0, 0)]
    );
}

#[test]
fn last_write_wins_across_buffer_files_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b"]);
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0), ("ph", 2, 8.1)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    engine.ingest(&buoy("b"), 1, batch(&[("ph", 2, 8.2)])).unwrap().wait().unwrap();
    let expected =
        vec![("b".to_string(), "ph".to_string(), 1, 8.0, 0), ("b".to_string(), "ph".to_string(), 2, 8.2, 0)];
    assert_eq!(read_all(&engine), expected, "buffer beats file");
    engine.flush().unwrap();
    assert_eq!(engine.files().len(), 2);
    assert_eq!(read_all(&engine), expected, "newer file beats older");
    assert_eq!(engine.compact().unwrap(), 1);
    assert_eq!(engine.files().len(), 1);
    assert_eq!(read_all(&engine), expected, "compaction keeps the newest");
}

#[test]
fn deletes_hide_at_once_and_compaction_removes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b", "c"]);
    engine
        .ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0), ("ph", 2, 8.1), ("salinity_psu", 2, 35.0)]))
        .unwrap()
        .wait()
        .unwrap();
    engine.ingest(&buoy("c"), 0, batch(&[("ph", 2, 7.0)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    engine.ingest(&buoy("b"), 1, batch(&[("ph", 3, 8.3)])).unwrap().wait().unwrap();
    let delete =
        DeleteRange { buoy: buoy("b"), metric: Some(MetricName::new("ph").unwrap()), start: 2, end: 10 };
    engine.delete(&delete).unwrap().wait().unwrap();
    // Written after the delete: must survive it.
    engine.ingest(&buoy("b"), 2, batch(&[("ph", 4, 8.4)])).unwrap().wait().unwrap();
    let expected = vec![
        ("b".to_string(), "ph".to_string(), 1, 8.0, 0),
        ("b".to_string(), "ph".to_string(), 4, 8.4, 0),
        ("b".to_string(), "salinity_psu".to_string(), 2, 35.0, 0),
        ("c".to_string(), "ph".to_string(), 2, 7.0, 0),
    ];
    assert_eq!(read_all(&engine), expected);
    engine.flush().unwrap();
    assert_eq!(read_all(&engine), expected);
    engine.compact().unwrap();
    assert_eq!(read_all(&engine), expected);
    assert!(engine.snapshot().view.tombstones.is_empty(), "tombstone collected after compaction");
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&engine), expected);
}

#[test]
fn out_of_range_readings_are_kept_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b"]);
    engine
        .ingest(&buoy("b"), 0, batch(&[("ph", 1, 14.5), ("ph", 2, 8.0), ("custom_metric", 3, -1e9)]))
        .unwrap()
        .wait()
        .unwrap();
    engine.flush().unwrap();
    let got = read_all(&engine);
    assert_eq!(got.iter().map(|r| r.4).collect::<Vec<_>>(), vec![0, 1, 0]);
    assert_eq!(engine.metrics().readings_out_of_range, 1);
}

#[test]
fn bad_input_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b"]);
    let unknown = engine.ingest(&buoy("nobody"), 0, batch(&[("ph", 1, 8.0)]));
    assert!(matches!(unknown, Err(Error::Input(InputError::UnknownBuoy(_)))));
    let ph = || vec![MetricName::new("ph").unwrap()];
    assert_eq!(
        ReadingBatch::new(ph(), vec![1], vec![0], vec![f64::NAN]),
        Err(InputError::NonFiniteValue { index: 0 })
    );
    assert_eq!(ReadingBatch::new(ph(), vec![], vec![], vec![]), Err(InputError::EmptyBatch));
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0)])).unwrap().wait().unwrap();
    assert_eq!(read_all(&engine).len(), 1);
    let bad_range = ReadFilter { start: Some(5), end: Some(1), ..ReadFilter::default() };
    assert!(engine.snapshot().read(engine.storage().as_ref(), &bad_range).is_err());
    let filtered = rows(
        &engine,
        &ReadFilter { buoys: Some(vec!["b".into()]), start: Some(1), end: Some(2), ..ReadFilter::default() },
    );
    assert_eq!(filtered.len(), 1);
}

#[test]
fn a_snapshot_keeps_reading_files_that_compaction_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b"]);
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    engine.ingest(&buoy("b"), 1, batch(&[("ph", 2, 8.5)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    let old = engine.snapshot();
    assert_eq!(engine.compact().unwrap(), 1);
    let old_paths: Vec<_> = old.view.files().map(|f| old.file_path(f)).collect();
    assert!(old_paths.iter().all(|p| p.exists()), "files of a live snapshot were deleted");
    let rows = old.read(engine.storage().as_ref(), &ReadFilter::default()).unwrap();
    assert_eq!(rows.iter().map(|r| (r.ts, r.value)).collect::<Vec<_>>(), vec![(1, 8.0), (2, 8.5)]);
    drop(rows);
    drop(old);
    // A flusher pass deletes them once the snapshot is gone. The compactor thread may still
    // hold the view it compacted from for a moment after `compact` returns, so up to 500
    // passes (bounded; not a timing assertion) may be needed before its last reference drops.
    for _ in 0..500 {
        engine.flush().unwrap();
        if old_paths.iter().all(|p| !p.exists()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(old_paths.iter().all(|p| !p.exists()), "replaced files outlived their last reader");
    assert_eq!(read_all(&engine).len(), 2);
}

#[test]
fn refused_batches_give_their_queue_budget_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.lanes = 1;
    c.queue_depth = 1;
    c.queue_bytes_max = 4 << 20;
    c.flush_buffer_bytes = 256 << 20;
    c.buffer_bytes_max = 512 << 20;
    let engine = Engine::open(c).unwrap();
    register(&engine, &["b"]);
    let rows: Vec<(&str, i64, f64)> = (0..1_000).map(|i| ("ph", i, 8.0)).collect();
    let template = batch(&rows);
    let (mut tickets, mut refused) = (Vec::new(), 0);
    for seq in 0..3_000 {
        match engine.ingest(&buoy("b"), seq, template.clone()) {
            Ok(t) => tickets.push(t),
            Err(Error::Busy { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // A budget leak of about 38 KB per refusal would exhaust 4 MiB after ~110 refusals.
    assert!(refused > 200, "only {refused} refusals: the test did not reach its condition");
    for t in tickets {
        t.wait().unwrap();
    }
    let full = vec![("ph", 5, 8.0); bluewave_engine::BATCH_READINGS_MAX / 2];
    let big = batch(&full);
    assert!(engine.ingest(&buoy("b"), 10_000, big).unwrap().wait().is_ok(), "queue budget leaked");
}

#[test]
fn a_delete_of_old_data_is_collected_after_one_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b"]);
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0), ("ph", 2, 8.1)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    let delete = DeleteRange { buoy: buoy("b"), metric: None, start: 1, end: 2 };
    engine.delete(&delete).unwrap().wait().unwrap();
    engine.flush().unwrap();
    assert_eq!(engine.snapshot().view.tombstones.len(), 1);
    assert_eq!(engine.compact().unwrap(), 1);
    assert!(engine.snapshot().view.tombstones.is_empty(), "tombstone kept after its rows were removed");
    assert_eq!(engine.compact().unwrap(), 0, "nothing left to compact");
    assert_eq!(read_all(&engine), vec![("b".to_string(), "ph".to_string(), 2, 8.1, 0)]);
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&engine), vec![("b".to_string(), "ph".to_string(), 2, 8.1, 0)]);
}

#[test]
fn a_data_dir_refuses_another_partition_length() {
    let dir = tempfile::tempdir().unwrap();
    drop(Engine::open(config(dir.path())).unwrap());
    let mut c = config(dir.path());
    c.partition_duration =
        bluewave_engine::PartitionDuration::new(std::time::Duration::from_secs(600)).unwrap();
    match Engine::open(c) {
        Err(Error::Config(message)) => assert!(message.contains("3600 s"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    assert!(Engine::open(config(dir.path())).is_ok());
}

#[test]
fn unsequenced_corrections_win_and_leave_the_device_window_alone() {
    let dir = tempfile::tempdir().unwrap();
    let b = buoy("b");
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        register(&engine, &["b"]);
        // The reserved sequence is refused to devices, alone.
        match engine.ingest(&b, UNSEQUENCED, batch(&[("ph", 1, 1.0)])) {
            Err(Error::Input(InputError::ReservedSequence(s))) => assert_eq!(s, UNSEQUENCED),
            other => panic!("expected ReservedSequence, got {other:?}"),
        }
        engine.ingest(&b, 5, batch(&[("ph", 1, 8.0), ("ph", 2, 8.2)])).unwrap().wait().unwrap();
        // Two corrections of one reading: both stored (never deduplicated), the later wins.
        for v in [8.05, 8.06] {
            let out = engine.write_unsequenced(&b, batch(&[("ph", 1, v)])).unwrap().wait().unwrap();
            assert!(matches!(out, IngestOutcome::Stored { .. }), "{out:?}");
        }
        // The device's window saw 5 only: a retry of 5 is a duplicate, 6 is new.
        assert_eq!(
            engine.ingest(&b, 5, batch(&[("ph", 1, 0.0)])).unwrap().wait().unwrap(),
            IngestOutcome::Duplicate
        );
        let six = engine.ingest(&b, 6, batch(&[("ph", 3, 8.3)])).unwrap().wait().unwrap();
        assert!(matches!(six, IngestOutcome::Stored { .. }));
        // Not flushed: after a restart the WAL replay rebuilds the same window and values.
    }
    let expected = vec![
        ("b".to_string(), "ph".to_string(), 1, 8.06, 0),
        ("b".to_string(), "ph".to_string(), 2, 8.2, 0),
        ("b".to_string(), "ph".to_string(), 3, 8.3, 0),
    ];
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.recovery_report().entries_replayed, 4);
    assert_eq!(read_all(&engine), expected);
    assert_eq!(
        engine.ingest(&b, 6, batch(&[("ph", 3, 0.0)])).unwrap().wait().unwrap(),
        IngestOutcome::Duplicate
    );
    assert_eq!(
        engine.ingest(&b, 5, batch(&[("ph", 1, 0.0)])).unwrap().wait().unwrap(),
        IngestOutcome::Duplicate
    );
    engine.flush().unwrap();
    assert_eq!(read_all(&engine), expected);
    engine.shutdown().unwrap();
}

#[test]
fn a_closed_partition_is_folded_whole_at_a_quiet_tick() {
    const HOUR: i64 = 3_600_000_000_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b", "c"]);
    // Two flush generations in the first hour, each with values at two scales: four files.
    for (seq, ts) in [(0, 1), (1, 2)] {
        let rows = [("ph", ts, 8.1), ("salinity_psu", ts, 35.127)];
        engine.ingest(&buoy("b"), seq, batch(&rows)).unwrap().wait().unwrap();
        engine.ingest(&buoy("c"), seq, batch(&rows)).unwrap().wait().unwrap();
        engine.flush().unwrap();
    }
    // A rewrite in a third generation (under `compaction_files_min`, so no compaction follows
    // the flushes).
    engine.ingest(&buoy("b"), 2, batch(&[("ph", 1, 8.4)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    let first_hour =
        |engine: &Engine| engine.files().into_iter().filter(|f| f.partition_start == 0).collect::<Vec<_>>();
    assert_eq!(first_hour(&engine).len(), 5);
    let newest_generation = first_hour(&engine).iter().map(|f| f.generation).max().unwrap();
    let before = read_all(&engine);
    // Nothing closes the first hour yet: it is the newest partition.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(first_hour(&engine).len(), 5, "the newest partition is not folded");
    // Data of the next hour closes it; the compactor thread folds it.
    engine.ingest(&buoy("b"), 3, batch(&[("ph", HOUR + 1, 8.0)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while first_hour(&engine).len() != 2 {
        assert!(std::time::Instant::now() < deadline, "not folded: {:?}", first_hour(&engine));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let folded = first_hour(&engine);
    assert!(
        folded.iter().all(|f| f.generation == newest_generation),
        "the fold keeps the highest generation"
    );
    let mut rows_by_file: Vec<(Vec<String>, u64)> =
        folded.iter().map(|f| (f.metrics.iter().map(|m| m.to_string()).collect(), f.rows)).collect();
    rows_by_file.sort();
    assert_eq!(rows_by_file, vec![(vec!["ph".to_owned()], 4), (vec!["salinity_psu".to_owned()], 4)]);
    assert_eq!(engine.files().iter().filter(|f| f.partition_start == HOUR).count(), 1, "the newest is left");
    let mut expected = before;
    expected.push(("b".to_owned(), "ph".to_owned(), HOUR + 1, 8.0, 0));
    expected.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    let mut after = read_all(&engine);
    after.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    assert_eq!(after, expected);
    assert!(after.contains(&("b".to_owned(), "ph".to_owned(), 1, 8.4, 0)), "the rewrite won");
    // The fold survives a reopen.
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(first_hour(&engine).len(), 2);
    let mut reopened = read_all(&engine);
    reopened.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    assert_eq!(reopened, expected);
}
