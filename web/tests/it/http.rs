//! Proves the HTTPS framework against a real server on loopback, with real TLS clients
//! (tokio-rustls + hyper's client, HTTP/1.1 and HTTP/2 by ALPN, and raw HTTP/1.1 bytes where a
//! well-behaved client cannot send the attack): health and metrics, 404/405/413/415/400
//! answers, limits and timeouts (slowloris, connections, request deadline, idle, a client that
//! stops reading a stream, oversized heads), TLS versions, graceful
//! shutdown, streaming, security headers, the OpenAPI document against the router, the offline
//! docs page, path traversal, the bearer-token hook and that 5xx answers leak nothing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bluewave_web::{
    ApiError, Authenticator, BoxError, CertificateDer, HttpConfig, HttpServer, Method, PrivateKeyDer,
    PrivatePkcs8KeyDer, Registry, Reply, Request, RouteOptions, Router, ShutdownSummary, StatusCode,
    TlsIdentity,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// ---------------------------------------------------------------- the test application

/// The application state of the tests: one valid token, and a permit added each time the slow
/// handler starts (so a test knows its request is in flight).
struct TestApp {
    slow_started: Arc<Semaphore>,
}

impl Authenticator for TestApp {
    type Caller = String;

    fn authenticate(&self, bearer: &str) -> Result<String, ApiError> {
        if bearer == "good-token" {
            Ok("alice".to_owned())
        } else {
            Err(ApiError::Unauthorized("invalid token".into()))
        }
    }
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
struct Echo {
    name: String,
    count: u32,
}

/// Echoes a JSON body.
#[utoipa::path(post, path = "/api/echo", request_body = Echo, responses((status = 200, body = Echo)))]
async fn echo(mut request: Request<TestApp>) -> Result<Reply, ApiError> {
    let body: Echo = request.json().await?;
    Reply::json(&body)
}

/// Accepts a larger body than the server default.
#[utoipa::path(post, path = "/api/upload", responses((status = 200, description = "Byte count")))]
async fn upload(mut request: Request<TestApp>) -> Result<Reply, ApiError> {
    let bytes = request.bytes().await?;
    Reply::json(&bytes.len())
}

#[derive(Deserialize)]
struct ItemQuery {
    verbose: bool,
}

/// Reads a path parameter and a typed query string.
#[utoipa::path(get, path = "/api/items/{id}", params(("id" = String, Path, description = "Item id"),
    ("verbose" = bool, Query, description = "More detail")), responses((status = 200, description = "The item")))]
async fn item(request: Request<TestApp>) -> Result<Reply, ApiError> {
    let query: ItemQuery = request.query()?;
    Reply::json(&serde_json::json!({ "id": request.param("id")?, "verbose": query.verbose }))
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// Answers after `ms` milliseconds.
#[utoipa::path(get, path = "/api/slow", responses((status = 200, description = "Done")))]
async fn slow(request: Request<TestApp>) -> Result<Reply, ApiError> {
    let query: SlowQuery = request.query()?;
    request.state().slow_started.add_permits(1);
    tokio::time::sleep(Duration::from_millis(query.ms)).await;
    Reply::json(&"done")
}

#[derive(Deserialize)]
struct StreamQuery {
    chunks: u32,
    fail_at: Option<u32>,
}

/// Streams `chunks` numbered lines, failing at `fail_at` if given.
#[utoipa::path(get, path = "/api/stream", responses((status = 200, description = "Lines")))]
async fn stream(request: Request<TestApp>) -> Result<Reply, ApiError> {
    let query: StreamQuery = request.query()?;
    let lines = futures_util::stream::iter(0..query.chunks).then(move |index| async move {
        tokio::task::yield_now().await;
        if Some(index) == query.fail_at {
            return Err(std::io::Error::other("encoder failed"));
        }
        Ok(Bytes::from(format!("line {index}\n")))
    });
    Ok(Reply::stream("text/plain", lines))
}

/// Streams 64 KiB chunks forever (for clients that stop reading).
#[utoipa::path(get, path = "/api/endless", responses((status = 200, description = "Zeros, forever")))]
async fn endless(_request: Request<TestApp>) -> Result<Reply, ApiError> {
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let zeros = futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
    Ok(Reply::stream("application/octet-stream", zeros))
}

/// Says who the bearer token belongs to.
#[utoipa::path(get, path = "/api/whoami", responses((status = 200, description = "The caller")),
    security(("bearer" = [])))]
async fn whoami(request: Request<TestApp>) -> Result<Reply, ApiError> {
    let caller = request.caller()?;
    Reply::json(&serde_json::json!({ "caller": caller }))
}

/// Fails with an internal error whose detail must never reach the client.
#[utoipa::path(get, path = "/api/fail", responses((status = 500, description = "Always")))]
async fn fail(_request: Request<TestApp>) -> Result<Reply, ApiError> {
    Err(ApiError::internal("secret database path /var/lib/secret.redb"))
}

use futures_util::StreamExt as _;

fn router() -> Router<TestApp> {
    router_signalling(Arc::new(Semaphore::new(0)))
}

fn router_signalling(slow_started: Arc<Semaphore>) -> Router<TestApp> {
    let slow_route = RouteOptions { request_timeout_ms: Some(60_000), ..RouteOptions::default() };
    Router::new(TestApp { slow_started }, "BlueWave test", "0.0.1")
        .and_then(|r| r.route::<__path_echo>(echo))
        .and_then(|r| {
            r.route_with::<__path_upload>(
                RouteOptions { body_bytes_max: Some(4096), ..Default::default() },
                upload,
            )
        })
        .and_then(|r| r.route::<__path_item>(item))
        .and_then(|r| r.route_with::<__path_slow>(slow_route, slow))
        .and_then(|r| r.route::<__path_stream>(stream))
        .and_then(|r| r.route::<__path_whoami>(whoami))
        .and_then(|r| r.route::<__path_endless>(endless))
        .and_then(|r| r.route::<__path_fail>(fail))
        .expect("routes are valid")
}

fn test_config() -> HttpConfig {
    HttpConfig { body_bytes_max: 1024, request_timeout_ms: 2_000, ..HttpConfig::default() }
}

// ---------------------------------------------------------------- server and clients

struct TestServer {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ShutdownSummary>,
}

impl TestServer {
    async fn start(config: HttpConfig) -> Self {
        Self::start_with(config, router()).await
    }

    async fn start_with(config: HttpConfig, router: Router<TestApp>) -> Self {
        Self::start_full(config, router, Registry::default()).await
    }

    async fn start_full(config: HttpConfig, router: Router<TestApp>, registry: Registry) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let identity = TlsIdentity { cert_chain: vec![cert.clone()], key };
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = HttpServer::bind(addr, identity, config, router, registry).await.expect("server binds");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { addr, cert, stop: Some(stop), task }
    }

    async fn shutdown(mut self) -> ShutdownSummary {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.expect("server task")
    }

    async fn tls(&self, alpn: &[u8]) -> Result<TlsStream<TcpStream>, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("root");
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        TlsConnector::from(Arc::new(config)).connect(name, tcp).await
    }

    async fn client(&self, version: Proto) -> Client {
        match version {
            Proto::H1 => {
                let io = TokioIo::new(self.tls(b"http/1.1").await.expect("tls"));
                let (sender, connection) = hyper::client::conn::http1::handshake(io).await.expect("h1");
                let task = tokio::spawn(async move { connection.await.is_ok() });
                Client { sender: Sender::H1(sender), task, addr: self.addr }
            }
            Proto::H2 => {
                let io = TokioIo::new(self.tls(b"h2").await.expect("tls"));
                let (sender, connection) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2");
                let task = tokio::spawn(async move { connection.await.is_ok() });
                Client { sender: Sender::H2(sender), task, addr: self.addr }
            }
        }
    }

    /// Sends raw bytes over TLS (HTTP/1.1) and returns everything the server sends back until
    /// it closes the connection.
    async fn raw(&self, request: &[u8]) -> String {
        let mut tls = self.tls(b"http/1.1").await.expect("tls");
        tls.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(SAFETY_TIMEOUT, tls.read_to_end(&mut answer)).await.expect("server answers");
        // A server closing without close_notify is fine here: only the bytes matter.
        let _ = read;
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// Upper bound for waits that succeed quickly when the code is right; it only turns a hang
/// into a failure, it measures nothing.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Proto {
    H1,
    H2,
}

type ClientBody = BoxBody<Bytes, BoxError>;

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ClientBody>),
    H2(hyper::client::conn::http2::SendRequest<ClientBody>),
}

struct Client {
    sender: Sender,
    /// Resolves when the connection ends (true = ended cleanly).
    task: JoinHandle<bool>,
    addr: SocketAddr,
}

struct Answer {
    status: StatusCode,
    version: hyper::Version,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn full(bytes: impl Into<Bytes>) -> ClientBody {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed()
}

impl Client {
    async fn send(
        &mut self,
        request: hyper::Request<ClientBody>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match &mut self.sender {
            Sender::H1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::H2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }

    fn build(&self, method: Method, path: &str) -> http::request::Builder {
        let builder = hyper::Request::builder().method(method);
        match self.sender {
            Sender::H1(_) => builder.uri(path).header("host", "localhost"),
            Sender::H2(_) => builder.uri(format!("https://localhost:{}{path}", self.addr.port())),
        }
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: ClientBody,
    ) -> Answer {
        let mut builder = self.build(method, path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body).expect("request");
        let response = self.send(request).await.expect("response");
        let (head, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer { status: head.status, version: head.version, headers: head.headers, body }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.request(Method::GET, path, &[], full(Bytes::new())).await
    }

    async fn post_json(&mut self, path: &str, content_type: &str, body: &str) -> Answer {
        self.request(Method::POST, path, &[("content-type", content_type)], full(body.to_owned())).await
    }
}

fn assert_error(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "body: {}", answer.text());
    assert_eq!(answer.header("content-type"), "application/json");
    let json = answer.json();
    assert_eq!(json["error"], code, "body: {json}");
    assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {json}");
    assert_eq!(json.as_object().map(|o| o.len()), Some(2), "exactly error + message: {json}");
}

/// Reads `/metrics` and returns the value of the sample line starting with `series` exactly.
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let mut client = server.client(Proto::H1).await;
    let text = client.get("/metrics").await.text();
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn healthz_answers_over_http1_and_http2() {
    let server = TestServer::start(test_config()).await;
    for (proto, version) in [(Proto::H1, hyper::Version::HTTP_11), (Proto::H2, hyper::Version::HTTP_2)] {
        let mut client = server.client(proto).await;
        let answer = client.get("/healthz").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.version, version, "ALPN picked {proto:?}");
        assert_eq!(answer.header("content-type"), "application/json");
        assert_eq!(answer.json(), serde_json::json!({ "status": "ok" }));
        assert_eq!(answer.header("content-length"), "15");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_text_parses_and_counts_requests() {
    // The application registers its own collectors before the server starts.
    let mut registry = Registry::default();
    let readings = prometheus_client::metrics::counter::Counter::<u64>::default();
    registry.register("bluewave_engine_readings", "Readings acked (test stand-in)", readings.clone());
    readings.inc_by(42);
    let server = TestServer::start_full(test_config(), router(), registry).await;
    let mut client = server.client(Proto::H2).await;
    for _ in 0..3 {
        assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
    }
    assert_eq!(client.get("/no/such/route").await.status, StatusCode::NOT_FOUND);
    let answer = client.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header("content-type").starts_with("application/openmetrics-text"));
    let text = answer.text();
    // Every line is a comment or `name{labels} value` with a numeric value; the text ends with EOF.
    assert_eq!(text.lines().last(), Some("# EOF"));
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        assert!(value.parse::<f64>().is_ok(), "value of {series}: {value}");
        assert!(series.starts_with("bluewave_"), "{series}");
    }
    assert!(text.contains("\nbluewave_engine_readings_total 42\n"), "{text}");
    let healthz = r#"bluewave_http_requests_total{route="/healthz",method="GET",status="200"}"#;
    assert_eq!(text.lines().find_map(|l| l.strip_prefix(healthz)), Some(" 3"), "{text}");
    let unmatched = r#"bluewave_http_requests_total{route="unmatched",method="GET",status="404"}"#;
    assert_eq!(text.lines().find_map(|l| l.strip_prefix(unmatched)), Some(" 1"), "{text}");
    let latency = r#"bluewave_http_request_duration_seconds_count{route="/healthz"}"#;
    assert_eq!(text.lines().find_map(|l| l.strip_prefix(latency)), Some(" 3"), "{text}");
    assert!(text.contains("bluewave_http_connections_open 1\n"), "{text}");
    assert!(text.contains("bluewave_http_response_body_bytes_total "), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let server = TestServer::start(test_config()).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut client = server.client(proto).await;
        assert_error(&client.get("/api/nothing-here").await, StatusCode::NOT_FOUND, "not_found");
        assert_error(&client.get("/healthz/").await, StatusCode::NOT_FOUND, "not_found");
        let answer = client.request(Method::DELETE, "/healthz", &[], full(Bytes::new())).await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(answer.header("allow"), "GET");
        let answer = client.get("/api/echo").await;
        assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert_eq!(answer.header("allow"), "POST");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn declared_body_over_limit_is_413_before_the_body_is_sent() {
    let server = TestServer::start(test_config()).await;
    // HTTP/1.1: the head promises 10 MiB, only 16 bytes follow; the answer still comes and the
    // connection is closed, so the server never waited for (or read) the rest.
    let answer = server
        .raw(
            b"POST /api/echo HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
              content-length: 10485760\r\n\r\n{\"name\":\"x\",\"co",
        )
        .await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.contains(r#"{"error":"payload_too_large","message":"request body larger than 1024 bytes"}"#)
    );
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");

    // HTTP/2: a stream whose body never ends but declares 10 MiB gets 413 all the same.
    let mut client = server.client(Proto::H2).await;
    let pending =
        futures_util::stream::once(async { Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"{"))) })
            .chain(futures_util::stream::pending());
    let answer = client
        .request(
            Method::POST,
            "/api/echo",
            &[("content-type", "application/json"), ("content-length", "10485760")],
            BodyExt::boxed(StreamBody::new(pending)),
        )
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    server.shutdown().await;
}

#[tokio::test]
async fn chunked_body_over_limit_is_cut_off_with_413_and_route_limit_overrides() {
    let server = TestServer::start(test_config()).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut client = server.client(proto).await;
        // No Content-Length: the body streams in 100-byte chunks, forever; the limit stops it.
        let endless = futures_util::stream::repeat_with(|| {
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b' '; 100])))
        });
        let answer = client
            .request(
                Method::POST,
                "/api/echo",
                &[("content-type", "application/json")],
                BodyExt::boxed(StreamBody::new(endless)),
            )
            .await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

        // /api/upload has its own 4096-byte limit above the server's 1024.
        let mut client = server.client(proto).await;
        let answer = client.request(Method::POST, "/api/upload", &[], full(vec![7u8; 3000])).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json(), serde_json::json!(3000));
        let answer = client.request(Method::POST, "/api/upload", &[], full(vec![7u8; 4097])).await;
        assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn json_body_errors_are_400_with_reason_and_415_for_other_media_types() {
    let server = TestServer::start(test_config()).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut client = server.client(proto).await;
        let answer =
            client.post_json("/api/echo", "application/json", r#"{"name":"buoy-7","count":3}"#).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json(), serde_json::json!({ "name": "buoy-7", "count": 3 }));
        let answer = client
            .post_json("/api/echo", "Application/JSON; charset=utf-8", r#"{"name":"a","count":1}"#)
            .await;
        assert_eq!(answer.status, StatusCode::OK);

        let answer = client.post_json("/api/echo", "application/json", r#"{"name": "a", "count": }"#).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_json");
        assert_eq!(answer.json()["message"], "invalid JSON body: expected value at line 1 column 24");
        let answer = client.post_json("/api/echo", "application/json", r#"{"name":"a"}"#).await;
        assert_eq!(answer.json()["message"], "invalid JSON body: missing field `count` at line 1 column 12");
        let answer = client.post_json("/api/echo", "application/json", r#"{"name":"a","count":-1}"#).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_json");

        let answer = client.post_json("/api/echo", "text/plain", r#"{"name":"a","count":1}"#).await;
        assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        assert_eq!(answer.json()["message"], "Content-Type must be application/json");
        let answer = client.request(Method::POST, "/api/echo", &[], full(r#"{"name":"a","count":1}"#)).await;
        assert_error(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn path_parameters_and_query_strings_are_typed() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H1).await;
    let answer = client.get("/api/items/buoy-7.a?verbose=true").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({ "id": "buoy-7.a", "verbose": true }));
    let answer = client.get("/api/items/x?verbose=perhaps").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    let answer = client.get("/api/items/x").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(answer.json()["message"], "invalid query string: missing field `verbose`");
    server.shutdown().await;
}

#[tokio::test]
async fn path_traversal_and_odd_paths_never_reach_a_handler() {
    let server = TestServer::start(test_config()).await;
    for path in [
        "/api/../etc/passwd",
        "/api/items/..",
        "/api/./healthz",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/items/%2e%2e%2fsecret",
        "/api/items/a%00b",
        "/api//items/x",
        "//healthz",
        "/api/items/a\\..\\b",
        "/api/docs/..%2f..%2fCargo.toml",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        let answer = server.raw(request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{path}: {answer}");
        assert!(
            answer.contains(r#"{"error":"invalid_path","message":"the request path is not valid"}"#),
            "{path}"
        );
    }
    for path in ["/etc/passwd", "/api/docs/Cargo.toml", "/web/assets/docs.js"] {
        let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        let answer = server.raw(request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 404 "), "{path}: {answer}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn security_headers_are_on_every_answer() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H2).await;
    let strict_csp = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
    for (path, csp) in [
        ("/healthz", strict_csp),
        ("/api/nothing", strict_csp),
        ("/api/items/1?verbose=false", strict_csp),
        ("/api/fail", strict_csp),
        ("/api/%2e", strict_csp),
        (
            "/api/docs",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    ] {
        let answer = client.get(path).await;
        assert_eq!(
            answer.header("strict-transport-security"),
            "max-age=63072000; includeSubDomains",
            "{path}"
        );
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(answer.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(answer.header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(answer.header("content-security-policy"), csp, "{path}");
        assert_eq!(answer.header("cache-control"), "no-store", "{path}");
        assert_eq!(answer.header("x-request-id").len(), answer.header("x-request-id").trim().len());
        assert!(!answer.header("x-request-id").is_empty(), "{path}");
    }
    let first = client.get("/healthz").await;
    let second = client.get("/healthz").await;
    assert_ne!(first.header("x-request-id"), second.header("x-request-id"));
    server.shutdown().await;
}

#[tokio::test]
async fn internal_errors_show_only_a_request_id() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H1).await;
    let answer = client.get("/api/fail").await;
    assert_error(&answer, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let text = answer.text();
    assert!(!text.contains("secret") && !text.contains("/var/lib"), "{text}");
    let request_id = answer.header("x-request-id");
    assert!(text.contains(request_id), "{text} mentions {request_id}");
    server.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_go_through_the_application_authenticator() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H2).await;
    let answer = client.get("/api/whoami").await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(answer.header("www-authenticate"), "Bearer");
    assert_eq!(answer.json()["message"], "missing bearer token");
    for (header, message) in [
        ("Bearer wrong", "invalid token"),
        ("Basic YWxpY2U6cHc=", "expected a bearer token"),
        ("Bearer ", "expected a bearer token"),
        ("good-token", "malformed Authorization header"),
    ] {
        let answer = client
            .request(Method::GET, "/api/whoami", &[("authorization", header)], full(Bytes::new()))
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(answer.json()["message"], message, "{header}");
    }
    let answer = client
        .request(Method::GET, "/api/whoami", &[("authorization", "bearer good-token")], full(Bytes::new()))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), serde_json::json!({ "caller": "alice" }));
    server.shutdown().await;
}

#[tokio::test]
async fn streamed_bodies_deliver_every_chunk_and_abort_on_error() {
    let server = TestServer::start(test_config()).await;
    let expected: String = (0..500).map(|i| format!("line {i}\n")).collect();
    for proto in [Proto::H1, Proto::H2] {
        let mut client = server.client(proto).await;
        let answer = client.get("/api/stream?chunks=500").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-type"), "text/plain");
        assert_eq!(answer.header("content-length"), "", "streamed, not buffered");
        assert_eq!(answer.text(), expected);

        // A failing producer cuts the body: the client sees an error, never a complete answer.
        let mut client = server.client(proto).await;
        let request = client.build(Method::GET, "/api/stream?chunks=500&fail_at=250");
        let response = client.send(request.body(full(Bytes::new())).expect("request")).await.expect("head");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.into_body().collect().await.is_err(), "{proto:?}: truncated body must be an error");
    }
    let sent = metric(&server, "bluewave_http_response_body_bytes_total").await.expect("bytes metric");
    assert!(sent >= 2.0 * expected.len() as f64, "{sent}");
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_client_that_never_finishes_its_headers_is_closed() {
    let config = HttpConfig { header_read_timeout_ms: 200, ..test_config() };
    let server = TestServer::start(config).await;
    let mut tls = server.tls(b"http/1.1").await.expect("tls");
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ").await.expect("write");
    tls.flush().await.expect("flush");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SAFETY_TIMEOUT, tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "no answer to an unfinished request");
    // HTTP/2: a client that completes TLS but never sends its preface is dropped once idle.
    let config = HttpConfig { idle_timeout_ms: 200, ..test_config() };
    let silent_server = TestServer::start(config).await;
    let mut silent = silent_server.tls(b"h2").await.expect("tls");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SAFETY_TIMEOUT, silent.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the silent HTTP/2 connection");
    silent_server.shutdown().await;
    // The server is still fine for everyone else.
    assert_eq!(server.client(Proto::H1).await.get("/healthz").await.status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let server = TestServer::start(HttpConfig { connections_max: 2, ..test_config() }).await;
    let mut first = server.client(Proto::H1).await;
    let mut second = server.client(Proto::H2).await;
    assert_eq!(first.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(second.get("/healthz").await.status, StatusCode::OK);
    assert!(server.tls(b"http/1.1").await.is_err(), "third connection refused during the handshake");

    // Closing one frees its slot: watch the open-connection gauge through the other one.
    drop(first);
    let mut open = String::new();
    for _ in 0..500 {
        open = second.get("/metrics").await.text();
        if open.contains("bluewave_http_connections_open 1\n") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(open.contains("bluewave_http_connections_open 1\n"), "{open}");
    let mut third = server.client(Proto::H1).await;
    assert_eq!(third.get("/healthz").await.status, StatusCode::OK);
    let text = second.get("/metrics").await.text();
    assert!(text.contains("bluewave_http_connections_rejected_total 1\n"), "{text}");
    assert!(text.contains("bluewave_http_connections_open 2\n"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn requests_over_their_deadline_get_503_with_retry_after() {
    // The test router gives /api/slow 60 s; this one gives it 100 ms.
    let router = Router::new(TestApp { slow_started: Arc::new(Semaphore::new(0)) }, "t", "0")
        .and_then(|r| {
            r.route_with::<__path_slow>(
                RouteOptions { request_timeout_ms: Some(100), ..Default::default() },
                slow,
            )
        })
        .expect("router");
    let server = TestServer::start_with(test_config(), router).await;
    let mut client = server.client(Proto::H2).await;
    let answer = client.get("/api/slow?ms=5000").await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "timeout");
    assert_eq!(answer.header("retry-after"), "1");
    assert_eq!(answer.json()["message"], "the request took longer than 100 ms");
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let server = TestServer::start(HttpConfig { idle_timeout_ms: 200, ..test_config() }).await;
    for proto in [Proto::H1, Proto::H2] {
        let mut client = server.client(proto).await;
        assert_eq!(client.get("/healthz").await.status, StatusCode::OK);
        let ended = tokio::time::timeout(SAFETY_TIMEOUT, &mut client.task).await;
        assert!(ended.is_ok(), "{proto:?}: the idle connection was closed by the server");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests_and_stops_accepting() {
    let started = Arc::new(Semaphore::new(0));
    let server = TestServer::start_with(test_config(), router_signalling(Arc::clone(&started))).await;
    let mut h1 = server.client(Proto::H1).await;
    let mut h2 = server.client(Proto::H2).await;
    let idle = server.client(Proto::H1).await;
    let slow_h1 = tokio::spawn(async move { h1.get("/api/slow?ms=400").await });
    let slow_h2 = tokio::spawn(async move { h2.get("/api/slow?ms=400").await });
    // Both handlers are running before shutdown begins.
    drop(started.acquire_many(2).await.expect("both slow handlers started"));
    let addr = server.addr;
    let summary = server.shutdown();
    let (summary, h1, h2) = tokio::join!(summary, slow_h1, slow_h2);
    let (h1, h2) = (h1.expect("h1 task"), h2.expect("h2 task"));
    assert_eq!(h1.status, StatusCode::OK, "HTTP/1.1 in-flight request finished");
    assert_eq!(h1.json(), serde_json::json!("done"));
    assert_eq!(h2.status, StatusCode::OK, "HTTP/2 in-flight request finished");
    assert_eq!(summary, ShutdownSummary { connections_drained: 3, connections_aborted: 0 });
    drop(idle);
    assert!(TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn shutdown_cuts_requests_that_outlive_the_drain_deadline() {
    let started = Arc::new(Semaphore::new(0));
    let config = HttpConfig { shutdown_drain_timeout_ms: 200, ..test_config() };
    let server = TestServer::start_with(config, router_signalling(Arc::clone(&started))).await;
    let mut client = server.client(Proto::H1).await;
    let request = client.build(Method::GET, "/api/slow?ms=30000").body(full(Bytes::new())).expect("req");
    let pending = tokio::spawn(async move { client.send(request).await.map(|r| r.status()) });
    drop(started.acquire().await.expect("slow handler started"));
    let summary = server.shutdown().await;
    assert_eq!(summary, ShutdownSummary { connections_drained: 0, connections_aborted: 1 });
    assert!(pending.await.expect("task").is_err(), "the cut request fails on the client");
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes_of_the_router() {
    let router = router();
    let documented: Vec<(String, String)> = router
        .routes()
        .into_iter()
        .filter(|route| route.documented)
        .map(|route| (route.path, route.method.as_str().to_owned()))
        .collect();
    let hidden: Vec<String> = router.routes().into_iter().filter(|r| !r.documented).map(|r| r.path).collect();
    assert_eq!(hidden, ["/api/docs/docs.css", "/api/docs/docs.js"], "only the docs assets are undocumented");
    let server = TestServer::start_with(test_config(), router).await;
    let mut client = server.client(Proto::H1).await;
    let answer = client.get("/api/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut in_document = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
            if item.get(method).is_some() {
                in_document.push((path.clone(), method.to_ascii_uppercase()));
            }
        }
    }
    in_document.sort();
    assert_eq!(in_document, documented, "router and document agree in both directions");
    for expected in
        ["/healthz", "/metrics", "/api/openapi.json", "/api/docs", "/api/items/{id}", "/api/whoami"]
    {
        assert!(documented.iter().any(|(path, _)| path == expected), "{expected}");
    }
    assert!(doc["components"]["schemas"]["Echo"].is_object(), "schemas collected from the routes");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    server.shutdown().await;
}

#[tokio::test]
async fn docs_page_is_served_with_no_external_urls() {
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H1).await;
    let page = client.get("/api/docs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains(r#"<script src="docs/docs.js" defer></script>"#));
    assert!(html.contains(r#"<link rel="stylesheet" href="docs/docs.css">"#));
    for (path, content_type) in [
        ("/api/docs/docs.js", "text/javascript; charset=utf-8"),
        ("/api/docs/docs.css", "text/css; charset=utf-8"),
    ] {
        let asset = client.get(path).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert_eq!(asset.header("content-type"), content_type);
        assert!(!asset.body.is_empty());
        assert_external_free(path, &asset.text());
    }
    assert_external_free("/api/docs", &html);
    // No inline script or style: the page's CSP forbids them.
    assert!(!html.contains("<script>") && !html.contains("<style") && !html.contains(" style="));
    assert!(!html.contains("onload=") && !html.contains("onclick="));
    server.shutdown().await;
}

fn assert_external_free(name: &str, text: &str) {
    for forbidden in ["http://", "https://", "//cdn", "@import", "url("] {
        assert!(!text.contains(forbidden), "{name} refers to {forbidden}");
    }
}

#[tokio::test]
async fn invalid_configuration_is_refused_by_name() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let identity = || TlsIdentity {
        cert_chain: vec![certified.cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der())),
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    for (config, field) in [
        (HttpConfig { connections_max: 0, ..HttpConfig::default() }, "connections_max"),
        (HttpConfig { body_bytes_max: 0, ..HttpConfig::default() }, "body_bytes_max"),
        (HttpConfig { header_bytes_max: 1024, ..HttpConfig::default() }, "header_bytes_max"),
    ] {
        let error = HttpServer::bind(addr, identity(), config, router(), Registry::default()).await.err();
        assert_eq!(
            error.map(|e| e.to_string()),
            Some(format!("invalid HTTP configuration: `{field}` is out of range"))
        );
    }
    let conflict = router().route::<__path_echo>(echo).err().map(|e| e.to_string());
    assert_eq!(conflict.as_deref(), Some("invalid route `/api/echo`: POST registered twice"));
}

#[tokio::test]
async fn oversized_request_heads_are_431() {
    let server = TestServer::start(test_config()).await;
    let long_header =
        format!("GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-padding: {}\r\n\r\n", "a".repeat(20 * 1024));
    let answer = server.raw(long_header.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    let many_headers: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: localhost\r\n{many_headers}\r\n");
    let answer = server.raw(request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // Just under both limits is fine.
    let fine_headers: String = (0..90).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request =
        format!("GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{fine_headers}\r\n");
    assert!(server.raw(request.as_bytes()).await.starts_with("HTTP/1.1 200 "));
    server.shutdown().await;
}

#[tokio::test]
async fn clients_that_stop_reading_a_response_are_cut() {
    let server = TestServer::start(HttpConfig { response_stall_timeout_ms: 300, ..test_config() }).await;
    let mut reader_that_stops = server.tls(b"http/1.1").await.expect("tls");
    reader_that_stops
        .write_all(b"GET /api/endless HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    // Never read: socket buffers fill, the body cannot move, the stall timer runs out.
    let mut watcher = server.client(Proto::H2).await;
    let series = "bluewave_http_responses_stalled_total 1\n";
    let mut text = String::new();
    for _ in 0..1000 {
        text = watcher.get("/metrics").await.text();
        if text.contains(series) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(text.contains(series), "{text}");
    // Backpressure: the endless producer was only pulled as far as the connection could take;
    // hyper's write buffer and the socket buffers hold a few MiB at most, never the 64 MiB bound.
    let sent: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("bluewave_http_response_body_bytes_total ")?.parse().ok())
        .expect("bytes metric");
    assert!(sent < 64.0 * 1024.0 * 1024.0, "producer ran ahead of the client: {sent} bytes");
    // The connection is gone: reading drains what was buffered, then ends.
    let mut sink = Vec::new();
    let drained = tokio::time::timeout(SAFETY_TIMEOUT, reader_that_stops.read_to_end(&mut sink)).await;
    assert!(drained.is_ok(), "the stalled connection was closed");
    assert!(
        text.contains("bluewave_http_connections_open 2\n")
            || text.contains("bluewave_http_connections_open 1\n")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tls_1_3_is_preferred_and_1_2_accepted() {
    let server = TestServer::start(test_config()).await;
    let tls = server.tls(b"h2").await.expect("tls");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.clone()).expect("root");
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS 1.2 handshake");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    // No ALPN from the client: HTTP/1.1.
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("h1");
    tokio::spawn(connection);
    let request =
        hyper::Request::get("/healthz").header("host", "localhost").body(full(Bytes::new())).expect("req");
    assert_eq!(sender.send_request(request).await.expect("answer").status(), StatusCode::OK);
    server.shutdown().await;
}

/// Collects everything the tracing subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_the_request_but_never_credentials_cookies_queries_or_bodies() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not thread-scoped: a scoped subscriber can miss events when other test threads
    // register the same callsites concurrently (tracing's interest cache). Only this test sets
    // it; lines are picked out by this test's request ids and secrets.
    tracing::subscriber::set_global_default(subscriber).expect("no other test sets a subscriber");
    let server = TestServer::start(test_config()).await;
    let mut client = server.client(Proto::H1).await;
    let answer = client
        .request(
            Method::POST,
            "/api/echo?filter=query-secret",
            &[
                ("authorization", "Bearer token-secret"),
                ("cookie", "session=cookie-secret"),
                ("content-type", "application/json"),
            ],
            full(r#"{"name":"body-secret","count":1}"#),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let echo_id = answer.header("x-request-id").to_owned();
    let failed = client.get("/api/fail").await;
    let fail_id = failed.header("x-request-id").to_owned();
    server.shutdown().await;

    let text = String::from_utf8(logs.0.lock().expect("log lock").clone()).expect("utf-8 logs");
    let access = text
        .lines()
        .find(|line| line.contains(&echo_id))
        .unwrap_or_else(|| panic!("access log line in:\n{text}"));
    for field in
        ["method=\"POST\"", "path=\"/api/echo\"", "route=\"/api/echo\"", "status=200", "duration_us="]
    {
        assert!(access.contains(field), "{field} in {access}");
    }
    for secret in ["token-secret", "cookie-secret", "query-secret", "body-secret"] {
        assert!(!text.contains(secret), "{secret} leaked into the logs:\n{text}");
    }
    // The internal detail the client never saw is in the log, under the request id it got.
    assert!(
        text.lines().any(|line| line.contains(&fail_id) && line.contains("secret database path")),
        "{text}"
    );
}
