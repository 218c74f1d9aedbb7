//! Offline account commands of the `bluewave` binary against a real data dir: `keys rotate`
//! makes a new signing key current and keeps the old one for verification, audited as `cli`;
//! against a server that holds the accounts store it stops without changing anything.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bluewave(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bluewave"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn key_files(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ed25519"))
        .collect();
    names.sort();
    names
}

#[test]
fn keys_rotate_makes_a_new_current_key_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let stdout = String::from_utf8_lossy(&first.stdout);
    let kid = stdout.split_whitespace().nth(3).unwrap().to_owned();
    assert!(stdout.starts_with("new signing key "), "{stdout}");
    // The first key (made at open) and the new current one.
    let keys = key_files(dir.path());
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.contains(&format!("{kid}.ed25519")), "{keys:?}");

    let second = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(second.status.success());
    assert_eq!(key_files(dir.path()).len(), 3);

    let audit = std::fs::read_to_string(dir.path().join("audit").join("audit.jsonl")).unwrap();
    let rotations: Vec<&str> = audit.lines().filter(|l| l.contains("\"keys.rotate\"")).collect();
    assert_eq!(rotations.len(), 2, "{audit}");
    assert!(rotations.iter().all(|l| l.contains("\"actor\":\"cli\"")), "{audit}");
    assert!(rotations[0].contains(&format!("\"key:{kid}\"")), "{}", rotations[0]);

    // While another process holds the accounts store (a running server), nothing changes.
    let held = bluewave_web::AuthService::open(dir.path(), bluewave_web::AuthConfig::default()).unwrap();
    let refused = bluewave(dir.path(), &["keys", "rotate"]);
    assert!(!refused.status.success());
    assert_eq!(key_files(dir.path()).len(), 3);
    drop(held);
}
