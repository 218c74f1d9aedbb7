//! Fuzzes the WAL decoders, which read bytes from disk that a crash or a bad disk may have
//! damaged: `internals::decode_entries` (one record's payload) and `internals::read_lane` (whole
//! segment files, through the real `FsStorage`). Neither may panic; what decodes must re-encode to
//! the same entries, and a replay's sequence numbers must increase.
//!
//! Input layout: `mode u8 | rest`.
//! - `mode % 3 == 0`: `rest` is `entry_count u32 LE | payload`, given to `decode_entries`, and
//!   also wrapped in a well-formed record (length and checksum filled in) inside a segment with a
//!   valid header, so the damage reaches the entry decoder through `read_lane` too (a fuzzer
//!   cannot forge a CRC32C on its own).
//! - `mode % 3 == 1`: `rest` follows a valid segment header (record framing, torn tails).
//! - `mode % 3 == 2`: `rest` is the whole segment file (segment headers).

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bluewave_engine::FsStorage;
use bluewave_engine::internals::{
    Entry, begin_record, decode_entries, encode_batch_entry, encode_delete_entry, finish_record,
    patch_sequence, read_lane,
};
use bluewave_engine::{MetricName, ReadingBatch};
use libfuzzer_sys::fuzz_target;

/// Record header bytes (layout in `engine/WAL.md`).
const RECORD_HEADER_BYTES: usize = 24;

/// Segment header: magic, version 1, lane 0.
fn segment_header() -> Vec<u8> {
    let mut h = b"BWAVEWAL".to_vec();
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// One lane directory per fuzzing process, rewritten for every input (libFuzzer runs inputs one
/// at a time in a process).
fn lane_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("bluewave-fuzz-wal").tempdir().expect("tempdir").keep();
        let lane = dir.join("lane-00");
        std::fs::create_dir_all(&lane).expect("lane dir");
        lane
    })
}

/// Reads `segment` as the only segment of a lane; checks the replay's invariants.
fn replay(segment: &[u8]) -> Option<Vec<Entry>> {
    let lane = lane_dir();
    std::fs::write(lane.join(format!("{:020}.wal", 1)), segment).expect("write segment");
    let replay = read_lane(&FsStorage, lane).ok()?;
    let seqs: Vec<u64> = replay.entries.iter().map(Entry::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "replayed sequences do not increase: {seqs:?}");
    assert_eq!(replay.seq_max, seqs.last().copied().unwrap_or(0));
    Some(replay.entries)
}

/// The entries as one record, when the public encoders can express them (a batch must form a
/// valid `ReadingBatch`).
fn reencode(entries: &[Entry]) -> Option<Vec<u8>> {
    let mut record = Vec::new();
    begin_record(&mut record);
    for e in entries {
        let mut bytes = match e {
            Entry::Batch(b) => {
                let names =
                    b.metric_names.iter().map(|m| MetricName::new(m).ok()).collect::<Option<Vec<_>>>()?;
                let batch =
                    ReadingBatch::new(names, b.timestamps.clone(), b.metric_ids.clone(), b.values.clone())
                        .ok()?;
                encode_batch_entry(&b.buoy, b.batch_seq, &batch, &b.quality)
            }
            Entry::Delete { delete, .. } => encode_delete_entry(delete),
        };
        patch_sequence(&mut bytes, e.seq());
        record.extend_from_slice(&bytes);
    }
    finish_record(&mut record, u32::try_from(entries.len()).ok()?, 0);
    Some(record)
}

fn check_entries(payload: &[u8], count: u32) {
    let Some(entries) = decode_entries(payload, count) else { return };
    assert_eq!(entries.len(), count as usize);
    for e in &entries {
        if let Entry::Batch(b) = e {
            let rows = b.timestamps.len();
            assert!(b.metric_ids.len() == rows && b.values.len() == rows && b.quality.len() == rows);
            assert!(b.metric_ids.iter().all(|&id| usize::from(id) < b.metric_names.len()));
        }
    }
    if let Some(record) = reencode(&entries) {
        assert_eq!(decode_entries(&record[RECORD_HEADER_BYTES..], count).as_ref(), Some(&entries));
    }
}

fn check_replay(segment: &[u8]) {
    let Some(entries) = replay(segment) else { return };
    if entries.is_empty() {
        return;
    }
    if let Some(record) = reencode(&entries) {
        let mut again = segment_header();
        again.extend_from_slice(&record);
        assert_eq!(replay(&again).as_ref(), Some(&entries), "replay(encode(replay(x))) != replay(x)");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => {
            let Some((count, payload)) = rest.split_first_chunk::<4>() else { return };
            let count = u32::from_le_bytes(*count);
            check_entries(payload, count);
            let mut segment = segment_header();
            let mut record = Vec::new();
            begin_record(&mut record);
            record.extend_from_slice(payload);
            finish_record(&mut record, count, 0);
            segment.extend_from_slice(&record);
            check_replay(&segment);
        }
        1 => {
            let mut segment = segment_header();
            segment.extend_from_slice(rest);
            check_replay(&segment);
        }
        _ => check_replay(rest),
    }
});
