//! Integration tests of the engine: real files, real redb, real threads (one test binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod basic;
mod common;
