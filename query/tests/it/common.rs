//! Shared fixture: an engine in a temp dir with registered buoys, plus a query service.

use std::sync::Arc;

use bluewave_engine::{BuoyId, BuoyInfo, Durability, Engine, EngineConfig, MetricName, ReadingBatch};
use bluewave_query::datafusion::arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt8Array,
};
use bluewave_query::datafusion::arrow::datatypes::Int64Type;
use bluewave_query::{AccessPolicy, QueryConfig, QueryService, Result};

/// 2026-11-01T00:00:00Z in ns.
pub const T0: i64 = 1_793_491_200 * 1_000_000_000;
/// One second in ns.
pub const SEC: i64 = 1_000_000_000;
/// One hour in ns.
pub const HOUR: i64 = 3_600 * SEC;
/// One day in ns.
pub const DAY: i64 = 24 * HOUR;

/// A row of `readings`: (buoy, metric, ts, value, quality).
pub type Row = (String, String, i64, f64, u8);

pub struct Fixture {
    pub engine: Arc<Engine>,
    pub service: QueryService,
    _dir: tempfile::TempDir,
}

pub fn fixture(buoys: &[&str]) -> Fixture {
    fixture_with(buoys, QueryConfig::default())
}

pub fn fixture_with(buoys: &[&str], config: QueryConfig) -> Fixture {
    fixture_configured(buoys, config, |_| {})
}

/// A fixture whose engine settings `tune` adjusts (after the test defaults).
pub fn fixture_configured(
    buoys: &[&str],
    config: QueryConfig,
    tune: impl FnOnce(&mut EngineConfig),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut engine_config = EngineConfig::new(dir.path());
    engine_config.durability = Durability::Relaxed;
    engine_config.lanes = 2;
    engine_config.flush_interval_ms = 3_600_000;
    tune(&mut engine_config);
    let engine = Arc::new(Engine::open(engine_config).unwrap());
    for b in buoys {
        engine.register_buoy(BuoyInfo::new(&BuoyId::new(b).unwrap())).unwrap();
    }
    let service = QueryService::new(engine.clone(), config).unwrap();
    Fixture { engine, service, _dir: dir }
}

impl Fixture {
    /// Ingests one batch of `(metric, ts, value)` for `buoy` and waits for the ack.
    pub fn ingest(&self, buoy: &str, seq: u64, rows: &[(&str, i64, f64)]) {
        let mut metrics: Vec<MetricName> = Vec::new();
        let mut ids = Vec::new();
        for (m, _, _) in rows {
            let pos = match metrics.iter().position(|x| x.as_str() == *m) {
                Some(p) => p,
                None => {
                    metrics.push(MetricName::new(m).unwrap());
                    metrics.len() - 1
                }
            };
            ids.push(pos as u16);
        }
        let ts = rows.iter().map(|r| r.1).collect();
        let values = rows.iter().map(|r| r.2).collect();
        let batch = ReadingBatch::new(metrics, ts, ids, values).unwrap();
        self.engine.ingest(&BuoyId::new(buoy).unwrap(), seq, batch).unwrap().wait().unwrap();
    }

    pub fn sql(&self, text: &str, policy: &AccessPolicy) -> Result<Vec<RecordBatch>> {
        self.service
            .block_on(async { self.service.sql(text, policy).await?.collect_batches().await })
            .unwrap()
    }

    /// Runs a query returning `buoy_id, metric, ts, value, quality`.
    pub fn sql_rows(&self, text: &str, policy: &AccessPolicy) -> Result<Vec<Row>> {
        Ok(rows(&self.sql(text, policy)?))
    }

    /// A single `count(*)`-like i64 answer.
    pub fn sql_count(&self, text: &str, policy: &AccessPolicy) -> Result<i64> {
        let batches = self.sql(text, policy)?;
        let mut total = 0;
        for b in &batches {
            let c = b.column(0).as_primitive::<Int64Type>();
            for i in 0..c.len() {
                total += c.value(i);
            }
        }
        Ok(total)
    }
}

/// Rows of batches shaped like `readings`.
pub fn rows(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let buoy = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let metric = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let ts = b.column(2).as_any().downcast_ref::<TimestampNanosecondArray>().unwrap();
        let value = b.column(3).as_any().downcast_ref::<Float64Array>().unwrap();
        let quality = b.column(4).as_any().downcast_ref::<UInt8Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((
                buoy.value(i).to_owned(),
                metric.value(i).to_owned(),
                ts.value(i),
                value.value(i),
                quality.value(i),
            ));
        }
    }
    out
}

/// Strings of the first column.
pub fn strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = bluewave_query::datafusion::arrow::compute::cast(
            b.column(0),
            &bluewave_query::datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let s = col.as_string::<i32>();
        for i in 0..s.len() {
            out.push(s.value(i).to_owned());
        }
    }
    out
}

/// Every row of the engine's reference reader, shaped like `Row`.
pub fn model(engine: &Engine) -> Vec<Row> {
    let snapshot = engine.snapshot();
    snapshot
        .read(engine.storage().as_ref(), &bluewave_engine::ReadFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| (r.buoy.to_string(), r.metric.to_string(), r.ts, r.value, r.quality))
        .collect()
}
