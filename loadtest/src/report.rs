//! The report of a run: figures as JSON for machines and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::debt::{DebtFigures, DebtPoint};
use crate::latency::LatencySummary;
use crate::ledger::DurabilityCheck;
use crate::machine::Machine;
use crate::timeline::TimelinePoint;

/// Everything a run measured. Serialized as the JSON report; [`Report::table`] prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Which run: `ingest`, `query`, `mixed`, `durability`, `connections`.
    pub mode: String,
    /// The command line that produced it.
    pub command: String,
    /// Commit of the code measured, when known.
    pub commit: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// Start of the measured period, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Length of the measured period (warm-up excluded), seconds.
    pub measured_s: f64,
    /// Ingest figures, when the run ingested.
    pub ingest: Option<IngestFigures>,
    /// Per query kind, when the run queried.
    pub queries: Vec<QueryFigures>,
    /// What the server process cost, when it was observed.
    pub server: Option<ServerFigures>,
    /// CPU use of the load generator itself during the measured period, percent of one core
    /// (with the server on the same machine: the client's share of the CPU split).
    #[serde(default)]
    pub client_cpu_percent: Option<f64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Throughput and latency over time.
    pub timeline: Vec<TimelinePoint>,
    /// `mixed` runs: the same ingest alone, before the queries start (what queries cost).
    #[serde(default)]
    pub baseline_ingest: Option<IngestFigures>,
    /// `durability` runs: kills and the acked-versus-stored check.
    #[serde(default)]
    pub durability: Option<DurabilityFigures>,
    /// `ingest` runs with API access: the server's compaction debt over time, from `/metrics`
    /// once a second (times on the timeline's clock).
    #[serde(default)]
    pub compaction_debt: Vec<DebtPoint>,
    /// Peaks and end values of `compaction_debt`.
    #[serde(default)]
    pub compaction_debt_figures: Option<DebtFigures>,
    /// `shop` runs: sessions, think time, setup and MFA figures.
    #[serde(default)]
    pub shop: Option<crate::shop::ShopFigures>,
}

/// The kill -9 run's outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DurabilityFigures {
    /// SIGKILLs sent to the server.
    pub kills: u32,
    /// Seed of the kill moments.
    pub seed: u64,
    /// Milliseconds after the fleet connected at which each kill during ingest was sent (the
    /// last kill, after every ack was in, is not listed).
    pub kill_at_ms: Vec<u64>,
    /// The comparison of acknowledged and stored readings.
    pub check: DurabilityCheck,
}

/// Ingest side of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestFigures {
    /// Buoys (connections) simulated.
    pub buoys: u64,
    /// Readings per batch.
    pub batch_readings: u64,
    /// Readings acknowledged as stored or duplicate during the measured period.
    pub readings_acked: u64,
    /// Batches acknowledged during the measured period.
    pub batches_acked: u64,
    /// Of those, answered `duplicate` (resends after a reconnect).
    pub duplicates: u64,
    /// Batches rejected (never retried).
    pub rejected: u64,
    /// `readings_acked / measured_s`.
    pub readings_per_s: f64,
    /// `batches_acked / measured_s`.
    pub batches_per_s: f64,
    /// Send (due time) to durable ack.
    pub ack_latency: LatencySummary,
    /// Bytes the server's data dir grew by, when measured.
    pub disk_bytes: Option<u64>,
    /// `disk_bytes / readings_acked`.
    pub disk_bytes_per_reading: Option<f64>,
}

impl IngestFigures {
    /// Fills the rates from the counts and the measured period.
    pub fn with_rates(mut self, measured_s: f64) -> Self {
        let per_s = |n: u64| if measured_s > 0.0 { n as f64 / measured_s } else { 0.0 };
        self.readings_per_s = per_s(self.readings_acked);
        self.batches_per_s = per_s(self.batches_acked);
        self.disk_bytes_per_reading = self
            .disk_bytes
            .filter(|_| self.readings_acked > 0)
            .map(|b| b as f64 / self.readings_acked as f64);
        self
    }
}

/// One kind of query of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryFigures {
    /// Query name (`last_value`, `raw_range`, ...).
    pub name: String,
    /// Completed queries.
    pub completed: u64,
    /// Failed queries.
    pub failed: u64,
    /// `completed / measured_s`.
    pub queries_per_s: f64,
    /// Due time to last byte of the answer.
    pub latency: LatencySummary,
}

/// The server process during the measured period.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFigures {
    /// CPU use, percent of one core.
    pub cpu_percent: f64,
    /// Peak resident set size, bytes.
    pub peak_rss_bytes: u64,
    /// Connections held at the end, when counted.
    pub connections: Option<u64>,
    /// `(rss at the end - rss before connecting) / connections`, when measured.
    pub rss_bytes_per_connection: Option<f64>,
    /// RSS once every connection was up, before the first batch, when measured.
    #[serde(default)]
    pub rss_connected_bytes: Option<u64>,
}

impl Report {
    /// The report as a human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "mode        {}", self.mode);
        let _ = writeln!(
            out,
            "machine     {} cores, {} GiB, {}, kernel {}",
            m.cores,
            m.memory_bytes >> 30,
            m.cpu_model,
            m.kernel
        );
        if let Some(commit) = &self.commit {
            let _ = writeln!(out, "commit      {commit}");
        }
        let _ = writeln!(out, "measured    {:.1} s", self.measured_s);
        if let Some(i) = &self.ingest {
            let _ = writeln!(out, "ingest      {} buoys, batches of {}", i.buoys, i.batch_readings);
            let _ = writeln!(
                out,
                "  readings/s {:>14.0}   ({} readings acked)",
                i.readings_per_s, i.readings_acked
            );
            let _ = writeln!(
                out,
                "  batches/s  {:>14.1}   ({} duplicate, {} rejected)",
                i.batches_per_s, i.duplicates, i.rejected
            );
            let _ = writeln!(out, "  ack ms     {}", latency_row(&i.ack_latency));
            if let Some(b) = i.disk_bytes_per_reading {
                let _ = writeln!(out, "  disk       {b:.3} bytes/reading");
            }
        }
        if let Some(d) = &self.compaction_debt_figures {
            let _ = writeln!(
                out,
                "  compaction debt: generations/partition max {} (end {}), total max {}, bytes waiting max {} (end {}), {} samples",
                d.generations_max_peak,
                d.generations_max_end,
                d.generations_total_peak,
                d.bytes_waiting_peak,
                d.bytes_waiting_end,
                d.samples
            );
        }
        if let Some(b) = &self.baseline_ingest {
            let _ = writeln!(
                out,
                "  without queries: {:.0} readings/s, ack ms {}",
                b.readings_per_s,
                latency_row(&b.ack_latency)
            );
        }
        if let Some(d) = &self.durability {
            let c = &d.check;
            let _ = writeln!(out, "durability  {} kills (seed {})", d.kills, d.seed);
            let _ = writeln!(
                out,
                "  acked {}  stored rows {}  lost {}  duplicated {}  altered {}  unexpected {}  -> {}",
                c.acked,
                c.stored_rows,
                c.lost,
                c.duplicated,
                c.altered,
                c.unexpected,
                if c.passed() { "PASS" } else { "FAIL" }
            );
            for key in c.lost_examples.iter().chain(&c.duplicated_examples).chain(&c.altered_examples) {
                let _ = writeln!(out, "  bad key   {key}");
            }
        }
        if !self.queries.is_empty() {
            let _ = writeln!(
                out,
                "queries     {:<16} {:>9} {:>7} {:>9}  latency ms",
                "name", "done", "failed", "q/s"
            );
            for q in &self.queries {
                let _ = writeln!(
                    out,
                    "            {:<16} {:>9} {:>7} {:>9.1}  {}",
                    q.name,
                    q.completed,
                    q.failed,
                    q.queries_per_s,
                    latency_row(&q.latency)
                );
            }
        }
        if let Some(s) = &self.server {
            let _ =
                write!(out, "server      cpu {:.0}%, peak rss {} MiB", s.cpu_percent, s.peak_rss_bytes >> 20);
            if let Some(rss) = s.rss_connected_bytes {
                let _ = write!(out, ", rss {} MiB with the fleet connected", rss >> 20);
            }
            if let (Some(c), Some(per)) = (s.connections, s.rss_bytes_per_connection) {
                let _ = write!(out, ", {c} connections, {:.1} KiB/connection", per / 1024.0);
            }
            out.push('\n');
        }
        if let Some(cpu) = self.client_cpu_percent {
            let _ = writeln!(out, "client      cpu {cpu:.0}% (this load generator)");
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "errors      none");
        } else {
            for (kind, n) in &self.errors {
                let _ = writeln!(out, "errors      {kind}: {n}");
            }
        }
        out
    }
}

fn latency_row(l: &LatencySummary) -> String {
    format!(
        "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let ingest = IngestFigures {
            buoys: 1_000,
            batch_readings: 1_000,
            readings_acked: 180_000_000,
            batches_acked: 180_000,
            duplicates: 12,
            disk_bytes: Some(117_000_000),
            ack_latency: LatencySummary {
                count: 180_000,
                mean_ms: 3.0,
                p50_ms: 2.5,
                p90_ms: 4.0,
                p99_ms: 9.5,
                p999_ms: 20.0,
                max_ms: 41.0,
            },
            ..IngestFigures::default()
        }
        .with_rates(60.0);
        Report {
            mode: "ingest".into(),
            command: "bluewave-loadtest ingest --buoys 1000".into(),
            commit: Some("abc123".into()),
            machine: Machine {
                cpu_model: "EPYC".into(),
                cores: 2,
                memory_bytes: 24 << 30,
                kernel: "6.1".into(),
            },
            measured_s: 60.0,
            ingest: Some(ingest),
            errors: BTreeMap::from([("busy".to_string(), 3)]),
            ..Report::default()
        }
    }

    #[test]
    fn rates_are_counts_over_the_measured_period() {
        let i = sample().ingest.unwrap();
        assert_eq!(i.readings_per_s, 3_000_000.0);
        assert_eq!(i.batches_per_s, 3_000.0);
        assert_eq!(i.disk_bytes_per_reading, Some(0.65));
        let zero = IngestFigures { readings_acked: 5, disk_bytes: Some(10), ..IngestFigures::default() }
            .with_rates(0.0);
        assert_eq!((zero.readings_per_s, zero.disk_bytes_per_reading), (0.0, Some(2.0)));
        let nothing = IngestFigures { disk_bytes: Some(10), ..IngestFigures::default() }.with_rates(1.0);
        assert_eq!(nothing.disk_bytes_per_reading, None);
    }

    #[test]
    fn json_round_trip() {
        let report = sample();
        let json = serde_json::to_string_pretty(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["ingest"]["readings_per_s"], 3_000_000.0);
        assert_eq!(value["ingest"]["ack_latency"]["p99_ms"], 9.5);
    }

    #[test]
    fn table_shows_the_headline_figures() {
        let table = sample().table();
        assert!(table.contains("readings/s        3000000"), "{table}");
        assert!(table.contains("p99 9.50"), "{table}");
        assert!(table.contains("0.650 bytes/reading"), "{table}");
        assert!(table.contains("errors      busy: 3"), "{table}");
        assert!(table.contains("2 cores, 24 GiB"), "{table}");
    }
}
