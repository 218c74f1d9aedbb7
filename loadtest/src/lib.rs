//! `bluewave-loadtest`: the fleet simulator and query load generator's measuring parts.
//!
//! The load generator (issue "Load generator and throughput baseline") drives a BlueWave
//! server over QUIC and HTTPS and reports what it sustained. This library holds the parts that
//! do not depend on the network: how latency is recorded and summarised, how a run is paced,
//! how throughput and latency evolve over time, what the server process costs, and how the
//! report is written (JSON, a table, an SVG chart).
//!
//! **Not implemented yet:** the `ingest`, `query`, `mixed`, `durability` and `connections`
//! drivers; they need the buoy client SDK and the HTTPS API, which land with their issues.
//!
//! # Layout
//!
//! - [`latency`] — HDR histograms in µs, mergeable, summarised as p50/p90/p99/p99.9/max.
//! - [`pacer`] — open-loop schedules; latency is measured from the due time (no coordinated
//!   omission).
//! - [`timeline`] — per-interval throughput and latency, kept per worker and merged.
//! - [`procstat`] — CPU time and RSS of a process from `/proc`.
//! - [`machine`] — the machine a run was made on.
//! - [`report`] — the run's figures: JSON and a human table.
//! - [`chart`] — an offline SVG chart of the timeline.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bluewave_loadtest::{latency::LatencyRecorder, pacer::Pacer};
//!
//! let start = Instant::now();
//! let mut pacer = Pacer::new(start, 1_000.0);
//! let mut latency = LatencyRecorder::new();
//! for _ in 0..3 {
//!     let due = pacer.next_due();
//!     // ... send, wait for the ack ...
//!     latency.record(Instant::now().saturating_duration_since(due) + Duration::from_micros(250));
//! }
//! assert_eq!(latency.summary().count, 3);
//! ```

pub mod chart;
pub mod latency;
pub mod machine;
pub mod pacer;
pub mod procstat;
pub mod report;
pub mod timeline;
