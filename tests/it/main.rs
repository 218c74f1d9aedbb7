//! End-to-end tests of the `bluewave` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod loadtest_smoke;
