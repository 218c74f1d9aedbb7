//! Integration tests of `bluewave-query`: a real engine in a temp dir, real Parquet files, the
//! real query service.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod encode;
mod limits;
mod model;
mod paging;
mod policy;
mod refusals;
