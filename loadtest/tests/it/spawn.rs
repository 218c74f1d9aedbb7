//! Proves the spawn helpers that need no server: readiness lines as `serve` prints them, free
//! loopback ports, and a missing binary reported as a spawn error (never a hang).

use std::path::PathBuf;

use bluewave_loadtest::Error;
use bluewave_loadtest::spawn::{ServerProcess, SpawnConfig, free_loopback_ports, parse_ready_line};

#[test]
fn readiness_lines_are_parsed() {
    let (mut quic, mut https, mut pin) = (None, None, None);
    let hex = "ab".repeat(32);
    for line in [
        "generated a self-signed certificate in /x/tls".to_owned(),
        "HTTPS API listening on https://127.0.0.1:8443 (docs at /api/docs)".to_owned(),
        "QUIC ingest listening on 127.0.0.1:4433 (ALPN bluewave/1)".to_owned(),
        format!("certificate SHA-256 pin: {hex}"),
    ] {
        parse_ready_line(&line, &mut quic, &mut https, &mut pin);
    }
    assert_eq!(quic, Some("127.0.0.1:4433".parse().unwrap()));
    assert_eq!(https, Some("127.0.0.1:8443".parse().unwrap()));
    assert_eq!(pin, Some(hex));
    let mut short_pin = None;
    parse_ready_line("certificate SHA-256 pin: abcd", &mut quic, &mut https, &mut short_pin);
    assert_eq!(short_pin, None);
}

#[test]
fn free_ports_are_on_loopback() {
    let (quic, https) = free_loopback_ports().unwrap();
    assert!(quic.ip().is_loopback() && https.ip().is_loopback());
    assert!(quic.port() > 0 && https.port() > 0);
}

#[test]
fn a_missing_binary_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = SpawnConfig::new(PathBuf::from("/nonexistent/bluewave"), dir.path().join("data")).unwrap();
    assert!(matches!(ServerProcess::start(config), Err(Error::Spawn(_))));
}
