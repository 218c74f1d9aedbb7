//! The client's optional on-disk spool: every batch is on disk before its first send and leaves
//! the disk when its ACK says stored, duplicate or rejected, so a buoy that loses its link for an
//! hour, or reboots, loses nothing. Not part of the wire protocol (PROTOCOL.md, *Client spool*).
//!
//! # Layout of a spool directory
//!
//! ```text
//! <dir>/seq.lease                    next batch_seq not yet handed out (see below)
//! <dir>/batch-<seq, 20 digits>.bwb   one unacked batch per file
//! <dir>/*.tmp                        a write cut short by a crash; removed on open
//! <dir>/*.corrupt                    a batch file that failed its checks; moved aside on open
//! ```
//!
//! Batch file (`.bwb`), little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `BWSP` |
//! | 4 | 1 | version `1` |
//! | 5 | 3 | reserved, `0` |
//! | 8 | 8 | batch_seq (equals the seq in the file name) |
//! | 16 | 2 | dictionary count `M` (1–256) |
//! | 18 | … | `M` × (1-byte length, metric name): the HELLO dictionary the frame's ids index |
//! | … | 4 | frame length `F` (≤ `FRAME_BYTES_MAX`) |
//! | … | F | the BATCH frame exactly as sent on the wire |
//! | … | 4 | CRC32C of every byte before it |
//!
//! Lease file (`seq.lease`, 20 bytes): magic `BWSQ`, version `1`, 3 reserved zero bytes, u64
//! `lease_end`, CRC32C of the 16 bytes before. Every seq below `lease_end` may have been used. A
//! new lease (`SEQ_LEASE_BATCHES` more numbers) is made durable *before* the first seq of it is
//! handed out, so after a reboot the spool starts at `lease_end` and never reuses a seq (a reboot
//! skips at most `SEQ_LEASE_BATCHES - 1` numbers; gaps are harmless to the server).
//!
//! # Crash safety
//!
//! Every file is written as `<name>.tmp`, fsynced, renamed to its final name and the directory is
//! fsynced, so a final name always holds a whole, synced file. A crash between those steps leaves
//! a `.tmp` file (removed on open) or no file (the batch was never acknowledged to the caller as
//! spooled, so nothing is lost). Removing an acked batch is an unlink without a directory fsync:
//! if a crash undoes it, the batch is resent once more and the server answers `duplicate`.
//!
//! A final-name file that fails its checks (short, bad magic/version/CRC, seq not matching its
//! name) cannot come from a completed write: it is renamed to `*.corrupt`, listed in
//! [`SpoolRecovery::corrupt_files`] and logged as an error — never silently skipped, never
//! deleted, so an operator can look at it. A damaged lease file stops [`Spool::open`] with
//! [`SpoolError::LeaseDamaged`] instead (continuing could reuse sequence numbers).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bluewave_model::MetricName;

use crate::codec::{DICTIONARY_METRICS_MAX, FRAME_BYTES_MAX, HEADER_BYTES};

/// Magic of a spooled batch file.
pub const SPOOL_BATCH_MAGIC: [u8; 4] = *b"BWSP";
/// Magic of the sequence lease file.
pub const SPOOL_LEASE_MAGIC: [u8; 4] = *b"BWSQ";
/// Version of both spool file formats.
pub const SPOOL_VERSION: u8 = 1;
/// Sequence numbers reserved per durable lease write (one fsync per this many new batches).
pub const SEQ_LEASE_BATCHES: u64 = 1_024;
/// Bytes of the lease file.
const LEASE_FILE_BYTES: usize = 20;
/// Fixed bytes of a batch record around its dictionary and frame: header 16, count 2, frame
/// length 4, CRC 4.
const RECORD_FIXED_BYTES: usize = 16 + 2 + 4 + 4;
/// Largest batch record: fixed part, a full dictionary, the largest frame.
pub const SPOOL_RECORD_BYTES_MAX: usize = RECORD_FIXED_BYTES + DICTIONARY_METRICS_MAX * 65 + FRAME_BYTES_MAX;

const LEASE_NAME: &str = "seq.lease";
const BATCH_PREFIX: &str = "batch-";
const BATCH_SUFFIX: &str = ".bwb";
const TMP_SUFFIX: &str = ".tmp";
const CORRUPT_SUFFIX: &str = ".corrupt";

/// Errors of the spool layer (a sub-enum of the client's error).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `batches_max` batches or `bytes_max` bytes already.
    #[error("spool full: {batches} batches / {bytes} bytes held, limits {batches_max} / {bytes_max}")]
    Full {
        /// Batches held.
        batches: usize,
        /// Bytes held.
        bytes: u64,
        /// The batch limit.
        batches_max: usize,
        /// The byte limit.
        bytes_max: u64,
    },
    /// A file system operation failed (disk full, permissions, I/O error).
    #[error("spool {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A record failed its checks while decoding (see the module docs for the layout).
    #[error("spool record invalid: {0}")]
    InvalidRecord(&'static str),
    /// The caller handed a record that breaks a layout limit (a bug in the caller).
    #[error("spool record not encodable: {0}")]
    Unencodable(&'static str),
    /// The sequence lease file is damaged. Starting anyway could reuse a seq the server already
    /// stored (new readings answered `duplicate`, i.e. lost), so the spool refuses to open; an
    /// operator sets `first_batch_seq` above every seq used and removes the file.
    #[error("spool sequence lease {path} is damaged ({why}); refusing to reuse sequence numbers")]
    LeaseDamaged {
        /// The lease file.
        path: PathBuf,
        /// What check failed.
        why: &'static str,
    },
    /// The sequence space is exhausted (u64), a fault that cannot happen in practice.
    #[error("batch sequence space exhausted")]
    SequenceExhausted,
}

/// Result of the spool layer.
pub type SpoolResult<T> = std::result::Result<T, SpoolError>;

fn io_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> SpoolError + 'p {
    move |source| SpoolError::Io { action, path: path.to_path_buf(), source }
}

/// One unacked batch as kept on disk: its seq, the dictionary its frame's metric ids index, and
/// the BATCH frame bytes exactly as sent (so a resend after a reboot sends the same bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct SpooledBatch {
    /// The batch's sequence number.
    pub batch_seq: u64,
    /// The HELLO dictionary the frame was encoded against.
    pub dictionary: Vec<MetricName>,
    /// The whole BATCH frame, header included.
    pub frame: Vec<u8>,
}

impl SpooledBatch {
    /// Encodes the record (layout in the module docs).
    pub fn encode(&self) -> SpoolResult<Vec<u8>> {
        if self.dictionary.is_empty() || self.dictionary.len() > DICTIONARY_METRICS_MAX {
            return Err(SpoolError::Unencodable("dictionary must hold 1-256 names"));
        }
        if self.frame.len() < HEADER_BYTES || self.frame.len() > FRAME_BYTES_MAX {
            return Err(SpoolError::Unencodable("frame length outside the protocol's bounds"));
        }
        let names_bytes: usize = self.dictionary.iter().map(|n| 1 + n.as_str().len()).sum();
        let mut out = Vec::with_capacity(RECORD_FIXED_BYTES + names_bytes + self.frame.len());
        out.extend_from_slice(&SPOOL_BATCH_MAGIC);
        out.push(SPOOL_VERSION);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.batch_seq.to_le_bytes());
        let count =
            u16::try_from(self.dictionary.len()).map_err(|_| SpoolError::Unencodable("dictionary"))?;
        out.extend_from_slice(&count.to_le_bytes());
        for name in &self.dictionary {
            let len =
                u8::try_from(name.as_str().len()).map_err(|_| SpoolError::Unencodable("metric name"))?;
            out.push(len);
            out.extend_from_slice(name.as_str().as_bytes());
        }
        let frame_len = u32::try_from(self.frame.len()).map_err(|_| SpoolError::Unencodable("frame"))?;
        out.extend_from_slice(&frame_len.to_le_bytes());
        out.extend_from_slice(&self.frame);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes one record; checks length bounds before allocating, then the CRC, then the fields.
    /// Never panics on any input.
    pub fn decode(bytes: &[u8]) -> SpoolResult<Self> {
        if bytes.len() < RECORD_FIXED_BYTES {
            return Err(SpoolError::InvalidRecord("shorter than the fixed fields"));
        }
        if bytes.len() > SPOOL_RECORD_BYTES_MAX {
            return Err(SpoolError::InvalidRecord("longer than the largest record"));
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
        let stored_crc =
            u32::from_le_bytes(crc_bytes.try_into().map_err(|_| SpoolError::InvalidRecord("crc"))?);
        if crc32c::crc32c(body) != stored_crc {
            return Err(SpoolError::InvalidRecord("CRC32C mismatch"));
        }
        let mut r = Cursor { bytes: body, at: 0 };
        if r.take(4)? != SPOOL_BATCH_MAGIC {
            return Err(SpoolError::InvalidRecord("bad magic"));
        }
        if r.take(1)? != [SPOOL_VERSION] {
            return Err(SpoolError::InvalidRecord("unsupported version"));
        }
        if r.take(3)? != [0, 0, 0] {
            return Err(SpoolError::InvalidRecord("reserved bytes not zero"));
        }
        let batch_seq = r.u64()?;
        let count = usize::from(r.u16()?);
        if count == 0 || count > DICTIONARY_METRICS_MAX {
            return Err(SpoolError::InvalidRecord("dictionary count outside 1-256"));
        }
        let mut dictionary = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.take(1)?.first().copied().unwrap_or(0));
            let text =
                std::str::from_utf8(r.take(len)?).map_err(|_| SpoolError::InvalidRecord("metric name"))?;
            dictionary.push(MetricName::new(text).map_err(|_| SpoolError::InvalidRecord("metric name"))?);
        }
        let frame_len = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        if !(HEADER_BYTES..=FRAME_BYTES_MAX).contains(&frame_len) {
            return Err(SpoolError::InvalidRecord("frame length outside the protocol's bounds"));
        }
        let frame = r.take(frame_len)?.to_vec();
        if r.at != body.len() {
            return Err(SpoolError::InvalidRecord("bytes after the frame"));
        }
        Ok(Self { batch_seq, dictionary, frame })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> SpoolResult<&'a [u8]> {
        let end = self.at.checked_add(n).ok_or(SpoolError::InvalidRecord("truncated"))?;
        let out = self.bytes.get(self.at..end).ok_or(SpoolError::InvalidRecord("truncated"))?;
        self.at = end;
        Ok(out)
    }
    fn u16(&mut self) -> SpoolResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b.first().copied().unwrap_or(0), b.get(1).copied().unwrap_or(0)]))
    }
    fn u32(&mut self) -> SpoolResult<u32> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }
    fn u64(&mut self) -> SpoolResult<u64> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(w))
    }
}

/// Where a spool lives and how much it may hold.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The spool directory (created if missing). One directory per buoy.
    pub dir: PathBuf,
    /// Most batches held; [`SpoolError::Full`] beyond it.
    pub batches_max: usize,
    /// Most bytes held (sum of record sizes); [`SpoolError::Full`] beyond it.
    pub bytes_max: u64,
    /// The first seq of a spool that has no lease file yet (a new buoy), ≥ 1.
    pub first_batch_seq: u64,
}

/// What [`Spool::open`] found.
#[derive(Debug, Default)]
pub struct SpoolRecovery {
    /// The unacked batches, in seq order: resend them before anything new.
    pub batches: Vec<SpooledBatch>,
    /// Leftover `.tmp` files of interrupted writes, removed.
    pub tmp_files_removed: usize,
    /// Files that failed their checks, each renamed to `<name>.corrupt` (the new paths).
    pub corrupt_files: Vec<PathBuf>,
}

#[derive(Debug)]
struct SpoolState {
    /// Record bytes of each held batch, by seq.
    held: BTreeMap<u64, u64>,
    held_bytes: u64,
    next_seq: u64,
    lease_end: u64,
}

/// An open spool directory. Thread-safe; every method does blocking file I/O (call it from a
/// blocking context, e.g. `tokio::task::spawn_blocking`).
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    state: Mutex<SpoolState>,
}

impl Spool {
    /// Opens (or creates) the spool: removes `.tmp` leftovers, moves damaged files aside, loads
    /// every unacked batch in seq order and restores the sequence counter.
    pub fn open(config: SpoolConfig) -> SpoolResult<(Self, SpoolRecovery)> {
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        let mut recovery = SpoolRecovery::default();
        let mut lease_end = config.first_batch_seq.max(1);
        let mut batches = BTreeMap::new();
        let entries = fs::read_dir(&dir).map_err(io_error("list", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &dir))?;
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                fs::remove_file(&path).map_err(io_error("remove leftover", &path))?;
                recovery.tmp_files_removed += 1;
            } else if name == LEASE_NAME {
                match fs::read(&path).map_err(io_error("read", &path)).and_then(|b| decode_lease(&b)) {
                    Ok(end) => lease_end = lease_end.max(end),
                    Err(SpoolError::InvalidRecord(why)) => {
                        // Without the lease, seqs of batches acked and removed could be reused and
                        // the server would answer `duplicate` for new readings: refuse to start.
                        return Err(SpoolError::LeaseDamaged { path, why });
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(seq_text) =
                name.strip_prefix(BATCH_PREFIX).and_then(|n| n.strip_suffix(BATCH_SUFFIX))
            {
                let bytes = fs::read(&path).map_err(io_error("read", &path))?;
                let decoded = SpooledBatch::decode(&bytes).and_then(|b| {
                    if seq_text.parse::<u64>().ok() == Some(b.batch_seq) {
                        Ok(b)
                    } else {
                        Err(SpoolError::InvalidRecord("seq does not match the file name"))
                    }
                });
                match decoded {
                    Ok(batch) => {
                        batches.insert(batch.batch_seq, (batch, bytes.len() as u64));
                    }
                    Err(SpoolError::InvalidRecord(why)) => {
                        tracing::error!(path = %path.display(), why, "spooled batch damaged; moved aside");
                        recovery.corrupt_files.push(move_aside(&path)?);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if recovery.tmp_files_removed > 0 || !recovery.corrupt_files.is_empty() {
            sync_dir(&dir)?;
        }
        let highest_spooled = batches.keys().next_back().copied();
        if let Some(seq) = highest_spooled {
            lease_end = lease_end.max(seq.checked_add(1).ok_or(SpoolError::SequenceExhausted)?);
        }
        let mut held = BTreeMap::new();
        let mut held_bytes = 0u64;
        for (seq, (batch, bytes)) in batches {
            held.insert(seq, bytes);
            held_bytes += bytes;
            recovery.batches.push(batch);
        }
        let state = SpoolState { held, held_bytes, next_seq: lease_end, lease_end };
        Ok((Self { config, state: Mutex::new(state) }, recovery))
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Hands out the next batch seq, extending the durable lease first when it is used up.
    pub fn next_seq(&self) -> SpoolResult<u64> {
        let mut state = self.lock();
        if state.next_seq >= state.lease_end {
            let end = state.next_seq.checked_add(SEQ_LEASE_BATCHES).ok_or(SpoolError::SequenceExhausted)?;
            self.write_atomic(LEASE_NAME, &encode_lease(end))?;
            state.lease_end = end;
        }
        let seq = state.next_seq;
        state.next_seq = seq.checked_add(1).ok_or(SpoolError::SequenceExhausted)?;
        Ok(seq)
    }

    /// Writes a batch durably (tmp, fsync, rename, fsync dir). [`SpoolError::Full`] when it would
    /// pass a bound. Writing a seq already held replaces it.
    pub fn write(&self, batch: &SpooledBatch) -> SpoolResult<()> {
        let record = batch.encode()?;
        let record_bytes = record.len() as u64;
        {
            let mut state = self.lock();
            let replaced = state.held.get(&batch.batch_seq).copied();
            let batches = state.held.len() + usize::from(replaced.is_none());
            let bytes = state.held_bytes - replaced.unwrap_or(0) + record_bytes;
            if batches > self.config.batches_max || bytes > self.config.bytes_max {
                return Err(SpoolError::Full {
                    batches: state.held.len(),
                    bytes: state.held_bytes,
                    batches_max: self.config.batches_max,
                    bytes_max: self.config.bytes_max,
                });
            }
            // Reserve before the slow write so concurrent writers cannot pass the bound together.
            state.held.insert(batch.batch_seq, record_bytes);
            state.held_bytes = bytes;
        }
        let result = self.write_atomic(&batch_file_name(batch.batch_seq), &record);
        if result.is_err() {
            let mut state = self.lock();
            if let Some(bytes) = state.held.remove(&batch.batch_seq) {
                state.held_bytes -= bytes;
            }
        }
        result
    }

    /// Forgets an acked batch (unlink; no directory fsync, see the module docs). Removing a seq
    /// that is not held is not an error.
    pub fn remove(&self, batch_seq: u64) -> SpoolResult<()> {
        let path = self.config.dir.join(batch_file_name(batch_seq));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SpoolError::Io { action: "remove", path, source: e }),
        }
        let mut state = self.lock();
        if let Some(bytes) = state.held.remove(&batch_seq) {
            state.held_bytes -= bytes;
        }
        Ok(())
    }

    /// Batches held now.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    /// Whether no batch is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SpoolState> {
        // A panic while holding the lock leaves consistent counters (each update is one step).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> SpoolResult<()> {
        let dir = &self.config.dir;
        let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
        let path = dir.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error("create", &tmp))?;
        file.write_all(bytes).map_err(io_error("write", &tmp))?;
        file.sync_all().map_err(io_error("fsync", &tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
        sync_dir(dir)
    }
}

fn batch_file_name(batch_seq: u64) -> String {
    format!("{BATCH_PREFIX}{batch_seq:020}{BATCH_SUFFIX}")
}

fn move_aside(path: &Path) -> SpoolResult<PathBuf> {
    let mut target = path.as_os_str().to_owned();
    target.push(CORRUPT_SUFFIX);
    let target = PathBuf::from(target);
    fs::rename(path, &target).map_err(io_error("move aside", path))?;
    Ok(target)
}

fn sync_dir(dir: &Path) -> SpoolResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("fsync directory", dir))
}

fn encode_lease(lease_end: u64) -> [u8; LEASE_FILE_BYTES] {
    let mut out = [0u8; LEASE_FILE_BYTES];
    out[..4].copy_from_slice(&SPOOL_LEASE_MAGIC);
    out[4] = SPOOL_VERSION;
    out[8..16].copy_from_slice(&lease_end.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_lease(bytes: &[u8]) -> SpoolResult<u64> {
    let bytes: &[u8; LEASE_FILE_BYTES] =
        bytes.try_into().map_err(|_| SpoolError::InvalidRecord("lease file has the wrong length"))?;
    let (body, crc) = bytes.split_at(16);
    let mut crc_word = [0u8; 4];
    crc_word.copy_from_slice(crc);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc_word) {
        return Err(SpoolError::InvalidRecord("lease CRC32C mismatch"));
    }
    if body[..4] != SPOOL_LEASE_MAGIC || body[4] != SPOOL_VERSION || body[5..8] != [0, 0, 0] {
        return Err(SpoolError::InvalidRecord("lease header"));
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&body[8..16]);
    Ok(u64::from_le_bytes(word))
}
