//! `bluewave-loadtest`: the fleet simulator, query load generator and kill -9 durability
//! checker of BlueWave, and the parts that measure and report.
//!
//! It drives a BlueWave server over QUIC (the buoy SDK, `bluewave_wire::Client`) and HTTPS
//! (the REST API) and reports what it sustained, like wrk2 or TSBS do for theirs: open-loop
//! pacing measured from due times, HDR percentiles, a timeline, the server's CPU and RSS from
//! `/proc`, a JSON report, a table and an SVG chart. Every run is bounded by count and time,
//! stops by itself, and talks only to the address it is given (a spawned server listens on
//! loopback).
//!
//! # Layout
//!
//! - [`modes`] — the seven runs: `ingest`, `durability`, `connections`, `query`, `mixed`,
//!   `shop`, `line-protocol`.
//! - [`lines`] — InfluxDB-style writers posting line-protocol bodies over keep-alive HTTPS.
//! - [`target`] — the server of a run: `--spawn`ed child or a running one; devices from a
//!   tokens file or registered through the API.
//! - [`spawn`] — the `bluewave serve` child: readiness from its stdout, SIGKILL, restart on the
//!   same data dir and ports, SIGTERM-then-SIGKILL stop, always in `Drop`.
//! - [`ingest`] — the fleet driver over the SDK (pacing, acks, warm-up, drain).
//! - [`analysts`] — concurrent analysts over HTTPS running a weighted query mix.
//! - [`shop`] — people in browsers: sign-ins with and without MFA, then signed-in sessions
//!   browsing the shop, the account and the dashboard, and checking out; [`browser`] is their
//!   cookie-keeping client.
//! - [`https`] — a small hyper/rustls client of the API, trusting the server by pin or CA.
//! - [`ledger`] — acknowledged reading ranges and the lost / duplicated / altered check.
//! - [`mix`] — the query kinds and their weights; [`rng`] — the seeded generator.
//! - [`latency`] — HDR histograms in µs, mergeable, summarised as p50/p90/p99/p99.9/max.
//! - [`pacer`] — open-loop schedules; latency is measured from the due time (no coordinated
//!   omission).
//! - [`timeline`] — per-interval throughput and latency, kept per worker and merged.
//! - [`procstat`] — CPU time and RSS of a process from `/proc`.
//! - [`machine`] — the machine a run was made on.
//! - [`report`] — the run's figures: JSON and a human table.
//! - [`chart`] — an offline SVG chart of the timeline.
//! - [`debt`] — the server's compaction debt over the run, sampled from `/metrics`.
//! - [`progress`] — the live progress bar.
//! - `error` — the crate's [`Error`].
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

pub mod analysts;
pub mod browser;
pub mod chart;
pub mod debt;
mod error;
pub mod https;
pub mod ingest;
pub mod latency;
pub mod ledger;
pub mod lines;
pub mod machine;
pub mod mix;
pub mod modes;
pub mod pacer;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod rng;
pub mod shop;
pub mod spawn;
pub mod target;
pub mod timeline;

pub use error::{Error, Result};
