//! Every limit of the HTTPS server, named, documented and checked once at start-up.

use crate::http::error::ServerError;

/// Limits and timeouts of the HTTPS server.
///
/// Every field has a documented default (see [`HttpConfig::default`]); [`HttpConfig::validate`]
/// refuses values that would disable a protection (zero limits) or that hyper cannot honour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Open TLS connections at most. A connection accepted beyond this is closed at once (before
    /// the TLS handshake, so it costs no crypto) and counted in
    /// `bluewave_http_connections_rejected_total`. Default 1024.
    pub connections_max: usize,
    /// Time a new connection has to finish its TLS handshake. Default 10 000 ms.
    pub tls_handshake_timeout_ms: u64,
    /// HTTP/1.1: time a client has to send a complete request head, counted from the moment the
    /// server starts waiting for it (also between keep-alive requests); a client that dribbles
    /// header bytes (slowloris) is disconnected when it runs out. Default 10 000 ms.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed gracefully (HTTP/1.1
    /// keep-alive and HTTP/2 alike). Default 60 000 ms.
    pub idle_timeout_ms: u64,
    /// HTTP/2: PING interval on a connection, and time to wait for the PING ack before the
    /// connection is considered dead. Default 20 000 ms.
    pub h2_keep_alive_interval_ms: u64,
    /// Time from the request head to the response head: the handler (body reading included) must
    /// produce its answer within it, or the client gets 503 `timeout`. A streamed response body is
    /// not bounded by it (long exports). Per route override: [`RouteOptions::request_timeout_ms`].
    /// Default 30 000 ms.
    ///
    /// [`RouteOptions::request_timeout_ms`]: crate::http::RouteOptions::request_timeout_ms
    pub request_timeout_ms: u64,
    /// Request body bytes at most; a declared `Content-Length` above it is refused (413) before
    /// any byte of the body is read, a chunked body is cut off when it crosses it. Per route
    /// override: [`RouteOptions::body_bytes_max`] (ingest routes). Default 1 MiB.
    ///
    /// [`RouteOptions::body_bytes_max`]: crate::http::RouteOptions::body_bytes_max
    pub body_bytes_max: u64,
    /// HTTP/1.1: request header lines at most (more → 431). Default 100, the size of hyper's
    /// on-stack header array; any other value makes hyper allocate the array per request.
    pub headers_max: usize,
    /// Bytes of a request head at most: request line + headers on HTTP/1.1 (more → 431 and the
    /// connection closes), the header list on HTTP/2. At least [`HEADER_BYTES_MIN`]. Default 16 KiB.
    pub header_bytes_max: usize,
    /// HTTP/2: concurrent streams (requests) per connection at most. Default 128.
    pub h2_streams_max: u32,
    /// Once a response head is sent, time its body may go without handing a chunk to the
    /// connection (the client stopped reading, or the producer is stuck); then the connection
    /// is cut and `bluewave_http_responses_stalled_total` counts it. Without it a client that
    /// never reads would hold its connection slot forever. Default 60 000 ms.
    pub response_stall_timeout_ms: u64,
    /// On shutdown, time in-flight requests get to finish after the server stops accepting;
    /// connections still open after it are cut. Default 10 000 ms.
    pub shutdown_drain_timeout_ms: u64,
    /// SHA-256 of the scrape token for `GET /metrics`. Loopback clients scrape without a token;
    /// any other client must send `Authorization: Bearer <token>`, and with no token set it is
    /// refused (403). Set from `[https] metrics_token_file` by `bluewave serve`. Default `None`.
    pub metrics_token_sha256: Option<[u8; 32]>,
    /// Whether loopback clients read `/metrics` without the token. Set it to `false` when a
    /// reverse proxy on the same host forwards outside clients (they all arrive from loopback).
    /// Default `true`.
    pub metrics_loopback_open: bool,
}

/// Shortest scrape token accepted for `/metrics`: 32 characters (e.g. `openssl rand -hex 16`).
pub const METRICS_TOKEN_CHARS_MIN: usize = 32;

/// Smallest accepted `header_bytes_max`: below it, ordinary requests (a bearer JWT, a few
/// cookies) would be refused.
pub const HEADER_BYTES_MIN: usize = 4096;

/// Header lines hyper parses into an on-stack array (no allocation per request).
pub(crate) const HYPER_HEADERS_ON_STACK: usize = 100;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connections_max: 1024,
            tls_handshake_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            h2_keep_alive_interval_ms: 20_000,
            request_timeout_ms: 30_000,
            body_bytes_max: 1024 * 1024,
            headers_max: HYPER_HEADERS_ON_STACK,
            header_bytes_max: 16 * 1024,
            h2_streams_max: 128,
            response_stall_timeout_ms: 60_000,
            shutdown_drain_timeout_ms: 10_000,
            metrics_token_sha256: None,
            metrics_loopback_open: true,
        }
    }
}

impl HttpConfig {
    /// Sets the `/metrics` scrape token (its SHA-256 is kept). Refused when shorter than
    /// [`METRICS_TOKEN_CHARS_MIN`] or not visible ASCII.
    pub fn set_metrics_token(&mut self, token: &str) -> Result<(), ServerError> {
        let token = token.trim();
        if token.len() < METRICS_TOKEN_CHARS_MIN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServerError::InvalidConfig { field: "metrics_token_file" });
        }
        use sha2::Digest as _;
        self.metrics_token_sha256 = Some(sha2::Sha256::digest(token.as_bytes()).into());
        Ok(())
    }

    /// Checks that no limit is zero (which would switch a protection off or make the server
    /// useless) and that hyper can honour every value.
    pub fn validate(&self) -> Result<(), ServerError> {
        let checks: [(&'static str, bool); 12] = [
            ("connections_max", self.connections_max > 0),
            ("tls_handshake_timeout_ms", self.tls_handshake_timeout_ms > 0),
            ("header_read_timeout_ms", self.header_read_timeout_ms > 0),
            ("idle_timeout_ms", self.idle_timeout_ms > 0),
            ("h2_keep_alive_interval_ms", self.h2_keep_alive_interval_ms > 0),
            ("request_timeout_ms", self.request_timeout_ms > 0),
            ("body_bytes_max", self.body_bytes_max > 0),
            ("headers_max", self.headers_max > 0),
            ("header_bytes_max", self.header_bytes_max >= HEADER_BYTES_MIN),
            ("h2_streams_max", self.h2_streams_max > 0),
            ("response_stall_timeout_ms", self.response_stall_timeout_ms > 0),
            ("shutdown_drain_timeout_ms", self.shutdown_drain_timeout_ms > 0),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((field, _)) => Err(ServerError::InvalidConfig { field }),
            None => Ok(()),
        }
    }
}
