//! HTTPS API benchmarks (issue 4 §6): the real server (`api_router` over `HttpServer`, real
//! `AuthService`, `QueryService` and `Engine`) on loopback, in this process, with one buoy-hour
//! of flushed marine data (1 buoy × 8 metrics × 3,600 s = 28,800 readings).
//!
//! - `api_telemetry/c{1,4,8}`: `GET /api/telemetry` of that buoy-hour (one page of 28,800
//!   rows) by an analyst whose plan covers the buoy, from `c` keep-alive HTTP/1.1 connections
//!   at once; criterion reports requests/s (one element = one request); p50/p99 from an
//!   HdrHistogram of every request are printed after each case.
//! - `api_login/c{1,4}`: `POST /api/auth/token` with the OWASP argon2id parameters (19 MiB,
//!   2 passes): slow by design. The per-IP limiter is raised for the bench (all requests come
//!   from 127.0.0.1).
//! - `api_telemetry_under_login_flood/c4`: the telemetry case at 4 connections while 4 other
//!   connections log in back to back, to compare p99 with `api_telemetry/c4`.
//!
//! ```text
//! cargo bench -p bluewave-benches --bench api
//! ```
//!
//! Setup (data, accounts, TLS, connections) stays outside the timed loops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_engine::{BuoyInfo, Durability, Engine, EngineConfig};
use bluewave_query::{QueryConfig, QueryService};
use bluewave_web::{
    ApiState, AuthConfig, AuthService, BuoyScope, CertificateDer, HttpConfig, HttpServer, LineProtocol,
    LineProtocolConfig, LoginLimits, NewUser, PlanSpec, PrivateKeyDer, PrivatePkcs8KeyDer, Registry, Role,
    Secret, TlsIdentity, api_router,
};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const ADMIN: &str = "admin@example.org";
const ANALYST: &str = "analyst@example.org";
const PASSWORD: &str = "a-long-enough-bench-password";
const HOUR_S: u64 = 3_600;

/// The server under test and what a client needs to reach it.
struct Fixture {
    _dir: tempfile::TempDir,
    server: tokio::runtime::Runtime,
    client: tokio::runtime::Runtime,
    addr: SocketAddr,
    connector: TlsConnector,
    analyst_token: String,
    telemetry_path: String,
    rows: usize,
}

fn fixture() -> BenchResult<Fixture> {
    let dir = tempfile::tempdir()?;
    let mut config = EngineConfig::new(dir.path());
    config.durability = Durability::Relaxed;
    let engine = Engine::open(config)?;
    let workload = Workload::new(WorkloadConfig { buoys: 1, ..WorkloadConfig::default() })?;
    let buoy = workload.buoy_ids()[0].clone();
    engine.register_buoy(BuoyInfo::new(&buoy))?;
    let total = HOUR_S * 8;
    for (_, seq, batch) in workload.iter_batches(1_000, total)? {
        engine.ingest(&buoy, seq, batch)?.wait()?;
    }
    engine.flush()?;
    let start_ns = WorkloadConfig::default().start_ts;
    let end_ns = start_ns + i64::try_from(HOUR_S)? * 1_000_000_000;

    let auth_config = AuthConfig {
        // Every bench request comes from 127.0.0.1: lift the per-IP login limit (10/min).
        login_limits: LoginLimits { per_ip_per_minute: 1_000_000, ..LoginLimits::default() },
        // The bench admin sets up plans and users with a password alone.
        mfa_required_roles: std::collections::BTreeSet::new(),
        ..AuthConfig::default()
    };
    let auth = Arc::new(AuthService::open(dir.path(), auth_config)?);
    auth.ensure_first_admin(ADMIN, Some(Secret::new(PASSWORD)))?;
    let pair = auth.login(ADMIN, &Secret::new(PASSWORD), [10, 0, 0, 1].into())?;
    let admin = auth.verify_access_token(pair.access_token.expose())?;
    let spec = PlanSpec {
        name: "one buoy".into(),
        buoys: BuoyScope::List(vec![buoy.to_string()]),
        history_days: None,
        daily_query_quota: None,
        row_limit: None,
    };
    let plan = auth.create_plan(&admin, spec)?;
    let analyst = NewUser {
        email: ANALYST.into(),
        password: Secret::new(PASSWORD),
        role: Role::Analyst,
        plan_id: Some(plan.id),
    };
    auth.create_user(&admin, analyst)?;
    let analyst_pair = auth.login(ANALYST, &Secret::new(PASSWORD), [10, 0, 0, 1].into())?;

    let query = Arc::new(QueryService::new(Arc::new(engine.clone()), QueryConfig::default())?);
    let line_protocol = Arc::new(LineProtocol::open(dir.path(), LineProtocolConfig::default())?);
    let state = ApiState { auth, query, engine: Arc::new(engine), line_protocol, on_device_revoked: None };
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let identity = TlsIdentity { cert_chain: vec![cert.clone()], key };
    // Like `bluewave serve`: a multi-threaded network runtime sized by the machine.
    let server = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let router = api_router(state)?;
    let http = server.block_on(HttpServer::bind(
        "127.0.0.1:0".parse()?,
        identity,
        HttpConfig::default(),
        router,
        Registry::default(),
    ))?;
    let addr = http.local_addr();
    server.spawn(http.serve(std::future::pending::<()>()));
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Fixture {
        _dir: dir,
        server,
        client,
        addr,
        connector: TlsConnector::from(Arc::new(tls)),
        analyst_token: analyst_pair.access_token.expose().to_owned(),
        telemetry_path: format!("/api/telemetry?buoy_id={buoy}&start={start_ns}&end={end_ns}&limit=30000"),
        rows: usize::try_from(total)?,
    })
}

/// One keep-alive HTTP/1.1 connection over TLS.
async fn connect(addr: SocketAddr, connector: TlsConnector) -> BenchResult<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp).await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// What one request is.
#[derive(Clone)]
enum Call {
    Telemetry { path: String, token: String },
    Login,
}

/// Sends `call` once; returns the status and the body length.
async fn send(sender: &mut SendRequest<Full<Bytes>>, call: &Call) -> BenchResult<(u16, usize)> {
    sender.ready().await?;
    let request = match call {
        Call::Telemetry { path, token } => hyper::Request::get(path.as_str())
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?,
        Call::Login => hyper::Request::post("/api/auth/token")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(format!(r#"{{"email":"{ANALYST}","password":"{PASSWORD}"}}"#))))?,
    };
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body.len()))
}

/// Runs `requests` calls spread over `conns` connections at once; records each latency (µs).
async fn round(
    conns: Vec<SendRequest<Full<Bytes>>>,
    call: Call,
    requests: u64,
    histogram: Arc<Mutex<Histogram<u64>>>,
) -> BenchResult<(Duration, Vec<SendRequest<Full<Bytes>>>)> {
    let per_conn = requests.div_ceil(conns.len() as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in conns {
        let (call, histogram) = (call.clone(), Arc::clone(&histogram));
        tasks.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new(3)?;
            for _ in 0..per_conn {
                let sent = Instant::now();
                let (status, _) = send(&mut sender, &call).await?;
                if status != 200 {
                    return Err(format!("status {status}").into());
                }
                local.record(u64::try_from(sent.elapsed().as_micros())?)?;
            }
            histogram.lock().map_err(|_| "poisoned")?.add(&local)?;
            BenchResult::Ok(sender)
        }));
    }
    let mut back = Vec::new();
    for task in tasks {
        back.push(task.await??);
    }
    Ok((started.elapsed(), back))
}

fn report(name: &str, histogram: &Mutex<Histogram<u64>>) {
    if let Ok(mut h) = histogram.lock() {
        eprintln!(
            "{name}: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.len(),
            h.value_at_quantile(0.50) as f64 / 1_000.0,
            h.value_at_quantile(0.99) as f64 / 1_000.0,
            h.max() as f64 / 1_000.0
        );
        h.reset();
    }
}

/// Benchmarks `call` at each concurrency of `levels` in group `group`.
fn bench_calls(c: &mut Criterion, fx: &Fixture, group: &str, call: &Call, levels: &[usize], flood: bool) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(1));
    for &level in levels {
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!())));
        // The flood: `level` more connections logging in back to back until the case ends.
        let stop = Arc::new(AtomicBool::new(false));
        let mut flooders = Vec::new();
        if flood {
            for _ in 0..level {
                let (stop, addr, connector) = (Arc::clone(&stop), fx.addr, fx.connector.clone());
                flooders.push(fx.client.spawn(async move {
                    let mut sender = connect(addr, connector).await?;
                    let (mut logins, mut refused) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        // A flood does not honour Retry-After: a refused login is retried at once.
                        match send(&mut sender, &Call::Login).await? {
                            (200, _) => logins += 1,
                            (503, _) => refused += 1,
                            (status, _) => return Err(format!("login status {status}").into()),
                        }
                    }
                    BenchResult::Ok((logins, refused))
                }));
            }
        }
        let flood_started = Instant::now();
        g.bench_function(format!("c{level}"), |b| {
            b.iter_custom(|iters| {
                let run = async {
                    let mut conns = Vec::new();
                    for _ in 0..level {
                        conns.push(connect(fx.addr, fx.connector.clone()).await?);
                    }
                    // Whole rounds: every connection makes the same number of requests.
                    let requests = iters.max(level as u64).div_ceil(level as u64) * level as u64;
                    let (elapsed, _) = round(conns, call.clone(), requests, Arc::clone(&histogram)).await?;
                    // Per-request time as criterion sees it: elapsed over the requests made.
                    BenchResult::Ok(elapsed.mul_f64(iters as f64 / requests as f64))
                };
                match fx.client.block_on(run) {
                    Ok(elapsed) => elapsed,
                    Err(error) => panic!("{group}/c{level}: {error}"),
                }
            });
        });
        stop.store(true, Ordering::Relaxed);
        let (mut logins, mut refused) = (0, 0);
        for flooder in flooders {
            match fx.client.block_on(flooder) {
                Ok(Ok((ok, busy))) => {
                    logins += ok;
                    refused += busy;
                }
                Ok(Err(error)) => panic!("login flood: {error}"),
                Err(error) => panic!("login flood task: {error}"),
            }
        }
        if flood {
            let seconds = flood_started.elapsed().as_secs_f64();
            eprintln!(
                "{group}/c{level}: concurrent logins {logins} in {seconds:.1} s ({:.1}/s), {refused} answered 503",
                logins as f64 / seconds
            );
        }
        report(&format!("{group}/c{level}"), &histogram);
    }
    g.finish();
}

fn api(c: &mut Criterion) {
    let fx = match fixture() {
        Ok(fx) => fx,
        Err(error) => panic!("bench setup: {error}"),
    };
    eprintln!("api bench: {} readings flushed; GET {}", fx.rows, fx.telemetry_path);
    let telemetry = Call::Telemetry { path: fx.telemetry_path.clone(), token: fx.analyst_token.clone() };
    bench_calls(c, &fx, "api_telemetry", &telemetry, &[1, 4, 8], false);
    bench_calls(c, &fx, "api_login", &Call::Login, &[1, 4], false);
    bench_calls(c, &fx, "api_telemetry_under_login_flood", &telemetry, &[4], true);
    drop(fx.client);
    fx.server.shutdown_timeout(Duration::from_secs(5));
}

criterion_group!(benches, api);
criterion_main!(benches);
