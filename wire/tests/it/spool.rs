//! The client spool on real files: what is written and not yet removed comes back on reopen, in
//! seq order and nothing else; sequence numbers never repeat across reopens; every crash point of
//! a write (tmp left, truncated file, flipped bit, wrong name) is recovered or reported as
//! `.corrupt`, never invented or silently skipped; the bounds give `SpoolError::Full`; records
//! round-trip and arbitrary bytes never panic the decoder or `Spool::open`.

use std::fs;
use std::path::Path;

use bluewave_engine::MetricName;
use bluewave_wire::{
    MetricDictionary, SEQ_LEASE_BATCHES, Spool, SpoolConfig, SpoolError, SpooledBatch, encode_batch,
};
use proptest::prelude::*;

use crate::support::names;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig { dir: dir.to_path_buf(), batches_max: 100, bytes_max: 1 << 20, first_batch_seq: 1 }
}

/// A real BATCH frame of `readings` readings under `batch_seq`.
fn spooled(batch_seq: u64, readings: usize) -> SpooledBatch {
    let dictionary = names(&["salinity_psu", "ph"]);
    let batch = bluewave_engine::ReadingBatch::new(
        dictionary.clone(),
        (0..readings as i64).map(|i| 1_700_000_000_000_000_000 + i * 1_000_000_000).collect(),
        (0..readings).map(|i| (i % 2) as u16).collect(),
        (0..readings).map(|i| 35.0 + i as f64 / 1000.0).collect(),
    )
    .unwrap();
    let mut frame = Vec::new();
    encode_batch(batch_seq, &batch, &MetricDictionary::new(dictionary.clone()).unwrap(), &mut frame).unwrap();
    SpooledBatch { batch_seq, dictionary, frame }
}

fn seqs(batches: &[SpooledBatch]) -> Vec<u64> {
    batches.iter().map(|b| b.batch_seq).collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn written_and_not_removed_batches_come_back_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, recovery) = Spool::open(config(dir.path())).unwrap();
    assert!(recovery.batches.is_empty());
    let mut written = Vec::new();
    for _ in 0..5 {
        let seq = spool.next_seq().unwrap();
        let batch = spooled(seq, 3);
        spool.write(&batch).unwrap();
        written.push(batch);
    }
    assert_eq!(seqs(&written), vec![1, 2, 3, 4, 5]);
    spool.remove(2).unwrap();
    spool.remove(4).unwrap();
    spool.remove(4).unwrap(); // removing twice is fine
    assert_eq!(spool.len(), 3);
    drop(spool);

    let (spool, recovery) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(recovery.batches, vec![written[0].clone(), written[2].clone(), written[4].clone()]);
    assert_eq!(recovery.tmp_files_removed, 0);
    assert!(recovery.corrupt_files.is_empty());
    assert_eq!(spool.len(), 3);
    // The lease covered 1..=1024, so the reopened spool continues above it: no seq is reused.
    assert_eq!(spool.next_seq().unwrap(), 1 + SEQ_LEASE_BATCHES);
}

#[test]
fn sequence_numbers_never_repeat_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Vec::new();
    for round in 0..4 {
        let (spool, _) = Spool::open(config(dir.path())).unwrap();
        for _ in 0..(round * 700) {
            seen.push(spool.next_seq().unwrap());
        }
        seen.push(spool.next_seq().unwrap());
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a seq was handed out twice");
    assert_eq!(sorted, seen, "seqs must increase");
}

#[test]
fn first_batch_seq_is_respected_for_a_new_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.first_batch_seq = 5_000;
    let (spool, _) = Spool::open(config).unwrap();
    assert_eq!(spool.next_seq().unwrap(), 5_000);
}

#[test]
fn every_crash_point_of_a_write_recovers_exactly_the_complete_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    for seq in 1..=6 {
        spool.write(&spooled(seq, 4)).unwrap();
    }
    drop(spool);
    let path = |seq: u64| dir.path().join(format!("batch-{seq:020}.bwb"));
    // Crash before the rename: a tmp file of a 7th batch, complete or cut short.
    fs::write(dir.path().join(format!("batch-{:020}.bwb.tmp", 7)), spooled(7, 4).encode().unwrap()).unwrap();
    fs::write(dir.path().join("seq.lease.tmp"), b"half").unwrap();
    // Damage that no completed write can produce: truncation, a flipped bit, a wrong name.
    let bytes = fs::read(path(2)).unwrap();
    fs::write(path(2), &bytes[..bytes.len() - 1]).unwrap();
    let mut bytes = fs::read(path(3)).unwrap();
    bytes[40] ^= 0x10;
    fs::write(path(3), &bytes).unwrap();
    fs::rename(path(4), path(40)).unwrap();
    fs::write(path(5), b"").unwrap();

    let (spool, recovery) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(seqs(&recovery.batches), vec![1, 6]);
    assert_eq!(recovery.batches[0], spooled(1, 4));
    assert_eq!(recovery.tmp_files_removed, 2);
    let mut corrupt: Vec<String> =
        recovery.corrupt_files.iter().map(|p| p.file_name().unwrap().to_str().unwrap().to_owned()).collect();
    corrupt.sort();
    let expected: Vec<String> =
        [2u64, 3, 5, 40].iter().map(|s| format!("batch-{s:020}.bwb.corrupt")).collect();
    assert_eq!(corrupt, expected);
    assert_eq!(spool.len(), 2);
    drop(spool);
    // The damaged files stay aside for an operator and are not read again.
    let names = file_names(dir.path());
    assert_eq!(names.iter().filter(|n| n.ends_with(".corrupt")).count(), 4);
    assert!(!names.iter().any(|n| n.ends_with(".tmp")));
    let (_, again) = Spool::open(config(dir.path())).unwrap();
    assert_eq!(seqs(&again.batches), vec![1, 6]);
    assert!(again.corrupt_files.is_empty());
}

#[test]
fn a_damaged_lease_stops_open_instead_of_reusing_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    spool.next_seq().unwrap();
    drop(spool);
    let lease = dir.path().join("seq.lease");
    let mut bytes = fs::read(&lease).unwrap();
    bytes[9] ^= 1;
    fs::write(&lease, &bytes).unwrap();
    match Spool::open(config(dir.path())) {
        Err(SpoolError::LeaseDamaged { path, .. }) => assert_eq!(path, lease),
        other => panic!("expected LeaseDamaged, got {other:?}"),
    }
}

#[test]
fn bounds_give_a_typed_full_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.batches_max = 2;
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    spool.write(&spooled(1, 2)).unwrap();
    spool.write(&spooled(2, 2)).unwrap();
    spool.write(&spooled(2, 2)).unwrap(); // rewriting a held seq takes no new room
    match spool.write(&spooled(3, 2)) {
        Err(SpoolError::Full { batches: 2, batches_max: 2, .. }) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    spool.remove(1).unwrap();
    spool.write(&spooled(3, 2)).unwrap();

    let record_bytes = spooled(10, 100).encode().unwrap().len() as u64;
    let dir = tempfile::tempdir().unwrap();
    cfg.dir = dir.path().to_path_buf();
    cfg.batches_max = 100;
    cfg.bytes_max = record_bytes * 2;
    let (spool, _) = Spool::open(cfg).unwrap();
    spool.write(&spooled(10, 100)).unwrap();
    spool.write(&spooled(11, 100)).unwrap();
    assert!(matches!(spool.write(&spooled(12, 1)), Err(SpoolError::Full { batches: 2, .. })));
    // Nothing of the refused batch reached the disk.
    assert_eq!(file_names(dir.path()).iter().filter(|n| n.ends_with(".bwb")).count(), 2);
}

fn metric_names() -> impl Strategy<Value = Vec<MetricName>> {
    prop::collection::btree_set("[a-z0-9_]{1,64}", 1..20)
        .prop_map(|set| set.iter().map(|n| MetricName::new(n).unwrap()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn spool_records_round_trip(
        batch_seq in any::<u64>(),
        dictionary in metric_names(),
        frame in prop::collection::vec(any::<u8>(), 12..2_000),
    ) {
        let batch = SpooledBatch { batch_seq, dictionary, frame };
        let bytes = batch.encode().unwrap();
        prop_assert_eq!(SpooledBatch::decode(&bytes).unwrap(), batch.clone());
        // Any single flipped bit is caught.
        for at in [0, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            prop_assert!(SpooledBatch::decode(&damaged).is_err());
        }
        // Any truncation is caught.
        prop_assert!(SpooledBatch::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_record_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = SpooledBatch::decode(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn arbitrary_files_never_panic_open_and_are_moved_aside(
        files in prop::collection::vec((1u64..50, prop::collection::vec(any::<u8>(), 0..200)), 1..6),
        lease in prop::collection::vec(any::<u8>(), 0..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for (seq, bytes) in &files {
            fs::write(dir.path().join(format!("batch-{seq:020}.bwb")), bytes).unwrap();
        }
        let (spool, recovery) = Spool::open(config(dir.path())).unwrap();
        prop_assert!(recovery.batches.is_empty());
        prop_assert_eq!(spool.len(), 0);
        drop(spool);
        fs::write(dir.path().join("seq.lease"), &lease).unwrap();
        let reopened = Spool::open(config(dir.path()));
        let lease_refused = matches!(reopened, Err(SpoolError::LeaseDamaged { .. }));
        prop_assert!(lease_refused);
    }
}
