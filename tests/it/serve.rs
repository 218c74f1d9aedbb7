//! Proves `bluewave serve` as a user meets it: a fresh data dir starts with embedded defaults
//! (self-signed identity, signing keys, a first admin whose generated password is printed once);
//! the flow login → query → refresh → logout → logout-all over real HTTPS (the old access token
//! is refused after logout-all); an operator registers a buoy and issues its device token
//! through the API; the buoy streams over real QUIC with the wire client SDK (acks `Stored`); an
//! analyst whose plan covers that buoy reads exactly those readings back through
//! `GET /api/telemetry` and `POST /api/query` and never sees another buoy; revoking the device
//! token through the API closes the buoy's open connection and refuses its next HELLO; `/metrics`
//! counts the engine, QUIC and query work; SIGTERM stops everything cleanly and flushes.
//! A customer signed in through the login form gets, on the dashboard's live stream, the
//! readings a buoy of their plan streams over QUIC after the stream opened (and never another
//! buoy's).
//!
//! The server is a child process: every wait has a deadline ([`STEP_TIMEOUT`]) and the child is
//! killed when [`Server`] drops, so a fault is a failure with a message, never a hang.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bluewave_engine::{MetricName, ReadingBatch};
use bluewave_web::{AuthConfig, AuthService, BuoyScope, NewUser, PlanSpec, Role, Secret};
use bluewave_wire::{AckOutcome, Client, ClientConfig, ClientError, RefuseReason, ServerIdentity, Trust};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const ADMIN: &str = "admin@localhost";
pub(super) const OPERATOR: &str = "operator@example.org";
const ANALYST: &str = "analyst@example.org";
pub(super) const PASSWORD: &str = "an-admin-password-long-enough";
/// 2026-01-01T00:00:00Z in ns.
pub(super) const T0: i64 = 1_767_225_600_000_000_000;
const SECOND_NS: i64 = 1_000_000_000;
/// Deadline of one step (a request, an ack, a start-up, a shutdown). Generous for a loaded
/// 2-core machine; a correct server answers in milliseconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Awaits `future` for at most [`STEP_TIMEOUT`]; a late answer fails the test with `what`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {STEP_TIMEOUT:?}: {what}"),
    }
}

/// A running `bluewave serve` and what it printed. Killed on drop if still running.
pub(super) struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
    pub(super) https: SocketAddr,
    quic: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub(super) fn start(data_dir: &Path, admin_password: Option<&str>) -> Self {
        Self::start_with(data_dir, admin_password, &[])
    }

    /// [`Self::start`] with more `serve` arguments.
    pub(super) fn start_with(
        data_dir: &Path,
        admin_password: Option<&str>,
        extra: &[&std::ffi::OsStr],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bluewave"));
        command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--https-listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("BLUEWAVE_ADMIN_PASSWORD")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(password) = admin_password {
            command.env("BLUEWAVE_ADMIN_PASSWORD", password);
        }
        if !extra.iter().any(|arg| *arg == "--quic-listen") {
            command.args(["--quic-listen", "127.0.0.1:0"]);
        }
        // Parallel servers: each its own Postgres port (the default is a fixed one).
        if !extra.iter().any(|arg| *arg == "--pg-listen") {
            command.args(["--pg-listen", "127.0.0.1:0"]);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Built before the first wait so a failed start-up kills the child on the way out.
        let mut server = Self {
            child,
            lines,
            printed: Vec::new(),
            https: SocketAddr::from(([0, 0, 0, 0], 0)),
            quic: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let (mut https, mut quic) = (None, None);
        let deadline = Instant::now() + STEP_TIMEOUT;
        // "device tokens: ..." is the last line serve prints once both listeners are up.
        while !server.printed.last().is_some_and(|line| line.starts_with("device tokens: ")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match server.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(error) => {
                    panic!("serve did not print its addresses ({error}); printed {:?}", server.printed)
                }
            };
            if let Some(rest) = line.strip_prefix("HTTPS API listening on https://") {
                https = rest.split(' ').next().map(|addr| addr.parse::<SocketAddr>().unwrap());
            }
            if let Some(rest) = line.strip_prefix("QUIC ingest listening on ") {
                quic = rest.split(' ').next().map(|addr| addr.parse::<SocketAddr>().unwrap());
            }
            server.printed.push(line);
        }
        server.https = https.expect("serve printed its HTTPS address");
        server.quic = quic.expect("serve printed its QUIC address");
        server
    }

    /// SIGTERM, then every remaining line; asserts a clean exit within [`STEP_TIMEOUT`].
    pub(super) fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + STEP_TIMEOUT;
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "serve did not stop within {STEP_TIMEOUT:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipe closes with the process; the reader thread sends what was left.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.printed.push(line);
        }
        assert!(exit.success(), "serve exited with {exit}; printed {:?}", self.printed);
        std::mem::take(&mut self.printed)
    }
}

/// An HTTPS client trusting the server's self-signed certificate (one connection per request).
pub(super) struct Https {
    addr: SocketAddr,
    connector: TlsConnector,
}

pub(super) struct Answer {
    pub(super) status: u16,
    content_type: String,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }
}

impl Https {
    pub(super) fn new(addr: SocketAddr, identity: &ServerIdentity) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.end_entity().unwrap().clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { addr, connector: TlsConnector::from(Arc::new(config)) }
    }

    pub(super) async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        within(&format!("{method} {path}"), self.request_unbounded(method, path, token, accept, body)).await
    }

    async fn request_unbounded(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = self.connector.connect(name, tcp).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("connection", "close");
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        if let Some(accept) = accept {
            builder = builder.header("accept", accept);
        }
        let bytes = match body {
            Some(json) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let response = sender.send_request(builder.body(Full::new(bytes)).unwrap()).await.unwrap();
        let (head, body) = response.into_parts();
        let content_type =
            head.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        Answer { status: head.status.as_u16(), content_type, body: body.collect().await.unwrap().to_bytes() }
    }

    pub(super) async fn login(&self, email: &str, password: &str) -> Value {
        let body = json!({ "email": email, "password": password });
        let answer = self.request("POST", "/api/auth/token", None, None, Some(body)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.json()
    }
}

fn batch(first_ts: i64, values: &[f64]) -> ReadingBatch {
    let count = values.len();
    ReadingBatch::new(
        vec![MetricName::new("salinity_psu").unwrap()],
        (0..count).map(|i| first_ts + i as i64 * SECOND_NS).collect(),
        vec![0; count],
        values.to_vec(),
    )
    .unwrap()
}

fn buoy_client(quic: SocketAddr, identity: &ServerIdentity, token: &str) -> ClientConfig {
    let mut config = ClientConfig::new(
        quic,
        "localhost",
        Trust::Pinned(vec![identity.pin_sha256_bytes()]),
        token,
        vec![MetricName::new("salinity_psu").unwrap()],
    );
    // Short enough that a refused or closed client gives up well inside STEP_TIMEOUT.
    config.close_timeout_ms = 5_000;
    config
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn first_run_prints_a_generated_admin_password_once_and_it_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), None);
    let password = server
        .printed
        .iter()
        .find_map(|line| line.strip_prefix(&format!("first admin: {ADMIN} password: ")))
        .expect("the generated password is printed")
        .to_owned();
    assert!(server.printed.iter().any(|line| line.starts_with("certificate SHA-256 pin: ")));
    let (identity, generated) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    assert!(!generated, "serve generated the identity on first run");
    runtime().block_on(async {
        let https = Https::new(server.https, &identity);
        let pair = https.login(ADMIN, &password).await;
        assert_eq!(pair["token_type"], "Bearer");
        let health = https.request("GET", "/healthz", None, None, None).await;
        assert_eq!(health.status, 200);
    });
    let printed = server.stop();
    // Second run: the admin exists, nothing is printed about it.
    let again = Server::start(dir.path(), None);
    assert!(!again.printed.iter().any(|line| line.starts_with("first admin")), "{:?}", again.printed);
    let printed_again = again.stop();
    assert_eq!(printed.iter().filter(|line| line.contains(&password)).count(), 1);
    assert!(!printed_again.iter().any(|line| line.contains(&password)));
}

/// An operator and an analyst whose plan covers `buoy-1`, created before the server takes the
/// data dir (the admin comes from `BLUEWAVE_ADMIN_PASSWORD`, as on a real first run).
pub(super) fn seed_accounts(data_dir: &Path) {
    let auth = AuthService::open(
        data_dir,
        AuthConfig { mfa_required_roles: Default::default(), ..AuthConfig::default() },
    )
    .unwrap();
    auth.ensure_first_admin(ADMIN, Some(Secret::new(PASSWORD))).unwrap();
    let pair = auth.login(ADMIN, &Secret::new(PASSWORD), [10, 0, 0, 1].into()).unwrap();
    let admin = auth.verify_access_token(pair.access_token.expose()).unwrap();
    let spec = PlanSpec {
        name: "buoy-1".into(),
        buoys: BuoyScope::List(vec!["buoy-1".into()]),
        history_days: None,
        daily_query_quota: None,
        row_limit: None,
    };
    let plan = auth.create_plan(&admin, spec).unwrap();
    for (email, role, plan_id) in
        [(OPERATOR, Role::Operator, None), (ANALYST, Role::Analyst, Some(plan.id.clone()))]
    {
        let user = NewUser { email: email.into(), password: Secret::new(PASSWORD), role, plan_id };
        auth.create_user(&admin, user).unwrap();
    }
}

#[test]
fn buoy_streams_over_quic_with_an_api_issued_token_and_an_analyst_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    seed_accounts(dir.path());
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    // The operator works with a password alone here (MFA is proved in the web crate's suites).
    let config = dir.path().join("no-mfa.toml");
    std::fs::write(&config, "[auth]\nmfa_required_roles = []\n").unwrap();
    let server =
        Server::start_with(dir.path(), None, &[std::ffi::OsStr::new("--config"), config.as_os_str()]);
    let quic = server.quic;
    let metrics_text = runtime().block_on(async {
        let https = Https::new(server.https, &identity);

        // The operator registers two buoys and issues buoy-1's device token, all through the API.
        let operator = https.login(OPERATOR, PASSWORD).await;
        let operator_token = operator["access_token"].as_str().unwrap();
        for id in ["buoy-1", "buoy-2"] {
            let body = json!({ "id": id, "name": id, "lat": null, "lng": null, "status": "active" });
            let answer = https.request("POST", "/api/buoys", Some(operator_token), None, Some(body)).await;
            assert_eq!(answer.status, 201, "{:?}", answer.body);
        }
        let issued = https
            .request("POST", "/api/buoys/buoy-1/device-tokens", Some(operator_token), None, Some(json!({})))
            .await;
        assert_eq!(issued.status, 201, "{:?}", issued.body);
        let issued = issued.json();
        let device_token = issued["token"].as_str().unwrap().to_owned();
        let jti = issued["jti"].as_str().unwrap().to_owned();
        assert_eq!(issued["buoy_id"], "buoy-1");

        // The buoy streams two batches over QUIC; each ack means durable.
        let client =
            within("connect", Client::connect(buoy_client(quic, &identity, &device_token))).await.unwrap();
        within("HELLO accepted", client.wait_connected()).await.unwrap();
        for (i, values) in [[35.0, 35.25], [35.5, 35.75]].iter().enumerate() {
            let ack =
                within("send", client.send(&batch(T0 + i as i64 * 2 * SECOND_NS, values))).await.unwrap();
            let ack = within("ack", ack).await.unwrap();
            assert_eq!(ack.outcome, AckOutcome::Stored);
        }
        // Another buoy's data through JSON ingest, which the analyst must never see.
        let other = json!({ "buoy_id": "buoy-2", "batch_seq": 0,
            "readings": [{ "metric": "salinity_psu", "ts": T0, "value": 1.0 }] });
        let stored = https.request("POST", "/api/telemetry", Some(operator_token), None, Some(other)).await;
        assert_eq!((stored.status, stored.json()["outcome"].clone()), (200, json!("stored")));

        // login → read → query → refresh → logout → logout-all, as the analyst.
        let analyst = https.login(ANALYST, PASSWORD).await;
        let token = analyst["access_token"].as_str().unwrap();
        let read = https.request("GET", "/api/telemetry?metric=salinity_psu", Some(token), None, None).await;
        assert_eq!(read.status, 200, "{:?}", read.body);
        let rows: Vec<(String, i64, f64)> = read.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let buoy = row["buoy_id"].as_str().unwrap().to_owned();
                (buoy, row["ts"].as_i64().unwrap(), row["value"].as_f64().unwrap())
            })
            .collect();
        let buoy_1 = "buoy-1".to_owned();
        assert_eq!(
            rows,
            [
                (buoy_1.clone(), T0, 35.0),
                (buoy_1.clone(), T0 + SECOND_NS, 35.25),
                (buoy_1.clone(), T0 + 2 * SECOND_NS, 35.5),
                (buoy_1, T0 + 3 * SECOND_NS, 35.75),
            ]
        );
        let other_buoy = https.request("GET", "/api/telemetry?buoy_id=buoy-2", Some(token), None, None).await;
        assert_eq!(
            (other_buoy.status, other_buoy.json()),
            (404, json!({ "error": "not_found", "message": "no such buoy" }))
        );
        let sql = json!({ "sql": "SELECT buoy_id, count(*) AS n, sum(value) AS total FROM readings \
            GROUP BY buoy_id ORDER BY buoy_id" });
        let answer = https.request("POST", "/api/query", Some(token), Some("text/csv"), Some(sql)).await;
        assert_eq!((answer.status, answer.content_type.as_str()), (200, "text/csv; charset=utf-8"));
        assert_eq!(String::from_utf8_lossy(&answer.body), "buoy_id,n,total\nbuoy-1,4,141.5\n");
        let sql = json!({ "sql": "SELECT ts, value FROM readings ORDER BY ts" });
        let answer = https.request("POST", "/api/query", Some(token), None, Some(sql)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let values: Vec<f64> =
            answer.json().as_array().unwrap().iter().map(|row| row["value"].as_f64().unwrap()).collect();
        assert_eq!(values, [35.0, 35.25, 35.5, 35.75]);

        let refresh = json!({ "refresh_token": analyst["refresh_token"] });
        let refreshed = https.request("POST", "/api/auth/refresh", None, None, Some(refresh)).await;
        assert_eq!(refreshed.status, 200);
        let refreshed = refreshed.json();
        let new_token = refreshed["access_token"].as_str().unwrap();
        let buoys = https.request("GET", "/api/buoys", Some(new_token), None, None).await;
        assert_eq!(
            buoys.json(),
            json!([{ "id": "buoy-1", "name": "buoy-1", "lat": null, "lng": null, "status": "active" }])
        );
        let spent = json!({ "refresh_token": refreshed["refresh_token"] });
        let logout = https.request("POST", "/api/auth/logout", None, None, Some(spent.clone())).await;
        assert_eq!(logout.status, 204);
        let after = https.request("POST", "/api/auth/refresh", None, None, Some(spent)).await;
        assert_eq!(
            (after.status, after.json()),
            (401, json!({ "error": "unauthorized", "message": "refresh token invalid" }))
        );
        // The logged-out session's access tokens stop at once.
        let refused = https.request("GET", "/api/buoys", Some(new_token), None, None).await;
        assert_eq!(refused.status, 401, "{:?}", refused.body);
        // Logging out everywhere invalidates every access token issued so far, at once.
        let again = https.login(ANALYST, PASSWORD).await;
        let again = again["access_token"].as_str().unwrap();
        let all = https.request("POST", "/api/auth/logout-all", Some(again), None, None).await;
        assert_eq!(all.status, 204);
        for old in [token, new_token, again] {
            let refused = https.request("GET", "/api/buoys", Some(old), None, None).await;
            assert_eq!(refused.status, 401, "{:?}", refused.body);
            assert_eq!(refused.json()["error"], "unauthorized");
        }

        // Revocation through the API: the open connection is closed, the next HELLO refused.
        let path = format!("/api/device-tokens/{jti}");
        let revoked = https.request("DELETE", &path, Some(operator_token), None, None).await;
        assert_eq!(revoked.status, 204, "{:?}", revoked.body);
        let closed =
            match within("send after revocation", client.send(&batch(T0 + 10 * SECOND_NS, &[1.0]))).await {
                Err(error) => error,
                Ok(ack) => within("ack after revocation", ack).await.unwrap_err(),
            };
        assert!(matches!(closed, ClientError::ServerClosed { .. }), "{closed:?}");
        let fresh =
            within("connect", Client::connect(buoy_client(quic, &identity, &device_token))).await.unwrap();
        match within("HELLO refused", fresh.wait_connected()).await {
            Err(ClientError::Refused { reason: RefuseReason::DeviceRevoked, .. }) => {}
            other => panic!("expected DEVICE_REVOKED, got {other:?}"),
        }
        within("close", fresh.close()).await;
        within("close", client.close()).await;
        String::from_utf8_lossy(&https.request("GET", "/metrics", None, None, None).await.body).into_owned()
    });
    let sample = |name: &str| {
        metrics_text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    assert_eq!(sample("bluewave_quic_closed_device_revoked_total"), Some(1.0), "{metrics_text}");
    // The revoked token's next HELLO, counted by its reason.
    let refused_revoked = "bluewave_quic_hello_refused_total{reason=\"DEVICE_REVOKED\"}";
    assert_eq!(sample(refused_revoked), Some(1.0), "{metrics_text}");
    assert_eq!(sample("bluewave_engine_readings_ingested_total"), Some(5.0), "{metrics_text}");
    // The analyst's read and two SQL queries ran; the read of buoy-2 was refused (outside the
    // plan); rows: 4 readings + 1 CSV group + 4 values.
    for (name, value) in [
        ("bluewave_query_started_total", 3.0),
        ("bluewave_query_completed_total", 3.0),
        ("bluewave_query_refused_total", 1.0),
        ("bluewave_query_failed_total", 0.0),
        ("bluewave_query_timed_out_total", 0.0),
        ("bluewave_query_rows_total", 9.0),
        ("bluewave_query_duration_seconds_count", 3.0),
    ] {
        assert_eq!(sample(name), Some(value), "{name}: {metrics_text}");
    }
    let printed = server.stop();
    assert!(printed.iter().any(|line| line.starts_with("flushed ")), "{printed:?}");
}

#[test]
fn a_config_file_sets_limits_and_a_typo_in_it_stops_serve_with_the_key_named() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bluewave.toml");
    std::fs::write(
        &config,
        "[https]\nbody_bytes_max = 2048\n\n[auth]\naccess_ttl_s = 600\nmfa_required_roles = []\n\n\
         [query]\ntimeout_ms = 1500\ntable_function_rows_max = 1000000000000000\n",
    )
    .unwrap();
    let server = Server::start_with(
        dir.path(),
        Some("config-file-admin-pw"),
        &[std::ffi::OsStr::new("--config"), config.as_os_str()],
    );
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    runtime().block_on(async {
        let https = Https::new(server.https, &identity);
        // [auth] access_ttl_s: the access token lives 600 s, not the default 900.
        let pair = https.login(ADMIN, "config-file-admin-pw").await;
        assert_eq!(pair["expires_in"], 600);
        let token = pair["access_token"].as_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap(),
        )
        .unwrap();
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
        // [https] body_bytes_max: a 4 KiB body is refused 413, a small one is not.
        let big = json!({ "email": "x".repeat(4096), "password": "p" });
        let refused = https.request("POST", "/api/auth/token", None, None, Some(big)).await;
        assert_eq!(refused.status, 413);
        assert_eq!(refused.json()["error"], "payload_too_large");
        // [query] timeout_ms: a runaway count ends with the typed timeout after 1.5 s, and
        // /metrics counts it.
        let sql = json!({ "sql": "SELECT count(*) FROM generate_series(1, 1000000000000)" });
        let runaway = https.request("POST", "/api/query", Some(token), None, Some(sql)).await;
        assert_eq!(runaway.status, 503);
        assert_eq!(
            runaway.json(),
            json!({ "error": "query_timeout", "message": "query timed out after 1500 ms and was cancelled" })
        );
        let timed_out = |text: &str| text.lines().any(|line| line == "bluewave_query_timed_out_total 1");
        // The query task counts the timeout when its plan stops, just after the answer.
        let mut metrics = String::new();
        for _ in 0..100 {
            let answer = https.request("GET", "/metrics", None, None, None).await;
            metrics = String::from_utf8_lossy(&answer.body).into_owned();
            if timed_out(&metrics) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(timed_out(&metrics), "{metrics}");
    });
    server.stop();

    std::fs::write(&config, "[https]\nbody_bytes_maxx = 2048\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bluewave"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "serve",
            "--quic-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
            "--pg-listen",
            "off",
            "--config",
        ])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("body_bytes_maxx"), "{stderr}");
}

#[test]
fn the_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // The HTTPS port is taken: serve logs its QUIC listener at info, then stops with an error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_bluewave"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--quic-listen", "127.0.0.1:0", "--pg-listen", "off", "--https-listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .env("RUST_LOG", "info")
        .env("BLUEWAVE_ADMIN_PASSWORD", "colour-test-admin-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("INFO") && stderr.contains("QUIC ingest server listening"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
}

#[test]
fn a_buoy_connected_to_a_killed_server_gets_a_stateless_reset_from_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A long HELLO deadline: the test's connection sends no HELLO and must stay open until the kill.
    let config = dir.path().join("bluewave.toml");
    std::fs::write(&config, "[quic]\nhello_deadline_ms = 3600000\n").unwrap();
    let first = Server::start_with(
        dir.path(),
        Some("reset-key-admin-password"),
        &[std::ffi::OsStr::new("--config"), config.as_os_str()],
    );
    let quic = first.quic;
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    runtime().block_on(async {
        let mut tls =
            bluewave_wire::rustls_config(&Trust::Pinned(vec![identity.pin_sha256_bytes()])).unwrap();
        tls.alpn_protocols = vec![bluewave_wire::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let connection = within("handshake", endpoint.connect(quic, "localhost").unwrap()).await.unwrap();
        // kill -9, then a new process on the same data dir and port.
        drop(first);
        let second = Server::start_with(
            dir.path(),
            None,
            &[
                std::ffi::OsStr::new("--config"),
                config.as_os_str(),
                std::ffi::OsStr::new("--quic-listen"),
                std::ffi::OsStr::new(&quic.to_string()),
            ],
        );
        assert_eq!(second.quic, quic);
        // The next packet on the old connection meets the new process, which answers it with a
        // stateless reset the client can authenticate (the key is in <data-dir>/tls).
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        let _ = send.write_all(&[0u8; 1_000]).await;
        let error = within("the reset", connection.closed()).await;
        assert!(matches!(error, quinn::ConnectionError::Reset), "{error:?}");
        second.stop();
    });
}

/// A request with raw headers and a form or empty body; the head and the unread body.
async fn raw_request(
    https: &Https,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: Option<String>,
) -> (hyper::http::response::Parts, hyper::body::Incoming) {
    let tcp = TcpStream::connect(https.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = https.connector.connect(name, tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let mut builder = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (key, value) in headers {
        builder = builder.header(*key, *value);
    }
    if form.is_some() {
        builder = builder.header("content-type", "application/x-www-form-urlencoded");
    }
    let body = Full::new(Bytes::from(form.unwrap_or_default()));
    let response = sender.send_request(builder.body(body).unwrap()).await.unwrap();
    response.into_parts()
}

/// The value of the `name` cookie an answer sets.
fn set_cookie_value(head: &hyper::http::response::Parts, name: &str) -> String {
    head.headers
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            let text = v.to_str().unwrap();
            text.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

/// The events of a Server-Sent Events body as they arrive.
struct Events {
    body: hyper::body::Incoming,
    text: String,
}

impl Events {
    /// Reads until the text so far contains `needle`.
    async fn until(&mut self, needle: &str) {
        while !self.text.contains(needle) {
            let frame = self.body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Reads until one more complete event (or comment) than now has arrived.
    async fn next_event(&mut self) {
        let complete = self.text.matches("\n\n").count();
        while self.text.matches("\n\n").count() <= complete {
            let frame = self.body.frame().await.expect("the stream stays open").unwrap();
            if let Ok(data) = frame.into_data() {
                self.text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// The data of every complete `reading` event so far, flattened.
    fn readings(&self) -> Vec<Value> {
        let complete = self.text.rsplit_once("\n\n").map_or("", |(done, _)| done);
        complete
            .split("\n\n")
            .filter_map(|event| event.strip_prefix("event: reading\ndata: "))
            .flat_map(|data| serde_json::from_str::<Vec<Value>>(data).unwrap())
            .collect()
    }
}

/// The live dashboard as a customer meets it: signed in through the login form, the customer
/// opens the SSE stream of `buoy-1`; after the stream is open a buoy streams over real QUIC and
/// gets its acks; the readings of `buoy-1` arrive as `reading` events with their exact values,
/// and `buoy-2`'s (outside the customer's plan, acked in between) never do.
#[test]
fn the_live_dashboard_pushes_readings_acked_over_quic_of_the_plans_buoys_only() {
    const CUSTOMER: &str = "customer@example.org";
    let dir = tempfile::tempdir().unwrap();
    {
        let auth = AuthService::open(
            dir.path(),
            AuthConfig { mfa_required_roles: Default::default(), ..AuthConfig::default() },
        )
        .unwrap();
        auth.ensure_first_admin(ADMIN, Some(Secret::new(PASSWORD))).unwrap();
        let pair = auth.login(ADMIN, &Secret::new(PASSWORD), [10, 0, 0, 1].into()).unwrap();
        let admin = auth.verify_access_token(pair.access_token.expose()).unwrap();
        let spec = PlanSpec {
            name: "buoy-1".into(),
            buoys: BuoyScope::List(vec!["buoy-1".into()]),
            history_days: None,
            daily_query_quota: None,
            row_limit: None,
        };
        let plan = auth.create_plan(&admin, spec).unwrap();
        let customer = NewUser {
            email: CUSTOMER.into(),
            password: Secret::new(PASSWORD),
            role: Role::Customer,
            plan_id: Some(plan.id),
        };
        auth.create_user(&admin, customer).unwrap();
    }
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    let config = dir.path().join("no-mfa.toml");
    std::fs::write(&config, "[auth]\nmfa_required_roles = []\n").unwrap();
    let server =
        Server::start_with(dir.path(), None, &[std::ffi::OsStr::new("--config"), config.as_os_str()]);
    let quic = server.quic;
    runtime().block_on(async {
        let https = Https::new(server.https, &identity);
        let admin = https.login(ADMIN, PASSWORD).await;
        let admin_token = admin["access_token"].as_str().unwrap();
        let mut device_tokens = Vec::new();
        for id in ["buoy-1", "buoy-2"] {
            let body = json!({ "id": id, "name": id, "lat": 43.5, "lng": -8.25, "status": "active" });
            let answer = https.request("POST", "/api/buoys", Some(admin_token), None, Some(body)).await;
            assert_eq!(answer.status, 201, "{:?}", answer.body);
            let path = format!("/api/buoys/{id}/device-tokens");
            let issued = https.request("POST", &path, Some(admin_token), None, Some(json!({}))).await;
            assert_eq!(issued.status, 201, "{:?}", issued.body);
            device_tokens.push(issued.json()["token"].as_str().unwrap().to_owned());
        }

        // The customer signs in through the form (double-submit token, then the session cookie).
        let (form, _) = within("login form", raw_request(&https, "GET", "/login", &[], None)).await;
        let login = set_cookie_value(&form, "__Host-bluewave-login");
        let body = format!("csrf={login}&email={}&password={PASSWORD}", CUSTOMER.replace('@', "%40"));
        let cookie = format!("__Host-bluewave-login={login}");
        let headers = [("cookie", cookie.as_str()), ("origin", "https://localhost")];
        let (signed_in, _) =
            within("login", raw_request(&https, "POST", "/login", &headers, Some(body))).await;
        assert_eq!(signed_in.status, 303);
        let session =
            format!("__Host-bluewave-session={}", set_cookie_value(&signed_in, "__Host-bluewave-session"));

        // The stream opens before anything is ingested.
        let path = "/dashboard/live?buoy=buoy-1&metric=salinity_psu";
        let (head, body) =
            within("stream", raw_request(&https, "GET", path, &[("cookie", &session)], None)).await;
        assert_eq!(
            (head.status.as_u16(), head.headers["content-type"].to_str().unwrap()),
            (200, "text/event-stream")
        );
        let mut events = Events { body, text: String::new() };
        within("connected", events.until(": connected\n\n")).await;

        // buoy-2 (outside the plan) and then buoy-1 stream over QUIC; each ack means durable.
        let now = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
        )
        .unwrap();
        for (token, values) in [(&device_tokens[1], [1.0, 2.0]), (&device_tokens[0], [35.5, 36.0])] {
            let client =
                within("connect", Client::connect(buoy_client(quic, &identity, token))).await.unwrap();
            within("HELLO accepted", client.wait_connected()).await.unwrap();
            let ack = within("send", client.send(&batch(now, &values))).await.unwrap();
            assert_eq!(within("ack", ack).await.unwrap().outcome, AckOutcome::Stored);
        }
        // Both readings, whether they come in one event or two.
        while events.readings().len() < 2 {
            within("readings", events.next_event()).await;
        }
        assert_eq!(
            events.readings(),
            [
                json!({ "buoy": "buoy-1", "metric": "salinity_psu", "ts": now, "value": 35.5 }),
                json!({ "buoy": "buoy-1", "metric": "salinity_psu", "ts": now + SECOND_NS, "value": 36.0 }),
            ]
        );
        assert!(!events.text.contains("buoy-2"), "{}", events.text);
        // Naming buoy-2 (outside the plan) beside buoy-1 opens nothing: the exact refusal.
        let both = "/dashboard/live?buoy=buoy-1&buoy=buoy-2&metric=salinity_psu";
        let (head, body) =
            within("refused stream", raw_request(&https, "GET", both, &[("cookie", &session)], None)).await;
        let body = within("refusal body", body.collect()).await.unwrap().to_bytes();
        assert_eq!(
            (head.status.as_u16(), serde_json::from_slice::<Value>(&body).unwrap()),
            (404, json!({ "error": "not_found", "message": "no such buoy" }))
        );
    });
    server.stop();
}
