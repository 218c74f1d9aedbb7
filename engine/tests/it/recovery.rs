//! Proves recovery on real files (DESIGN.md, *Ingest path* contract 6):
//!
//! - a WAL cut at **every** byte offset inside the last record of a lane's last segment (a torn
//!   tail) opens, reports the cut in `recovery_report().torn_tails`, and holds exactly the
//!   batches before that record; the torn batch, sent again, is stored (not taken for a
//!   duplicate) and the next open is clean; a last segment cut inside its own header is a torn
//!   tail too;
//! - a damaged record anywhere else (a flipped bit in a middle record, a cut record at the end of
//!   an older segment) stops `Engine::open` with `Error::Corrupt` naming the segment and the
//!   record's byte offset;
//! - a leftover `*.parquet.tmp` is removed, a Parquet file the catalog does not list is removed,
//!   a catalog file missing from disk is reported and left out of reads;
//! - retention (`drop_before`) removes whole partitions, catalog entries and files, and the
//!   result survives a reopen.

use std::path::{Path, PathBuf};

use bluewave_engine::{
    BuoyId, Engine, EngineConfig, Error, IngestOutcome, MetricName, NANOS_PER_SECOND, ReadingBatch,
    lane_for_buoy,
};

use crate::common::{RowMap, batch, buoy, config, copy_dir, read_map, register};

const MINUTE: i64 = 60 * NANOS_PER_SECOND;
const HOUR: i64 = 60 * MINUTE;
/// 2026-06-01T13:00:00Z, the start of an hour partition.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;
const BUOY: &str = "b-1";
/// Segment header bytes and record header bytes (engine/WAL.md).
const SEGMENT_HEADER_BYTES: usize = 24;
const RECORD_HEADER_BYTES: usize = 24;

/// The readings of batch `k` of the WAL tests: two per batch, keys of their own.
fn wal_rows(k: i64) -> Vec<(&'static str, i64, f64)> {
    vec![("ph", T0 + k * MINUTE, 8.0 + k as f64 / 100.0), ("salinity_psu", T0 + k * MINUTE, 35.0 + k as f64)]
}

fn expected_rows(batches: std::ops::Range<i64>) -> RowMap {
    batches.flat_map(wal_rows).map(|(m, ts, v)| ((BUOY.to_string(), m.to_string(), ts), (v, 0))).collect()
}

fn wal_config(dir: &Path, segment_bytes: u64) -> EngineConfig {
    let mut c = config(dir);
    c.wal_segment_bytes = segment_bytes;
    c
}

/// Ingests `batches` batches of [`BUOY`] (each its own WAL record: every ack is awaited) and
/// drops the engine without flushing, so everything stays in the WAL. Returns the buoy's lane
/// directory.
fn fill_wal(dir: &Path, batches: i64, segment_bytes: u64) -> PathBuf {
    let engine = Engine::open(wal_config(dir, segment_bytes)).unwrap();
    register(&engine, &[BUOY]);
    for k in 0..batches {
        let outcome = engine.ingest(&buoy(BUOY), k as u64, batch(&wal_rows(k))).unwrap().wait().unwrap();
        assert!(matches!(outcome, IngestOutcome::Stored { .. }));
    }
    drop(engine);
    lane_dir(dir, &buoy(BUOY))
}

fn lane_dir(dir: &Path, id: &BuoyId) -> PathBuf {
    dir.join("wal").join(format!("lane-{:02}", lane_for_buoy(id, 2)))
}

/// The lane's segment files, in order.
fn segments(lane_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(lane_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    out.sort();
    out
}

/// Byte offsets of the records of a well-formed segment.
fn record_offsets(segment: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at < segment.len() {
        out.push(at);
        let payload = u32::from_le_bytes(segment[at + 8..at + 12].try_into().unwrap()) as usize;
        at += RECORD_HEADER_BYTES + payload;
    }
    assert_eq!(at, segment.len(), "segment ends inside a record");
    out
}

fn truncate(path: &Path, len: usize) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len as u64).unwrap();
}

#[test]
fn a_torn_tail_at_any_byte_of_the_last_record_is_cut_off() {
    const BATCHES: i64 = 4;
    let template = tempfile::tempdir().unwrap();
    let lane = fill_wal(template.path(), BATCHES, 64 << 20);
    let segs = segments(&lane);
    assert_eq!(segs.len(), 1);
    let bytes = std::fs::read(&segs[0]).unwrap();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), BATCHES as usize, "one record per acked batch");
    let last = *offsets.last().unwrap();
    assert!(bytes.len() - last > RECORD_HEADER_BYTES, "the cuts cover the record's header and payload");
    let segment_rel = segs[0].strip_prefix(template.path()).unwrap().to_path_buf();
    let before_last = expected_rows(0..BATCHES - 1);

    let scratch = tempfile::tempdir().unwrap();
    for (case, cut) in (last..bytes.len()).enumerate() {
        let dir = scratch.path().join(format!("case-{case}"));
        copy_dir(template.path(), &dir);
        let segment = dir.join(&segment_rel);
        truncate(&segment, cut);
        let engine = Engine::open(wal_config(&dir, 64 << 20))
            .unwrap_or_else(|e| panic!("cut at byte {cut}: open failed: {e}"));
        let report = engine.recovery_report();
        let torn =
            if cut == last { vec![] } else { vec![(segment.clone(), last as u64, (cut - last) as u64)] };
        assert_eq!(report.torn_tails, torn, "cut at byte {cut}");
        assert_eq!(report.entries_replayed, BATCHES as usize - 1, "cut at byte {cut}");
        assert_eq!(read_map(&engine), before_last, "cut at byte {cut}");
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // After the cut, the torn batch is new again: its retry is stored, and the next open is clean.
    let dir = scratch.path().join("retry");
    copy_dir(template.path(), &dir);
    truncate(&dir.join(&segment_rel), (last + bytes.len()) / 2);
    {
        let engine = Engine::open(wal_config(&dir, 64 << 20)).unwrap();
        assert_eq!(engine.recovery_report().torn_tails.len(), 1);
        let torn = BATCHES - 1;
        let retry = engine.ingest(&buoy(BUOY), torn as u64, batch(&wal_rows(torn))).unwrap().wait().unwrap();
        assert!(matches!(retry, IngestOutcome::Stored { .. }), "{retry:?}");
        let earlier = engine.ingest(&buoy(BUOY), 0, batch(&wal_rows(0))).unwrap().wait().unwrap();
        assert_eq!(earlier, IngestOutcome::Duplicate);
    }
    let engine = Engine::open(wal_config(&dir, 64 << 20)).unwrap();
    assert_eq!(engine.recovery_report().torn_tails, vec![]);
    assert_eq!(read_map(&engine), expected_rows(0..BATCHES));
}

#[test]
fn a_last_segment_torn_inside_its_header_is_a_torn_tail() {
    const BATCHES: i64 = 3;
    let template = tempfile::tempdir().unwrap();
    // A segment of one byte is full at once: every record opens a segment of its own.
    let lane = fill_wal(template.path(), BATCHES, 1);
    let segs = segments(&lane);
    assert_eq!(segs.len(), BATCHES as usize, "one segment per record");
    let last_rel = segs.last().unwrap().strip_prefix(template.path()).unwrap().to_path_buf();
    let scratch = tempfile::tempdir().unwrap();
    for cut in 0..=SEGMENT_HEADER_BYTES {
        let dir = scratch.path().join(format!("cut-{cut}"));
        copy_dir(template.path(), &dir);
        let segment = dir.join(&last_rel);
        truncate(&segment, cut);
        let engine = Engine::open(wal_config(&dir, 1)).unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
        let torn = if cut == SEGMENT_HEADER_BYTES { vec![] } else { vec![(segment.clone(), 0, cut as u64)] };
        assert_eq!(engine.recovery_report().torn_tails, torn, "cut at byte {cut}");
        assert_eq!(read_map(&engine), expected_rows(0..BATCHES - 1), "cut at byte {cut}");
        drop(engine);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The value column of a batch whose bytes hold a complete, well-formed WAL record (a delete
/// entry, tag 0 as an attacker would guess), every 8-byte chunk a finite f64.
fn forged_record_values() -> Vec<f64> {
    use bluewave_engine::internals::{
        DeleteEntry, begin_record, encode_delete_entry, finish_record, patch_sequence,
    };
    for k in 0..1_000i64 {
        let mut entry =
            encode_delete_entry(&DeleteEntry { buoy: BUOY.into(), metric: None, start: k, end: k + 1 });
        patch_sequence(&mut entry, 1 << 40);
        let mut record = Vec::new();
        begin_record(&mut record);
        record.extend_from_slice(&entry);
        finish_record(&mut record, 1, 0);
        record.resize(record.len().next_multiple_of(8), 0);
        let values: Vec<f64> =
            record.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        if values.iter().all(|v| v.is_finite()) {
            return values;
        }
    }
    unreachable!("no forged record with finite chunks")
}

#[test]
fn a_record_forged_inside_a_batch_cannot_turn_a_torn_tail_into_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(wal_config(dir.path(), 64 << 20)).unwrap();
    register(&engine, &[BUOY]);
    engine.ingest(&buoy(BUOY), 0, batch(&wal_rows(0))).unwrap().wait().unwrap();
    // A buoy sends a well-formed record as values: it is logged verbatim inside the next record.
    let values = forged_record_values();
    let n = values.len();
    let timestamps = (0..n as i64).map(|i| T0 + HOUR + i).collect();
    let forged =
        ReadingBatch::new(vec![MetricName::new("ph").unwrap()], timestamps, vec![0; n], values).unwrap();
    engine.ingest(&buoy(BUOY), 1, forged).unwrap().wait().unwrap();
    drop(engine);
    // The power fails before the last byte of that record reached the disk: a torn tail, with
    // the forged record intact inside it.
    let segment = segments(&lane_dir(dir.path(), &buoy(BUOY))).remove(0);
    let bytes = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 2);
    truncate(&segment, bytes.len() - 1);
    let engine = Engine::open(wal_config(dir.path(), 64 << 20)).unwrap();
    assert_eq!(
        engine.recovery_report().torn_tails,
        vec![(segment.clone(), offsets[1] as u64, (bytes.len() - 1 - offsets[1]) as u64)]
    );
    assert_eq!(read_map(&engine), expected_rows(0..1));
}

/// Flips one bit of the second of four records (at the byte `pick(record_len)` of the record)
/// and checks the exact refusal.
fn flip_in_middle_record(pick: impl Fn(usize) -> usize, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lane = fill_wal(dir.path(), 4, 64 << 20);
    let segment = segments(&lane).remove(0);
    let mut bytes = std::fs::read(&segment).unwrap();
    let offsets = record_offsets(&bytes);
    let record = offsets[1];
    bytes[record + pick(offsets[2] - offsets[1])] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();
    match Engine::open(wal_config(dir.path(), 64 << 20)) {
        Err(e @ Error::Corrupt { .. }) => {
            let Error::Corrupt { file, offset, reason: got } = &e else { unreachable!() };
            assert_eq!((file, *offset, got.as_str()), (&segment, record as u64, reason));
            assert_eq!(e.to_string(), format!("corrupt {}: at byte {record}: {reason}", segment.display()));
        }
        Err(other) => panic!("expected Error::Corrupt, got {other:?}"),
        Ok(_) => panic!("a damaged middle record was accepted"),
    }
}

#[test]
fn a_flipped_bit_in_a_middle_record_payload_stops_open() {
    // The last byte of the record: a quality flag.
    flip_in_middle_record(|len| len - 1, "record checksum mismatch");
}

#[test]
fn a_flipped_bit_in_a_middle_record_header_stops_open() {
    flip_in_middle_record(|_| 0, "bad record magic");
}

#[test]
fn a_cut_record_at_the_end_of_an_older_segment_stops_open() {
    let dir = tempfile::tempdir().unwrap();
    let lane = fill_wal(dir.path(), 3, 1);
    let segs = segments(&lane);
    assert_eq!(segs.len(), 3);
    // The first segment lost its record's last byte: it was synced before the next segment was
    // started, so this is damage, not a crash.
    let len = std::fs::metadata(&segs[0]).unwrap().len() as usize;
    truncate(&segs[0], len - 1);
    match Engine::open(wal_config(dir.path(), 1)) {
        Err(Error::Corrupt { file, offset, reason }) => {
            assert_eq!(
                (file, offset, reason.as_str()),
                (segs[0].clone(), SEGMENT_HEADER_BYTES as u64, "record cut short")
            );
        }
        Err(other) => panic!("expected Error::Corrupt, got {other:?}"),
        Ok(_) => panic!("a cut record in an older segment was accepted"),
    }
}

/// Two flushed files (hours 13 and 14) of two buoys; the engine is shut down. Returns the rows
/// of each hour and the files' relative paths, hour 13 first.
fn two_partitions(dir: &Path) -> (RowMap, RowMap, Vec<String>) {
    let engine = Engine::open(config(dir)).unwrap();
    register(&engine, &["b-1", "b-2"]);
    let mut hours = [RowMap::new(), RowMap::new()];
    for (seq, name) in ["b-1", "b-2"].iter().enumerate() {
        let rows = [("ph", T0 + MINUTE, 8.1 + seq as f64), ("ph", T0 + HOUR + MINUTE, 8.2 + seq as f64)];
        engine.ingest(&buoy(name), 0, batch(&rows)).unwrap().wait().unwrap();
        for (hour, &(m, ts, v)) in rows.iter().enumerate() {
            hours[hour].insert((name.to_string(), m.to_string(), ts), (v, 0));
        }
    }
    assert_eq!(engine.flush().unwrap().files, 2);
    let mut files: Vec<_> = engine.files().iter().map(|f| (f.partition_start, f.path.clone())).collect();
    files.sort();
    engine.shutdown().unwrap();
    let [h13, h14] = hours;
    (h13, h14, files.into_iter().map(|(_, p)| p).collect())
}

#[test]
fn a_leftover_temp_file_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (h13, h14, files) = two_partitions(dir.path());
    let tmp = dir.path().join(&files[0]).with_file_name("00000000000000ff.parquet.tmp");
    std::fs::write(&tmp, b"half a parquet file").unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let report = engine.recovery_report();
    assert_eq!(
        (report.temp_files_removed, report.orphan_files_removed, report.missing_files.len()),
        (1, 0, 0)
    );
    assert!(!tmp.exists());
    assert_eq!(read_map(&engine), h13.into_iter().chain(h14).collect::<RowMap>());
}

#[test]
fn a_parquet_file_without_a_catalog_entry_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (h13, h14, files) = two_partitions(dir.path());
    // A complete file whose catalog commit never happened (a crash between rename and commit).
    let orphan = dir.path().join(&files[0]).with_file_name("0000000000000100.parquet");
    std::fs::copy(dir.path().join(&files[0]), &orphan).unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let report = engine.recovery_report();
    assert_eq!(
        (report.temp_files_removed, report.orphan_files_removed, report.missing_files.len()),
        (0, 1, 0)
    );
    assert!(!orphan.exists());
    assert_eq!(engine.files().len(), 2);
    assert_eq!(read_map(&engine), h13.into_iter().chain(h14).collect::<RowMap>());
}

#[test]
fn a_catalog_file_missing_from_disk_is_reported_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let (h13, _h14, files) = two_partitions(dir.path());
    std::fs::remove_file(dir.path().join(&files[1])).unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let report = engine.recovery_report();
    assert_eq!(report.missing_files, vec![files[1].clone()]);
    assert_eq!((report.temp_files_removed, report.orphan_files_removed), (0, 0));
    assert_eq!(engine.files().iter().map(|f| f.path.clone()).collect::<Vec<_>>(), vec![files[0].clone()]);
    assert_eq!(read_map(&engine), h13, "the rows of the missing file are gone, the others read fine");
}

#[test]
fn retention_drops_whole_partitions_from_catalog_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    register(&engine, &["b-1", "b-2"]);
    let value = |h: i64| 8.0 + h as f64 / 10.0;
    let mut kept = RowMap::new();
    for name in ["b-1", "b-2"] {
        let rows: Vec<(&str, i64, f64)> = (0..3).map(|h| ("ph", T0 + h * HOUR, value(h))).collect();
        engine.ingest(&buoy(name), 0, batch(&rows)).unwrap().wait().unwrap();
        kept.insert((name.to_string(), "ph".to_string(), T0 + 2 * HOUR), (value(2), 0));
    }
    assert_eq!(engine.flush().unwrap().files, 3);
    let mut files: Vec<_> = engine.files().iter().map(|f| (f.partition_start, f.path.clone())).collect();
    files.sort();
    // The cutoff falls inside hour 15: hours 13 and 14 ended before it and go whole; hour 15 stays
    // whole, including its reading at 15:00, which is older than the cutoff.
    let cutoff = T0 + 2 * HOUR + 1;
    assert_eq!(engine.drop_before(cutoff).unwrap(), 2);
    assert_eq!(engine.files().iter().map(|f| f.path.clone()).collect::<Vec<_>>(), vec![files[2].1.clone()]);
    assert_eq!(read_map(&engine), kept);
    for (_, path) in &files[..2] {
        let file = dir.path().join(path);
        assert!(!file.exists(), "{path} still on disk");
        assert!(!file.parent().unwrap().exists(), "the empty partition directory of {path} is left");
    }
    assert!(dir.path().join(&files[2].1).exists());
    assert_eq!(engine.drop_before(cutoff).unwrap(), 0, "nothing more to drop");
    engine.shutdown().unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    let report = engine.recovery_report();
    assert_eq!((report.orphan_files_removed, report.missing_files.len()), (0, 0));
    assert_eq!(engine.files().len(), 1);
    assert_eq!(read_map(&engine), kept);
}

/// Sequences are shared by all lanes, so one lane's WAL record holds sequences with gaps (the
/// other lane took those in between). The watermark a flush records must be the record's last
/// sequence, not its first plus its entry count: otherwise the next open replays the tail of
/// already-flushed records, writing their rows a second time and bringing back rows a delete
/// (applied by compaction, then collected) had removed.
#[test]
fn flushed_records_of_interleaved_lanes_are_not_replayed_and_deleted_rows_stay_deleted() {
    let dir = tempfile::tempdir().unwrap();
    // One buoy on each lane.
    let names: Vec<String> = (0..64).map(|i| format!("il-{i}")).collect();
    let on_lane = |lane: usize| names.iter().find(|n| lane_for_buoy(&buoy(n), 2) == lane).unwrap().clone();
    let (a, b) = (on_lane(0), on_lane(1));
    // Batches large enough that each lane's group commits gather several while the other
    // lane takes sequences in between.
    const BATCHES: i64 = 300;
    const PER_BATCH: i64 = 200;
    let ph = |r: i64| 7.0 + (r % 100) as f64 / 100.0;
    let rows_of = |k: i64| -> Vec<(&'static str, i64, f64)> {
        (k * PER_BATCH..(k + 1) * PER_BATCH).map(|r| ("ph", T0 + r * NANOS_PER_SECOND, ph(r))).collect()
    };
    let expected_b: RowMap = (0..BATCHES * PER_BATCH)
        .map(|r| ((b.clone(), "ph".to_owned(), T0 + r * NANOS_PER_SECOND), (ph(r), 0)))
        .collect();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        register(&engine, &[&a, &b]);
        let mut tickets = Vec::new();
        for k in 0..BATCHES {
            tickets.push(engine.ingest(&buoy(&a), k as u64, batch(&rows_of(k))).unwrap());
            tickets.push(engine.ingest(&buoy(&b), k as u64, batch(&rows_of(k))).unwrap());
        }
        for t in tickets {
            assert!(matches!(t.wait().unwrap(), IngestOutcome::Stored { .. }));
        }
        engine.flush().unwrap();
        // Every row of `a` deleted, the delete applied by compaction and collected.
        let range = bluewave_engine::DeleteRange {
            buoy: buoy(&a),
            metric: None,
            start: T0,
            end: T0 + BATCHES * PER_BATCH * NANOS_PER_SECOND,
        };
        engine.delete(&range).unwrap().wait().unwrap();
        engine.flush().unwrap();
        engine.compact().unwrap();
        assert_eq!(engine.snapshot().view.tombstones.len(), 0, "tombstone collected");
        assert!(read_map(&engine) == expected_b, "before the restart");
        engine.shutdown().unwrap();
    }
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.recovery_report().entries_replayed, 0);
    let after = read_map(&engine);
    let resurrected = after.keys().filter(|k| k.0 == a).count();
    assert_eq!(resurrected, 0, "deleted rows back after the restart");
    assert!(after == expected_b, "after the restart");
    let file_rows: u64 = engine.files().iter().map(|f| f.rows).sum();
    assert_eq!(file_rows, (BATCHES * PER_BATCH) as u64, "no row written twice");
}
