//! Append-only, tamper-evident audit log (`<data-dir>/audit/audit.jsonl`).
//!
//! # Format
//!
//! One JSON object per line (UTF-8, `\n`-terminated), fields in this fixed order:
//!
//! ```text
//! {"v":1,"seq":N,"ts_ms":T,"actor":"…","action":"…","target":"…","outcome":"…","details":{…},
//!  "prev":"<64 hex>","hash":"<64 hex>"}
//! ```
//!
//! `hash` = SHA-256 of the line's canonical body: the same object without `hash`, serialised by
//! [`AuditEntry::body_bytes`] (serde_json, struct field order, no whitespace). `prev` is the
//! previous entry's `hash` (64 zeros for `seq` 1), so editing, deleting or reordering any entry
//! breaks the chain at that point and [`AuditLog::verify`] names the first broken `seq`.
//! `seq` starts at 1 and grows by one per entry.
//!
//! # Why a JSON-lines file and not redb
//!
//! The log's promise is "append-only": a flat file that only ever grows makes that visible to
//! anyone with `tail`, `grep` or a backup tool, it can be verified by `bluewave audit verify`
//! while the server runs (redb takes an exclusive lock), and each entry is one `write` +
//! `fdatasync`, the cheapest durable append there is. redb would rewrite B-tree pages in place,
//! which hides the history the log exists to keep.
//!
//! # Crashes
//!
//! An entry is appended with one `write_all` of the full line and made durable with `sync_data`
//! before [`AuditLog::append`] returns. A crash can leave at most one torn line at the end: bytes
//! after the last `\n`. [`AuditLog::open`] truncates exactly those bytes (a torn tail is never a
//! complete entry, since a complete entry ends with `\n`). A complete line that does not parse,
//! or a broken chain, is never cut: open still succeeds (the log must keep recording) but
//! [`AuditLog::verify`] reports it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the log file inside the audit directory.
pub const AUDIT_FILE_NAME: &str = "audit.jsonl";
/// Format version written in every entry (`v`).
pub const AUDIT_FORMAT_VERSION: u32 = 1;
/// Largest serialised `details` object of one entry, in bytes. Callers keep details small (ids,
/// counts, reasons); a larger one is refused with [`AuditError::EntryTooLarge`].
pub const AUDIT_DETAILS_BYTES_MAX: usize = 4_096;
/// Longest `actor`, `action`, `target` or `outcome` text, in bytes.
pub const AUDIT_FIELD_BYTES_MAX: usize = 512;
/// Longest line accepted when reading the log back (an entry is far smaller; a longer line is
/// reported as corrupt instead of being read into memory).
pub const AUDIT_LINE_BYTES_MAX: usize = 16_384;
/// Most entries one [`AuditLog::page`] call returns.
pub const AUDIT_PAGE_ENTRIES_MAX: usize = 1_000;

/// The hash that precedes the first entry.
const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing the log file failed (disk fault; the entry was not recorded).
    #[error("audit log {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An entry (or one of its fields) exceeds its size limit; a bug of the caller, not data.
    #[error("audit entry too large: {field} is {bytes} bytes, limit {limit}")]
    EntryTooLarge {
        /// Which field.
        field: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A complete line of the log does not parse or does not continue the chain; new entries
    /// are refused so the break stays visible and is not buried under new ones.
    #[error("audit log is corrupt at line {line}: {reason}")]
    Corrupt {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A page request asked for more than [`AUDIT_PAGE_ENTRIES_MAX`] entries or for zero.
    #[error("audit page size {requested} outside 1..={AUDIT_PAGE_ENTRIES_MAX}")]
    BadPageSize {
        /// What was asked.
        requested: usize,
    },
    /// The log's lock was poisoned by a panic in another thread (internal fault).
    #[error("audit log lock poisoned")]
    Poisoned,
}

/// Result of audit-log operations.
pub type AuditResult<T> = std::result::Result<T, AuditError>;

/// What happened, as the caller tells it ([`AuditLog::append`] adds seq, time and hashes).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who did it: `user:<id>`, `ip:<addr>` for anonymous callers, or `system`.
    pub actor: String,
    /// Dotted verb, e.g. `auth.login`, `rbac.role_permissions.set`.
    pub action: String,
    /// What it was done to: `user:<id>`, `device:<jti>`, `plan:<id>`, or `-`.
    pub target: String,
    /// `ok`, `denied`, or `error`.
    pub outcome: String,
    /// Extra facts without secrets (never passwords, tokens or keys).
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// An event with empty details.
    pub fn new(actor: impl Into<String>, action: &str, target: impl Into<String>, outcome: &str) -> Self {
        Self {
            actor: actor.into(),
            action: action.to_owned(),
            target: target.into(),
            outcome: outcome.to_owned(),
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// The same event with `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// One recorded entry, exactly as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Format version ([`AUDIT_FORMAT_VERSION`]).
    pub v: u32,
    /// Position in the log, from 1, no gaps.
    pub seq: u64,
    /// Wall-clock time of the append, ms since the Unix epoch.
    pub ts_ms: u64,
    /// See [`AuditEvent::actor`].
    pub actor: String,
    /// See [`AuditEvent::action`].
    pub action: String,
    /// See [`AuditEvent::target`].
    pub target: String,
    /// See [`AuditEvent::outcome`].
    pub outcome: String,
    /// See [`AuditEvent::details`].
    pub details: serde_json::Value,
    /// Hash of the previous entry (hex), or 64 zeros for the first.
    pub prev: String,
    /// SHA-256 (hex) of [`AuditEntry::body_bytes`].
    pub hash: String,
}

/// The hashed part of an entry: every field but `hash`, in the stored order.
#[derive(Serialize)]
struct EntryBody<'a> {
    v: u32,
    seq: u64,
    ts_ms: u64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    details: &'a serde_json::Value,
    prev: &'a str,
}

impl AuditEntry {
    /// The canonical bytes the hash covers.
    pub fn body_bytes(&self) -> Vec<u8> {
        let body = EntryBody {
            v: self.v,
            seq: self.seq,
            ts_ms: self.ts_ms,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            outcome: &self.outcome,
            details: &self.details,
            prev: &self.prev,
        };
        // Serialising plain strings, integers and a `Value` cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// SHA-256 hex of the body, i.e. what `hash` must be.
    pub fn compute_hash(&self) -> String {
        hex(&Sha256::digest(self.body_bytes()))
    }

    /// The stored line (without the trailing `\n`).
    pub fn encode_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one stored line (without the `\n`).
    pub fn decode_line(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| e.to_string())
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReport {
    /// Every entry parses, sequence numbers run 1..=entries and every hash links.
    Intact {
        /// Number of entries.
        entries: u64,
        /// Hash of the last entry (the log's current head), to note down elsewhere.
        head_hash: String,
    },
    /// The first entry that breaks the chain; entries before it are intact.
    Broken {
        /// 1-based line number of the bad entry.
        line: u64,
        /// Its `seq` if it parsed.
        seq: Option<u64>,
        /// What is wrong.
        reason: String,
    },
}

/// One page of entries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    /// Entries in descending `seq`.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before_seq` to get the next (older) page; `None` when there is none.
    pub next_before_seq: Option<u64>,
}

struct LogState {
    file: File,
    /// Byte offset of each entry's line; `offsets[i]` holds entry `seq = i + 1`. 8 bytes per
    /// entry of memory, so paging seeks instead of scanning.
    offsets: Vec<u64>,
    /// Length of the file (where the next line goes).
    end: u64,
    head_hash: String,
    /// Set when open found a complete line that does not continue the chain.
    corrupt: Option<(u64, String)>,
}

/// The audit log. Thread-safe; appends are serialised by an internal mutex (each is one write
/// and one fsync, never on a hot path).
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<LogState>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What open found at the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last line that were cut off (0 when the file ended cleanly).
    pub torn_tail_bytes: u64,
}

impl AuditLog {
    /// Opens (creating if needed) the log in `dir`, cutting a torn tail. Returns the log and what
    /// recovery did.
    pub fn open(dir: &Path) -> AuditResult<(Self, OpenReport)> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::Io {
            op: "create dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(AUDIT_FILE_NAME);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| AuditError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            // Entries name accounts and client IPs: readable by the service user only.
            .mode(0o600)
            .open(&path)
            .map_err(io("open"))?;
        let len = file.metadata().map_err(io("stat"))?.len();
        let scan = scan(&mut file, &path)?;
        let mut torn_tail_bytes = 0;
        if scan.complete_end < len {
            // Bytes after the last newline: an append that did not finish. Never a complete entry.
            torn_tail_bytes = len - scan.complete_end;
            tracing::warn!(bytes = torn_tail_bytes, "audit log: cutting a torn last line");
            file.set_len(scan.complete_end).map_err(io("truncate"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        if let Some((line, reason)) = &scan.corrupt {
            tracing::error!(line, reason = %reason, "audit log: broken entry; run `bluewave audit verify`");
        }
        let state = LogState {
            file,
            offsets: scan.offsets,
            end: scan.complete_end,
            head_hash: scan.head_hash,
            corrupt: scan.corrupt,
        };
        Ok((Self { path, state: Mutex::new(state) }, OpenReport { torn_tail_bytes }))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry durably (write + fsync) and returns it.
    pub fn append(&self, event: AuditEvent) -> AuditResult<AuditEntry> {
        for (field, value) in [
            ("actor", &event.actor),
            ("action", &event.action),
            ("target", &event.target),
            ("outcome", &event.outcome),
        ] {
            if value.len() > AUDIT_FIELD_BYTES_MAX {
                return Err(AuditError::EntryTooLarge {
                    field,
                    bytes: value.len(),
                    limit: AUDIT_FIELD_BYTES_MAX,
                });
            }
        }
        let details_bytes = serde_json::to_vec(&event.details).map(|v| v.len()).unwrap_or(usize::MAX);
        if details_bytes > AUDIT_DETAILS_BYTES_MAX {
            return Err(AuditError::EntryTooLarge {
                field: "details",
                bytes: details_bytes,
                limit: AUDIT_DETAILS_BYTES_MAX,
            });
        }
        let mut state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        if let Some((line, reason)) = &state.corrupt {
            return Err(AuditError::Corrupt { line: *line, reason: reason.clone() });
        }
        let mut entry = AuditEntry {
            v: AUDIT_FORMAT_VERSION,
            seq: state.offsets.len() as u64 + 1,
            ts_ms: now_ms(),
            actor: event.actor,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            details: event.details,
            prev: state.head_hash.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        let mut line = entry.encode_line();
        line.push('\n');
        let offset = state.end;
        let path = &self.path;
        let io = |op: &'static str| move |source| AuditError::Io { op, path: path.clone(), source };
        state.file.seek(SeekFrom::Start(offset)).map_err(io("seek"))?;
        if let Err(e) = state.file.write_all(line.as_bytes()).and_then(|()| state.file.sync_data()) {
            // Leave the file as it was so a later append does not follow a torn line.
            let _ = state.file.set_len(offset);
            return Err(io("append")(e));
        }
        state.end = offset + line.len() as u64;
        state.offsets.push(offset);
        state.head_hash = entry.hash.clone();
        Ok(entry)
    }

    /// Number of entries.
    pub fn len(&self) -> AuditResult<u64> {
        Ok(self.state.lock().map_err(|_| AuditError::Poisoned)?.offsets.len() as u64)
    }

    /// True when nothing was recorded yet.
    pub fn is_empty(&self) -> AuditResult<bool> {
        Ok(self.len()? == 0)
    }

    /// Up to `limit` entries with `seq < before_seq` (all when `None`), newest first.
    pub fn page(&self, before_seq: Option<u64>, limit: usize) -> AuditResult<AuditPage> {
        if limit == 0 || limit > AUDIT_PAGE_ENTRIES_MAX {
            return Err(AuditError::BadPageSize { requested: limit });
        }
        let mut state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        let count = state.offsets.len() as u64;
        let upper = before_seq.map_or(count, |b| b.saturating_sub(1).min(count)); // newest seq wanted
        let lower = upper.saturating_sub(limit as u64); // exclusive
        let mut entries = Vec::with_capacity((upper - lower) as usize);
        let path = self.path.clone();
        let Some(&start) = state.offsets.get(lower as usize) else {
            return Ok(AuditPage { entries, next_before_seq: None });
        };
        state.file.seek(SeekFrom::Start(start)).map_err(|source| AuditError::Io {
            op: "seek",
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(&state.file);
        for seq in lower + 1..=upper {
            let line = read_line(&mut reader, &path)?.ok_or_else(|| AuditError::Corrupt {
                line: seq,
                reason: "file shorter than its index".into(),
            })?;
            let text = std::str::from_utf8(&line)
                .map_err(|_| AuditError::Corrupt { line: seq, reason: "not UTF-8".into() })?;
            let entry = AuditEntry::decode_line(text.trim_end_matches('\n'))
                .map_err(|reason| AuditError::Corrupt { line: seq, reason })?;
            entries.push(entry);
        }
        entries.reverse();
        let next_before_seq = (lower > 0).then_some(lower + 1);
        Ok(AuditPage { entries, next_before_seq })
    }

    /// Walks the whole chain (reading the file from disk) and reports the first broken entry.
    pub fn verify(&self) -> AuditResult<VerifyReport> {
        // Hold the lock so no append races the read.
        let _state = self.state.lock().map_err(|_| AuditError::Poisoned)?;
        verify_file(&self.path)
    }
}

/// Verifies the log file at `path` without opening it for writing (what `bluewave audit verify`
/// runs; safe while a server appends, since appends only add complete lines). A torn last line
/// is reported as broken here; the server's open cuts it.
pub fn verify_file(path: &Path) -> AuditResult<VerifyReport> {
    let file =
        File::open(path).map_err(|source| AuditError::Io { op: "open", path: path.to_path_buf(), source })?;
    let mut reader = BufReader::new(file);
    let mut expected_prev = GENESIS_HASH.to_owned();
    let mut line_no = 0u64;
    loop {
        let Some(line) = read_line(&mut reader, path)? else {
            return Ok(VerifyReport::Intact { entries: line_no, head_hash: expected_prev });
        };
        line_no += 1;
        let broken =
            |seq: Option<u64>, reason: String| Ok(VerifyReport::Broken { line: line_no, seq, reason });
        if line.last() != Some(&b'\n') {
            return broken(None, "torn last line (no newline)".into());
        }
        let Ok(text) = std::str::from_utf8(&line[..line.len() - 1]) else {
            return broken(None, "not UTF-8".into());
        };
        let entry = match AuditEntry::decode_line(text) {
            Ok(e) => e,
            Err(e) => return broken(None, format!("does not parse: {e}")),
        };
        if let Some(reason) = check_link(&entry, line_no, &expected_prev) {
            return broken(Some(entry.seq), reason);
        }
        expected_prev = entry.hash;
    }
}

/// Why `entry` (the `line_no`-th) does not continue a chain whose head is `expected_prev`.
fn check_link(entry: &AuditEntry, line_no: u64, expected_prev: &str) -> Option<String> {
    if entry.v != AUDIT_FORMAT_VERSION {
        return Some(format!("format version {} is not {AUDIT_FORMAT_VERSION}", entry.v));
    }
    if entry.seq != line_no {
        return Some(format!("seq {} where {line_no} was expected (entry deleted or moved)", entry.seq));
    }
    if entry.prev != expected_prev {
        return Some("prev does not match the previous entry's hash (entry deleted or moved)".into());
    }
    if entry.compute_hash() != entry.hash {
        return Some("hash does not match the entry's content (entry edited)".into());
    }
    None
}

struct Scan {
    offsets: Vec<u64>,
    complete_end: u64,
    head_hash: String,
    corrupt: Option<(u64, String)>,
}

/// Reads every complete line, building the offset index and checking the chain.
fn scan(file: &mut File, path: &Path) -> AuditResult<Scan> {
    file.seek(SeekFrom::Start(0)).map_err(|source| AuditError::Io {
        op: "seek",
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(&*file);
    let mut scan =
        Scan { offsets: Vec::new(), complete_end: 0, head_hash: GENESIS_HASH.to_owned(), corrupt: None };
    while let Some(line) = read_line(&mut reader, path)? {
        if line.last() != Some(&b'\n') {
            break; // torn tail: not counted, cut by the caller
        }
        let line_no = scan.offsets.len() as u64 + 1;
        if scan.corrupt.is_none() {
            let parsed = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(AuditEntry::decode_line);
            match parsed {
                Ok(entry) => match check_link(&entry, line_no, &scan.head_hash) {
                    None => scan.head_hash = entry.hash,
                    Some(reason) => scan.corrupt = Some((line_no, reason)),
                },
                Err(reason) => scan.corrupt = Some((line_no, reason)),
            }
        }
        scan.offsets.push(scan.complete_end);
        scan.complete_end += line.len() as u64;
    }
    Ok(scan)
}

/// One line including its `\n` (absent only on a torn last line); `None` at end of file. A line
/// longer than [`AUDIT_LINE_BYTES_MAX`] is corrupt.
fn read_line(reader: &mut impl BufRead, path: &Path) -> AuditResult<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let limit = AUDIT_LINE_BYTES_MAX as u64 + 1;
    let read = reader.take(limit).read_until(b'\n', &mut line).map_err(|source| AuditError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    if read == 0 {
        return Ok(None);
    }
    if line.len() as u64 >= limit && line.last() != Some(&b'\n') {
        return Err(AuditError::Corrupt {
            line: 0,
            reason: format!("line longer than {AUDIT_LINE_BYTES_MAX} bytes"),
        });
    }
    Ok(Some(line))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
