//! `/metrics` series of the engine, the QUIC server and the query service: read from their
//! snapshots at each scrape (a [`Collector`]), so the hot paths keep their own plain atomics.

use std::sync::Arc;

use bluewave_engine::Engine;
use bluewave_query::{QUERY_LATENCY_BUCKETS_MS, QueryService};
use bluewave_wire::{RefuseReason, ServerHandle};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Engine, ingest-server and query counters for the Prometheus registry `/metrics` serves.
pub struct FleetCollector {
    engine: Engine,
    quic: ServerHandle,
    query: Arc<QueryService>,
}

/// A histogram from a snapshot: per-bucket counts (not cumulative), their sum and count.
struct SnapshotHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCollector").finish_non_exhaustive()
    }
}

impl FleetCollector {
    /// Collects from `engine`, the QUIC server `quic` and the query service `query`.
    pub fn new(engine: Engine, quic: ServerHandle, query: Arc<QueryService>) -> Self {
        Self { engine, quic, query }
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = self.engine.metrics();
        let enc = &mut encoder;
        counter(
            enc,
            "bluewave_engine_readings_ingested",
            "Readings stored (duplicates excluded)",
            e.readings_ingested,
        )?;
        counter(enc, "bluewave_engine_batches_ingested", "Batches stored", e.batches_ingested)?;
        counter(
            enc,
            "bluewave_engine_batches_duplicate",
            "Batches acknowledged as duplicates",
            e.batches_duplicate,
        )?;
        counter(enc, "bluewave_engine_batches_refused_busy", "Batches refused busy", e.batches_refused_busy)?;
        counter(
            enc,
            "bluewave_engine_readings_out_of_range",
            "Readings flagged out of range",
            e.readings_out_of_range,
        )?;
        counter(enc, "bluewave_engine_wal_records", "WAL group commits written", e.wal_records)?;
        counter(enc, "bluewave_engine_wal_bytes", "WAL bytes written", e.wal_bytes)?;
        counter(enc, "bluewave_engine_flushes", "Flushes committed", e.flushes)?;
        counter(enc, "bluewave_engine_flush_rows", "Rows written by flushes", e.flush_rows)?;
        counter(enc, "bluewave_engine_flush_bytes", "Parquet bytes written by flushes", e.flush_bytes)?;
        gauge(enc, "bluewave_engine_buffer_bytes", "Bytes in the in-memory buffer", e.buffer_bytes)?;
        gauge(enc, "bluewave_engine_queue_depth", "Batches waiting in lane queues", e.queue_depth)?;
        counter(
            enc,
            "bluewave_engine_batches_refused_compaction_debt",
            "Batches refused busy because of compaction debt",
            e.batches_refused_compaction_debt,
        )?;
        counter(enc, "bluewave_engine_compactions", "Compactions and folds committed", e.compactions)?;
        gauge(
            enc,
            "bluewave_engine_compaction_generations_max",
            "Compaction debt: most flush generations in one partition",
            e.compaction_generations_max,
        )?;
        gauge(
            enc,
            "bluewave_engine_compaction_generations_total",
            "Compaction debt: flush generations over all partitions",
            e.compaction_generations_total,
        )?;
        gauge(
            enc,
            "bluewave_engine_compaction_partitions_waiting",
            "Compaction debt: partitions with more than one generation",
            e.compaction_partitions_waiting,
        )?;
        gauge(
            enc,
            "bluewave_engine_compaction_bytes_waiting",
            "Compaction debt: bytes of the files compaction has yet to rewrite",
            e.compaction_bytes_waiting,
        )?;
        gauge(
            enc,
            "bluewave_engine_memory_bytes_max",
            "Memory budget (memory_bytes_max)",
            e.memory_bytes_max,
        )?;
        gauge(
            enc,
            "bluewave_engine_memory_used_bytes",
            "Memory reserved against the budget now",
            e.memory_used_bytes,
        )?;
        gauge(
            enc,
            "bluewave_engine_memory_high_water_bytes",
            "Most memory ever reserved against the budget at once",
            e.memory_high_water_bytes,
        )?;
        gauge(
            enc,
            "bluewave_engine_memory_ingest_bytes",
            "Memory reserved by queued and buffered batches",
            e.memory_ingest_bytes,
        )?;
        gauge(enc, "bluewave_engine_memory_flush_bytes", "Memory reserved by flushes", e.memory_flush_bytes)?;
        gauge(
            enc,
            "bluewave_engine_memory_compaction_bytes",
            "Memory reserved by compactions",
            e.memory_compaction_bytes,
        )?;
        gauge(
            enc,
            "bluewave_engine_memory_query_cache_bytes",
            "Memory reserved by the query caches",
            e.memory_query_cache_bytes,
        )?;
        counter(enc, "bluewave_engine_memory_refusals", "Memory reservations refused", e.memory_refusals)?;
        counter(
            enc,
            "bluewave_engine_batches_refused_memory",
            "Batches refused busy because the memory budget was taken",
            e.batches_refused_memory,
        )?;
        counter(
            enc,
            "bluewave_engine_retention_files_dropped",
            "Partition files dropped by retention",
            e.partitions_dropped,
        )?;
        counter(
            enc,
            "bluewave_engine_retention_files_rewritten",
            "Partition files rewritten by retention without their expired metrics",
            e.retention_files_rewritten,
        )?;
        counter(
            enc,
            "bluewave_engine_retention_rows_removed",
            "Rows removed by retention",
            e.retention_rows_removed,
        )?;
        counter(
            enc,
            "bluewave_engine_rollups_written",
            "Minute rollups written beside readings files",
            e.rollups_written,
        )?;
        counter(
            enc,
            "bluewave_engine_rollups_skipped",
            "Readings files written without their minute rollup (memory budget refused it)",
            e.rollups_skipped,
        )?;
        let w = self.quic.metrics();
        gauge(enc, "bluewave_quic_connections_open", "Open buoy connections", w.connections_open)?;
        counter(
            enc,
            "bluewave_quic_connections_accepted",
            "Buoy connections accepted",
            w.connections_accepted,
        )?;
        counter(enc, "bluewave_quic_handshakes_failed", "QUIC/TLS handshakes failed", w.handshakes_failed)?;
        counter(enc, "bluewave_quic_batches_received", "Batches received", w.batches_received)?;
        counter(enc, "bluewave_quic_readings_received", "Readings received", w.readings_received)?;
        counter(enc, "bluewave_quic_acks_stored", "Batches acknowledged stored", w.acks_stored)?;
        counter(enc, "bluewave_quic_acks_duplicate", "Batches acknowledged duplicate", w.acks_duplicate)?;
        counter(enc, "bluewave_quic_acks_rejected", "Batches rejected", w.acks_rejected)?;
        counter(enc, "bluewave_quic_acks_busy", "Batches answered busy", w.acks_busy)?;
        counter(
            enc,
            "bluewave_quic_closed_device_revoked",
            "Connections closed after a revocation",
            w.closed_device_revoked,
        )?;
        let mut refused = enc.encode_descriptor(
            "bluewave_quic_hello_refused",
            "HELLOs refused, by REFUSED reason (wire/PROTOCOL.md 3.4)",
            None,
            MetricType::Counter,
        )?;
        for reason in RefuseReason::ALL {
            let labels = [("reason", reason.name())];
            ConstCounter::new(w.refused(reason)).encode(refused.encode_family(&labels)?)?;
        }
        counter(
            enc,
            "bluewave_quic_refusing_addresses_audited",
            "Addresses audited for repeated authentication refusals",
            self.quic.refusals_audited(),
        )?;
        counter(enc, "bluewave_quic_bytes_in", "Bytes received", w.bytes_in)?;
        counter(enc, "bluewave_quic_bytes_out", "Bytes sent", w.bytes_out)?;
        let q = self.query.metrics();
        counter(enc, "bluewave_query_started", "Queries admitted (SQL and typed reads)", q.started)?;
        counter(enc, "bluewave_query_refused", "Queries refused (not read-only, invalid, busy)", q.refused)?;
        counter(enc, "bluewave_query_refused_busy", "Queries refused because all slots ran", q.refused_busy)?;
        counter(enc, "bluewave_query_failed", "Queries failed while running", q.failed)?;
        counter(enc, "bluewave_query_timed_out", "Queries stopped at their deadline", q.timed_out)?;
        counter(enc, "bluewave_query_completed", "Queries that delivered their result", q.completed)?;
        counter(enc, "bluewave_query_rows", "Rows delivered by queries", q.rows)?;
        let bounds = QUERY_LATENCY_BUCKETS_MS.iter().map(|&ms| ms as f64 / 1_000.0).chain([f64::INFINITY]);
        let latency = SnapshotHistogram {
            sum: q.latency_sum_us as f64 / 1_000_000.0,
            count: q.latency_buckets.iter().sum(),
            buckets: bounds.zip(q.latency_buckets.iter().copied()).collect(),
        };
        latency.encode(enc.encode_descriptor(
            "bluewave_query_duration_seconds",
            "Query latency, admission to the end of the result",
            None,
            latency.metric_type(),
        )?)?;
        Ok(())
    }
}
