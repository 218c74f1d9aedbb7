//! Integration tests of the load generator's own logic. The end-to-end smoke run against a
//! spawned `bluewave serve` lives in the root crate's tests (it needs the `bluewave` binary).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod config;
mod ledger;
mod mix;
mod spawn;
