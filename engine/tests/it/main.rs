//! Integration tests of the engine: real files, real redb, real threads, real processes
//! (one test binary for the crate, modules by concern).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basic;
mod common;
mod compaction;
mod crash;
mod kill9;
mod memory;
mod model;
mod recovery;
mod retention;
mod rollups;
