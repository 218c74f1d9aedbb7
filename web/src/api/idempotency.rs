//! Idempotency keys of line-protocol writes: a body sent with `Idempotency-Key: <key>` is stored
//! once, however often it is retried, and every retry gets the first answer again.
//!
//! Why it is needed although storage is last-write-wins per `(buoy_id, metric, ts)`: a line
//! without a timestamp takes the server's time, so a plain retry of it writes new rows; and a
//! retry that arrives after a later correction would undo the correction.
//!
//! How (the IETF draft "The Idempotency-Key HTTP Header Field", as Stripe does it):
//! 1. Before anything is written, a *pending* record is committed (fsync) under the writer and
//!    the key: the SHA-256 of the request (decoded body, precision, `atomic`) and the server time
//!    used for lines without a timestamp.
//! 2. The write runs with that server time.
//! 3. Its answer (204, or 400 with the refused lines) is committed into the record.
//!
//! A retry finds the record: with an answer, it gets the answer again (header
//! `Idempotent-Replayed: true`) and nothing is written; still pending (the server died, or the
//! engine was busy, between 1 and 3), it runs the write again with the recorded server time, so
//! it writes exactly the rows the first attempt wrote (last-write-wins makes the second copy a
//! no-op). The same key with another body answers 422 `idempotency_key_reused`; the same key while
//! its first request is still running answers 409 `idempotency_key_in_use`.
//!
//! Keys are scoped to the writer (a device's buoy or a user id), so two writers never collide.
//!
//! Storage: `<data-dir>/idempotency.redb`, created on first use.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format_version` | u64 ([`IDEMPOTENCY_FORMAT_VERSION`]) |
//! | `keys` | `<scope>\n<key>` | [`KeyRecord`] as JSON |
//! | `by_age` | `(created_ms, <scope>\n<key>)` | `()` (index for expiry and eviction) |
//! | `by_writer` | `(<scope>, created_ms, <scope>\n<key>)` | `()` (a writer's keys, oldest first) |
//! | `writer_counts` | `<scope>` | keys the writer holds |
//!
//! Limits, so the file stays bounded at any write rate and one writer cannot push out the
//! others' keys: a key is 1–[`IDEMPOTENCY_KEY_BYTES_MAX`] visible ASCII bytes; a stored answer
//! at most [`STORED_ANSWER_BYTES_MAX`]; a record is honoured for `ttl_s` (default
//! [`IDEMPOTENCY_KEY_TTL_S_DEFAULT`]) or until its writer has recorded `keys_per_writer_max`
//! (default [`IDEMPOTENCY_KEYS_PER_WRITER_MAX_DEFAULT`]) newer keys, or all writers together
//! `keys_max` (default [`IDEMPOTENCY_KEYS_MAX_DEFAULT`]), whichever comes first. Eviction takes
//! the oldest first and never a key whose request is still running. Worst case on disk: `keys_max`
//! × (`STORED_ANSWER_BYTES_MAX` + about 300 bytes), 1.7 GB at the defaults, reached only by
//! writers whose every body is refused with long reasons; a 204 answer, the usual one, keeps
//! about 300 bytes (15 MB for 50,000 keys).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _, TableDefinition,
};
use serde::{Deserialize, Serialize};

/// The request header that carries the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The answer header set on a replayed answer.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// Longest key accepted, bytes (visible ASCII only).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 255;

/// Default of `[line_protocol] idempotency_key_ttl_s`: a key is honoured for 24 hours.
pub const IDEMPOTENCY_KEY_TTL_S_DEFAULT: u64 = 86_400;

/// Default of `[line_protocol] idempotency_keys_max`: past it the oldest keys are forgotten first.
pub const IDEMPOTENCY_KEYS_MAX_DEFAULT: u64 = 50_000;

/// Default of `[line_protocol] idempotency_keys_per_writer_max`: past it the writer's own oldest
/// keys are forgotten first (a device or user flooding keys evicts only its own).
pub const IDEMPOTENCY_KEYS_PER_WRITER_MAX_DEFAULT: u64 = 10_000;

/// Largest answer body kept for a replay, bytes. A 400 lists at most 100 refused lines with
/// reasons of at most 200 characters (about 25 KiB, so it fits); a body above this keeps its
/// counts and message and drops listed lines from the end until it fits.
pub const STORED_ANSWER_BYTES_MAX: usize = 32 * 1024;

/// Expired records removed per claim at most, so one claim's transaction stays short; the
/// `keys_max` eviction bounds the file whatever this lags.
const EXPIRED_REMOVED_PER_CLAIM: usize = 64;

/// File name under the data dir.
pub const IDEMPOTENCY_FILE_NAME: &str = "idempotency.redb";

/// Version of the layout above.
pub const IDEMPOTENCY_FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const BY_AGE: TableDefinition<(u64, &str), ()> = TableDefinition::new("by_age");
const BY_WRITER: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("by_writer");
const WRITER_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("writer_counts");
const META_FORMAT_VERSION: &str = "format_version";

/// Limits of the key store (from the config file's `[line_protocol]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyLimits {
    /// How long a key is honoured, s.
    pub ttl_s: u64,
    /// Most keys kept; the oldest are forgotten first.
    pub keys_max: u64,
    /// Most keys kept per writer; the writer's oldest are forgotten first.
    pub keys_per_writer_max: u64,
}

impl Default for IdempotencyLimits {
    fn default() -> Self {
        Self {
            ttl_s: IDEMPOTENCY_KEY_TTL_S_DEFAULT,
            keys_max: IDEMPOTENCY_KEYS_MAX_DEFAULT,
            keys_per_writer_max: IDEMPOTENCY_KEYS_PER_WRITER_MAX_DEFAULT,
        }
    }
}

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key is empty, too long or not visible ASCII (400).
    #[error("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters")]
    InvalidKey,
    /// A request with this key is still running (409).
    #[error("a request with this Idempotency-Key is still running; retry when it has answered")]
    InUse,
    /// The key was used before with another body (422).
    #[error("this Idempotency-Key was used with a different body")]
    Reused,
    /// A limit is zero.
    #[error("invalid [line_protocol] configuration: `{field}` must be above zero")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
    },
    /// The file was written by another layout version.
    #[error(
        "{IDEMPOTENCY_FILE_NAME} has format version {found}, this build reads {IDEMPOTENCY_FORMAT_VERSION}"
    )]
    FormatVersion {
        /// The version in the file.
        found: u64,
    },
    /// redb failed (I/O, a damaged file).
    #[error("idempotency key store: {0}")]
    Storage(#[source] redb::Error),
    /// A record does not decode (a damaged file).
    #[error("idempotency key store: damaged record: {0}")]
    Record(#[source] serde_json::Error),
}

fn storage(error: impl Into<redb::Error>) -> IdempotencyError {
    IdempotencyError::Storage(error.into())
}

/// What is kept per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeyRecord {
    /// SHA-256 of the request (decoded body, precision, `atomic`), hex.
    body_sha256: String,
    /// Server time given to lines without a timestamp, ns since the epoch.
    now_ns: i64,
    /// When the key was first seen, ms since the epoch.
    created_ms: u64,
    /// The answer, once the write has answered.
    answer: Option<StoredAnswer>,
}

/// An answer kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// HTTP status.
    pub status: u16,
    /// JSON body; empty for 204.
    pub body: String,
}

/// What a request with a key does.
#[derive(Debug)]
pub enum Claim {
    /// Write, giving lines without a timestamp this server time; record the answer through
    /// [`IngestKeys::complete`] with the guard.
    Write {
        /// Server time for lines without a timestamp, ns.
        now_ns: i64,
        /// Holds the key in flight until dropped.
        guard: InFlight,
    },
    /// Answered before: send this again, write nothing.
    Replay(StoredAnswer),
}

/// The key store. One per server; shared by the line-protocol handlers.
#[derive(Debug)]
pub struct IngestKeys {
    /// The redb file (fsync on every commit).
    db: Database,
    /// Scoped keys whose request is running in this process. Written by `claim` (insert) and by
    /// `InFlight::drop` (remove); lives as long as the store.
    in_flight: Mutex<HashSet<String>>,
    /// Limits, fixed at open.
    limits: IdempotencyLimits,
}

/// A key in flight: while it lives, another request with the same key answers 409.
#[derive(Debug)]
pub struct InFlight {
    keys: Arc<IngestKeys>,
    scoped: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.keys.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.scoped);
    }
}

/// Checks a key from a request header.
pub fn validate_key(key: &[u8]) -> Result<&str, IdempotencyError> {
    if key.is_empty()
        || key.len() > IDEMPOTENCY_KEY_BYTES_MAX
        || !key.iter().all(|b| (0x21..=0x7e).contains(b))
    {
        return Err(IdempotencyError::InvalidKey);
    }
    std::str::from_utf8(key).map_err(|_| IdempotencyError::InvalidKey)
}

impl IngestKeys {
    /// Opens (or creates) `<data_dir>/idempotency.redb`.
    pub fn open(data_dir: &Path, limits: IdempotencyLimits) -> Result<Self, IdempotencyError> {
        if limits.ttl_s == 0 {
            return Err(IdempotencyError::InvalidConfig { field: "idempotency_key_ttl_s" });
        }
        if limits.keys_max == 0 {
            return Err(IdempotencyError::InvalidConfig { field: "idempotency_keys_max" });
        }
        if limits.keys_per_writer_max == 0 {
            return Err(IdempotencyError::InvalidConfig { field: "idempotency_keys_per_writer_max" });
        }
        let db = Database::create(data_dir.join(IDEMPOTENCY_FILE_NAME)).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let found = meta.get(META_FORMAT_VERSION).map_err(storage)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(META_FORMAT_VERSION, IDEMPOTENCY_FORMAT_VERSION).map_err(storage)?;
                }
                Some(IDEMPOTENCY_FORMAT_VERSION) => {}
                Some(found) => return Err(IdempotencyError::FormatVersion { found }),
            }
            txn.open_table(KEYS).map_err(storage)?;
            txn.open_table(BY_AGE).map_err(storage)?;
            txn.open_table(BY_WRITER).map_err(storage)?;
            txn.open_table(WRITER_COUNTS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Self { db, in_flight: Mutex::new(HashSet::new()), limits })
    }

    /// The limits in force.
    pub fn limits(&self) -> IdempotencyLimits {
        self.limits
    }

    /// Claims `key` for `scope` with a body of hash `body_sha256`. `now_ns`/`now_ms` are the
    /// server's clock, used only when the key is new (or its record expired). Blocking (fsync).
    pub fn claim(
        self: &Arc<Self>,
        scope: &str,
        key: &str,
        body_sha256: &[u8; 32],
        now_ns: i64,
        now_ms: u64,
    ) -> Result<Claim, IdempotencyError> {
        let scoped = format!("{scope}\n{key}");
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            if !in_flight.insert(scoped.clone()) {
                return Err(IdempotencyError::InUse);
            }
        }
        // From here the guard releases the key on every path, errors included.
        let guard = InFlight { keys: Arc::clone(self), scoped };
        let hash = hex(body_sha256);
        let ttl_ms = self.limits.ttl_s.saturating_mul(1000);
        let txn = self.db.begin_write().map_err(storage)?;
        let claim_now_ns = {
            let mut tables = Tables::open(&txn)?;
            let existing = match tables.keys.get(guard.scoped.as_str()).map_err(storage)? {
                Some(bytes) => Some(
                    serde_json::from_slice::<KeyRecord>(bytes.value()).map_err(IdempotencyError::Record)?,
                ),
                None => None,
            };
            match existing {
                Some(record) if record.created_ms.saturating_add(ttl_ms) > now_ms => {
                    if record.body_sha256 != hash {
                        return Err(IdempotencyError::Reused);
                    }
                    if let Some(answer) = record.answer {
                        return Ok(Claim::Replay(answer));
                    }
                    // Pending: an earlier attempt died or was refused before answering.
                    record.now_ns
                }
                expired => {
                    if let Some(old) = expired {
                        tables.remove(old.created_ms, &guard.scoped)?;
                    }
                    let record = KeyRecord { body_sha256: hash, now_ns, created_ms: now_ms, answer: None };
                    let bytes = serde_json::to_vec(&record).map_err(IdempotencyError::Record)?;
                    tables.keys.insert(guard.scoped.as_str(), bytes.as_slice()).map_err(storage)?;
                    tables.by_age.insert((now_ms, guard.scoped.as_str()), ()).map_err(storage)?;
                    tables.by_writer.insert((scope, now_ms, guard.scoped.as_str()), ()).map_err(storage)?;
                    let count = tables.writer_count(scope)?;
                    tables.writer_counts.insert(scope, count.saturating_add(1)).map_err(storage)?;
                    let in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    tables.forget_old(now_ms.saturating_sub(ttl_ms), scope, &self.limits, &in_flight)?;
                    now_ns
                }
            }
        };
        txn.commit().map_err(storage)?;
        Ok(Claim::Write { now_ns: claim_now_ns, guard })
    }

    /// Records the answer of the write that `guard` was claimed for. Blocking (fsync).
    pub fn complete(&self, guard: &InFlight, answer: StoredAnswer) -> Result<(), IdempotencyError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut keys = txn.open_table(KEYS).map_err(storage)?;
            let record = match keys.get(guard.scoped.as_str()).map_err(storage)? {
                Some(bytes) => Some(
                    serde_json::from_slice::<KeyRecord>(bytes.value()).map_err(IdempotencyError::Record)?,
                ),
                None => None,
            };
            // Expired meanwhile (a write that ran past the TTL): nothing left to answer from.
            if let Some(mut record) = record {
                record.answer = Some(bounded(answer));
                let bytes = serde_json::to_vec(&record).map_err(IdempotencyError::Record)?;
                keys.insert(guard.scoped.as_str(), bytes.as_slice()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Keys held, expired ones included until they are removed.
    pub fn len(&self) -> Result<u64, IdempotencyError> {
        let txn = self.db.begin_read().map_err(storage)?;
        txn.open_table(KEYS).map_err(storage)?.len().map_err(storage)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> Result<bool, IdempotencyError> {
        Ok(self.len()? == 0)
    }
}

/// The tables of one write transaction.
struct Tables<'txn> {
    keys: redb::Table<'txn, &'static str, &'static [u8]>,
    by_age: redb::Table<'txn, (u64, &'static str), ()>,
    by_writer: redb::Table<'txn, (&'static str, u64, &'static str), ()>,
    writer_counts: redb::Table<'txn, &'static str, u64>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, IdempotencyError> {
        Ok(Self {
            keys: txn.open_table(KEYS).map_err(storage)?,
            by_age: txn.open_table(BY_AGE).map_err(storage)?,
            by_writer: txn.open_table(BY_WRITER).map_err(storage)?,
            writer_counts: txn.open_table(WRITER_COUNTS).map_err(storage)?,
        })
    }

    fn writer_count(&self, scope: &str) -> Result<u64, IdempotencyError> {
        Ok(self.writer_counts.get(scope).map_err(storage)?.map_or(0, |count| count.value()))
    }

    /// Removes the record of `scoped` (created at `created_ms`) from every table.
    fn remove(&mut self, created_ms: u64, scoped: &str) -> Result<(), IdempotencyError> {
        let scope = scoped.split_once('\n').map_or(scoped, |(scope, _)| scope);
        self.keys.remove(scoped).map_err(storage)?;
        self.by_age.remove((created_ms, scoped)).map_err(storage)?;
        self.by_writer.remove((scope, created_ms, scoped)).map_err(storage)?;
        match self.writer_count(scope)? {
            0 | 1 => {
                self.writer_counts.remove(scope).map_err(storage)?;
            }
            count => {
                self.writer_counts.insert(scope, count - 1).map_err(storage)?;
            }
        }
        Ok(())
    }

    /// Removes up to [`EXPIRED_REMOVED_PER_CLAIM`] records created before `expired_before_ms`;
    /// then `scope`'s oldest records while it holds more than `keys_per_writer_max`; then the
    /// oldest of all while more than `keys_max` are held. Never a key in `in_flight`.
    fn forget_old(
        &mut self,
        expired_before_ms: u64,
        scope: &str,
        limits: &IdempotencyLimits,
        in_flight: &HashSet<String>,
    ) -> Result<(), IdempotencyError> {
        for _ in 0..EXPIRED_REMOVED_PER_CLAIM {
            let oldest = self.by_age.first().map_err(storage)?.map(|(key, _)| {
                let (created_ms, scoped) = key.value();
                (created_ms, scoped.to_owned())
            });
            let Some((created_ms, scoped)) = oldest else { break };
            if created_ms >= expired_before_ms || in_flight.contains(&scoped) {
                break;
            }
            self.remove(created_ms, &scoped)?;
        }
        while self.writer_count(scope)? > limits.keys_per_writer_max {
            let range = self
                .by_writer
                .range((scope, 0_u64, "")..=(scope, u64::MAX, "\u{10ffff}"))
                .map_err(storage)?;
            let entries = range.map(|entry| {
                let (key, _) = entry.map_err(storage)?;
                let (_, created_ms, scoped) = key.value();
                Ok((created_ms, scoped.to_owned()))
            });
            let Some((created_ms, scoped)) = first_not_running(entries, in_flight)? else { break };
            self.remove(created_ms, &scoped)?;
        }
        while self.keys.len().map_err(storage)? > limits.keys_max {
            let entries = self.by_age.iter().map_err(storage)?.map(|entry| {
                let (key, _) = entry.map_err(storage)?;
                let (created_ms, scoped) = key.value();
                Ok((created_ms, scoped.to_owned()))
            });
            let Some((created_ms, scoped)) = first_not_running(entries, in_flight)? else { break };
            self.remove(created_ms, &scoped)?;
        }
        Ok(())
    }
}

/// The oldest of `entries` (`(created_ms, scoped key)`, oldest first) whose request is not
/// running; at most `in_flight.len()` entries are skipped, so the scan is bounded.
fn first_not_running(
    entries: impl Iterator<Item = Result<(u64, String), IdempotencyError>>,
    in_flight: &HashSet<String>,
) -> Result<Option<(u64, String)>, IdempotencyError> {
    for entry in entries.take(in_flight.len().saturating_add(1)) {
        let (created_ms, scoped) = entry?;
        if !in_flight.contains(&scoped) {
            return Ok(Some((created_ms, scoped)));
        }
    }
    Ok(None)
}

/// `answer` with a body of at most [`STORED_ANSWER_BYTES_MAX`]: a larger JSON refusal keeps its
/// fields but drops listed `lines` from the end until it fits; anything else larger keeps only
/// its status.
fn bounded(answer: StoredAnswer) -> StoredAnswer {
    if answer.body.len() <= STORED_ANSWER_BYTES_MAX {
        return answer;
    }
    if let Ok(mut json) = serde_json::from_str::<serde_json::Value>(&answer.body) {
        while let Some(lines) = json.get_mut("lines").and_then(serde_json::Value::as_array_mut) {
            if lines.pop().is_none() {
                break;
            }
            let text = json.to_string();
            if text.len() <= STORED_ANSWER_BYTES_MAX {
                return StoredAnswer { status: answer.status, body: text };
            }
        }
    }
    StoredAnswer { status: answer.status, body: String::new() }
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store(limits: IdempotencyLimits) -> (tempfile::TempDir, Arc<IngestKeys>) {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(IngestKeys::open(dir.path(), limits).unwrap());
        (dir, keys)
    }

    fn answer(status: u16) -> StoredAnswer {
        StoredAnswer { status, body: String::new() }
    }

    #[test]
    fn a_key_is_written_once_then_replayed() {
        let (_dir, keys) = store(IdempotencyLimits::default());
        let Claim::Write { now_ns, guard } = keys.claim("user:a", "k1", &[1; 32], 500, 1_000).unwrap() else {
            panic!("a new key writes");
        };
        assert_eq!(now_ns, 500);
        // The same key while the first request runs: 409.
        assert!(matches!(keys.claim("user:a", "k1", &[1; 32], 600, 1_001), Err(IdempotencyError::InUse)));
        keys.complete(&guard, answer(204)).unwrap();
        drop(guard);
        match keys.claim("user:a", "k1", &[1; 32], 700, 1_002).unwrap() {
            Claim::Replay(stored) => assert_eq!(stored, answer(204)),
            other => panic!("expected a replay, got {other:?}"),
        }
        assert!(matches!(keys.claim("user:a", "k1", &[2; 32], 700, 1_002), Err(IdempotencyError::Reused)));
        // Another writer's key of the same name is its own.
        assert!(matches!(
            keys.claim("user:b", "k1", &[2; 32], 800, 1_003).unwrap(),
            Claim::Write { now_ns: 800, .. }
        ));
    }

    #[test]
    fn a_pending_key_writes_again_with_its_first_server_time_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let keys = Arc::new(IngestKeys::open(dir.path(), IdempotencyLimits::default()).unwrap());
            let claim = keys.claim("device:b1", "k", &[3; 32], 42, 10).unwrap();
            assert!(matches!(claim, Claim::Write { now_ns: 42, .. }));
            // The process dies before the answer is recorded.
        }
        let keys = Arc::new(IngestKeys::open(dir.path(), IdempotencyLimits::default()).unwrap());
        match keys.claim("device:b1", "k", &[3; 32], 99, 20).unwrap() {
            Claim::Write { now_ns, .. } => assert_eq!(now_ns, 42),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn keys_expire_and_the_oldest_are_evicted_past_the_maximum() {
        let (_dir, keys) = store(IdempotencyLimits { ttl_s: 10, keys_max: 3, keys_per_writer_max: 100 });
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            let Claim::Write { guard, .. } = keys.claim("s", key, &[0; 32], 1, i as u64).unwrap() else {
                panic!("new key");
            };
            keys.complete(&guard, answer(204)).unwrap();
        }
        assert_eq!(keys.len().unwrap(), 3);
        // "a" was evicted: it writes again; "d" is still answered.
        assert!(matches!(keys.claim("s", "a", &[0; 32], 2, 5).unwrap(), Claim::Write { now_ns: 2, .. }));
        assert!(matches!(keys.claim("s", "d", &[0; 32], 2, 6).unwrap(), Claim::Replay(_)));
        // Past the TTL a key is new again, even with another body.
        assert!(matches!(
            keys.claim("s", "d", &[9; 32], 3, 3 + 10_000).unwrap(),
            Claim::Write { now_ns: 3, .. }
        ));
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(validate_key(b"batch-2026-12-06T23:00Z/7").unwrap(), "batch-2026-12-06T23:00Z/7");
        for bad in [&b""[..], b"has space", b"tab\t", "é".as_bytes(), &[b'k'; IDEMPOTENCY_KEY_BYTES_MAX + 1]]
        {
            assert!(matches!(validate_key(bad), Err(IdempotencyError::InvalidKey)), "{bad:?}");
        }
        assert!(validate_key(&[b'k'; IDEMPOTENCY_KEY_BYTES_MAX]).is_ok());
    }

    fn write_and_answer(keys: &Arc<IngestKeys>, scope: &str, key: &str, now_ms: u64) {
        let Claim::Write { guard, .. } = keys.claim(scope, key, &[0; 32], 1, now_ms).unwrap() else {
            panic!("{scope}/{key} is new");
        };
        keys.complete(&guard, answer(204)).unwrap();
    }

    #[test]
    fn a_writer_flooding_keys_evicts_only_its_own() {
        let limits = IdempotencyLimits { ttl_s: 3_600, keys_max: 100, keys_per_writer_max: 2 };
        let (_dir, keys) = store(limits);
        write_and_answer(&keys, "user:b", "b1", 1);
        for (i, key) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
            write_and_answer(&keys, "user:a", key, 10 + i as u64);
        }
        // a holds its two newest; b's key, older than all of them, is still answered.
        assert_eq!(keys.len().unwrap(), 3);
        assert!(matches!(keys.claim("user:b", "b1", &[0; 32], 1, 20).unwrap(), Claim::Replay(_)));
        assert!(matches!(keys.claim("user:a", "a4", &[0; 32], 1, 20).unwrap(), Claim::Replay(_)));
        assert!(matches!(
            keys.claim("user:a", "a1", &[0; 32], 7, 21).unwrap(),
            Claim::Write { now_ns: 7, .. }
        ));
    }

    #[test]
    fn a_running_key_is_never_evicted() {
        let limits = IdempotencyLimits { ttl_s: 3_600, keys_max: 2, keys_per_writer_max: 2 };
        let (_dir, keys) = store(limits);
        // The oldest key's request is still running while newer keys push past both limits.
        let Claim::Write { now_ns: 5, guard } = keys.claim("user:a", "slow", &[0; 32], 5, 1).unwrap() else {
            panic!("new key");
        };
        for (i, key) in ["k1", "k2", "k3"].iter().enumerate() {
            write_and_answer(&keys, "user:a", key, 10 + i as u64);
        }
        assert!(matches!(keys.claim("user:a", "slow", &[0; 32], 9, 30), Err(IdempotencyError::InUse)));
        keys.complete(&guard, answer(204)).unwrap();
        drop(guard);
        match keys.claim("user:a", "slow", &[0; 32], 9, 31).unwrap() {
            Claim::Replay(stored) => assert_eq!(stored, answer(204)),
            other => panic!("the running key was evicted: {other:?}"),
        }
    }

    #[test]
    fn a_stored_answer_is_bounded_and_keeps_its_counts() {
        let lines: Vec<serde_json::Value> =
            (1..=100).map(|line| serde_json::json!({ "line": line, "error": "x".repeat(1_000) })).collect();
        let body =
            serde_json::json!({ "error": "invalid_line_protocol", "refused_lines": 100, "lines": lines });
        let big = StoredAnswer { status: 400, body: body.to_string() };
        assert!(big.body.len() > STORED_ANSWER_BYTES_MAX);
        let kept = bounded(big);
        assert!(kept.body.len() <= STORED_ANSWER_BYTES_MAX);
        let json: serde_json::Value = serde_json::from_str(&kept.body).unwrap();
        assert_eq!(json["refused_lines"], 100);
        let listed = json["lines"].as_array().unwrap();
        assert!(!listed.is_empty() && listed.len() < 100);
        assert_eq!(listed[0]["line"], 1);
        let small = StoredAnswer { status: 204, body: String::new() };
        assert_eq!(bounded(small.clone()), small);
    }
}
