//! Proves that the fleet and analyst knobs are checked against their bounds before a run.

use std::time::Duration;

use bluewave_loadtest::Error;
use bluewave_loadtest::analysts::QueryConfig;
use bluewave_loadtest::ingest::IngestConfig;
use bluewave_loadtest::mix::QueryMix;

#[test]
fn the_default_fleet_is_valid() {
    IngestConfig::default().validate().unwrap();
    let w =
        IngestConfig { metrics: 3, sample_interval_ms: 250, ..IngestConfig::default() }.workload().unwrap();
    assert_eq!((w.config().metrics, w.config().sample_interval_ns), (3, 250_000_000));
}

#[test]
fn out_of_bounds_knobs_are_config_errors() {
    let bad = [
        IngestConfig { buoys: 0, ..IngestConfig::default() },
        IngestConfig { buoys: 100_001, ..IngestConfig::default() },
        IngestConfig { metrics: 9, ..IngestConfig::default() },
        IngestConfig { batch_readings: 0, ..IngestConfig::default() },
        IngestConfig { batch_readings: 65_537, ..IngestConfig::default() },
        IngestConfig { window: 0, ..IngestConfig::default() },
        IngestConfig { window: 4_096, ..IngestConfig::default() },
        IngestConfig { rate_per_s: -1.0, ..IngestConfig::default() },
        IngestConfig { rate_per_s: f64::INFINITY, ..IngestConfig::default() },
        IngestConfig { duration: Duration::ZERO, ..IngestConfig::default() },
        IngestConfig { duration: Duration::from_secs(90_000), ..IngestConfig::default() },
        IngestConfig { clients_per_endpoint: 0, ..IngestConfig::default() },
        IngestConfig { first_batch_seq: 0, ..IngestConfig::default() },
        IngestConfig { sample_interval_ms: 0, ..IngestConfig::default() },
        IngestConfig { backoff_max_ms: 1, ..IngestConfig::default() },
    ];
    for config in bad {
        assert!(matches!(config.validate(), Err(Error::Config(_))), "{config:?} was accepted");
    }
}

#[test]
fn analyst_knobs_are_checked() {
    let good = QueryConfig {
        analysts: 16,
        rate_per_s: 0.0,
        mix: QueryMix::parse("raw_range=1").unwrap(),
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        seed: 1,
    };
    good.validate().unwrap();
    for config in [
        QueryConfig { analysts: 0, ..good.clone() },
        QueryConfig { analysts: 1_001, ..good.clone() },
        QueryConfig { rate_per_s: f64::NAN, ..good.clone() },
        QueryConfig { duration: Duration::ZERO, ..good.clone() },
    ] {
        assert!(matches!(config.validate(), Err(Error::Config(_))), "{config:?} was accepted");
    }
}
