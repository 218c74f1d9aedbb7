//! The audit log as a file on disk: the hash chain verifies, and every way of tampering with a
//! complete entry (edit, delete, reorder, truncate in the middle) is reported at the first
//! broken line; a torn last line from a crash is cut on open and never a complete entry;
//! paging walks newest first; and the entry codec round-trips any content (property test).

use std::fs::OpenOptions;
use std::io::Write;

use bluewave_web::{
    AUDIT_PAGE_ENTRIES_MAX, AuditEntry, AuditError, AuditEvent, AuditLog, VerifyReport, verify_file,
};
use proptest::prelude::*;
use serde_json::json;

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(format!("user:{i:032x}"), "test.action", format!("thing:{i}"), "ok")
        .with_details(json!({ "i": i, "note": "quote \" newline \n unicode é" }))
}

fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = AuditLog::open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    for i in 1..=n {
        assert_eq!(log.append(event(i)).unwrap().seq, i);
    }
    (dir, log)
}

fn lines(log: &AuditLog) -> Vec<String> {
    std::fs::read_to_string(log.path()).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(log: &AuditLog, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(log.path(), text).unwrap();
}

fn broken_line(log: &AuditLog) -> (u64, String) {
    match verify_file(log.path()).unwrap() {
        VerifyReport::Broken { line, reason, .. } => (line, reason),
        VerifyReport::Intact { .. } => panic!("tampering not detected"),
    }
}

#[test]
fn intact_chain_verifies() {
    let (_dir, log) = log_with(20);
    let VerifyReport::Intact { entries, head_hash } = log.verify().unwrap() else { panic!("broken") };
    assert_eq!(entries, 20);
    assert_eq!(head_hash, AuditEntry::decode_line(lines(&log).last().unwrap()).unwrap().hash);
    // The chain links: each prev is the previous hash.
    let entries: Vec<AuditEntry> = lines(&log).iter().map(|l| AuditEntry::decode_line(l).unwrap()).collect();
    assert_eq!(entries[0].prev, "0".repeat(64));
    for w in entries.windows(2) {
        assert_eq!(w[1].prev, w[0].hash);
    }
    // An empty log is intact too.
    let (_d, empty) = log_with(0);
    assert!(matches!(empty.verify().unwrap(), VerifyReport::Intact { entries: 0, .. }));
}

#[test]
fn edited_entry_is_detected() {
    let (_dir, log) = log_with(5);
    let mut l = lines(&log);
    l[2] = l[2].replace(r#""outcome":"ok""#, r#""outcome":"denied""#);
    write_lines(&log, &l);
    let (line, reason) = broken_line(&log);
    assert_eq!(line, 3);
    assert!(reason.contains("edited"), "{reason}");
    // Re-hashing the edited entry does not help: the next entry's prev no longer matches.
    let mut entry = AuditEntry::decode_line(&l[2]).unwrap();
    entry.hash = entry.compute_hash();
    l[2] = entry.encode_line();
    write_lines(&log, &l);
    assert_eq!(broken_line(&log).0, 4);
}

#[test]
fn deleted_entry_is_detected() {
    let (_dir, log) = log_with(5);
    let mut l = lines(&log);
    l.remove(1);
    write_lines(&log, &l);
    let (line, reason) = broken_line(&log);
    assert_eq!(line, 2);
    assert!(reason.contains("deleted or moved"), "{reason}");
}

#[test]
fn reordered_entries_are_detected() {
    let (_dir, log) = log_with(5);
    let mut l = lines(&log);
    l.swap(2, 3);
    write_lines(&log, &l);
    assert_eq!(broken_line(&log).0, 3);
}

#[test]
fn complete_but_corrupt_line_is_kept_and_blocks_appends() {
    let (dir, log) = log_with(3);
    let mut l = lines(&log);
    l[1] = "{not json".into();
    write_lines(&log, &l);
    let len_before = std::fs::metadata(log.path()).unwrap().len();
    drop(log);
    let (log, report) = AuditLog::open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(std::fs::metadata(log.path()).unwrap().len(), len_before, "a complete line is never cut");
    assert!(matches!(log.append(event(9)), Err(AuditError::Corrupt { line: 2, .. })));
    assert_eq!(broken_line(&log).0, 2);
}

#[test]
fn torn_tail_is_cut_on_open_and_the_chain_continues() {
    let (dir, log) = log_with(4);
    let full = std::fs::read(log.path()).unwrap();
    // A crash in the middle of appending entry 5: part of its line, no newline.
    let next = AuditEntry::decode_line(&lines(&log)[3]).unwrap().encode_line();
    let torn = &next.as_bytes()[..next.len() / 2];
    OpenOptions::new().append(true).open(log.path()).unwrap().write_all(torn).unwrap();
    assert!(matches!(verify_file(log.path()).unwrap(), VerifyReport::Broken { line: 5, .. }));
    drop(log);
    let (log, report) = AuditLog::open(dir.path()).unwrap();
    assert_eq!(report.torn_tail_bytes, torn.len() as u64);
    assert_eq!(std::fs::read(log.path()).unwrap(), full);
    assert_eq!(log.append(event(5)).unwrap().seq, 5);
    assert!(matches!(log.verify().unwrap(), VerifyReport::Intact { entries: 5, .. }));
}

#[test]
fn pages_walk_newest_first() {
    let (_dir, log) = log_with(25);
    let seqs = |page: &bluewave_web::AuditPage| page.entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let p1 = log.page(None, 10).unwrap();
    assert_eq!(seqs(&p1), (16..=25).rev().collect::<Vec<_>>());
    assert_eq!(p1.next_before_seq, Some(16));
    let p2 = log.page(p1.next_before_seq, 10).unwrap();
    assert_eq!(seqs(&p2), (6..=15).rev().collect::<Vec<_>>());
    let p3 = log.page(p2.next_before_seq, 10).unwrap();
    assert_eq!(seqs(&p3), (1..=5).rev().collect::<Vec<_>>());
    assert_eq!(p3.next_before_seq, None);
    assert!(log.page(Some(1), 10).unwrap().entries.is_empty());
    assert_eq!(seqs(&log.page(Some(1_000), 2).unwrap()), [25, 24]);
    assert!(matches!(log.page(None, 0), Err(AuditError::BadPageSize { .. })));
    assert!(matches!(log.page(None, AUDIT_PAGE_ENTRIES_MAX + 1), Err(AuditError::BadPageSize { .. })));
    // Pages read back exactly what was appended.
    assert_eq!(p3.entries.last().unwrap().details["note"], "quote \" newline \n unicode é");
}

#[test]
fn oversized_entries_are_refused() {
    let (_dir, log) = log_with(0);
    let big = AuditEvent::new("system", "x", "-", "ok").with_details(json!({ "blob": "x".repeat(5_000) }));
    assert!(matches!(log.append(big), Err(AuditError::EntryTooLarge { field: "details", .. })));
    let long_actor = AuditEvent::new("a".repeat(600), "x", "-", "ok");
    assert!(matches!(log.append(long_actor), Err(AuditError::EntryTooLarge { field: "actor", .. })));
    assert!(log.is_empty().unwrap());
}

fn details_strategy() -> impl Strategy<Value = serde_json::Value> {
    prop::collection::btree_map(
        "[a-z_]{1,8}",
        prop_oneof![
            any::<i64>().prop_map(|v| json!(v)),
            any::<String>().prop_map(|v| json!(v)),
            any::<bool>().prop_map(|v| json!(v))
        ],
        0..6,
    )
    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

proptest! {
    #[test]
    fn entry_codec_round_trips(
        seq in 1u64..u64::MAX,
        ts_ms in any::<u64>(),
        actor in any::<String>(),
        action in any::<String>(),
        target in any::<String>(),
        outcome in any::<String>(),
        details in details_strategy(),
        prev in "[0-9a-f]{64}",
    ) {
        let mut entry = AuditEntry { v: 1, seq, ts_ms, actor, action, target, outcome, details, prev, hash: String::new() };
        entry.hash = entry.compute_hash();
        let line = entry.encode_line();
        prop_assert!(!line.contains('\n'), "one entry is one line");
        let back = AuditEntry::decode_line(&line).unwrap();
        prop_assert_eq!(&back, &entry);
        prop_assert_eq!(back.compute_hash(), entry.hash.clone());
        // Changing any one field changes the hash.
        let mut changed = entry.clone();
        changed.seq ^= 1;
        prop_assert_ne!(changed.compute_hash(), entry.hash.clone());
        let mut changed = entry.clone();
        changed.actor.push('x');
        prop_assert_ne!(changed.compute_hash(), entry.hash);
    }

    #[test]
    fn garbage_lines_never_panic_the_decoder(line in any::<String>()) {
        let _ = AuditEntry::decode_line(&line);
    }
}
