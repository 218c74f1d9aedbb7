//! Codec tests of protocol `bluewave/1` (wire/PROTOCOL.md), talking raw bytes:
//!
//! - `round_trip`: every frame type encodes and decodes back to itself, for arbitrary valid
//!   values (batches with extreme and non-monotonic timestamps included);
//! - `example`: the worked hex example of PROTOCOL.md decodes byte-exactly and re-encodes to it;
//! - `hostile`: every truncation, oversized lengths, bad varints and timestamps, unknown ids and
//!   random garbage give their typed error (and wire disposition) and never panic or allocate
//!   according to an unchecked length;
//! - `spool`: the client's on-disk spool: recovery after every crash point, seq leases, bounds,
//!   record round trips and hostile files;
//! - `client`: the buoy SDK against the real server on loopback: stored, duplicates, rejects,
//!   restarts and offline spool without loss or doubles, trust (pin, CA file), terminal refusals;
//! - `evidence`: refused HELLOs counted by reason and audited per address; the order of the
//!   refusal reasons (nothing leaks to a token that does not verify);
//! - `conformance`: the points where an independent client found the server and PROTOCOL.md
//!   apart, each now one behaviour with its test;
//! - `server`: the real QUIC server on loopback over a real engine, driven by a raw quinn client
//!   sending exact bytes (`common` is the harness shared with the client tests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod client;
mod common;
mod conformance;
mod evidence;
mod example;
mod hostile;
mod round_trip;
mod server;
mod spool;
mod support;
