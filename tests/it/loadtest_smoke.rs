//! Proves the load generator end to end against a real `bluewave serve` child (spawned on a
//! temporary data dir and loopback ports): an ingest run stores what it reports and writes a
//! report that parses back; a durability run with SIGKILLs finds every acked reading stored
//! exactly once through the HTTPS API; a shop run signs browsers in (with and without MFA)
//! and runs every session operation without a failure; a line-protocol run's bodies are acked
//! whole and stored. Small fleets, a few seconds each; every wait is bounded
//! and the child is killed in `Drop`, so a failure cannot hang the suite.

use std::path::PathBuf;
use std::time::Duration;

use bluewave_loadtest::ingest::IngestConfig;
use bluewave_loadtest::lines::LineConfig;
use bluewave_loadtest::modes::{self, RunInfo};
use bluewave_loadtest::report::Report;
use bluewave_loadtest::shop::{SHOP_MIX_DEFAULT, ShopConfig, ShopMix};
use bluewave_loadtest::target::TargetOptions;

/// Upper bound of one smoke run (debug build, shared 2-core machine).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn options() -> TargetOptions {
    TargetOptions::spawn_with(PathBuf::from(env!("CARGO_BIN_EXE_bluewave")))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async { tokio::time::timeout(RUN_TIMEOUT, future).await.expect("smoke run timed out") })
}

fn info() -> RunInfo {
    RunInfo { command: "smoke".into(), commit: None }
}

#[test]
fn ingest_run_reports_what_it_stored_and_the_report_parses() {
    let config = IngestConfig {
        buoys: 3,
        batch_readings: 200,
        window: 2,
        rate_per_s: 6_000.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        ..IngestConfig::default()
    };
    let report = block_on(modes::ingest(&options(), config, &info())).unwrap();
    let ingest = report.ingest.clone().unwrap();
    assert_eq!((ingest.buoys, ingest.batch_readings, ingest.rejected), (3, 200, 0));
    assert!(ingest.readings_acked >= 200, "{ingest:?}");
    assert_eq!(ingest.readings_acked, ingest.batches_acked * 200);
    assert_eq!(ingest.ack_latency.count, ingest.batches_acked);
    assert!(ingest.disk_bytes.unwrap() > 0 && ingest.disk_bytes_per_reading.unwrap() > 0.0);
    let server = report.server.clone().unwrap();
    assert!(server.peak_rss_bytes > 0);
    assert!(!report.timeline.is_empty());
    // The server's compaction debt was sampled from /metrics while the fleet sent.
    let debt = report.compaction_debt_figures.clone().unwrap();
    assert_eq!(debt.samples, report.compaction_debt.len() as u64);
    assert!(report.compaction_debt.iter().all(|p| p.t_s >= 0.0 && p.memory_used_bytes > 0));
    assert!(report.table().contains("compaction debt"));
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    assert!(report.table().contains("readings/s"));
}

#[test]
fn durability_run_with_kills_loses_and_doubles_nothing() {
    let config = IngestConfig {
        buoys: 3,
        batch_readings: 100,
        window: 4,
        rate_per_s: 9_000.0,
        backoff_max_ms: 500,
        idle_timeout_ms: 1_000,
        ..IngestConfig::default()
    };
    let report = block_on(modes::durability(&options(), config, 3, 7, (300, 700), &info())).unwrap();
    let durability = report.durability.clone().unwrap();
    let check = &durability.check;
    assert!(check.passed(), "{}", check.summary());
    assert_eq!((check.lost, check.duplicated, check.altered, check.unexpected), (0, 0, 0, 0));
    assert!(check.acked >= 300, "{}", check.summary());
    assert!(check.stored_rows >= check.acked);
    assert_eq!(durability.kills, 3);
    assert_eq!(durability.kill_at_ms.len(), 2);
    let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

#[test]
fn shop_run_signs_in_with_and_without_mfa_and_every_session_operation_succeeds() {
    let seed = IngestConfig {
        buoys: 2,
        batch_readings: 100,
        rate_per_s: 4_000.0,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        ..IngestConfig::default()
    };
    let config = ShopConfig {
        sessions: 3,
        think_ms: 20,
        login_workers: 2,
        login_duration: Duration::from_secs(1),
        mfa_users: 4,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        mix: ShopMix::parse(SHOP_MIX_DEFAULT).unwrap(),
        seed: 3,
    };
    let report = block_on(modes::shop(&options(), seed, config, &info())).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let names: Vec<&str> = report.queries.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        ["login", "login_mfa", "catalogue", "product", "account", "dashboard", "checkout", "all_pages"]
    );
    for figures in &report.queries {
        assert_eq!(figures.failed, 0, "{figures:?}");
        assert_eq!(figures.latency.count, figures.completed, "{figures:?}");
    }
    let by_name = |name: &str| report.queries.iter().find(|q| q.name == name).unwrap();
    assert!(by_name("login").completed >= 1);
    assert!(by_name("login_mfa").completed >= 1);
    let page_views: u64 =
        ["catalogue", "product", "account", "dashboard"].iter().map(|n| by_name(n).completed).sum();
    assert_eq!(by_name("all_pages").completed, page_views);
    let shop = report.shop.clone().unwrap();
    assert_eq!((shop.sessions, shop.mfa_users, shop.login_workers), (3, 4, 2));
    let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

#[test]
fn line_protocol_run_posts_whole_bodies_that_are_acked_and_stored() {
    let fleet = IngestConfig { buoys: 4, metrics: 3, ..IngestConfig::default() };
    let config = LineConfig {
        senders: 2,
        lines_per_body: 500,
        rate_per_s: 30_000.0,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(300),
    };
    let report = block_on(modes::line_protocol(&options(), fleet, config, &info())).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let ingest = report.ingest.clone().unwrap();
    assert_eq!((ingest.buoys, ingest.batch_readings, ingest.rejected), (4, 1_500, 0));
    assert!(ingest.batches_acked >= 1, "{ingest:?}");
    assert_eq!(ingest.readings_acked, ingest.batches_acked * 1_500);
    assert_eq!(ingest.ack_latency.count, ingest.batches_acked);
    assert!(ingest.disk_bytes.unwrap() > 0 && ingest.disk_bytes_per_reading.unwrap() > 0.0);
    assert!(report.server.clone().unwrap().peak_rss_bytes > 0);
    let back: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}
