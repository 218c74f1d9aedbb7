//! End-to-end tests of the `bluewave` binary (one test binary, modules by concern):
//!
//! - `serve`: `bluewave serve` started as a process on loopback ports 0 — first-run defaults,
//!   the HTTPS API and QUIC ingest together, device tokens from the API, revocation, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod serve;
