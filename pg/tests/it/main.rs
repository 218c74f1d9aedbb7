//! Integration tests of the Postgres front: a real server on loopback with real TLS, a real
//! accounts store, engine and query service, and `tokio-postgres` as the client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns are test code too

mod server;
