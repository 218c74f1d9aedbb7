//! Proves "ack means durable" against a real `kill -9`: a child process (this test binary, running
//! only `kill9::child_ingest`) ingests from four buoys on their own threads, flushing and
//! compacting as its small buffer fills, and prints `ACK <buoy> <batch_seq>` after each ticket
//! resolves. The parent kills it with SIGKILL at a random-ish ack count, reopens the engine and
//! checks: every acked batch is there whole, with its exact values, stored exactly once; per
//! buoy, the batches present are exactly the acked ones plus at most the one in flight; nothing
//! else is there; acked batches retried are answered `Duplicate`. Three rounds on one data dir,
//! each child continuing with new batch sequences.
//!
//! The child test passes at once unless `BLUEWAVE_KILL9_DIR` is set, so it is harmless in a
//! normal run. Every wait is bounded: the child stops by itself after `CHILD_RUN_MAX`, and a
//! watchdog kills it after `CHILD_WATCHDOG`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bluewave_engine::{BusyReason, Engine, EngineConfig, Error, IngestOutcome, NANOS_PER_SECOND};

use crate::common::{RowMap, assert_stored_once, batch, buoy, read_map, register};

const DIR_ENV: &str = "BLUEWAVE_KILL9_DIR";
const RUN_ENV: &str = "BLUEWAVE_KILL9_RUN";
const BUOYS: [&str; 4] = ["kb-1", "kb-2", "kb-3", "kb-4"];
const METRICS: [(&str, i64); 4] =
    [("ph", 7_000), ("salinity_psu", 34_000), ("water_temp_c", 10_000), ("nitrate_mg_l", 1_000)];
/// Readings per batch (four per metric).
const ROWS: i64 = 16;
/// Batch sequences of run `r` start at `r * SEQ_STRIDE`.
const SEQ_STRIDE: u64 = 1_000_000;
/// Batches one child thread sends at most.
const CHILD_BATCHES_MAX: u64 = 50_000;
/// The child stops by itself after this long.
const CHILD_RUN_MAX: Duration = Duration::from_secs(20);
/// The parent kills a child that is still alive after this long.
const CHILD_WATCHDOG: Duration = Duration::from_secs(60);
const ROUNDS: u64 = 3;
/// 2026-06-01T13:00:00Z.
const T0: i64 = 1_780_318_800 * NANOS_PER_SECOND;

/// Small buffers and segments, so the child flushes, trims its WAL and compacts often.
fn kill9_config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.lanes = 2;
    c.flush_buffer_bytes = 48 << 10;
    c.buffer_bytes_max = 4 << 20;
    c.wal_segment_bytes = 16 << 10;
    c.flush_interval_ms = 3_600_000;
    c
}

/// Reading `k` of batch `batch_seq` of buoy number `b`: metric, timestamp, value. Keys never
/// repeat across batches, and values are decimals at sensor precision inside the metric's range.
fn reading(b: usize, batch_seq: u64, k: i64) -> (&'static str, i64, f64) {
    let (metric, base) = METRICS[(k % 4) as usize];
    let ts = T0 + (batch_seq as i64 * (ROWS / 4) + k / 4) * NANOS_PER_SECOND;
    let milli = base + ((batch_seq as i64 * 31 + k * 7 + b as i64 * 101) % 1_000);
    (metric, ts, milli as f64 / 1_000.0)
}

fn batch_rows(b: usize, batch_seq: u64) -> Vec<(&'static str, i64, f64)> {
    (0..ROWS).map(|k| reading(b, batch_seq, k)).collect()
}

/// Which batch a stored row belongs to: (buoy number, batch_seq, k).
fn batch_of(buoy_name: &str, metric: &str, ts: i64) -> Option<(usize, u64, i64)> {
    let b = BUOYS.iter().position(|&n| n == buoy_name)?;
    let m = METRICS.iter().position(|&(n, _)| n == metric)? as i64;
    let second = (ts - T0).checked_div(NANOS_PER_SECOND)?;
    if (ts - T0) % NANOS_PER_SECOND != 0 || second < 0 {
        return None;
    }
    let batch_seq = (second / (ROWS / 4)) as u64;
    let k = (second % (ROWS / 4)) * 4 + m;
    Some((b, batch_seq, k))
}

/// The child: ingests until killed (or for `CHILD_RUN_MAX`), printing one line per ack.
#[test]
fn child_ingest() {
    let Ok(dir) = std::env::var(DIR_ENV) else { return };
    let run: u64 = std::env::var(RUN_ENV).unwrap().parse().unwrap();
    let engine = Engine::open(kill9_config(Path::new(&dir))).unwrap();
    register(&engine, &BUOYS);
    let deadline = Instant::now() + CHILD_RUN_MAX;
    let threads: Vec<_> = BUOYS
        .iter()
        .enumerate()
        .map(|(b, &name)| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let id = buoy(name);
                for i in 0..CHILD_BATCHES_MAX {
                    if Instant::now() >= deadline {
                        return;
                    }
                    let batch_seq = run * SEQ_STRIDE + i;
                    loop {
                        match engine.ingest(&id, batch_seq, batch(&batch_rows(b, batch_seq))) {
                            Ok(ticket) => {
                                let outcome = ticket.wait().unwrap();
                                assert!(matches!(outcome, IngestOutcome::Stored { .. }), "{outcome:?}");
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "ACK {name} {batch_seq}").unwrap();
                                out.flush().unwrap();
                                break;
                            }
                            Err(Error::Busy {
                                reason: BusyReason::BufferFull | BusyReason::QueueFull,
                                retry_after_ms,
                            }) => {
                                std::thread::sleep(Duration::from_millis(retry_after_ms));
                            }
                            Err(e) => panic!("{name}/{batch_seq}: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    engine.shutdown().unwrap();
}

/// Runs one child until it has printed `kill_after` acks, kills it with SIGKILL, and returns the
/// acks it printed (including those read after the kill).
fn run_child_and_kill(dir: &Path, run: u64, kill_after: usize) -> BTreeSet<(String, u64)> {
    let stderr_path = dir.join(format!("child-{run}.stderr"));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["kill9::child_ingest", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir.join("data"))
        .env(RUN_ENV, run.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(CHILD_WATCHDOG).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acks = BTreeSet::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // A line cut by the kill has no newline: that ack was never fully reported. The first
        // ack shares its line with libtest's `test kill9::child_ingest ... `.
        let Some(ack) = line.strip_suffix('\n').and_then(|l| l.find("ACK ").map(|at| &l[at + 4..])) else {
            continue;
        };
        let (name, seq) = ack.split_once(' ').unwrap();
        assert!(acks.insert((name.to_string(), seq.parse::<u64>().unwrap())), "ack printed twice: {ack}");
        if !killed && acks.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let _ = done_tx.send(());
    watchdog.join().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        killed,
        "run {run}: the child ended after {} acks, before the kill at {kill_after}:\n{stderr}",
        acks.len()
    );
    assert_eq!(
        status.signal(),
        Some(9),
        "run {run}: the child was not killed by SIGKILL ({status:?}):\n{stderr}"
    );
    acks
}

#[test]
fn kill9_loses_no_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Batches found stored after earlier rounds: they must stay exactly so.
    let mut stored: BTreeSet<(String, u64)> = BTreeSet::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    for run in 0..ROUNDS {
        let kill_after = 150 + (seed / (run as usize + 1)) % 350;
        let acks = run_child_and_kill(dir.path(), run, kill_after);
        let what = format!("run {run} (seed {seed}, killed after {kill_after} acks, {} printed)", acks.len());

        let engine =
            Engine::open(kill9_config(&data)).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        assert_eq!(engine.recovery_report().missing_files, Vec::<String>::new(), "{what}");
        // Group what is there by batch; every row must be one the child wrote.
        let mut present: BTreeMap<(String, u64), i64> = BTreeMap::new();
        for ((b, m, ts), (value, quality)) in read_map(&engine) {
            let (bi, batch_seq, k) =
                batch_of(&b, &m, ts).unwrap_or_else(|| panic!("{what}: stray row {b} {m} {ts}"));
            assert_eq!(
                (value, quality),
                (reading(bi, batch_seq, k).2, 0),
                "{what}: {b}/{batch_seq} reading {k}"
            );
            *present.entry((b, batch_seq)).or_default() += 1;
        }
        for ((b, batch_seq), rows) in &present {
            assert_eq!(*rows, ROWS, "{what}: batch {b}/{batch_seq} is there in part");
        }
        let present: BTreeSet<(String, u64)> = present.into_keys().collect();
        // Earlier rounds' batches are unchanged; this round's are the acked ones, a prefix per
        // buoy, plus at most the next one (stored, killed before its ack was printed).
        let earlier: BTreeSet<_> = present.iter().filter(|(_, s)| *s < run * SEQ_STRIDE).cloned().collect();
        assert_eq!(earlier, stored, "{what}: batches of earlier rounds changed");
        for name in BUOYS {
            let acked: Vec<u64> = acks.iter().filter(|(b, _)| b == name).map(|(_, s)| *s).collect();
            let first = run * SEQ_STRIDE;
            assert_eq!(
                acked,
                (first..first + acked.len() as u64).collect::<Vec<_>>(),
                "{what}: acks of {name}"
            );
            let now: Vec<u64> =
                present.iter().filter(|(b, s)| b == name && *s >= first).map(|(_, s)| *s).collect();
            let in_flight = first + acked.len() as u64;
            assert!(
                now == acked || now == [acked.as_slice(), &[in_flight]].concat(),
                "{what}: {name} has batches {now:?} stored but {acked:?} acked"
            );
        }
        // Retries of acked batches are recognised.
        for name in BUOYS {
            if let Some((_, last)) = acks.iter().rfind(|(b, _)| b == name) {
                let b = BUOYS.iter().position(|&n| n == name).unwrap();
                let retry =
                    engine.ingest(&buoy(name), *last, batch(&batch_rows(b, *last))).unwrap().wait().unwrap();
                assert_eq!(retry, IngestOutcome::Duplicate, "{what}: retry of {name}/{last}");
            }
        }
        let rows: RowMap = assert_stored_once(&engine);
        assert_eq!(rows.len() as i64, present.len() as i64 * ROWS, "{what}");
        engine.shutdown().unwrap();
        drop(engine);
        stored = present;
    }
}
