//! Proves, by random search, that the engine behaves like a plain `BTreeMap`:
//!
//! - `engine_matches_model`: random sequences of ingest (with rewrites of existing keys, also
//!   inside one batch), retries of old batches, deletes (one key, or a buoy/metric time range),
//!   flush, compaction and reopen are applied both to a real engine (real files, real redb, real
//!   threads; 60 s partitions so a few minutes of data spans three of them) and to a model map
//!   `(buoy, metric, ts) -> (value, quality)` where the last write wins and deletes remove. After
//!   every step the merged reader ([`bluewave_engine::Snapshot::read`]) must return exactly the
//!   model, for the full range and for two random filters (time range, buoy and metric subsets),
//!   and every ingest must be answered exactly as the model's deduplication window says
//!   (`Stored`, `Duplicate`, or a stale-sequence error). The background compactor runs
//!   throughout (folding closed partitions); `engine_matches_model_with_eager_background_compaction`
//!   also has it merge every second generation of the open partition.
//! - `garbage_never_panics`: the decoders of untrusted bytes (WAL entries, WAL segments, partition
//!   files) answer arbitrary bytes and mutated valid records with an error or a consistent result,
//!   never a panic; what decodes re-encodes to the same entries; a torn last record is cut off and
//!   a damaged record followed by a good one is corruption. (The libFuzzer targets in
//!   `engine/fuzz` search the same decoders for longer.)
//! - `rewrite_inside_one_batch_reads_the_same_before_and_after_flush`: the smallest case of the
//!   rule the model applies to two rows of one key inside one batch (the later row wins), kept as
//!   its own test so a failure names the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use bluewave_engine::internals::{
    Entry, begin_record, decode_entries, encode_batch_entry, encode_delete_entry, finish_record,
    patch_sequence, read_lane,
};
use bluewave_engine::{
    DEDUP_WINDOW, DeleteRange, Durability, Engine, EngineConfig, Error, FsStorage, IngestOutcome, InputError,
    MetricName, PartitionDuration, PartitionRows, PartitionWriteOptions, ReadFilter, ReadingBatch,
    ReadingBatchBuilder, decode_partition, encode_partition,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError};

use crate::common::{batch, buoy, read_all, register, rows};

// ---------------------------------------------------------------------------------------------
// The key space.

const BUOYS: [&str; 3] = ["b-0", "b-1", "b-2"];
/// `ph` has a narrow physical range, so many generated values are flagged `out_of_range`.
const METRICS: [&str; 2] = ["ph", "salinity_psu"];
const TS_COUNT: usize = 20;
/// 2026-05-29T02:26:00Z, on a minute boundary so the 60 s partitions start at `TS_BASE_NS`.
const TS_BASE_NS: i64 = 1_779_999_960 * 1_000_000_000;
const TS_STEP_NS: i64 = 8_000_000_000;
const PARTITION: Duration = Duration::from_secs(60);

/// Timestamp number `i`: 8 s apart, odd ones one ns early, so data spans three 60 s partitions,
/// the first reading sits on a partition start and one (i = 15) on the last ns of a partition.
/// `i == TS_COUNT` is one step past the last, for exclusive range ends.
fn ts_at(i: usize) -> i64 {
    TS_BASE_NS + i as i64 * TS_STEP_NS - (i % 2) as i64
}

const _: () = assert!(TS_BASE_NS % (60 * 1_000_000_000) == 0);

fn model_config(dir: &Path, lanes: usize) -> Result<EngineConfig, TestCaseError> {
    let mut c = crate::common::config(dir);
    c.lanes = lanes;
    c.partition_duration = check(PartitionDuration::new(PARTITION), "partition duration")?;
    // Reopens here are clean (threads joined), so the page cache holds every acked record; the
    // fsync path is proven by the crash tests. Skipping it keeps 48 cases fast on a slow disk.
    c.durability = Durability::Relaxed;
    Ok(c)
}

fn check<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Operations.

/// How an ingest picks its batch sequence.
#[derive(Clone, Debug)]
enum SeqPick {
    /// One above the highest sent.
    Next,
    /// Leaves `n` sequences unused (remembered as gaps), then one above them.
    Skip(u64),
    /// Fills a gap left by `Skip` (new if inside the window, stale below it), or `Next`.
    FillGap(Index),
}

#[derive(Clone, Debug)]
enum Op {
    /// A batch of rows `(metric, ts index, value in thousandths)` from `buoy`.
    Ingest {
        buoy: usize,
        seq: SeqPick,
        rows: Vec<(usize, usize, i32)>,
    },
    /// A retry of a batch the buoy sent before, the same or with other values (ignored either way).
    Resend {
        buoy: usize,
        pick: Index,
        other_values: bool,
    },
    /// Deletes one key with a 1 ns range.
    DeleteKey {
        buoy: usize,
        metric: usize,
        ts: usize,
    },
    /// Deletes `[ts_at(from), ts_at(to))` of a buoy, one metric or all (empty when `to <= from`).
    DeleteRange {
        buoy: usize,
        metric: Option<usize>,
        from: usize,
        to: usize,
    },
    Flush,
    Compact,
    /// Closes the engine (after `shutdown`, which flushes, or by dropping it, which leaves the
    /// buffer to WAL replay) and opens it again on the same directory.
    Reopen {
        shutdown: bool,
    },
    /// Flush, then drop and reopen.
    FlushReopen,
}

/// A read filter in terms of the key space; bounds are `ts_at(i) + delta`.
#[derive(Clone, Debug)]
struct FilterPick {
    start: Option<(usize, i64)>,
    end: Option<(usize, i64)>,
    /// Bit i: `BUOYS[i]`; bit 3: a buoy that never wrote.
    buoys: Option<u8>,
    metrics: Option<u8>,
}

impl FilterPick {
    fn to_filter(&self) -> ReadFilter {
        let bound = |(i, delta): (usize, i64)| ts_at(i) + delta;
        let mut start = self.start.map(bound);
        let mut end = self.end.map(bound);
        if let (Some(s), Some(e)) = (start, end)
            && e < s
        {
            (start, end) = (Some(e), Some(s));
        }
        let pick = |mask: u8, names: &[&str]| {
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, n)| n.to_string())
                .collect()
        };
        ReadFilter {
            start,
            end,
            buoys: self.buoys.map(|m| pick(m, &[BUOYS[0], BUOYS[1], BUOYS[2], "never-wrote"])),
            metrics: self.metrics.map(|m| pick(m, &METRICS)),
        }
    }
}

fn filter_pick() -> impl Strategy<Value = FilterPick> {
    let bound = || proptest::option::of((0..=TS_COUNT, -1i64..=1));
    (bound(), bound(), proptest::option::of(0u8..16), proptest::option::of(0u8..4))
        .prop_map(|(start, end, buoys, metrics)| FilterPick { start, end, buoys, metrics })
}

fn op() -> impl Strategy<Value = Op> {
    let buoy = || 0..BUOYS.len();
    let metric = || 0..METRICS.len();
    // Mostly values where `ph` is good, sometimes anywhere in 0..45 (flagged for ph, and above
    // 42 for salinity).
    let value = prop_oneof![5_000..10_000i32, 0..45_000i32];
    let seq = prop_oneof![
        6 => Just(SeqPick::Next),
        1 => prop_oneof![Just(1u64), Just(5), Just(DEDUP_WINDOW)].prop_map(SeqPick::Skip),
        2 => any::<Index>().prop_map(SeqPick::FillGap),
    ];
    prop_oneof![
        8 => (buoy(), seq, vec((metric(), 0..TS_COUNT, value), 1..8))
            .prop_map(|(buoy, seq, rows)| Op::Ingest { buoy, seq, rows }),
        2 => (buoy(), any::<Index>(), any::<bool>())
            .prop_map(|(buoy, pick, other_values)| Op::Resend { buoy, pick, other_values }),
        1 => (buoy(), metric(), 0..TS_COUNT).prop_map(|(buoy, metric, ts)| Op::DeleteKey { buoy, metric, ts }),
        1 => (buoy(), proptest::option::of(metric()), 0..=TS_COUNT, 0..=TS_COUNT)
            .prop_map(|(buoy, metric, from, to)| Op::DeleteRange { buoy, metric, from, to }),
        2 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => any::<bool>().prop_map(|shutdown| Op::Reopen { shutdown }),
        1 => Just(Op::FlushReopen),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model.

/// What the model says of a batch sequence (the deduplication window's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Stored,
    Duplicate,
    Stale,
}

/// What one buoy sent.
#[derive(Default)]
struct BuoyModel {
    highest: Option<u64>,
    stored: BTreeSet<u64>,
    /// Stored batches, for retries.
    sent: Vec<(u64, ReadingBatch)>,
    /// Sequences skipped on purpose, for out-of-order delivery.
    gaps: Vec<u64>,
}

impl BuoyModel {
    fn expect(&self, seq: u64) -> Expect {
        match self.highest {
            Some(h) if seq <= h && h - seq >= DEDUP_WINDOW => Expect::Stale,
            _ if self.stored.contains(&seq) => Expect::Duplicate,
            _ => Expect::Stored,
        }
    }

    fn next(&self) -> u64 {
        self.highest.map_or(0, |h| h + 1)
    }

    fn record(&mut self, seq: u64, batch: ReadingBatch) {
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        self.stored.insert(seq);
        self.sent.push((seq, batch));
    }
}

#[derive(Default)]
struct Model {
    /// `(buoy, metric, ts) -> (value, quality)`.
    rows: BTreeMap<(&'static str, &'static str, i64), (f64, u8)>,
    buoys: [BuoyModel; 3],
}

impl Model {
    fn expected(&self, filter: &ReadFilter) -> Vec<(String, String, i64, f64, u8)> {
        self.rows
            .iter()
            .filter(|((b, m, ts), _)| {
                filter.start.is_none_or(|s| *ts >= s)
                    && filter.end.is_none_or(|e| *ts < e)
                    && filter.buoys.as_ref().is_none_or(|l| l.iter().any(|x| x == b))
                    && filter.metrics.as_ref().is_none_or(|l| l.iter().any(|x| x == m))
            })
            .map(|((b, m, ts), (v, q))| (b.to_string(), m.to_string(), *ts, *v, *q))
            .collect()
    }

    fn delete(&mut self, buoy: &str, metric: Option<&str>, start: i64, end: i64) {
        self.rows.retain(|(b, m, ts), _| {
            !(*b == buoy && metric.is_none_or(|x| x == *m) && *ts >= start && *ts < end)
        });
    }
}

fn quality_of(config: &EngineConfig, metric: &str, value: f64) -> u8 {
    config.metric_ranges.get(metric).map_or(0, |r| r.quality(value) as u8)
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Run {
    /// Kept for the run: the engine's data directory is removed when it drops.
    _dir: tempfile::TempDir,
    config: EngineConfig,
    engine: Option<Engine>,
    model: Model,
}

impl Run {
    fn engine(&self) -> Result<&Engine, TestCaseError> {
        self.engine.as_ref().ok_or_else(|| TestCaseError::fail("engine not open"))
    }

    fn reopen(&mut self, shutdown: bool) -> Result<(), TestCaseError> {
        if let Some(engine) = self.engine.take() {
            if shutdown {
                check(engine.shutdown(), "shutdown")?;
            }
            drop(engine);
        }
        let engine = check(Engine::open(self.config.clone()), "reopen")?;
        let report = engine.recovery_report();
        prop_assert!(report.torn_tails.is_empty(), "clean close left a torn tail: {report:?}");
        prop_assert!(report.missing_files.is_empty(), "clean close lost files: {report:?}");
        prop_assert_eq!(report.orphan_files_removed, 0, "clean close left orphans: {:?}", report);
        prop_assert_eq!(report.temp_files_removed, 0, "clean close left temp files: {:?}", report);
        self.engine = Some(engine);
        Ok(())
    }

    fn ingest(
        &mut self,
        b: usize,
        seq: u64,
        batch: ReadingBatch,
        expect: Expect,
    ) -> Result<(), TestCaseError> {
        let answer = check(self.engine()?.ingest(&buoy(BUOYS[b]), seq, batch.clone()), "ingest")?.wait();
        match (expect, answer) {
            (Expect::Stored, Ok(IngestOutcome::Stored { .. })) => {
                for ((&id, &ts), &value) in
                    batch.metric_ids().iter().zip(batch.timestamps()).zip(batch.values())
                {
                    let metric = METRICS
                        .iter()
                        .find(|m| **m == batch.metric_names()[usize::from(id)].as_str())
                        .ok_or_else(|| TestCaseError::fail("metric outside the key space"))?;
                    let quality = quality_of(&self.config, metric, value);
                    // Rows in batch order: a later row of the same key replaces an earlier one.
                    self.model.rows.insert((BUOYS[b], metric, ts), (value, quality));
                }
                self.model.buoys[b].record(seq, batch);
            }
            (Expect::Duplicate, Ok(IngestOutcome::Duplicate)) => {}
            (Expect::Stale, Err(Error::Input(InputError::StaleSequence { batch_seq, .. })))
                if batch_seq == seq => {}
            (expect, answer) => {
                return Err(TestCaseError::fail(format!(
                    "buoy {} batch_seq {seq}: expected {expect:?}, engine answered {answer:?}",
                    BUOYS[b]
                )));
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Ingest { buoy: b, seq, rows } => {
                let state = &mut self.model.buoys[*b];
                let seq = match seq {
                    SeqPick::Next => state.next(),
                    SeqPick::Skip(n) => {
                        let first = state.next();
                        state.gaps.extend([first, first + n - 1]);
                        first + n
                    }
                    SeqPick::FillGap(pick) if !state.gaps.is_empty() => {
                        let i = pick.index(state.gaps.len());
                        state.gaps.swap_remove(i)
                    }
                    SeqPick::FillGap(_) => state.next(),
                };
                let expect = state.expect(seq);
                let rows: Vec<(&str, i64, f64)> =
                    rows.iter().map(|&(m, t, v)| (METRICS[m], ts_at(t), f64::from(v) / 1000.0)).collect();
                self.ingest(*b, seq, batch(&rows), expect)
            }
            Op::Resend { buoy: b, pick, other_values } => {
                let state = &self.model.buoys[*b];
                if state.sent.is_empty() {
                    return Ok(());
                }
                let (seq, original) = state.sent[pick.index(state.sent.len())].clone();
                let expect = state.expect(seq);
                let again = if *other_values {
                    let mut builder = ReadingBatchBuilder::with_capacity(original.len());
                    for ((&id, &ts), &v) in
                        original.metric_ids().iter().zip(original.timestamps()).zip(original.values())
                    {
                        check(builder.push(&original.metric_names()[usize::from(id)], ts, v + 1.0), "push")?;
                    }
                    check(builder.finish(), "retry batch")?
                } else {
                    original
                };
                self.ingest(*b, seq, again, expect)
            }
            Op::DeleteKey { buoy: b, metric, ts } => {
                self.delete(*b, Some(*metric), ts_at(*ts), ts_at(*ts) + 1)
            }
            Op::DeleteRange { buoy: b, metric, from, to } => {
                let (start, end) = (ts_at(*from), ts_at(*to));
                // A range that ends before it starts is refused; make it empty instead.
                self.delete(*b, *metric, start, end.max(start))
            }
            Op::Flush => {
                let engine = self.engine()?;
                check(engine.flush(), "flush")?;
                prop_assert!(engine.snapshot().chunks.is_empty(), "rows left in the buffer after a flush");
                self.check_files()
            }
            Op::Compact => {
                check(self.engine()?.compact(), "compact")?;
                // Compaction leaves one flush generation per partition, with at most one file per
                // metric (files are split by value encoding, never by anything else).
                for (start, files) in &self.engine()?.snapshot().view.partitions {
                    let generations: std::collections::BTreeSet<u64> =
                        files.iter().map(|f| f.generation).collect();
                    prop_assert!(
                        generations.len() <= 1,
                        "partition {} has {} generations after compaction",
                        start,
                        generations.len()
                    );
                    let mut metrics: Vec<&str> =
                        files.iter().flat_map(|f| f.metrics.iter().map(|m| &**m)).collect();
                    let total = metrics.len();
                    metrics.sort_unstable();
                    metrics.dedup();
                    prop_assert_eq!(
                        metrics.len(),
                        total,
                        "partition {} has a metric in two files after compaction",
                        start
                    );
                }
                self.check_files()
            }
            Op::Reopen { shutdown } => {
                self.reopen(*shutdown)?;
                self.check_files()
            }
            Op::FlushReopen => {
                check(self.engine()?.flush(), "flush")?;
                self.reopen(false)?;
                self.check_files()
            }
        }
    }

    fn delete(&mut self, b: usize, metric: Option<usize>, start: i64, end: i64) -> Result<(), TestCaseError> {
        let range = DeleteRange {
            buoy: buoy(BUOYS[b]),
            metric: match metric {
                Some(m) => Some(check(MetricName::new(METRICS[m]), "metric")?),
                None => None,
            },
            start,
            end,
        };
        check(check(self.engine()?.delete(&range), "delete")?.wait(), "delete ack")?;
        self.model.delete(BUOYS[b], metric.map(|m| METRICS[m]), start, end);
        Ok(())
    }

    /// Catalog metadata agrees with the partitioning.
    fn check_files(&self) -> Result<(), TestCaseError> {
        let duration = self.config.partition_duration.as_nanos();
        for f in self.engine()?.files() {
            prop_assert!(f.rows > 0, "empty file {}", f.path);
            prop_assert_eq!(f.partition_end - f.partition_start, duration);
            prop_assert!(
                f.partition_start <= f.ts_min && f.ts_min <= f.ts_max && f.ts_max < f.partition_end,
                "file {} holds [{}, {}] outside its partition [{}, {})",
                f.path,
                f.ts_min,
                f.ts_max,
                f.partition_start,
                f.partition_end
            );
        }
        Ok(())
    }

    fn compare(&self, step: usize, op: &Op, filters: &[FilterPick]) -> Result<(), TestCaseError> {
        let engine = self.engine()?;
        let full = read_all(engine);
        let expected = self.model.expected(&ReadFilter::default());
        prop_assert!(
            full == expected,
            "after step {step} ({op:?}): full read\n engine {full:?}\n model  {expected:?}"
        );
        for pick in filters {
            let filter = pick.to_filter();
            let got = rows(engine, &filter);
            let expected = self.model.expected(&filter);
            prop_assert!(
                got == expected,
                "after step {step} ({op:?}): read with {filter:?}\n engine {got:?}\n model  {expected:?}"
            );
        }
        Ok(())
    }
}

fn run_model(lanes: usize, ops: &[(Op, [FilterPick; 2])], eager: bool) -> Result<(), TestCaseError> {
    let dir = check(tempfile::tempdir(), "tempdir")?;
    let mut config = model_config(dir.path(), lanes)?;
    if eager {
        // The background compactor merges every second generation of the open partition and
        // folds closed ones as soon as they are due, racing the reads of every step.
        config.compaction_files_min = 2;
    }
    let engine = check(Engine::open(config.clone()), "open")?;
    register(&engine, &BUOYS);
    let mut run = Run { _dir: dir, config, engine: Some(engine), model: Model::default() };
    for (step, (op, filters)) in ops.iter().enumerate() {
        run.apply(op)?;
        run.compare(step, op, filters)?;
    }
    // Whatever the last step was, a final flush, compaction and reopen change nothing.
    check(run.engine()?.flush(), "final flush")?;
    check(run.engine()?.compact(), "final compact")?;
    run.reopen(true)?;
    run.compare(ops.len(), &Op::Reopen { shutdown: true }, &[])
}

/// `PROPTEST_CASES` from the environment for a longer search, else `default`.
fn cases_or(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(Config {
        cases: cases_or(48),
        // Each shrink step opens an engine; bound the search so a failure reports in minutes.
        max_shrink_iters: 512,
        max_shrink_time: 120_000,
        // Only this file and engine/fuzz are ours to write: no regressions file beside it.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn engine_matches_model(lanes in 1usize..=3, ops in vec((op(), [filter_pick(), filter_pick()]), 1..40)) {
        run_model(lanes, &ops, false)?;
    }

    /// The same with the background compactor at its most eager (it runs in both: closed
    /// partitions are always folded in the background).
    #[test]
    fn engine_matches_model_with_eager_background_compaction(
        lanes in 1usize..=3,
        ops in vec((op(), [filter_pick(), filter_pick()]), 1..40),
    ) {
        run_model(lanes, &ops, true)?;
    }
}

#[test]
fn rewrite_inside_one_batch_reads_the_same_before_and_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(crate::common::config(dir.path())).unwrap();
    register(&engine, &["b"]);
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 1, 8.0), ("ph", 1, 8.5)])).unwrap().wait().unwrap();
    let buffered = read_all(&engine);
    engine.flush().unwrap();
    let flushed = read_all(&engine);
    assert_eq!(buffered, flushed, "a flush changed which row of the batch wins");
    assert_eq!(flushed, vec![("b".to_string(), "ph".to_string(), 1, 8.5, 0)], "the later row wins");
}

/// An acked delete still in the WAL at a restart is replayed, and must then be persisted before
/// the recovery flush trims the segment that held it.
#[test]
fn delete_replayed_from_the_wal_survives_a_second_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Engine::open(crate::common::config(dir.path())).unwrap();
    let engine = open();
    register(&engine, &["b"]);
    engine.ingest(&buoy("b"), 0, batch(&[("ph", 5, 8.0)])).unwrap().wait().unwrap();
    engine.flush().unwrap();
    let delete = DeleteRange { buoy: buoy("b"), metric: None, start: 0, end: 6 };
    engine.delete(&delete).unwrap().wait().unwrap();
    assert_eq!(read_all(&engine), vec![]);
    drop(engine); // the delete is only in the WAL now
    let engine = open();
    assert_eq!(read_all(&engine), vec![], "first restart: the delete is replayed");
    drop(engine);
    let engine = open();
    assert_eq!(read_all(&engine), vec![], "second restart: the acked delete was lost");
}

// ---------------------------------------------------------------------------------------------
// Decoders of untrusted bytes.

/// Segment header: magic, version 1, lane 0 (layout in `engine/WAL.md`).
fn segment_header() -> Vec<u8> {
    let mut h = b"BWAVEWAL".to_vec();
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

const RECORD_HEADER_BYTES: usize = 24;

fn record_entry_count(record: &[u8]) -> u32 {
    record.get(16..20).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A valid record holding a batch entry (sequence `seq`) and a delete entry (`seq + 1`).
fn valid_record(seq: u64, rows: &[(usize, i64, i32)], quality: u8) -> Vec<u8> {
    let mut builder = ReadingBatchBuilder::with_capacity(rows.len());
    for &(m, ts, v) in rows {
        let metric = MetricName::new(METRICS[m % METRICS.len()]).unwrap();
        builder.push(&metric, ts, f64::from(v) / 8.0).unwrap();
    }
    let batch = builder.finish().unwrap();
    let mut entry = encode_batch_entry("b-1", seq * 3, &batch, &vec![quality; batch.len()]);
    patch_sequence(&mut entry, seq);
    let delete = bluewave_engine::internals::DeleteEntry {
        buoy: "b-1".into(),
        metric: seq.is_multiple_of(2).then(|| "ph".to_string()),
        start: rows[0].1,
        end: rows[0].1.saturating_add(1),
    };
    let mut delete_entry = encode_delete_entry(&delete);
    patch_sequence(&mut delete_entry, seq + 1);
    let mut record = Vec::new();
    begin_record(&mut record);
    record.extend_from_slice(&entry);
    record.extend_from_slice(&delete_entry);
    finish_record(&mut record, 2, 0);
    record
}

/// Encodes decoded entries again, when the public encoders can express them (a batch entry must
/// form a valid `ReadingBatch`); `None` otherwise.
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

/// `decode_entries` answers `None` or exactly `count` self-consistent entries that round-trip.
fn check_entries(payload: &[u8], count: u32) -> Result<(), TestCaseError> {
    let Some(entries) = decode_entries(payload, count) else { return Ok(()) };
    prop_assert_eq!(entries.len(), count as usize);
    for e in &entries {
        if let Entry::Batch(b) = e {
            let rows = b.timestamps.len();
            prop_assert!(b.metric_ids.len() == rows && b.values.len() == rows && b.quality.len() == rows);
            prop_assert!(b.metric_ids.iter().all(|&id| usize::from(id) < b.metric_names.len()));
        }
    }
    if let Some(record) = reencode(&entries) {
        let again = decode_entries(&record[RECORD_HEADER_BYTES..], count);
        prop_assert_eq!(again.as_ref(), Some(&entries), "decode(encode(decode(x))) != decode(x)");
    }
    Ok(())
}

/// Writes `segment` as the only segment of a lane directory and reads the lane.
fn read_segment(segment: &[u8]) -> bluewave_engine::Result<Vec<Entry>> {
    let dir = tempfile::tempdir().unwrap();
    let lane = dir.path().join("lane-00");
    std::fs::create_dir_all(&lane).unwrap();
    std::fs::write(lane.join(format!("{:020}.wal", 1)), segment).unwrap();
    let replay = read_lane(&FsStorage, &lane)?;
    let seqs: Vec<u64> = replay.entries.iter().map(Entry::seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "replayed sequences not increasing: {seqs:?}");
    assert_eq!(replay.seq_max, seqs.last().copied().unwrap_or(0));
    Ok(replay.entries)
}

/// A decoded partition is safe to index the way the readers do.
fn check_partition(rows: &PartitionRows) -> Result<(), TestCaseError> {
    let n = rows.len();
    prop_assert!(
        rows.buoy_keys.len() == n
            && rows.metric_keys.len() == n
            && rows.values.len() == n
            && rows.quality.len() == n,
        "column lengths differ"
    );
    prop_assert!(
        rows.buoy_keys.iter().all(|&k| (k as usize) < rows.buoy_names.len()),
        "a buoy key points outside the dictionary of {} names",
        rows.buoy_names.len()
    );
    prop_assert!(
        rows.metric_keys.iter().all(|&k| (k as usize) < rows.metric_names.len()),
        "a metric key points outside the dictionary of {} names",
        rows.metric_names.len()
    );
    Ok(())
}

/// Rows as comparable tuples, independent of dictionary order.
fn resolved(rows: &PartitionRows) -> Vec<(String, String, i64, u64, u8)> {
    let mut out: Vec<_> = (0..rows.len())
        .map(|i| {
            (
                rows.buoy_names[rows.buoy_keys[i] as usize].to_string(),
                rows.metric_names[rows.metric_keys[i] as usize].to_string(),
                rows.timestamps[i],
                rows.values[i].to_bits(),
                rows.quality[i],
            )
        })
        .collect();
    out.sort();
    out
}

/// Sorted rows with one row per key (as the flusher writes them), and their encoding.
fn valid_partition(rows: &[(usize, i64, i32)]) -> (PartitionRows, Vec<u8>) {
    let mut sorted: Vec<(usize, i64, i32)> = rows.to_vec();
    sorted.sort_by_key(|&(m, ts, _)| (m % METRICS.len(), ts));
    sorted.dedup_by_key(|&mut (m, ts, _)| (m % METRICS.len(), ts));
    let rows = PartitionRows {
        buoy_names: vec!["b-1".into()],
        metric_names: METRICS.iter().map(|&m| m.into()).collect(),
        buoy_keys: vec![0; sorted.len()],
        metric_keys: sorted.iter().map(|&(m, _, _)| (m % METRICS.len()) as u32).collect(),
        timestamps: sorted.iter().map(|&(_, ts, _)| ts).collect(),
        values: sorted.iter().map(|&(_, _, v)| f64::from(v) / 8.0).collect(),
        quality: vec![0; sorted.len()],
    };
    let bytes = encode_partition(&rows, &PartitionWriteOptions::default()).unwrap().bytes;
    (rows, bytes)
}

/// Damage done to a valid encoding.
#[derive(Clone, Debug)]
struct Mutation {
    /// `(index, xor)`: flip bits of byte `index % len`.
    flips: Vec<(Index, u8)>,
    /// Keep only a prefix of this many bytes (`index % (len + 1)`).
    truncate: Option<Index>,
}

impl Mutation {
    fn apply(&self, mut bytes: Vec<u8>, from: usize) -> Vec<u8> {
        if bytes.len() > from {
            for (at, xor) in &self.flips {
                let i = from + at.index(bytes.len() - from);
                bytes[i] ^= xor;
            }
        }
        if let Some(keep) = &self.truncate {
            bytes.truncate(keep.index(bytes.len() + 1));
        }
        bytes
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (vec((any::<Index>(), 1u8..=255), 0..4), proptest::option::weighted(0.3, any::<Index>()))
        .prop_map(|(flips, truncate)| Mutation { flips, truncate })
}

proptest! {
    #![proptest_config(Config { cases: cases_or(256), failure_persistence: None, ..Config::default() })]

    #[test]
    fn garbage_never_panics(
        garbage in vec(any::<u8>(), 0..600),
        count in prop_oneof![0u32..4, any::<u32>()],
        seq in 1u64..1_000,
        rows in vec((0usize..2, bluewave_engine::TIMESTAMP_MIN..=bluewave_engine::TIMESTAMP_MAX, any::<i32>()), 1..6),
        quality in 0u8..3,
        damage in mutation(),
        refresh_checksum in any::<bool>(),
    ) {
        // Arbitrary bytes.
        check_entries(&garbage, count)?;
        if let Ok(decoded) = decode_partition(bytes::Bytes::from(garbage.clone())) {
            check_partition(&decoded)?;
        }
        let _ = read_segment(&garbage);
        let mut with_header = segment_header();
        with_header.extend_from_slice(&garbage);
        let _ = read_segment(&with_header);

        // A damaged valid record, its checksum sometimes recomputed so the damage reaches the
        // entry decoder through `read_lane` too.
        let record = valid_record(seq, &rows, quality);
        check_entries(&record[RECORD_HEADER_BYTES..], record_entry_count(&record))?;
        let mut damaged = damage.apply(record.clone(), 0);
        check_entries(damaged.get(RECORD_HEADER_BYTES..).unwrap_or(&[]), record_entry_count(&damaged))?;
        if refresh_checksum && damaged.len() >= RECORD_HEADER_BYTES {
            let count = record_entry_count(&damaged);
            finish_record(&mut damaged, count, 0);
        }
        let mut segment = segment_header();
        segment.extend_from_slice(&damaged);
        let _ = read_segment(&segment);

        // The torn-tail rule: a good record, then a cut-short last one, replays the good one.
        let next = valid_record(seq + 2, &rows, quality);
        let cut = damage.truncate.as_ref().map_or(next.len() / 2, |i| i.index(next.len()));
        let mut segment = segment_header();
        segment.extend_from_slice(&record);
        segment.extend_from_slice(&next[..cut]);
        let replayed = read_segment(&segment);
        prop_assert!(
            replayed.as_ref().is_ok_and(|e| e.len() == 2 && e[0].seq() == seq),
            "a torn last record ({cut} of {} bytes) was not cut off cleanly: {:?}", next.len(), replayed
        );
        // ... and a damaged record followed by a good one is corruption, never skipped.
        if !damage.flips.is_empty() {
            let flipped = Mutation { flips: damage.flips.clone(), truncate: None }.apply(record.clone(), 0);
            if flipped != record {
                let mut segment = segment_header();
                segment.extend_from_slice(&flipped);
                segment.extend_from_slice(&next);
                let replayed = read_segment(&segment);
                prop_assert!(
                    matches!(replayed, Err(Error::Corrupt { .. })),
                    "damage in the middle of a lane was not refused: {:?}", replayed
                );
            }
        }

        // A damaged valid partition file.
        let (original, partition) = valid_partition(&rows);
        let decoded = decode_partition(bytes::Bytes::from(partition.clone()));
        prop_assert!(
            decoded.as_ref().is_ok_and(|d| resolved(d) == resolved(&original)),
            "decode(encode(rows)) != rows: {:?}", decoded
        );
        if let Ok(decoded) = decode_partition(bytes::Bytes::from(damage.apply(partition, 0))) {
            check_partition(&decoded)?;
        }
    }
}
