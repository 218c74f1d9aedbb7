//! Proves the durability check's key bookkeeping: acked ranges against stored rows find every
//! lost, duplicated, altered and foreign key, and accept stored-but-unacked batches.

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_loadtest::ledger::{AckLedger, CHECK_EXAMPLES_MAX, StoredRow, check_buoy, reading_number};

fn workload() -> Workload {
    Workload::new(WorkloadConfig { buoys: 2, metrics: 3, ..WorkloadConfig::default() }).unwrap()
}

/// The rows a server would return for readings `first..first + n` of buoy `buoy`.
fn rows(w: &Workload, buoy: usize, first: u64, n: usize) -> Vec<StoredRow> {
    let batch = w.batch_of_readings(buoy, first, n).unwrap();
    let names = w.metric_names();
    (0..n)
        .map(|i| StoredRow {
            metric: names[batch.metric_ids()[i] as usize].as_str().to_owned(),
            ts: batch.timestamps()[i],
            value: batch.values()[i],
        })
        .collect()
}

#[test]
fn reading_numbers_round_trip_through_metric_and_timestamp() {
    let w = workload();
    for (i, row) in rows(&w, 1, 7, 20).iter().enumerate() {
        let (reading, metric) = reading_number(&w, &row.metric, row.ts).unwrap();
        assert_eq!(reading, 7 + i as u64);
        assert_eq!(metric as u64, reading % 3);
    }
    let start = w.config().start_ts;
    assert_eq!(reading_number(&w, "ph", start - 1_000_000_000), None);
    assert_eq!(reading_number(&w, "ph", start + 1), None, "off the sample grid");
    assert_eq!(reading_number(&w, "battery_v", start), None, "not among the 3 metrics");
}

#[test]
fn everything_acked_and_stored_once_passes() {
    let w = workload();
    let mut ledger = AckLedger::new();
    ledger.record(0, 0, 10);
    ledger.record(0, 10, 10);
    let check = check_buoy(&w, 0, "b0", &ledger.ranges(0), &rows(&w, 0, 0, 20));
    assert!(check.passed(), "{check:?}");
    assert_eq!((check.acked, check.stored_rows, check.stored_unacked), (20, 20, 0));
}

#[test]
fn stored_but_unacked_batches_are_allowed_and_counted() {
    let w = workload();
    let mut ledger = AckLedger::new();
    ledger.record(0, 0, 10);
    // Batch 10..20 was stored but its ack was lost with the server.
    let check = check_buoy(&w, 0, "b0", &ledger.ranges(0), &rows(&w, 0, 0, 20));
    assert!(check.passed(), "{check:?}");
    assert_eq!(check.stored_unacked, 10);
}

#[test]
fn lost_readings_are_counted_and_listed() {
    let w = workload();
    let mut ledger = AckLedger::new();
    ledger.record(1, 0, 30);
    let mut stored = rows(&w, 1, 0, 30);
    stored.remove(29);
    stored.remove(4);
    let check = check_buoy(&w, 1, "b1", &ledger.ranges(1), &stored);
    assert!(!check.passed());
    assert_eq!(check.lost, 2);
    let ts4 = w.sample_timestamp(1, 1).unwrap();
    let ts29 = w.sample_timestamp(1, 9).unwrap();
    assert_eq!(check.lost_examples, vec![format!("b1 ph {ts4}"), format!("b1 water_temp_c {ts29}")]);
}

#[test]
fn a_whole_lost_batch_lists_at_most_the_bounded_examples() {
    let w = workload();
    let mut ledger = AckLedger::new();
    ledger.record(0, 0, 100);
    let check = check_buoy(&w, 0, "b0", &ledger.ranges(0), &[]);
    assert_eq!(check.lost, 100);
    assert_eq!(check.lost_examples.len(), CHECK_EXAMPLES_MAX);
}

#[test]
fn duplicates_altered_values_and_foreign_rows_fail_the_check() {
    let w = workload();
    let mut ledger = AckLedger::new();
    ledger.record(0, 0, 6);
    let mut stored = rows(&w, 0, 0, 6);
    stored.push(stored[2].clone());
    stored[0].value += 0.001;
    stored.push(StoredRow { metric: "ph".into(), ts: w.config().start_ts + 3, value: 8.0 });
    let check = check_buoy(&w, 0, "b0", &ledger.ranges(0), &stored);
    assert_eq!((check.lost, check.duplicated, check.altered, check.unexpected), (0, 1, 1, 1));
    assert!(!check.passed());
    assert_eq!(check.duplicated_examples.len(), 1);
    assert_eq!(check.altered_examples.len(), 2);
}

#[test]
fn ledgers_merge_and_count_readings() {
    let mut a = AckLedger::new();
    a.record(0, 0, 5);
    a.record(0, 0, 0);
    let mut b = AckLedger::new();
    b.record(0, 5, 5);
    b.record(3, 100, 7);
    a.merge(&b);
    assert_eq!(a.readings(), 17);
    assert_eq!(a.ranges(0), vec![(0, 5), (5, 5)]);
    assert_eq!(a.buoy_indexes().collect::<Vec<_>>(), vec![0, 3]);
    assert!(a.ranges(9).is_empty());
}
