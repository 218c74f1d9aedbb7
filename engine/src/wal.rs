//! Write-ahead log: segment files of group records, one directory per lane.
//!
//! The byte layout, the torn-tail rule and a worked crash-and-replay example are in
//! `engine/WAL.md`. In short: each group commit is **one record** (one `write` + one
//! `fdatasync`) holding one or more entries (a batch or a delete), each entry carrying its own
//! sequence number, buoy and batch sequence. Because a writer never starts a write before the
//! previous one is synced, only the last record of the last segment of a lane can be torn by a
//! crash; a bad record anywhere else is corruption and stops start-up.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::{Storage, StorageFile};
use crate::types::{
    BATCH_METRICS_MAX, BATCH_READINGS_MAX, NAME_LEN_MAX, ReadingBatch, TIMESTAMP_MAX, TIMESTAMP_MIN,
    TimestampNs,
};

/// Segment file header magic, 8 bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"BWAVEWAL";
/// Segment format version written now. Version 2 added the segment tag; version 1 segments
/// (16-byte header, tag 0) are still read.
pub const SEGMENT_VERSION: u32 = 2;
/// Segment header of version 2: magic (8) + version u32 (4) + lane u32 (4) + tag u32 (4) +
/// reserved u32 (4).
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// Segment header of version 1: magic (8) + version u32 (4) + lane u32 (4).
pub const SEGMENT_HEADER_BYTES_V1: usize = 16;
/// Offset of the segment tag in a version 2 segment header.
const SEGMENT_TAG_OFFSET: usize = 16;
/// Record magic, `BWRC` read as little-endian u32.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"BWRC");
/// Record format version.
pub const RECORD_VERSION: u8 = 1;
/// Record header: magic u32, version u8, reserved u8 ×3, payload_len u32, crc32c u32,
/// entry_count u32, segment tag u32.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Offset of the segment tag in a record header. Every record repeats the random tag of its
/// segment, so bytes a buoy sent (they are logged verbatim inside batch entries) can never pass
/// for a record: the sender does not know the tag. Recovery relies on that when it looks for a
/// well-formed record after a damaged one, and the tag check makes that scan linear.
const RECORD_TAG_OFFSET: usize = 20;
/// Largest record payload accepted when reading (a group of entries). Writers cut groups well
/// below it (see `EngineConfig::group_bytes_max`).
pub const RECORD_PAYLOAD_MAX: usize = 64 << 20;

/// Entry kinds inside a record.
pub const ENTRY_BATCH: u8 = 1;
/// A delete (tombstone) entry.
pub const ENTRY_DELETE: u8 = 2;

/// Entry header: kind u8, reserved u8 ×3, body_len u32, sequence u64.
pub const ENTRY_HEADER_BYTES: usize = 16;
/// Offset of the sequence number inside an encoded entry; the writer patches it in place.
pub const ENTRY_SEQUENCE_OFFSET: usize = 8;

// The sequence is the last field of the entry header.
const _: () = assert!(ENTRY_SEQUENCE_OFFSET + 8 == ENTRY_HEADER_BYTES);
// A full batch entry always fits one record.
const _: () = assert!(
    ENTRY_HEADER_BYTES
        + 1
        + NAME_LEN_MAX
        + 8
        + 2
        + BATCH_METRICS_MAX * (1 + NAME_LEN_MAX)
        + 4
        + BATCH_READINGS_MAX * (8 + 2 + 8 + 1)
        < RECORD_PAYLOAD_MAX
);

/// Encodes a batch entry with sequence 0 (patched by the lane writer). `quality` has one byte per
/// reading. Layout (all little-endian):
/// `header | buoy_len u8 | buoy | batch_seq u64 | metric_count u16 | (len u8, name)* | rows u32 |
///  ts i64 ×rows | metric_id u16 ×rows | value f64 ×rows | quality u8 ×rows`.
pub fn encode_batch_entry(buoy: &str, batch_seq: u64, batch: &ReadingBatch, quality: &[u8]) -> Vec<u8> {
    debug_assert_eq!(quality.len(), batch.len());
    let rows = batch.len();
    let names_len: usize = batch.metric_names().iter().map(|m| 1 + m.as_str().len()).sum();
    let body_len = 1 + buoy.len() + 8 + 2 + names_len + 4 + rows * (8 + 2 + 8 + 1);
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body_len);
    put_entry_header(&mut out, ENTRY_BATCH, body_len);
    put_name(&mut out, buoy);
    out.extend_from_slice(&batch_seq.to_le_bytes());
    // Validated batches name at most BATCH_METRICS_MAX metrics.
    out.extend_from_slice(&(batch.metric_names().len() as u16).to_le_bytes());
    for name in batch.metric_names() {
        put_name(&mut out, name.as_str());
    }
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    for t in batch.timestamps() {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for id in batch.metric_ids() {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for v in batch.values() {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    out.extend_from_slice(quality);
    debug_assert_eq!(out.len(), ENTRY_HEADER_BYTES + body_len);
    out
}

/// A delete as logged: every reading of `buoy` (and `metric`, when set) with
/// `start <= ts < end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteEntry {
    /// The buoy whose readings go.
    pub buoy: String,
    /// Only this metric, or all when `None`.
    pub metric: Option<String>,
    /// Inclusive start, ns.
    pub start: TimestampNs,
    /// Exclusive end, ns.
    pub end: TimestampNs,
}

/// Encodes a delete entry with sequence 0. Layout:
/// `header | buoy_len u8 | buoy | metric_len u8 (0 = all) | metric | start i64 | end i64`.
pub fn encode_delete_entry(delete: &DeleteEntry) -> Vec<u8> {
    let metric = delete.metric.as_deref().unwrap_or("");
    let body_len = 1 + delete.buoy.len() + 1 + metric.len() + 16;
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body_len);
    put_entry_header(&mut out, ENTRY_DELETE, body_len);
    put_name(&mut out, &delete.buoy);
    put_name(&mut out, metric);
    out.extend_from_slice(&delete.start.to_le_bytes());
    out.extend_from_slice(&delete.end.to_le_bytes());
    out
}

fn put_entry_header(out: &mut Vec<u8>, kind: u8, body_len: usize) {
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    debug_assert!(name.len() <= NAME_LEN_MAX);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
}

/// Writes `seq` into an encoded entry.
pub fn patch_sequence(entry: &mut [u8], seq: u64) {
    entry[ENTRY_SEQUENCE_OFFSET..ENTRY_HEADER_BYTES].copy_from_slice(&seq.to_le_bytes());
}

/// Starts a record in `buf` (cleared first); entries are appended after it and
/// [`finish_record`] fills in length, count and checksum.
pub fn begin_record(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    buf.extend_from_slice(&[RECORD_VERSION, 0, 0, 0]);
    buf.extend_from_slice(&[0u8; 16]);
    debug_assert_eq!(buf.len(), RECORD_HEADER_BYTES);
}

/// Completes the record started by [`begin_record`] for a segment whose tag is `segment_tag`
/// (from [`SegmentWriter::prepare`]; 0 for version 1 segments).
pub fn finish_record(buf: &mut [u8], entry_count: u32, segment_tag: u32) {
    let payload_len = (buf.len() - RECORD_HEADER_BYTES) as u32;
    buf[8..12].copy_from_slice(&payload_len.to_le_bytes());
    buf[16..20].copy_from_slice(&entry_count.to_le_bytes());
    buf[RECORD_TAG_OFFSET..RECORD_TAG_OFFSET + 4].copy_from_slice(&segment_tag.to_le_bytes());
    let crc = record_crc(buf);
    buf[12..16].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C over the whole record except the checksum field itself.
fn record_crc(record: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&record[..12]);
    crc32c::crc32c_append(crc, &record[16..])
}

/// One decoded entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// A batch of readings.
    Batch(BatchEntry),
    /// A delete.
    Delete {
        /// WAL sequence.
        seq: u64,
        /// What is deleted.
        delete: DeleteEntry,
    },
}

impl Entry {
    /// The entry's WAL sequence.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Batch(b) => b.seq,
            Self::Delete { seq, .. } => *seq,
        }
    }
}

/// A decoded batch entry (columns already validated when it was written).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchEntry {
    /// WAL sequence.
    pub seq: u64,
    /// The buoy.
    pub buoy: String,
    /// The buoy's batch sequence (idempotency key).
    pub batch_seq: u64,
    /// Metric dictionary.
    pub metric_names: Vec<String>,
    /// Timestamps.
    pub timestamps: Vec<i64>,
    /// Metric ids.
    pub metric_ids: Vec<u16>,
    /// Values.
    pub values: Vec<f64>,
    /// Quality flags.
    pub quality: Vec<u8>,
}

/// Bounds-checked little-endian reader over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).and_then(|b| b.try_into().ok()).map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn name(&mut self) -> Option<String> {
        let len = usize::from(self.u8()?);
        if len > NAME_LEN_MAX {
            return None;
        }
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }
}

/// Decodes the entries of one record payload (the checksum has already matched).
pub fn decode_entries(payload: &[u8], entry_count: u32) -> Option<Vec<Entry>> {
    let mut cur = Cursor { bytes: payload, pos: 0 };
    let mut out = Vec::with_capacity(entry_count.min(4096) as usize);
    for _ in 0..entry_count {
        let kind = cur.u8()?;
        cur.take(3)?;
        let body_len = cur.u32()? as usize;
        let seq = cur.u64()?;
        let body = cur.take(body_len)?;
        let mut b = Cursor { bytes: body, pos: 0 };
        let entry = match kind {
            ENTRY_BATCH => {
                let buoy = b.name()?;
                // Writers only log validated names; anything else is damage.
                crate::types::BuoyId::new(&buoy).ok()?;
                let batch_seq = b.u64()?;
                let metric_count = usize::from(b.u16()?);
                if metric_count > BATCH_METRICS_MAX {
                    return None;
                }
                let mut metric_names = Vec::with_capacity(metric_count);
                for _ in 0..metric_count {
                    let name = b.name()?;
                    crate::types::MetricName::new(&name).ok()?;
                    metric_names.push(name);
                }
                let rows = b.u32()? as usize;
                if rows > BATCH_READINGS_MAX {
                    return None;
                }
                let timestamps: Vec<i64> =
                    b.take(rows * 8)?.chunks_exact(8).map(|c| i64::from_le_bytes(le8(c))).collect();
                // Writers refuse such timestamps; one here is damage, never data.
                if timestamps.iter().any(|t| !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(t)) {
                    return None;
                }
                let metric_ids: Vec<u16> =
                    b.take(rows * 2)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                if metric_ids.iter().any(|&id| usize::from(id) >= metric_count) {
                    return None;
                }
                let values = b
                    .take(rows * 8)?
                    .chunks_exact(8)
                    .map(|c| f64::from_bits(u64::from_le_bytes(le8(c))))
                    .collect();
                let quality = b.take(rows)?.to_vec();
                Entry::Batch(BatchEntry {
                    seq,
                    buoy,
                    batch_seq,
                    metric_names,
                    timestamps,
                    metric_ids,
                    values,
                    quality,
                })
            }
            ENTRY_DELETE => {
                let buoy = b.name()?;
                let metric = b.name()?;
                let start = b.u64()? as i64;
                let end = b.u64()? as i64;
                let metric = if metric.is_empty() { None } else { Some(metric) };
                Entry::Delete { seq, delete: DeleteEntry { buoy, metric, start, end } }
            }
            _ => return None,
        };
        if b.pos != body.len() {
            return None;
        }
        out.push(entry);
    }
    if cur.pos != payload.len() {
        return None;
    }
    Some(out)
}

fn le8(c: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(c);
    a
}

/// Name of the segment whose first record has sequence `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.wal")
}

/// Segment files of a lane directory, in sequence order.
pub fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut segments: Vec<(u64, PathBuf)> = Vec::new();
    for path in storage.list_dir(dir).map_err(|e| Error::io("list WAL directory", dir, e))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some(stem) = name.strip_suffix(".wal")
            && let Ok(first) = stem.parse::<u64>()
        {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments.into_iter().map(|(_, p)| p).collect())
}

/// What reading a lane's segments found.
#[derive(Debug, Default)]
pub struct LaneReplay {
    /// Entries in log order.
    pub entries: Vec<Entry>,
    /// The segments read (all of them; they are deleted once their entries are flushed).
    pub segments: Vec<PathBuf>,
    /// Where a torn tail was cut off: (segment, offset of the torn record, bytes dropped).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    /// Highest sequence seen.
    pub seq_max: u64,
}

/// Reads every segment of a lane directory. A bad record at the end of the last segment is a
/// torn tail and is cut off; a bad record anywhere else, or a bad segment header on a segment
/// that is not the last, is [`Error::Corrupt`] naming the file and offset.
pub fn read_lane(storage: &dyn Storage, dir: &Path) -> Result<LaneReplay> {
    let segments = list_segments(storage, dir)?;
    let mut replay = LaneReplay { segments: segments.clone(), ..LaneReplay::default() };
    let last_index = segments.len().saturating_sub(1);
    for (index, path) in segments.iter().enumerate() {
        let bytes = storage.read(path).map_err(|e| Error::io("read WAL segment", path, e))?;
        let is_last = index == last_index;
        let corrupt = |offset: usize, reason: &str| Error::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason: reason.into(),
        };
        if bytes.len() < SEGMENT_HEADER_BYTES_V1 || bytes[..8] != SEGMENT_MAGIC {
            // A crash right after creating the segment can leave its header unsynced.
            if is_last && bytes.len() <= SEGMENT_HEADER_BYTES {
                replay.torn_tail = Some((path.clone(), 0, bytes.len() as u64));
                continue;
            }
            return Err(corrupt(0, "bad segment header"));
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let (header_bytes, tag) = match version {
            1 => (SEGMENT_HEADER_BYTES_V1, 0),
            SEGMENT_VERSION if bytes.len() >= SEGMENT_HEADER_BYTES => {
                let t = &bytes[SEGMENT_TAG_OFFSET..SEGMENT_TAG_OFFSET + 4];
                (SEGMENT_HEADER_BYTES, u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
            }
            SEGMENT_VERSION if is_last => {
                replay.torn_tail = Some((path.clone(), 0, bytes.len() as u64));
                continue;
            }
            SEGMENT_VERSION => return Err(corrupt(0, "bad segment header")),
            other => return Err(corrupt(8, &format!("unsupported segment version {other}"))),
        };
        let mut offset = header_bytes;
        while offset < bytes.len() {
            match parse_record(&bytes[offset..], tag) {
                Ok((entries, len)) => {
                    for e in entries {
                        if e.seq() <= replay.seq_max {
                            return Err(corrupt(offset, "sequence numbers go backwards"));
                        }
                        replay.seq_max = e.seq();
                        replay.entries.push(e);
                    }
                    offset += len;
                }
                Err(reason) => {
                    // Only the last write of a lane can be unsynced, and it is one record: if any
                    // well-formed record follows, this one was synced once and is now damaged.
                    if is_last && !any_valid_record_after(&bytes, offset + 1, tag) {
                        replay.torn_tail = Some((path.clone(), offset as u64, (bytes.len() - offset) as u64));
                        break;
                    }
                    return Err(corrupt(offset, reason));
                }
            }
        }
    }
    Ok(replay)
}

/// Parses one record of a segment tagged `tag` at the start of `bytes`: its entries and its
/// total length.
fn parse_record(bytes: &[u8], tag: u32) -> std::result::Result<(Vec<Entry>, usize), &'static str> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err("record header cut short");
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != RECORD_MAGIC {
        return Err("bad record magic");
    }
    if bytes[4] != RECORD_VERSION {
        return Err("unsupported record version");
    }
    if !has_tag(bytes, tag) {
        return Err("record tag differs from its segment's");
    }
    let payload_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if payload_len > RECORD_PAYLOAD_MAX {
        return Err("record length above the limit");
    }
    let total = RECORD_HEADER_BYTES + payload_len;
    if bytes.len() < total {
        return Err("record cut short");
    }
    let record = &bytes[..total];
    let stored_crc = u32::from_le_bytes([record[12], record[13], record[14], record[15]]);
    if record_crc(record) != stored_crc {
        return Err("record checksum mismatch");
    }
    let entry_count = u32::from_le_bytes([record[16], record[17], record[18], record[19]]);
    let entries = decode_entries(&record[RECORD_HEADER_BYTES..], entry_count).ok_or("malformed entries")?;
    Ok((entries, total))
}

/// Whether the record header at the start of `bytes` carries the segment tag `tag`.
fn has_tag(bytes: &[u8], tag: u32) -> bool {
    bytes.get(RECORD_TAG_OFFSET..RECORD_TAG_OFFSET + 4) == Some(&tag.to_le_bytes()[..])
}

/// Whether a well-formed record of this segment starts anywhere at or after `from`. Candidates
/// must carry the magic and the segment tag before their checksum is computed, so the scan is
/// linear in practice (a random tag matches by chance with probability 2^-32).
fn any_valid_record_after(bytes: &[u8], from: usize, tag: u32) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= bytes.len() {
        match bytes[at..].windows(4).position(|w| w == magic) {
            Some(p) => {
                at += p;
                if has_tag(&bytes[at..], tag) && parse_record(&bytes[at..], tag).is_ok() {
                    return true;
                }
                at += 1;
            }
            None => return false,
        }
    }
    false
}

/// The open segment of a lane, owned by that lane's writer thread.
pub struct SegmentWriter {
    storage: std::sync::Arc<dyn Storage>,
    dir: PathBuf,
    lane: u32,
    file: Option<Box<dyn StorageFile>>,
    bytes_written: u64,
    segment_bytes_max: u64,
    /// Whether appends are followed by `fdatasync` (off only for `Durability::Relaxed`).
    sync: bool,
    /// Random tag of the open segment, repeated in each of its records.
    tag: u32,
}

impl SegmentWriter {
    /// A writer for `dir`; the first segment is created with the first append.
    pub fn new(
        storage: std::sync::Arc<dyn Storage>,
        dir: PathBuf,
        lane: u32,
        segment_bytes_max: u64,
        sync: bool,
    ) -> Self {
        Self { storage, dir, lane, file: None, bytes_written: 0, segment_bytes_max, sync, tag: 0 }
    }

    /// The lane's WAL directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Opens the segment the next record (whose first entry has sequence `first_seq`) goes to —
    /// a new one when there is none or the current one is full (the directory is synced so the
    /// new file survives a crash) — and returns its tag for [`finish_record`].
    pub fn prepare(&mut self, first_seq: u64) -> std::io::Result<u32> {
        if self.file.is_none() || self.bytes_written >= self.segment_bytes_max {
            self.roll(first_seq)?;
        }
        Ok(self.tag)
    }

    /// Appends one record finished with the tag [`SegmentWriter::prepare`] returned: one write,
    /// then one `fdatasync`. Any error leaves the writer unusable.
    pub fn append(&mut self, record: &[u8]) -> std::io::Result<()> {
        debug_assert!(has_tag(record, self.tag), "record finished for another segment");
        let file = self.file.as_mut().ok_or_else(|| std::io::Error::other("no open segment"))?;
        file.write_all(record)?;
        if self.sync {
            file.sync_data()?;
        }
        self.bytes_written += record.len() as u64;
        Ok(())
    }

    fn roll(&mut self, first_seq: u64) -> std::io::Result<()> {
        if let Some(mut old) = self.file.take() {
            old.sync_data()?;
        }
        let path = self.dir.join(segment_file_name(first_seq));
        let tag = getrandom::u32()
            .map_err(|e| std::io::Error::other(format!("no randomness for a segment tag: {e}")))?;
        let mut file = self.storage.create(&path)?;
        let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        header.extend_from_slice(&SEGMENT_MAGIC);
        header.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
        header.extend_from_slice(&self.lane.to_le_bytes());
        header.extend_from_slice(&tag.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        debug_assert_eq!(header.len(), SEGMENT_HEADER_BYTES);
        self.tag = tag;
        file.write_all(&header)?;
        if self.sync {
            file.sync_data()?;
            self.storage.sync_dir(&self.dir)?;
        }
        self.file = Some(file);
        self.bytes_written = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::types::MetricName;

    fn batch(n: usize) -> ReadingBatch {
        ReadingBatch::new(
            vec![MetricName::new("ph").unwrap(), MetricName::new("salinity_psu").unwrap()],
            (0..n as i64).collect(),
            (0..n).map(|i| (i % 2) as u16).collect(),
            (0..n).map(|i| i as f64 * 0.5).collect(),
        )
        .unwrap()
    }

    #[test]
    fn record_round_trip() {
        let b = batch(5);
        let mut e1 = encode_batch_entry("b-1", 7, &b, &[0, 1, 0, 0, 2]);
        patch_sequence(&mut e1, 41);
        let d = DeleteEntry { buoy: "b-1".into(), metric: Some("ph".into()), start: -5, end: 9 };
        let mut e2 = encode_delete_entry(&d);
        patch_sequence(&mut e2, 42);
        let mut rec = Vec::new();
        begin_record(&mut rec);
        rec.extend_from_slice(&e1);
        rec.extend_from_slice(&e2);
        finish_record(&mut rec, 2, 0xfeed_f00d);
        let (entries, len) = parse_record(&rec, 0xfeed_f00d).unwrap();
        assert_eq!(len, rec.len());
        assert_eq!(entries.len(), 2);
        match &entries[0] {
            Entry::Batch(be) => {
                assert_eq!((be.seq, be.buoy.as_str(), be.batch_seq), (41, "b-1", 7));
                assert_eq!(be.timestamps, b.timestamps());
                assert_eq!(be.values, b.values());
                assert_eq!(be.metric_ids, b.metric_ids());
                assert_eq!(be.quality, vec![0, 1, 0, 0, 2]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(entries[1], Entry::Delete { seq: 42, delete: d });
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let b = batch(3);
        let mut e = encode_batch_entry("b", 1, &b, &[0, 0, 0]);
        patch_sequence(&mut e, 1);
        let mut rec = Vec::new();
        begin_record(&mut rec);
        rec.extend_from_slice(&e);
        finish_record(&mut rec, 1, 0xfeed_f00d);
        for bit in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_record(&bad, 0xfeed_f00d).is_err(), "bit {bit} flip went unnoticed");
        }
    }
}
