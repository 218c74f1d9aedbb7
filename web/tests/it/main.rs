//! Integration tests of `bluewave-web` against real servers on loopback (one test binary for
//! the crate, modules by concern):
//!
//! - `http`: the HTTPS framework — TLS, HTTP/1.1 and HTTP/2, routing, error answers, limits,
//!   timeouts, graceful shutdown, streaming, security headers, OpenAPI and the docs page.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns are test code too

mod http;
