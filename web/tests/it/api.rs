//! Proves the REST endpoints over real HTTPS against a real `AuthService`, `QueryService` and
//! `Engine` in a tempdir: login → refresh (rotation, reuse detection) → logout and logout-all;
//! JSON ingest answered after durable; plan-scoped reads (a buoy outside the plan is 404, never
//! data) through `/api/telemetry`, `/api/buoys` and `/api/query` in every `Accept` format;
//! device tokens issued, listed and revoked (the revocation hook fires); function-level
//! authorization per role; token misuse (none, garbage, refresh token as access token); the
//! login limiter's 429 with `Retry-After`; and that the OpenAPI document lists every endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bluewave_engine::{Engine, EngineConfig};
use bluewave_query::{QueryConfig, QueryService};
use bluewave_web::{
    ApiState, AuthConfig, AuthService, BuoyScope, CertificateDer, HttpConfig, HttpServer, LineProtocol,
    LineProtocolConfig, LoginLimits, Method, NewUser, PasswordParams, PlanSpec, PrivateKeyDer,
    PrivatePkcs8KeyDer, Registry, Role, Secret, StatusCode, TlsIdentity, api_router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub(crate) const ADMIN: &str = "admin@example.org";
pub(crate) const PASSWORD: &str = "a-long-enough-password";
/// 2026-01-01T00:00:00Z in ns.
pub(crate) const T0: i64 = 1_767_225_600_000_000_000;

pub(crate) struct Api {
    _dir: TempDir,
    pub(crate) addr: SocketAddr,
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) auth: Arc<AuthService>,
    pub(crate) revoked: Arc<AtomicUsize>,
    pub(crate) query: Arc<QueryService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("JSON body ({e}): {:?}", self.body))
    }
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

pub(crate) fn fast_config(per_ip_per_minute: u32) -> AuthConfig {
    AuthConfig {
        // Cheap hashes: these tests are about the API, not argon2's cost.
        password_params: PasswordParams { memory_kib: 1_024, iterations: 1, parallelism: 1 },
        login_limits: LoginLimits { per_ip_per_minute, ..LoginLimits::default() },
        // The suites that predate MFA act as admin and operator with a password alone.
        mfa_required_roles: std::collections::BTreeSet::new(),
        ..AuthConfig::default()
    }
}

impl Api {
    /// The server's data dir.
    pub(crate) fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub(crate) async fn start() -> Self {
        Self::start_with(fast_config(10_000)).await
    }

    /// A server with an admin, an operator, an analyst whose plan covers `buoy-a` only, and a
    /// customer without a plan.
    pub(crate) async fn start_with(config: AuthConfig) -> Self {
        Self::start_with_query(config, QueryConfig::default()).await
    }

    /// [`Self::start_with`] with a query service of `query_config`.
    pub(crate) async fn start_with_query(config: AuthConfig, query_config: QueryConfig) -> Self {
        Self::start_with_all(config, query_config, LineProtocolConfig::default()).await
    }

    /// [`Self::start_with_query`] with line-protocol settings.
    pub(crate) async fn start_with_all(
        config: AuthConfig,
        query_config: QueryConfig,
        line_protocol: LineProtocolConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(AuthService::open(dir.path(), config).unwrap());
        auth.ensure_first_admin(ADMIN, Some(Secret::new(PASSWORD))).unwrap();
        let admin_pair = auth.login(ADMIN, &Secret::new(PASSWORD), [10, 9, 9, 9].into()).unwrap();
        let admin = auth.verify_access_token(admin_pair.access_token.expose()).unwrap();
        let plan = auth
            .create_plan(
                &admin,
                PlanSpec {
                    name: "buoy-a only".into(),
                    buoys: BuoyScope::List(vec!["buoy-a".into()]),
                    history_days: None,
                    daily_query_quota: None,
                    row_limit: None,
                },
            )
            .unwrap();
        for (email, role, plan_id) in [
            ("operator@example.org", Role::Operator, None),
            ("analyst@example.org", Role::Analyst, Some(plan.id.clone())),
            ("customer@example.org", Role::Customer, None),
        ] {
            let new = NewUser { email: email.into(), password: Secret::new(PASSWORD), role, plan_id };
            auth.create_user(&admin, new).unwrap();
        }
        let engine = Engine::open(EngineConfig::new(dir.path())).unwrap();
        let query = Arc::new(QueryService::new(Arc::new(engine.clone()), query_config).unwrap());
        let revoked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&revoked);
        let state = ApiState {
            auth: Arc::clone(&auth),
            query: Arc::clone(&query),
            engine: Arc::new(engine),
            line_protocol: Arc::new(LineProtocol::open(dir.path(), line_protocol).unwrap()),
            on_device_revoked: Some(Arc::new(move |buoy: &str| {
                assert!(["buoy-a", "buoy-c"].contains(&buoy), "{buoy}");
                counter.fetch_add(1, Ordering::SeqCst);
                0
            })),
        };
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let identity = TlsIdentity { cert_chain: vec![cert.clone()], key };
        let server = HttpServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            identity,
            HttpConfig::default(),
            api_router(state).unwrap(),
            Registry::default(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Self { _dir: dir, addr, cert, auth, revoked, query, stop: Some(stop) }
    }

    pub(crate) async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let (content_type, bytes) = match body {
            Some(json) => (Some("application/json"), Bytes::from(json.to_string())),
            None => (None, Bytes::new()),
        };
        let (head, body) = self.send(method, path, token, headers, content_type, bytes).await;
        Answer { status: head.status, headers: head.headers, body: body.unwrap() }
    }

    /// A request with a raw body (oversized, malformed, any content type). The server may close
    /// the connection while answering such a body: an unreadable answer body is then empty.
    pub(crate) async fn request_bytes(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let (head, body) = self.send(method, path, token, &[], Some(content_type), Bytes::from(body)).await;
        Answer { status: head.status, headers: head.headers, body: body.unwrap_or_default() }
    }

    /// A form post (`application/x-www-form-urlencoded`) with extra headers (cookies, Origin).
    pub(crate) async fn form(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let content_type = Some("application/x-www-form-urlencoded");
        let (head, body) =
            self.send(Method::POST, path, None, headers, content_type, Bytes::from(body.to_owned())).await;
        Answer { status: head.status, headers: head.headers, body: body.unwrap() }
    }

    /// One request on a fresh TLS connection that trusts only the server's certificate.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Bytes,
    ) -> (hyper::http::response::Parts, Result<Bytes, hyper::Error>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        let mut builder = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = sender.send_request(builder.body(Full::new(body)).unwrap()).await.unwrap();
        let (head, body) = response.into_parts();
        (head, body.collect().await.map(|collected| collected.to_bytes()))
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Answer {
        self.request(Method::GET, path, Some(token), &[], None).await
    }

    pub(crate) async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.request(Method::POST, path, token, &[], Some(body)).await
    }

    pub(crate) async fn login(&self, email: &str) -> Value {
        let answer =
            self.post("/api/auth/token", None, json!({ "email": email, "password": PASSWORD })).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.json()
    }

    pub(crate) async fn token(&self, email: &str) -> String {
        self.login(email).await["access_token"].as_str().unwrap().to_owned()
    }

    /// Registers buoy-a and buoy-b and stores two readings of each (as the operator).
    pub(crate) async fn seed(&self) {
        let admin = self.token(ADMIN).await;
        for id in ["buoy-a", "buoy-b"] {
            let answer = self
                .post(
                    "/api/buoys",
                    Some(&admin),
                    json!({ "id": id, "name": id, "lat": 1.5, "lng": -2.5, "status": "active" }),
                )
                .await;
            assert_eq!(answer.status, StatusCode::CREATED);
        }
        let operator = self.token("operator@example.org").await;
        for (seq, id) in ["buoy-a", "buoy-b"].into_iter().enumerate() {
            let body = json!({ "buoy_id": id, "batch_seq": seq, "readings": [
                { "metric": "salinity_psu", "ts": T0, "value": 35.0 },
                { "metric": "salinity_psu", "ts": T0 + 1_000_000_000, "value": 35.5 },
            ]});
            let answer = self.post("/api/telemetry", Some(&operator), body).await;
            assert_eq!(answer.json(), json!({ "outcome": "stored", "readings": 2 }));
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn assert_error(answer: &Answer, status: StatusCode, code: &str, message: &str) {
    assert_eq!(answer.status, status, "body: {:?}", answer.body);
    assert_eq!(answer.json(), json!({ "error": code, "message": message }));
}

#[tokio::test]
async fn login_refresh_rotation_reuse_logout_and_logout_all() {
    let api = Api::start().await;
    let wrong =
        api.post("/api/auth/token", None, json!({ "email": ADMIN, "password": "wrong-password-123" })).await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized", "invalid email or password");
    let unknown = api
        .post("/api/auth/token", None, json!({ "email": "nobody@example.org", "password": PASSWORD }))
        .await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "unauthorized", "invalid email or password");

    let first = api.login(ADMIN).await;
    assert_eq!(first["token_type"], "Bearer");
    assert_eq!(first["expires_in"], 900);
    assert_eq!(first["refresh_expires_in"], 604_800);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(api.get("/api/buoys", access).await.json(), json!([]));

    let refreshed =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": first["refresh_token"] })).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let second = refreshed.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    // The spent token again: reuse detection revokes the whole session, the new token too.
    let reused =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": first["refresh_token"] })).await;
    assert_error(&reused, StatusCode::UNAUTHORIZED, "unauthorized", "refresh token reused; session revoked");
    let after_reuse =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": second["refresh_token"] })).await;
    assert_error(&after_reuse, StatusCode::UNAUTHORIZED, "unauthorized", "refresh token invalid");

    let third = api.login(ADMIN).await;
    let logout = api.post("/api/auth/logout", None, json!({ "refresh_token": third["refresh_token"] })).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.body.is_empty());
    let after_logout =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": third["refresh_token"] })).await;
    assert_error(&after_logout, StatusCode::UNAUTHORIZED, "unauthorized", "refresh token invalid");

    // logout-all: every access token issued before it stops working at once.
    let fourth = api.login(ADMIN).await;
    let access = fourth["access_token"].as_str().unwrap();
    let all = api.request(Method::POST, "/api/auth/logout-all", Some(access), &[], None).await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get("/api/buoys", access).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token revoked",
    );
    let stale =
        api.post("/api/auth/refresh", None, json!({ "refresh_token": fourth["refresh_token"] })).await;
    assert_error(&stale, StatusCode::UNAUTHORIZED, "unauthorized", "refresh token invalid");
}

#[tokio::test]
async fn json_ingest_is_idempotent_and_reads_follow_the_plan() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let replay = json!({ "buoy_id": "buoy-a", "batch_seq": 0, "readings": [
        { "metric": "salinity_psu", "ts": T0, "value": 35.0 },
        { "metric": "salinity_psu", "ts": T0 + 1_000_000_000, "value": 35.5 },
    ]});
    assert_eq!(
        api.post("/api/telemetry", Some(&operator), replay).await.json(),
        json!({ "outcome": "duplicate", "readings": 2 })
    );
    let unknown = json!({ "buoy_id": "buoy-z", "batch_seq": 0, "readings": [{ "metric": "ph", "ts": T0, "value": 8.1 }] });
    assert_error(
        &api.post("/api/telemetry", Some(&operator), unknown).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "buoy \"buoy-z\" is not registered",
    );

    let analyst = api.token("analyst@example.org").await;
    let own = api.get("/api/telemetry?buoy_id=buoy-a", &analyst).await;
    assert_eq!(own.status, StatusCode::OK);
    let mut own = own.json();
    assert_eq!(own["rows"][0]["time"], "2026-01-01T00:00:00.000000000Z");
    assert_eq!(own["rows"][1]["time"], "2026-01-01T00:00:01.000000000Z");
    // Ids are opaque: checked by the security suite; here only that each row has its own.
    assert_ne!(own["rows"][0]["id"], own["rows"][1]["id"]);
    for row in own["rows"].as_array_mut().unwrap() {
        let row = row.as_object_mut().unwrap();
        assert!(row.remove("id").unwrap().is_string());
        assert!(row.remove("time").unwrap().is_string());
    }
    assert_eq!(
        own,
        json!({ "rows": [
            { "buoy_id": "buoy-a", "metric": "salinity_psu", "ts": T0, "value": 35.0, "quality": 0 },
            { "buoy_id": "buoy-a", "metric": "salinity_psu", "ts": T0 + 1_000_000_000, "value": 35.5, "quality": 0 },
        ], "next_cursor": null })
    );
    // Another customer's buoy: 404, the same answer as a buoy that does not exist.
    assert_error(
        &api.get("/api/telemetry?buoy_id=buoy-b", &analyst).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such buoy",
    );
    // No buoy filter: only the plan's rows.
    let all = api.get("/api/telemetry", &analyst).await.json();
    assert_eq!(all["rows"].as_array().unwrap().len(), 2);
    assert!(all["rows"].as_array().unwrap().iter().all(|row| row["buoy_id"] == "buoy-a"));
    // Paging: one row per page, the cursor leads to the second.
    let page = api.get("/api/telemetry?buoy_id=buoy-a&limit=1", &analyst).await.json();
    assert_eq!(page["rows"][0]["ts"], T0);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next =
        api.get(&format!("/api/telemetry?buoy_id=buoy-a&limit=1&cursor={cursor}"), &analyst).await.json();
    assert_eq!(next["rows"][0]["ts"], T0 + 1_000_000_000);
    let bad = api.get("/api/telemetry?quality=excellent", &analyst).await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "unknown quality \"excellent\"; expected good, out_of_range or suspect",
    );

    // Staff see everything.
    let everything = api.get("/api/telemetry", &operator).await.json();
    assert_eq!(everything["rows"].as_array().unwrap().len(), 4);

    // Buoys: the analyst sees only buoy-a; buoy-b is 404 like an unknown id.
    assert_eq!(
        api.get("/api/buoys", &analyst).await.json(),
        json!([{ "id": "buoy-a", "name": "buoy-a", "lat": 1.5, "lng": -2.5, "status": "active" }])
    );
    assert_error(
        &api.get("/api/buoys/buoy-b", &analyst).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such buoy",
    );
    assert_eq!(api.get("/api/buoys/buoy-b", &operator).await.json()["id"], "buoy-b");
    let twice = api
        .post(
            "/api/buoys",
            Some(&operator),
            json!({ "id": "buoy-a", "name": "again", "lat": null, "lng": null, "status": "active" }),
        )
        .await;
    assert_error(&twice, StatusCode::CONFLICT, "conflict", "buoy buoy-a is already registered");
    let bad_status = api
        .post(
            "/api/buoys",
            Some(&operator),
            json!({ "id": "buoy-c", "name": "c", "lat": null, "lng": null, "status": "sunk" }),
        )
        .await;
    assert_error(
        &bad_status,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "status: active, maintenance or retired",
    );
}

#[tokio::test]
async fn sql_answers_in_every_accept_format_under_the_plan() {
    let api = Api::start().await;
    api.seed().await;
    let analyst = api.token("analyst@example.org").await;
    let sql = json!({ "sql": "SELECT buoy_id, value FROM readings ORDER BY buoy_id, ts" });
    let as_json = api.request(Method::POST, "/api/query", Some(&analyst), &[], Some(sql.clone())).await;
    assert_eq!(as_json.status, StatusCode::OK);
    assert_eq!(as_json.header("content-type"), "application/json");
    assert_eq!(
        as_json.json(),
        json!([{ "buoy_id": "buoy-a", "value": 35.0 }, { "buoy_id": "buoy-a", "value": 35.5 }])
    );

    let csv = api
        .request(Method::POST, "/api/query", Some(&analyst), &[("accept", "text/csv")], Some(sql.clone()))
        .await;
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(String::from_utf8_lossy(&csv.body), "buoy_id,value\nbuoy-a,35.0\nbuoy-a,35.5\n");

    let arrow = api
        .request(
            Method::POST,
            "/api/query",
            Some(&analyst),
            &[("accept", "application/vnd.apache.arrow.stream")],
            Some(sql.clone()),
        )
        .await;
    assert_eq!(arrow.header("content-type"), "application/vnd.apache.arrow.stream");
    assert_eq!(arrow.body.get(..4), Some(&[0xff, 0xff, 0xff, 0xff][..]), "IPC continuation marker");

    let parquet = api
        .request(
            Method::POST,
            "/api/query",
            Some(&analyst),
            &[("accept", "application/vnd.apache.parquet")],
            Some(sql.clone()),
        )
        .await;
    assert_eq!(parquet.header("content-type"), "application/vnd.apache.parquet");
    assert_eq!(parquet.body.get(..4), Some(&b"PAR1"[..]));

    let png = api
        .request(Method::POST, "/api/query", Some(&analyst), &[("accept", "image/png")], Some(sql.clone()))
        .await;
    assert_eq!(png.status, StatusCode::NOT_ACCEPTABLE);

    let ddl = api.post("/api/query", Some(&analyst), json!({ "sql": "DROP TABLE readings" })).await;
    assert_eq!(ddl.status, StatusCode::BAD_REQUEST);
    assert_eq!(ddl.json()["error"], "invalid_input");
    // Counting another plan's rows through SQL sees nothing of them.
    let count = api
        .post(
            "/api/query",
            Some(&analyst),
            json!({ "sql": "SELECT count(*) AS n FROM readings WHERE buoy_id = 'buoy-b'" }),
        )
        .await;
    assert_eq!(count.json(), json!([{ "n": 0 }]));
}

#[tokio::test]
async fn device_tokens_are_issued_listed_and_revoked_with_the_hook() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let issued = api.post("/api/buoys/buoy-a/device-tokens", Some(&operator), json!({})).await;
    assert_eq!(issued.status, StatusCode::CREATED);
    let issued = issued.json();
    let token = issued["token"].as_str().unwrap();
    let jti = issued["jti"].as_str().unwrap();
    assert_eq!(issued["buoy_id"], "buoy-a");
    assert_eq!(api.auth.verify_device_token(token), Ok("buoy-a".to_owned()));

    let listed = api.get("/api/buoys/buoy-a/device-tokens", &operator).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["jti"], jti);
    assert_eq!(listed[0]["revoked_ms"], Value::Null);
    assert!(listed[0].get("token").is_none(), "the token itself is never listed");

    let unknown = api.post("/api/buoys/buoy-z/device-tokens", Some(&operator), json!({})).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found", "no such buoy");

    let revoked =
        api.request(Method::DELETE, &format!("/api/device-tokens/{jti}"), Some(&operator), &[], None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(api.revoked.load(Ordering::SeqCst), 1);
    assert_eq!(api.auth.verify_device_token(token), Err(bluewave_web::DeviceRefusal::DeviceRevoked));
    assert!(api.get("/api/buoys/buoy-a/device-tokens", &operator).await.json()[0]["revoked_ms"].is_u64());
    let gone = api
        .request(
            Method::DELETE,
            "/api/device-tokens/0123456789abcdef0123456789abcdef",
            Some(&operator),
            &[],
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found", "no such device token");
}

#[tokio::test]
async fn every_endpoint_checks_the_callers_permission() {
    let api = Api::start().await;
    api.seed().await;
    let analyst = api.token("analyst@example.org").await;
    let customer = api.token("customer@example.org").await;
    let batch = json!({ "buoy_id": "buoy-a", "batch_seq": 9, "readings": [] });
    let buoy = json!({ "id": "buoy-x", "name": "x", "lat": null, "lng": null, "status": "active" });
    for (who, token) in [("analyst", &analyst), ("customer", &customer)] {
        for (method, path, body, permission) in [
            (Method::POST, "/api/telemetry", Some(batch.clone()), "telemetry:write"),
            (Method::POST, "/api/buoys", Some(buoy.clone()), "buoys:manage"),
            (Method::POST, "/api/buoys/buoy-a/device-tokens", Some(json!({})), "devices:manage"),
            (Method::GET, "/api/buoys/buoy-a/device-tokens", None, "devices:manage"),
            (Method::DELETE, "/api/device-tokens/0123456789abcdef0123456789abcdef", None, "devices:manage"),
        ] {
            let answer = api.request(method.clone(), path, Some(token), &[], body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{who} {method} {path}");
            assert_eq!(
                answer.json(),
                json!({ "error": "forbidden", "message": format!("permission {permission} required") })
            );
        }
    }
    // Customers may not run SQL; without a plan they see no buoy and no reading.
    let sql = api.post("/api/query", Some(&customer), json!({ "sql": "SELECT 1" })).await;
    assert_error(&sql, StatusCode::FORBIDDEN, "forbidden", "permission query:sql required");
    assert_eq!(api.get("/api/buoys", &customer).await.json(), json!([]));
    assert_eq!(api.get("/api/telemetry", &customer).await.json(), json!({ "rows": [], "next_cursor": null }));
}

#[tokio::test]
async fn bad_credentials_on_api_routes_are_401() {
    let api = Api::start().await;
    let pair = api.login(ADMIN).await;
    let none = api.request(Method::GET, "/api/buoys", None, &[], None).await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "unauthorized", "missing bearer token");
    assert_eq!(none.header("www-authenticate"), "Bearer");
    assert_error(
        &api.get("/api/buoys", "garbage").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token malformed",
    );
    // A refresh token is opaque, not a JWT: refused as malformed wherever an access token goes.
    let refresh = pair["refresh_token"].as_str().unwrap();
    assert_error(
        &api.get("/api/telemetry", refresh).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "token refused: token malformed",
    );
    // A device token is a valid JWT of the wrong type and audience.
    let admin = api.auth.verify_access_token(pair["access_token"].as_str().unwrap()).unwrap();
    let engine_buoy = "buoy-a";
    let device = api.auth.issue_device_token(&admin, engine_buoy, None).unwrap();
    let answer = api.get("/api/buoys", device.token.expose()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"], "unauthorized");
    // Malformed JSON and unknown fields are 400 before any work.
    let bad = api
        .request(Method::POST, "/api/auth/token", None, &[("content-type", "application/json")], None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let extra = api
        .post("/api/auth/token", None, json!({ "email": ADMIN, "password": PASSWORD, "role": "admin" }))
        .await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);
    assert_eq!(extra.json()["error"], "invalid_json");
}

#[tokio::test]
async fn login_limiter_answers_429_with_retry_after() {
    let api = Api::start_with(fast_config(3)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = api
            .post("/api/auth/token", None, json!({ "email": ADMIN, "password": "wrong-password-123" }))
            .await;
        statuses.push(answer.status);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(answer.header("retry-after").parse::<u64>().unwrap() >= 1);
            assert_eq!(answer.json()["error"], "rate_limited");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn openapi_lists_every_api_endpoint() {
    let api = Api::start().await;
    let answer = api.request(Method::GET, "/api/openapi.json", None, &[], None).await;
    let doc = answer.json();
    for (path, method) in [
        ("/api/auth/token", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/logout-all", "post"),
        ("/api/telemetry", "get"),
        ("/api/telemetry", "post"),
        ("/api/v2/write", "post"),
        ("/write", "post"),
        ("/api/query", "post"),
        ("/api/buoys", "get"),
        ("/api/buoys", "post"),
        ("/api/buoys/{id}", "get"),
        ("/api/buoys/{id}/device-tokens", "post"),
        ("/api/buoys/{id}/device-tokens", "get"),
        ("/api/device-tokens/{jti}", "delete"),
        ("/api/telemetry/{id}", "get"),
        ("/api/telemetry/{id}", "put"),
        ("/api/telemetry/{id}", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
}

#[tokio::test]
async fn readings_by_id_range_deletes_rfc3339_times_and_buoy_retirement() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let admin = api.token(ADMIN).await;
    let second = 1_000_000_000;

    // RFC 3339 and integer-ns bounds select the same rows; rows carry both forms.
    let path = "/api/telemetry?buoy_id=buoy-a&start=2026-01-01T00:00:01Z&end=2026-01-01T00:00:02.000Z";
    let by_text = api.get(path, &operator).await.json()["rows"].clone();
    assert_eq!(by_text.as_array().unwrap().len(), 1);
    assert_eq!(by_text[0]["ts"], T0 + second);
    assert_eq!(by_text[0]["time"], "2026-01-01T00:00:01.000000000Z");
    let path = format!("/api/telemetry?buoy_id=buoy-a&start={}&end={}", T0 + second, T0 + 2 * second);
    assert_eq!(api.get(&path, &operator).await.json()["rows"], by_text);
    let ingest = json!({ "buoy_id": "buoy-a", "batch_seq": 5, "readings": [
        { "metric": "ph", "ts": "2026-01-01T00:00:00.5Z", "value": 8.25 }] });
    assert_eq!(api.post("/api/telemetry", Some(&operator), ingest).await.json()["outcome"], "stored");
    let ph = api.get("/api/telemetry?metric=ph", &operator).await.json();
    assert_eq!(ph["rows"][0]["ts"], T0 + second / 2);

    // One reading by id, then deleted by id (audited with the value it had).
    let id = by_text[0]["id"].as_str().unwrap();
    let one = api.get(&format!("/api/telemetry/{id}"), &operator).await;
    assert_eq!(one.json(), by_text[0]);
    let deleted =
        api.request(Method::DELETE, &format!("/api/telemetry/{id}"), Some(&operator), &[], None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_error(
        &api.get(&format!("/api/telemetry/{id}"), &operator).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such reading",
    );
    assert_eq!(
        api.get("/api/telemetry?buoy_id=buoy-a&metric=salinity_psu", &operator).await.json()["rows"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Range delete: all of buoy-b's readings in [T0, T0 + 2 s).
    let range = json!({ "buoy_id": "buoy-b", "start": "2026-01-01T00:00:00Z", "end": T0 + 2 * second });
    let answer = api.post("/api/telemetry/delete", Some(&operator), range).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/telemetry?buoy_id=buoy-b", &operator).await.json()["rows"], json!([]));
    let backwards = json!({ "buoy_id": "buoy-b", "start": T0, "end": T0 });
    assert_error(
        &api.post("/api/telemetry/delete", Some(&operator), backwards).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "start must be before end",
    );
    let unknown = json!({ "buoy_id": "buoy-z", "start": T0, "end": T0 + 1 });
    assert_error(
        &api.post("/api/telemetry/delete", Some(&operator), unknown).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "no such buoy",
    );
    let log = api.get("/api/rbac/audit-log?limit=2", &admin).await.json();
    assert_eq!(log["entries"][0]["action"], "telemetry.delete_range");
    assert_eq!(log["entries"][0]["target"], "buoy:buoy-b");
    assert_eq!(log["entries"][1]["action"], "telemetry.delete");
    assert_eq!(log["entries"][1]["details"]["old_value"], 35.5);
    assert_eq!(log["entries"][1]["details"]["ts"], T0 + second);

    // Buoys: update, then retire (tokens revoked, hook fired, writes and new tokens refused).
    let update = json!({ "name": "Alpha", "lat": 10.0, "lng": 20.0, "status": "maintenance" });
    let updated = api.request(Method::PUT, "/api/buoys/buoy-a", Some(&operator), &[], Some(update)).await;
    assert_eq!(
        updated.json(),
        json!({ "id": "buoy-a", "name": "Alpha", "lat": 10.0, "lng": 20.0, "status": "maintenance" })
    );
    let issued = api.post("/api/buoys/buoy-a/device-tokens", Some(&operator), json!({})).await.json();
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(api.auth.verify_device_token(&token).unwrap(), "buoy-a");
    let hooks_before = api.revoked.load(Ordering::SeqCst);
    let retired = api.request(Method::DELETE, "/api/buoys/buoy-a", Some(&operator), &[], None).await;
    assert_eq!(retired.status, StatusCode::NO_CONTENT);
    assert_eq!(api.revoked.load(Ordering::SeqCst), hooks_before + 1);
    assert_eq!(api.auth.verify_device_token(&token), Err(bluewave_web::DeviceRefusal::DeviceRevoked));
    assert_eq!(api.get("/api/buoys/buoy-a", &operator).await.json()["status"], "retired");
    let write = json!({ "buoy_id": "buoy-a", "batch_seq": 6, "readings": [{ "metric": "ph", "ts": T0, "value": 8.0 }] });
    assert_error(
        &api.post("/api/telemetry", Some(&operator), write).await,
        StatusCode::CONFLICT,
        "conflict",
        "buoy buoy-a is retired",
    );
    assert_error(
        &api.post("/api/buoys/buoy-a/device-tokens", Some(&operator), json!({})).await,
        StatusCode::CONFLICT,
        "conflict",
        "buoy buoy-a is retired",
    );
    // Its readings stay readable.
    assert_eq!(
        api.get("/api/telemetry?buoy_id=buoy-a", &operator).await.json()["rows"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn rbac_endpoints_manage_users_plans_and_read_the_audit_log() {
    let api = Api::start().await;
    api.seed().await;
    let admin = api.token(ADMIN).await;
    let roles = api.get("/api/rbac/roles", &admin).await.json();
    assert_eq!(roles[0], json!({ "role": "device", "rank": 0, "permissions": ["telemetry:write"] }));
    assert_eq!(roles[4]["role"], "admin");
    assert_eq!(roles[4]["permissions"].as_array().unwrap().len(), 12);

    let plan = json!({ "name": "buoy-b", "buoys": ["buoy-b"], "history_days": null,
        "daily_query_quota": 100, "row_limit": null });
    let plan = api.post("/api/rbac/plans", Some(&admin), plan).await;
    assert_eq!(plan.status, StatusCode::CREATED);
    let plan_id = plan.json()["id"].as_str().unwrap().to_owned();
    let plans = api.get("/api/rbac/plans", &admin).await.json();
    assert_eq!(plans.as_array().unwrap().len(), 2);

    let created = api
        .post(
            "/api/rbac/users",
            Some(&admin),
            json!({ "email": "Researcher@Example.org ", "password": PASSWORD, "role": "analyst" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let user = created.json();
    assert_eq!(
        (user["email"].clone(), user["role"].clone(), user["status"].clone()),
        (json!("researcher@example.org"), json!("analyst"), json!("active"))
    );
    let id = user["id"].as_str().unwrap().to_owned();
    let taken = api
        .post(
            "/api/rbac/users",
            Some(&admin),
            json!({ "email": "researcher@example.org", "password": PASSWORD, "role": "analyst" }),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);

    // Without a plan: nothing. With the plan: buoy-b only.
    let researcher = api.token("researcher@example.org").await;
    assert_eq!(api.get("/api/buoys", &researcher).await.json(), json!([]));
    let assign = json!({ "plan_id": plan_id });
    let answer = api
        .request(Method::PUT, &format!("/api/rbac/users/{id}/plan"), Some(&admin), &[], Some(assign))
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let researcher = api.token("researcher@example.org").await;
    let buoys = api.get("/api/buoys", &researcher).await.json();
    assert_eq!(
        buoys.as_array().unwrap().iter().map(|b| b["id"].clone()).collect::<Vec<_>>(),
        [json!("buoy-b")]
    );
    assert_eq!(
        api.get(&format!("/api/rbac/users/{id}"), &researcher).await.json()["plan_id"],
        plan_id.as_str()
    );

    // Listing pages by id; the role change and disabling are audited and take effect at once.
    let all = api.get("/api/rbac/users?limit=1000", &admin).await.json();
    assert_eq!(all.as_array().unwrap().len(), 5);
    let first_two = api.get("/api/rbac/users?limit=2", &admin).await.json();
    let after = first_two[1]["id"].as_str().unwrap();
    let rest = api.get(&format!("/api/rbac/users?after={after}&limit=1000"), &admin).await.json();
    assert_eq!(rest.as_array().unwrap().len(), 3);
    let role = json!({ "role": "customer" });
    let answer =
        api.request(Method::PUT, &format!("/api/rbac/users/{id}/role"), Some(&admin), &[], Some(role)).await;
    assert_eq!(answer.json()["role"], "customer");
    let device = json!({ "role": "device" });
    let answer = api
        .request(Method::PUT, &format!("/api/rbac/users/{id}/role"), Some(&admin), &[], Some(device))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let disable = json!({ "status": "disabled" });
    let answer = api
        .request(Method::PUT, &format!("/api/rbac/users/{id}/status"), Some(&admin), &[], Some(disable))
        .await;
    assert_eq!(answer.json()["status"], "disabled");
    let login = api
        .post("/api/auth/token", None, json!({ "email": "researcher@example.org", "password": PASSWORD }))
        .await;
    assert_error(&login, StatusCode::UNAUTHORIZED, "unauthorized", "invalid email or password");

    let page = api.get("/api/rbac/audit-log?limit=3", &admin).await.json();
    let actions: Vec<&str> =
        page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    // The refused login is audited too.
    assert_eq!(actions, ["auth.login", "users.set_status", "users.set_role"]);
    assert_ne!(page["entries"][0]["outcome"], "ok");
    assert_eq!(page["entries"][1]["outcome"], "ok");
    assert_eq!(page["entries"][2]["details"], json!({ "from": "analyst", "to": "customer" }));
    let before = page["next_before_seq"].as_u64().unwrap();
    let older = api.get(&format!("/api/rbac/audit-log?limit=1&before_seq={before}"), &admin).await.json();
    assert!(older["entries"][0]["seq"].as_u64().unwrap() < before);
    assert_error(
        &api.get("/api/rbac/audit-log?limit=0", &admin).await,
        StatusCode::BAD_REQUEST,
        "invalid_input",
        "limit: 1-1000",
    );
}

#[tokio::test]
async fn corrections_rewrite_one_value_and_leave_the_buoys_numbering_alone() {
    let api = Api::start().await;
    api.seed().await;
    let operator = api.token("operator@example.org").await;
    let admin = api.token(ADMIN).await;
    let rows = api.get("/api/telemetry?buoy_id=buoy-a", &operator).await.json()["rows"].clone();
    let id = rows[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(rows[1]["value"], 35.5);

    let put = |value: Value| {
        let (api, operator, id) = (&api, &operator, &id);
        async move {
            api.request(Method::PUT, &format!("/api/telemetry/{id}"), Some(operator), &[], Some(value)).await
        }
    };
    // The corrected reading is answered, read back, and audited with both values.
    let corrected = put(json!({ "value": 35.25 })).await;
    assert_eq!(corrected.status, StatusCode::OK);
    let mut expected = rows[1].clone();
    expected["value"] = json!(35.25);
    assert_eq!(corrected.json(), expected);
    assert_eq!(api.get(&format!("/api/telemetry/{id}"), &operator).await.json(), expected);
    let log = api.get("/api/rbac/audit-log?limit=1", &admin).await.json();
    assert_eq!(log["entries"][0]["action"], "telemetry.correct");
    assert_eq!(log["entries"][0]["details"]["old_value"], 35.5);
    assert_eq!(log["entries"][0]["details"]["new_value"], 35.25);

    // A second correction of the same reading is not mistaken for a retry.
    assert_eq!(put(json!({ "value": 35.75 })).await.json()["value"], 35.75);
    // The buoy's own numbering is untouched: its seq 0 is still a duplicate, seq 1 is new.
    for (seq, outcome) in [(0, "duplicate"), (1, "stored")] {
        let batch = json!({ "buoy_id": "buoy-a", "batch_seq": seq, "readings": [
            { "metric": "ph", "ts": T0, "value": 8.0 }] });
        assert_eq!(api.post("/api/telemetry", Some(&operator), batch).await.json()["outcome"], outcome);
    }
    // Bad input: a value that is not a number, an unknown field, a reading that is not there.
    assert_eq!(put(json!({ "value": "high" })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(put(json!({ "value": 1.0, "quality": 0 })).await.status, StatusCode::BAD_REQUEST);
    use base64::Engine as _;
    let nothing_there =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("buoy-a/salinity_psu/{}", T0 + 7));
    let missing = api
        .request(
            Method::PUT,
            &format!("/api/telemetry/{nothing_there}"),
            Some(&operator),
            &[],
            Some(json!({ "value": 1.0 })),
        )
        .await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "no such reading");
    // Analysts read, they do not rewrite.
    let analyst = api.token("analyst@example.org").await;
    let refused = api
        .request(
            Method::PUT,
            &format!("/api/telemetry/{id}"),
            Some(&analyst),
            &[],
            Some(json!({ "value": 1.0 })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(api.get(&format!("/api/telemetry/{id}"), &operator).await.json()["value"], 35.75);
}
