//! `bluewave-wire`: the QUIC ingest protocol between buoys and BlueWave.
//!
//! This crate will hold the frame codec (specified in `wire/PROTOCOL.md`), the quinn server
//! endpoint that hands decoded batches to [`bluewave_engine::Engine::ingest`], and the buoy
//! client SDK. It is filled by the "QUIC ingest" issue; nothing here is implemented yet.
