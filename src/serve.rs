//! `bluewave serve`: QUIC ingest and the HTTPS API in one process, over one engine, until
//! SIGINT/SIGTERM; then HTTPS drains, QUIC shuts down gracefully, and the engine flushes and
//! shuts down.
//!
//! Embedded defaults make a fresh machine work with no flags: data in `./bluewave-data`, one
//! self-signed TLS identity in `<data-dir>/tls/` used by both listeners, signing keys generated
//! by the auth module, and a first admin whose password comes from `BLUEWAVE_ADMIN_PASSWORD` or
//! is generated and printed once to stdout (never logged).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bluewave_engine::{Durability, Engine, EngineConfig, MemoryConsumer};
use bluewave_query::{QueryConfig, QueryService};
use bluewave_web::shop_api::{ShopConfig, ShopService};
use bluewave_web::{
    ApiState, AuthService, FirstAdmin, HttpConfig, HttpServer, LineProtocol, LineProtocolConfig, Registry,
    Secret, TlsIdentity, api_router, shop_routes,
};
use bluewave_wire::{DeviceAuthenticator, PresharedTokens, ServerConfig, ServerIdentity, StatelessResetKey};

use crate::config_file::{ConfigFile, ConfigFileError};

use crate::DurabilityArg;
use crate::device_auth::{AuditRefusals, JwtDevices};
use crate::metrics::FleetCollector;

/// File name of the pre-shared device tokens inside the data dir (where `bluewave devices add`
/// writes by default; pass it to `serve --device-tokens` to use it).
pub const DEVICE_TOKENS_FILE: &str = "device-tokens.txt";

/// Environment variable holding the first admin's password (read once, on first run).
pub const ADMIN_PASSWORD_ENV: &str = "BLUEWAVE_ADMIN_PASSWORD";

/// Options of `bluewave serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// UDP address of the QUIC ingest endpoint. The default listens on loopback only: serving
    /// the fleet means choosing the interface, e.g. `0.0.0.0:4433`.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic_listen: SocketAddr,
    /// TCP address of the HTTPS API (loopback by default, like `--quic-listen`).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// Server certificate chain (PEM), for both QUIC and HTTPS. Without it a self-signed
    /// identity is generated on first run in `<data-dir>/tls/` and its SHA-256 pin printed.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Authenticate buoys with this pre-shared tokens file (`<buoy_id> <token>` per line, as
    /// `bluewave devices add` writes `<data-dir>/device-tokens.txt`; re-read on SIGHUP) instead
    /// of the device JWTs issued through the API (the default).
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
    /// Email of the first admin account, created on first run.
    #[arg(long, default_value = "admin@localhost")]
    pub admin_email: String,
    /// Open buoy connections; beyond it HELLO is refused SERVER_BUSY.
    #[arg(long, default_value_t = ServerConfig::default().connections_max)]
    pub connections_max: usize,
    /// TCP address of the Postgres wire protocol front (TLS required; README "Postgres wire
    /// protocol"), or `off`. Loopback by default, like the other listeners.
    #[arg(long, default_value = bluewave_pg::LISTEN_DEFAULT, value_parser = parse_pg_listen)]
    pub pg_listen: PgListen,
    /// Open Postgres sessions; past it a connection is refused with SQLSTATE 53300.
    #[arg(long, default_value_t = bluewave_pg::CONNECTIONS_MAX_DEFAULT)]
    pub pg_connections_max: usize,
    /// fsync policy of the engine; `relaxed` is for benchmarks only.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Strict)]
    pub durability: DurabilityArg,
    /// TOML file with every other limit and setting, by component (`[engine]`, `[quic]`,
    /// `[https]`, `[query]`, `[auth]`, `[mail]`; see README "Configuration file"). Unknown keys
    /// are errors. Default: `<data-dir>/bluewave.toml` when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `--pg-listen`: an address, or `off` for no Postgres front.
#[derive(Clone, Copy, Debug)]
pub struct PgListen(pub Option<SocketAddr>);

fn parse_pg_listen(text: &str) -> Result<PgListen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(PgListen(None));
    }
    text.parse()
        .map(|addr| PgListen(Some(addr)))
        .map_err(|e| format!("{e} (an address such as 127.0.0.1:5433, or off)"))
}

/// Why `serve` failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The engine failed to open, flush or shut down.
    #[error(transparent)]
    Engine(#[from] bluewave_engine::Error),
    /// The QUIC server could not start.
    #[error(transparent)]
    Server(#[from] bluewave_wire::ServerError),
    /// The HTTPS server could not start.
    #[error("HTTPS server: {0}")]
    Http(#[from] bluewave_web::ServerError),
    /// The auth store, keys or first admin could not be set up.
    #[error("auth: {0}")]
    Auth(#[from] bluewave_web::AuthError),
    /// The line-protocol idempotency key store could not be opened.
    #[error("line protocol: {0}")]
    LineProtocol(#[from] bluewave_web::IdempotencyError),
    /// The query service could not start.
    #[error("query service: {0}")]
    Query(#[from] bluewave_query::Error),
    /// The Postgres front could not start.
    #[error(transparent)]
    Pg(#[from] bluewave_pg::Error),
    /// The TLS identity could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] bluewave_wire::TlsError),
    /// The device tokens file is unreadable or malformed.
    #[error(transparent)]
    Tokens(#[from] bluewave_wire::TokenFileError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The `--config` file is unreadable, too large, not TOML or names an unknown key.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The engine's memory budget has no room for the query caches.
    #[error(
        "memory_bytes_max ({limit} bytes) has no room for the query file-metadata cache ({needed} bytes); \
         raise [engine] memory_bytes_max"
    )]
    MemoryBudget {
        /// Bytes the cache reserves.
        needed: usize,
        /// `memory_bytes_max`.
        limit: usize,
    },
    /// The shop store (`shop.redb`) could not be opened.
    #[error("shop: {0}")]
    Shop(#[from] bluewave_web::shop_api::ShopError),
}

/// The tokens file `--device-tokens` names, or the default in the data dir.
pub fn tokens_path(data_dir: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| data_dir.join(DEVICE_TOKENS_FILE), Path::to_path_buf)
}

/// Runs `bluewave serve` to completion.
pub fn run(data_dir: &Path, args: &ServeArgs) -> Result<(), ServeError> {
    let file = ConfigFile::for_data_dir(data_dir, args.config.as_deref())?;
    let mut engine_config = EngineConfig::new(data_dir);
    file.apply_engine(&mut engine_config);
    engine_config.durability = match args.durability {
        DurabilityArg::Strict => Durability::Strict,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => ServerIdentity::from_pem_files(cert, key)?,
        _ => {
            let (identity, generated) = ServerIdentity::load_or_generate(&data_dir.join("tls"))?;
            if generated {
                println!("generated a self-signed certificate in {}", data_dir.join("tls").display());
            }
            identity
        }
    };
    let mut config = ServerConfig::default();
    file.apply_quic(&mut config);
    config.listen = args.quic_listen;
    config.connections_max = args.connections_max;
    // Kept across restarts so a buoy's connection to a killed server ends at its next packet.
    config.stateless_reset_key = Some(StatelessResetKey::load_or_generate(&data_dir.join("tls"))?);
    config.validate()?;
    let mut http_config = HttpConfig::default();
    file.apply_https(&mut http_config);
    file.apply_metrics_token(&mut http_config)?;
    let mut query_config = QueryConfig::default();
    file.apply_query(&mut query_config);
    let mut auth_config = file.auth_config()?;
    if file.mail.link_base_url.is_none() {
        // Links in mails point at this server unless the file names its public address.
        auth_config.mail.link_base_url = format!("https://{}", args.https_listen);
    }
    let mut line_protocol_config = LineProtocolConfig::default();
    file.apply_line_protocol(&mut line_protocol_config);

    let auth = Arc::new(AuthService::open(data_dir, auth_config)?);
    let line_protocol = Arc::new(LineProtocol::open(data_dir, line_protocol_config)?);
    let password = std::env::var(ADMIN_PASSWORD_ENV).ok().filter(|p| !p.is_empty()).map(Secret::new);
    match auth.ensure_first_admin(&args.admin_email, password)? {
        FirstAdmin::AlreadyPresent => {}
        FirstAdmin::Created { email, generated_password: Some(password), .. } => {
            // stdout only, once: the operator's copy. Never through tracing.
            println!("first admin: {email} password: {}", password.expose());
        }
        FirstAdmin::Created { email, generated_password: None, .. } => {
            println!("first admin: {email} (password from {ADMIN_PASSWORD_ENV})");
        }
    }
    let shop = Arc::new(ShopService::open(data_dir, ShopConfig::default(), Arc::clone(&auth))?);
    let preshared = match &args.device_tokens {
        Some(path) => Some((Arc::new(PresharedTokens::load(path)?), path.clone())),
        None => None,
    };
    let devices: Arc<dyn DeviceAuthenticator> = match &preshared {
        Some((tokens, _)) => tokens.clone(),
        None => Arc::new(JwtDevices::new(Arc::clone(&auth))),
    };

    let engine = Engine::open(engine_config)?;
    // The query side's file-metadata cache draws on the engine's memory budget, at its
    // capacity, for the server's life.
    let budget = engine.memory_budget();
    let needed = bluewave_query::FILE_METADATA_CACHE_BYTES;
    let Some(_query_cache_memory) = budget.try_reserve(MemoryConsumer::QueryCache, needed) else {
        engine.shutdown()?;
        return Err(ServeError::MemoryBudget { needed, limit: budget.limit() });
    };
    // The query service has its own runtime (DataFusion cannot starve ingest); it is dropped
    // here, outside the network runtime, after everything that uses it has stopped.
    let query = match QueryService::new(Arc::new(engine.clone()), query_config) {
        Ok(query) => Arc::new(query),
        Err(error) => {
            engine.shutdown()?;
            return Err(error.into());
        }
    };
    let state = ApiState {
        auth,
        query: Arc::clone(&query),
        engine: Arc::new(engine.clone()),
        line_protocol,
        on_device_revoked: None,
    };
    let parts = Parts {
        identity,
        quic: config,
        https_listen: args.https_listen,
        http: http_config,
        devices,
        preshared,
        shop,
        pg: args.pg_listen.0.map(|listen| bluewave_pg::PgConfig {
            listen,
            connections_max: args.pg_connections_max,
            ..bluewave_pg::PgConfig::default()
        }),
    };
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bluewave-net")
        .build()
        .map_err(ServeError::from)
        .and_then(|runtime| runtime.block_on(serve(engine.clone(), state, parts)));
    drop(query);
    // The servers are stopped (or never started): make everything acknowledged durable in files.
    let flushed =
        engine.flush().map(|report| println!("flushed {} files, {} rows", report.files, report.rows));
    let shut = engine.shutdown();
    served?;
    flushed?;
    shut?;
    Ok(())
}

/// What `serve` starts, prepared by `run`.
struct Parts {
    identity: ServerIdentity,
    quic: ServerConfig,
    https_listen: SocketAddr,
    http: HttpConfig,
    devices: Arc<dyn DeviceAuthenticator>,
    preshared: Option<(Arc<PresharedTokens>, PathBuf)>,
    /// The storefront (its pages join the API's router).
    shop: Arc<ShopService>,
    /// The Postgres front's settings; `None` with `--pg-listen off`.
    pg: Option<bluewave_pg::PgConfig>,
}

async fn serve(engine: Engine, mut state: ApiState, parts: Parts) -> Result<(), ServeError> {
    let pin = parts.identity.pin_sha256();
    let quic = bluewave_wire::start(parts.quic, &parts.identity, engine.clone(), parts.devices).await?;
    quic.set_refusal_audit(Arc::new(AuditRefusals::new(Arc::clone(&state.auth))));
    let disconnect = quic.clone();
    state.on_device_revoked = Some(Arc::new(move |buoy: &str| match bluewave_engine::BuoyId::new(buoy) {
        Ok(buoy) => disconnect.disconnect_buoy(&buoy),
        Err(_) => 0,
    }));
    let mut registry = Registry::default();
    let query = Arc::clone(&state.query);
    registry.register_collector(Box::new(FleetCollector::new(engine, quic.clone(), query)));
    let tls =
        TlsIdentity { cert_chain: parts.identity.cert_chain.clone(), key: parts.identity.key.clone_key() };
    let pg = match parts.pg.clone() {
        None => Ok(None),
        Some(config) => {
            let tls = TlsIdentity {
                cert_chain: parts.identity.cert_chain.clone(),
                key: parts.identity.key.clone_key(),
            };
            bluewave_pg::PgServer::bind(config, tls, Arc::clone(&state.auth), Arc::clone(&state.query))
                .await
                .map(Some)
        }
    };
    let pg = match pg {
        Ok(pg) => pg,
        Err(error) => {
            quic.shutdown().await;
            return Err(error.into());
        }
    };
    let https = match api_router(state).and_then(|router| shop_routes(router, Arc::clone(&parts.shop))) {
        Ok(router) => HttpServer::bind(parts.https_listen, tls, parts.http, router, registry).await,
        Err(error) => Err(error),
    };
    let https = match https {
        Ok(https) => https,
        Err(error) => {
            quic.shutdown().await;
            return Err(error.into());
        }
    };
    let signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(error) => {
            quic.shutdown().await;
            return Err(error);
        }
    };
    println!("HTTPS API listening on https://{} (docs at /api/docs)", https.local_addr());
    println!("QUIC ingest listening on {} (ALPN bluewave/1)", quic.local_addr());
    match &pg {
        Some(pg) => match pg.local_addr() {
            Ok(addr) => println!("Postgres wire protocol listening on {addr} (sslmode=require)"),
            Err(error) => eprintln!("Postgres front: {error}"),
        },
        None => println!("Postgres wire protocol: off"),
    }
    println!("certificate SHA-256 pin: {pin}");
    match &parts.preshared {
        Some((tokens, path)) => println!("device tokens: {} ({} tokens)", path.display(), tokens.len()),
        None => println!("device tokens: JWTs issued through POST /api/buoys/{{id}}/device-tokens"),
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let https_task = tokio::spawn(https.serve(async move {
        // A dropped sender (serve returning early) also stops the server.
        let _ = stop_rx.await;
    }));
    let (pg_stop_tx, pg_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pg_task = pg.map(|pg| {
        tokio::spawn(pg.serve(async move {
            let _ = pg_stop_rx.await;
        }))
    });
    // Records subscription period ends and expiries (access itself never waits for it).
    let subscription_ticker = Arc::clone(&parts.shop).spawn_subscription_ticker(
        std::time::Duration::from_secs(bluewave_web::shop_api::SUBSCRIPTION_TICK_S),
    );
    let waited = signals.wait(parts.preshared.as_ref().map(|(tokens, _)| tokens.as_ref())).await;
    subscription_ticker.abort();
    println!("stopping: draining HTTPS requests, then in-flight batches");
    let _ = stop_tx.send(());
    let _ = pg_stop_tx.send(());
    if let Some(task) = pg_task {
        // Open Postgres sessions are closed (their running queries cancelled).
        match task.await {
            Ok(Err(error)) => eprintln!("Postgres front: {error}"),
            Err(error) => eprintln!("Postgres front task: {error}"),
            Ok(Ok(())) => {}
        }
    }
    let drained = https_task.await.map_err(std::io::Error::other);
    let report = quic.shutdown().await;
    let metrics = quic.metrics();
    if let Ok(summary) = &drained {
        println!(
            "HTTPS stopped: {} connections drained, {} cut",
            summary.connections_drained, summary.connections_aborted
        );
    }
    println!(
        "QUIC stopped (drained: {}); {} connections served, {} batches, {} readings, {} stored, {} duplicate, {} rejected, {} busy",
        report.drained,
        metrics.connections_accepted,
        metrics.batches_received,
        metrics.readings_received,
        metrics.acks_stored,
        metrics.acks_duplicate,
        metrics.acks_rejected,
        metrics.acks_busy
    );
    waited?;
    drained?;
    Ok(())
}

/// The stop and reload signals, installed before `serve` announces its listeners: a SIGTERM
/// that arrives right after the "listening" lines must take the graceful path, never the
/// default action (which would end the process before the flush).
#[cfg(unix)]
struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn install() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// Returns on SIGINT or SIGTERM; reloads the pre-shared device tokens (if used) on SIGHUP.
    async fn wait(mut self, tokens: Option<&PresharedTokens>) -> Result<(), ServeError> {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return Ok(()),
                _ = self.interrupt.recv() => return Ok(()),
                _ = self.hangup.recv() => match tokens.map(PresharedTokens::reload) {
                    None => println!("SIGHUP: nothing to reload (device JWTs are checked live)"),
                    Some(Ok(count)) => println!("device tokens reloaded: {count} tokens"),
                    // A bad edit keeps the previous table; the operator fixes the named line.
                    Some(Err(e)) => eprintln!("device tokens not reloaded: {e}"),
                },
            }
        }
    }
}

/// Ctrl-C only, off Unix.
#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> Result<Self, ServeError> {
        Ok(Self)
    }

    /// Returns on Ctrl-C.
    async fn wait(self, _tokens: Option<&PresharedTokens>) -> Result<(), ServeError> {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
