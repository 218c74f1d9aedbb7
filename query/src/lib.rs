//! `bluewave-query`: DataFusion over the engine's catalog files and live buffer.
//!
//! This crate will hold the `readings` table provider (catalog pruning, buffer snapshot, dedup
//! and tombstones through [`bluewave_engine::Engine::read_view`]), the per-caller access policy,
//! read-only SQL and the streaming result encoders. It is filled by the "Query" issue; nothing
//! here is implemented yet.
