//! Proves `bluewave serve` as a user meets it: a fresh data dir starts with embedded defaults
//! (self-signed identity, signing keys, a first admin whose generated password is printed once);
//! the whole flow login → query → refresh → logout over real HTTPS; a buoy streaming over QUIC
//! (wire client SDK) with a device token issued through the API, and an analyst reading the
//! readings back through `/api/telemetry` and `/api/query`; a revoked device token has its open
//! connection closed and its next HELLO refused; SIGTERM stops everything cleanly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

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
const PASSWORD: &str = "an-admin-password-long-enough";
const ANALYST: &str = "analyst@example.org";
/// 2026-01-01T00:00:00Z in ns.
const T0: i64 = 1_767_225_600_000_000_000;
/// Upper bound for waits that succeed quickly when the code is right.
const SAFETY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `bluewave serve` and what it printed.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    printed: Vec<String>,
    https: SocketAddr,
    quic: SocketAddr,
}

impl Server {
    fn start(data_dir: &Path, admin_password: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bluewave"));
        command
            .args(["--data-dir"])
            .arg(data_dir)
            .args(["serve", "--quic-listen", "127.0.0.1:0", "--https-listen", "127.0.0.1:0"])
            .env_remove("BLUEWAVE_ADMIN_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(password) = admin_password {
            command.env("BLUEWAVE_ADMIN_PASSWORD", password);
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
        let mut printed = Vec::new();
        let (mut https, mut quic) = (None, None);
        while https.is_none() || quic.is_none() {
            let line = lines.recv_timeout(SAFETY_TIMEOUT).expect("serve prints its addresses");
            if let Some(rest) = line.strip_prefix("HTTPS API listening on https://") {
                https = rest.split(' ').next().map(|addr| addr.parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("QUIC ingest listening on ") {
                quic = rest.split(' ').next().map(|addr| addr.parse().unwrap());
            }
            printed.push(line);
        }
        Self { child, lines, printed, https: https.unwrap(), quic: quic.unwrap() }
    }

    /// SIGTERM, then every remaining line; asserts a clean exit.
    fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.printed.push(line);
        }
        assert!(exit.success(), "serve exited with {exit}; printed {:?}", self.printed);
        self.printed
    }
}

/// An HTTPS client trusting the server's self-signed certificate.
struct Https {
    addr: SocketAddr,
    connector: TlsConnector,
}

struct Answer {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }
}

impl Https {
    fn new(addr: SocketAddr, identity: &ServerIdentity) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.end_entity().unwrap().clone()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        Self { addr, connector: TlsConnector::from(Arc::new(config)) }
    }

    async fn request(
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
        let mut builder = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
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

    async fn login(&self, email: &str, password: &str) -> Value {
        let answer = self
            .request(
                "POST",
                "/api/auth/token",
                None,
                None,
                Some(json!({ "email": email, "password": password })),
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        answer.json()
    }
}

fn batch(first_ts: i64, values: &[f64]) -> ReadingBatch {
    let count = values.len();
    ReadingBatch::new(
        vec![MetricName::new("salinity_psu").unwrap()],
        (0..count).map(|i| first_ts + i as i64 * 1_000_000_000).collect(),
        vec![0; count],
        values.to_vec(),
    )
    .unwrap()
}

fn buoy_client(quic: SocketAddr, identity: &ServerIdentity, token: &str) -> ClientConfig {
    ClientConfig::new(
        quic,
        "localhost",
        Trust::Pinned(vec![identity.pin_sha256_bytes()]),
        token,
        vec![MetricName::new("salinity_psu").unwrap()],
    )
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
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
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

#[test]
fn buoy_streams_over_quic_with_an_api_issued_token_and_an_analyst_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    // An analyst whose plan covers buoy-1, set up before the server takes the data dir.
    {
        let auth = AuthService::open(dir.path(), AuthConfig::default()).unwrap();
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
        let analyst = NewUser {
            email: ANALYST.into(),
            password: Secret::new(PASSWORD),
            role: Role::Analyst,
            plan_id: Some(plan.id),
        };
        auth.create_user(&admin, analyst).unwrap();
    }
    let (identity, _) = ServerIdentity::load_or_generate(&dir.path().join("tls")).unwrap();
    let server = Server::start(dir.path(), None);
    let quic = server.quic;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let metrics_text = runtime.block_on(async {
        let https = Https::new(server.https, &identity);
        let admin = https.login(ADMIN, PASSWORD).await;
        let admin_token = admin["access_token"].as_str().unwrap();
        for id in ["buoy-1", "buoy-2"] {
            let body = json!({ "id": id, "name": id, "lat": null, "lng": null, "status": "active" });
            assert_eq!(https.request("POST", "/api/buoys", Some(admin_token), None, Some(body)).await.status, 201);
        }
        let issued = https.request("POST", "/api/buoys/buoy-1/device-tokens", Some(admin_token), None, Some(json!({}))).await;
        assert_eq!(issued.status, 201);
        let issued = issued.json();
        let device_token = issued["token"].as_str().unwrap().to_owned();
        let jti = issued["jti"].as_str().unwrap().to_owned();

        // The buoy streams two batches over QUIC; each ack means durable.
        let client = Client::connect(buoy_client(quic, &identity, &device_token)).await.unwrap();
        client.wait_connected().await.unwrap();
        for (i, values) in [[35.0, 35.25], [35.5, 35.75]].iter().enumerate() {
            let ack = client.send(&batch(T0 + i as i64 * 2_000_000_000, values)).await.unwrap().await.unwrap();
            assert_eq!(ack.outcome, AckOutcome::Stored);
        }
        // Another buoy's data through JSON ingest, which the analyst must never see.
        let other = json!({ "buoy_id": "buoy-2", "batch_seq": 0, "readings": [{ "metric": "salinity_psu", "ts": T0, "value": 1.0 }] });
        assert_eq!(https.request("POST", "/api/telemetry", Some(admin_token), None, Some(other)).await.json()["outcome"], "stored");

        // login → query → refresh → logout, as the analyst.
        let analyst = https.login(ANALYST, PASSWORD).await;
        let token = analyst["access_token"].as_str().unwrap();
        let read = https.request("GET", "/api/telemetry?metric=salinity_psu", Some(token), None, None).await;
        assert_eq!(read.status, 200);
        let values: Vec<(String, i64, f64)> = read.json()["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| (row["buoy_id"].as_str().unwrap().to_owned(), row["ts"].as_i64().unwrap(), row["value"].as_f64().unwrap()))
            .collect();
        let second = 1_000_000_000;
        assert_eq!(
            values,
            [
                ("buoy-1".to_owned(), T0, 35.0),
                ("buoy-1".to_owned(), T0 + second, 35.25),
                ("buoy-1".to_owned(), T0 + 2 * second, 35.5),
                ("buoy-1".to_owned(), T0 + 3 * second, 35.75),
            ]
        );
        let other_buoy = https.request("GET", "/api/telemetry?buoy_id=buoy-2", Some(token), None, None).await;
        assert_eq!((other_buoy.status, other_buoy.json()), (404, json!({ "error": "not_found", "message": "no such buoy" })));
        let sql = json!({ "sql": "SELECT buoy_id, count(*) AS n, sum(value) AS total FROM readings GROUP BY buoy_id" });
        let answer = https.request("POST", "/api/query", Some(token), Some("text/csv"), Some(sql)).await;
        assert_eq!((answer.status, answer.content_type.as_str()), (200, "text/csv; charset=utf-8"));
        assert_eq!(String::from_utf8_lossy(&answer.body), "buoy_id,n,total\nbuoy-1,4,141.5\n");
        let refreshed = https.request("POST", "/api/auth/refresh", None, None, Some(json!({ "refresh_token": analyst["refresh_token"] }))).await;
        assert_eq!(refreshed.status, 200);
        let refreshed = refreshed.json();
        let again = https.request("GET", "/api/buoys", Some(refreshed["access_token"].as_str().unwrap()), None, None).await;
        assert_eq!(again.json(), json!([{ "id": "buoy-1", "name": "buoy-1", "lat": null, "lng": null, "status": "active" }]));
        let logout = https.request("POST", "/api/auth/logout", None, None, Some(json!({ "refresh_token": refreshed["refresh_token"] }))).await;
        assert_eq!(logout.status, 204);
        let after = https.request("POST", "/api/auth/refresh", None, None, Some(json!({ "refresh_token": refreshed["refresh_token"] }))).await;
        assert_eq!((after.status, after.json()), (401, json!({ "error": "unauthorized", "message": "refresh token invalid" })));

        // Revocation: the open connection is closed, the next HELLO refused DEVICE_REVOKED.
        let revoked = https.request("DELETE", &format!("/api/device-tokens/{jti}"), Some(admin_token), None, None).await;
        assert_eq!(revoked.status, 204);
        let fresh = Client::connect(buoy_client(quic, &identity, &device_token)).await.unwrap();
        match tokio::time::timeout(SAFETY_TIMEOUT, fresh.wait_connected()).await.unwrap() {
            Err(ClientError::Refused { reason: RefuseReason::DeviceRevoked, .. }) => {}
            other => panic!("expected DEVICE_REVOKED, got {other:?}"),
        }
        fresh.close().await;
        client.close().await;
        String::from_utf8_lossy(&https.request("GET", "/metrics", None, None, None).await.body).into_owned()
    });
    let sample = |name: &str| {
        metrics_text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
    };
    assert_eq!(sample("bluewave_quic_closed_device_revoked_total"), Some(1.0), "{metrics_text}");
    assert_eq!(sample("bluewave_engine_readings_ingested_total"), Some(5.0), "{metrics_text}");
    let printed = server.stop();
    assert!(printed.iter().any(|line| line.starts_with("flushed ")), "{printed:?}");
}
