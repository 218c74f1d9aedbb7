//! End-to-end tests of the `bluewave` binary (one test binary, modules by concern):
//!
//! - `serve`: `bluewave serve` started as a child process on loopback ports 0 with a tempdir
//!   data dir — first-run defaults, the HTTPS API and QUIC ingest together, device tokens from
//!   the API, revocation, shutdown. Every wait is bounded and the child is killed on drop, so a
//!   fault fails the test instead of hanging it.
//! - `clients`: real client libraries (the Python InfluxDB clients) writing to `bluewave serve`.
//! - `cli`: offline account commands (`keys rotate`, `users reset-mfa`) on a real data dir.
//! - `loadtest_smoke`: the load generator's ingest and durability drivers, spawning the real
//!   binary: acked = stored, the report parses, kill -9 loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod cli;
mod clients;
mod loadtest_smoke;
mod serve;
