//! A small HTTPS client of BlueWave's API (hyper 1, HTTP/1.1 over rustls): login, buoy
//! registration, device tokens, `GET /api/telemetry` pages and `POST /api/query`. One
//! [`ApiClient`] is one keep-alive connection with its own access token, which is what one
//! analyst is. The server's certificate is trusted by its SHA-256 pin (what `serve` prints) or
//! through a CA file.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bluewave_wire::Trust;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::ledger::StoredRow;

/// Largest response body read, bytes (a telemetry page of [`TELEMETRY_PAGE_ROWS`] rows is
/// about 10 MB of JSON).
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Rows asked per `GET /api/telemetry` page.
pub const TELEMETRY_PAGE_ROWS: usize = 100_000;
/// Most pages read for one buoy (bounds a check to 100 M rows per buoy).
pub const TELEMETRY_PAGES_MAX: usize = 1_000;
/// Deadline of one request (connect, send, whole answer), ms.
pub const REQUEST_TIMEOUT_MS: u64 = 120_000;
/// Most waits on a `429 Too Many Requests` login before giving up.
pub const LOGIN_RETRIES_MAX: u32 = 10;
/// Longest `Retry-After` honoured, s.
pub const RETRY_AFTER_S_MAX: u64 = 60;

/// Where the API is and how its certificate is trusted.
#[derive(Clone)]
pub struct ApiTarget {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTarget").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl ApiTarget {
    /// The API at `addr`, whose certificate must hash to `pin`.
    pub fn pinned(addr: SocketAddr, pin: [u8; 32]) -> Result<Self> {
        Self::with_trust(addr, "localhost", &Trust::Pinned(vec![pin]))
    }

    /// The API at `addr` whose certificate for `server_name` chains to a CA in `ca_file` (PEM).
    pub fn ca_file(addr: SocketAddr, server_name: &str, ca_file: &Path) -> Result<Self> {
        Self::with_trust(addr, server_name, &Trust::CaFile(ca_file.to_path_buf()))
    }

    /// The same trust rules as the buoy SDK (`bluewave_wire::rustls_config`: a pinned
    /// certificate whose handshake signature is still checked, or a bounded CA file), with the
    /// HTTP ALPN instead of `bluewave/1`.
    fn with_trust(addr: SocketAddr, server_name: &str, trust: &Trust) -> Result<Self> {
        let config = bluewave_wire::rustls_config(trust).map_err(|e| Error::Config(e.to_string()))?;
        Self::with_config(addr, server_name, config)
    }

    fn with_config(addr: SocketAddr, server_name: &str, mut config: rustls::ClientConfig) -> Result<Self> {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| Error::Config(format!("server name {server_name:?}: {e}")))?;
        Ok(Self { addr, server_name, tls: Arc::new(config) })
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One keep-alive HTTPS connection to the API with (after [`ApiClient::login`]) an access token.
pub struct ApiClient {
    target: ApiTarget,
    source_ip: Option<IpAddr>,
    sender: Option<SendRequest<Full<Bytes>>>,
    credentials: Option<(String, String)>,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("target", &self.target).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

#[derive(Deserialize)]
struct IssuedAnswer {
    token: String,
}

#[derive(Deserialize)]
struct Page {
    rows: Vec<PageRow>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct PageRow {
    metric: String,
    ts: i64,
    value: f64,
}

/// A response: status, `Retry-After` (s), headers and body.
#[derive(Debug)]
pub struct ApiAnswer {
    /// HTTP status.
    pub status: StatusCode,
    /// `Retry-After`, when sent.
    pub retry_after_s: Option<u64>,
    /// Every header of the answer (`Set-Cookie`, `Location` for the browser flows).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl ApiClient {
    /// A client of `target`; `source_ip` binds the local end (a distinct loopback address per
    /// analyst keeps the server's per-IP login limit per analyst).
    pub fn new(target: ApiTarget, source_ip: Option<IpAddr>) -> Self {
        Self { target, source_ip, sender: None, credentials: None, token: None }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let connect = async {
            let socket = if self.target.addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(|e| Error::api("connect", e))?;
            if let Some(ip) = self.source_ip {
                socket.bind(SocketAddr::new(ip, 0)).map_err(|e| Error::api("bind source address", e))?;
            }
            let tcp = socket.connect(self.target.addr).await.map_err(|e| Error::api("connect", e))?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.target.tls))
                .connect(self.target.server_name.clone(), tcp)
                .await
                .map_err(|e| Error::api("TLS handshake", e))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| Error::api("HTTP handshake", e))?;
            tokio::spawn(async move {
                // Ends when the server closes the connection or the sender is dropped.
                let _ = connection.await;
            });
            Ok::<_, Error>(sender)
        };
        let sender = tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), connect)
            .await
            .map_err(|_| Error::api("connect", "timed out"))??;
        Ok(self.sender.insert(sender))
    }

    /// Sends one request (reconnecting once if the kept-alive connection was closed) and reads
    /// the whole answer.
    pub async fn call(
        &mut self,
        method: Method,
        path_and_query: &str,
        json_body: Option<String>,
        accept: Option<&str>,
    ) -> Result<ApiAnswer> {
        let mut headers = Vec::with_capacity(3);
        if let Some(token) = &self.token {
            headers.push((hyper::header::AUTHORIZATION, header_value(&format!("Bearer {token}"))?));
        }
        if let Some(accept) = accept {
            headers.push((hyper::header::ACCEPT, header_value(accept)?));
        }
        if json_body.is_some() {
            headers.push((hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
        }
        self.send(method, path_and_query, Bytes::from(json_body.unwrap_or_default()), &headers).await
    }

    /// Sends one request with exactly `headers` (besides `Host`; no access token), reconnecting
    /// once if the kept-alive connection was closed, and reads the whole answer.
    pub async fn send(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<ApiAnswer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(hyper::header::HOST, "localhost");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let request = request.body(Full::new(body.clone())).map_err(|e| Error::api(path_and_query, e))?;
            let sender = match self.sender.as_mut() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            let exchange = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                Ok::<_, hyper::Error>(response)
            };
            let response =
                match tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), exchange).await {
                    Err(_) => {
                        self.sender = None;
                        return Err(Error::api(path_and_query, "timed out"));
                    }
                    Ok(Err(e)) if attempt == 1 => {
                        // A kept-alive connection the server closed: one fresh try.
                        let _ = e;
                        self.sender = None;
                        continue;
                    }
                    Ok(Err(e)) => {
                        self.sender = None;
                        return Err(Error::api(path_and_query, e));
                    }
                    Ok(Ok(response)) => response,
                };
            let status = response.status();
            let retry_after_s = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let headers = response.headers().clone();
            let body = tokio::time::timeout(
                Duration::from_millis(REQUEST_TIMEOUT_MS),
                Limited::new(response.into_body(), RESPONSE_BYTES_MAX).collect(),
            )
            .await
            .map_err(|_| Error::api(path_and_query, "answer timed out"))?
            .map_err(|e| Error::api(path_and_query, e))?
            .to_bytes();
            return Ok(ApiAnswer { status, retry_after_s, headers, body });
        }
    }

    /// Like [`ApiClient::call`], but logs in again once on `401` (an expired access token) and
    /// fails on any status but `expected`.
    async fn call_expecting(
        &mut self,
        method: Method,
        path: &str,
        body: Option<String>,
        accept: Option<&str>,
        expected: &[StatusCode],
    ) -> Result<ApiAnswer> {
        let mut answer = self.call(method.clone(), path, body.clone(), accept).await?;
        if answer.status == StatusCode::UNAUTHORIZED && self.credentials.is_some() {
            self.relogin().await?;
            answer = self.call(method, path, body, accept).await?;
        }
        if expected.contains(&answer.status) {
            Ok(answer)
        } else {
            Err(Error::api(path.to_owned(), status_text(&answer)))
        }
    }

    /// The access token of the last login, if any.
    pub fn access_token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Logs in with email and password (waiting out `429` and `503` answers, at most
    /// [`LOGIN_RETRIES_MAX`] times) and keeps the access token for later calls.
    pub async fn login(&mut self, email: &str, password: &str) -> Result<()> {
        self.credentials = Some((email.to_owned(), password.to_owned()));
        self.relogin().await
    }

    async fn relogin(&mut self) -> Result<()> {
        let Some((email, password)) = self.credentials.clone() else {
            return Err(Error::Internal("relogin without credentials".into()));
        };
        let body = serde_json::json!({ "email": email, "password": password }).to_string();
        self.token = None;
        for _ in 0..=LOGIN_RETRIES_MAX {
            let answer = self.call(Method::POST, "/api/auth/token", Some(body.clone()), None).await?;
            match answer.status {
                StatusCode::OK => {
                    let token: TokenAnswer =
                        serde_json::from_slice(&answer.body).map_err(|e| Error::api("login answer", e))?;
                    self.token = Some(token.access_token);
                    return Ok(());
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let wait = answer.retry_after_s.unwrap_or(1).clamp(1, RETRY_AFTER_S_MAX);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                _ => return Err(Error::api("login", status_text(&answer))),
            }
        }
        Err(Error::api("login", "still rate limited after the allowed retries"))
    }

    /// Registers buoy `id` (an already registered one is fine).
    pub async fn register_buoy(&mut self, id: &str) -> Result<()> {
        let body = serde_json::json!({ "id": id, "name": id, "lat": null, "lng": null, "status": "active" });
        self.call_expecting(
            Method::POST,
            "/api/buoys",
            Some(body.to_string()),
            None,
            &[StatusCode::CREATED, StatusCode::CONFLICT],
        )
        .await
        .map(drop)
    }

    /// Issues a device token for buoy `id` (the server's default lifetime).
    pub async fn issue_device_token(&mut self, id: &str) -> Result<String> {
        let path = format!("/api/buoys/{id}/device-tokens");
        let answer =
            self.call_expecting(Method::POST, &path, Some("{}".into()), None, &[StatusCode::CREATED]).await?;
        let issued: IssuedAnswer =
            serde_json::from_slice(&answer.body).map_err(|e| Error::api("device token answer", e))?;
        Ok(issued.token)
    }

    /// Every reading of `buoy_id`, page by page through `GET /api/telemetry`.
    pub async fn telemetry_rows(&mut self, buoy_id: &str) -> Result<Vec<StoredRow>> {
        let mut rows = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..TELEMETRY_PAGES_MAX {
            let mut path = format!("/api/telemetry?buoy_id={buoy_id}&limit={TELEMETRY_PAGE_ROWS}");
            if let Some(cursor) = &cursor {
                path.push_str("&cursor=");
                path.push_str(&percent_encode(cursor));
            }
            let answer = self.call_expecting(Method::GET, &path, None, None, &[StatusCode::OK]).await?;
            let page: Page =
                serde_json::from_slice(&answer.body).map_err(|e| Error::api("telemetry page", e))?;
            rows.extend(page.rows.into_iter().map(|r| StoredRow {
                metric: r.metric,
                ts: r.ts,
                value: r.value,
            }));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(rows),
            }
        }
        Err(Error::api("telemetry", format!("more than {TELEMETRY_PAGES_MAX} pages for {buoy_id}")))
    }

    /// Runs one SQL statement (`POST /api/query`, JSON answer) and returns the answer's body.
    pub async fn sql(&mut self, sql: &str) -> Result<Bytes> {
        let body = serde_json::json!({ "sql": sql }).to_string();
        let answer = self
            .call_expecting(
                Method::POST,
                "/api/query",
                Some(body),
                Some("application/json"),
                &[StatusCode::OK],
            )
            .await?;
        Ok(answer.body)
    }

    /// A raw `GET` under the access token, answer 200 expected.
    pub async fn get(&mut self, path: &str) -> Result<Bytes> {
        Ok(self.call_expecting(Method::GET, path, None, None, &[StatusCode::OK]).await?.body)
    }
}

/// A header value from text (a typed error for bytes HTTP does not allow).
pub fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|e| Error::Config(format!("header value {text:?}: {e}")))
}

/// The status and the start of the body, for error messages.
pub fn status_text(answer: &ApiAnswer) -> String {
    let body = String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)]).into_owned();
    format!("{} {}", answer.status, body)
}

/// Percent-encodes everything but unreserved characters (RFC 3986); also the form encoding
/// of one name or value (`application/x-www-form-urlencoded` allows `%20` for a space).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
