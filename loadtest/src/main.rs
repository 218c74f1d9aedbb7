//! `bluewave-loadtest`: fleet simulator and query load generator.
//!
//! The measuring library (latency, pacing, timeline, /proc sampling, report, chart) is in
//! `src/lib.rs`. The drivers are not implemented yet: they need the buoy client SDK (QUIC
//! ingest issue) and the HTTPS API (API issue).

fn main() {
    eprintln!(
        "bluewave-loadtest: the ingest/query/durability drivers are not implemented yet \
         (they need the QUIC client SDK and the HTTPS API); see loadtest/src/lib.rs"
    );
    std::process::exit(2);
}
