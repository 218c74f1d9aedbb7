//! Helpers shared by the engine's integration tests.

use bluewave_engine::{BuoyId, BuoyInfo, Engine, EngineConfig, MetricName, ReadFilter, ReadingBatch, Row};
use std::path::Path;

/// A small config: two lanes, small buffers so flushes are cheap.
pub fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.lanes = 2;
    c.flush_buffer_bytes = 1 << 20;
    c.buffer_bytes_max = 4 << 20;
    c.flush_interval_ms = 3_600_000;
    c
}

pub fn buoy(name: &str) -> BuoyId {
    BuoyId::new(name).unwrap()
}

pub fn register(engine: &Engine, names: &[&str]) {
    for n in names {
        engine.register_buoy(BuoyInfo::new(&buoy(n))).unwrap();
    }
}

/// A batch of `(metric, ts, value)` rows.
pub fn batch(rows: &[(&str, i64, f64)]) -> ReadingBatch {
    let mut b = bluewave_engine::ReadingBatchBuilder::with_capacity(rows.len());
    for &(m, ts, v) in rows {
        b.push(&MetricName::new(m).unwrap(), ts, v).unwrap();
    }
    b.finish().unwrap()
}

/// Every row the engine shows, as comparable tuples.
pub fn read_all(engine: &Engine) -> Vec<(String, String, i64, f64, u8)> {
    rows(engine, &ReadFilter::default())
}

pub fn rows(engine: &Engine, filter: &ReadFilter) -> Vec<(String, String, i64, f64, u8)> {
    engine
        .snapshot()
        .read(engine.storage().as_ref(), filter)
        .unwrap()
        .into_iter()
        .map(|Row { buoy, metric, ts, value, quality }| {
            (buoy.to_string(), metric.to_string(), ts, value, quality)
        })
        .collect()
}
