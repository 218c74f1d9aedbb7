//! Integration tests of `bluewave-query`: a real engine in a temp dir, real Parquet files, the
//! real query service.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns are test code too

mod common;
mod encode;
mod limits;
mod merge;
mod model;
mod newest;
mod paging;
mod policy;
mod pruning;
mod refusals;
mod rollups;
mod stats;
