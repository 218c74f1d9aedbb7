//! `bluewave serve`: runs the ingest endpoint over the engine until SIGINT/SIGTERM, then stops
//! gracefully (server drain, then engine flush and shutdown). For now QUIC only; the HTTPS front
//! (issue 4) will extend [`ServeArgs`] and share the TLS identity loaded here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bluewave_engine::{Durability, Engine, EngineConfig};
use bluewave_wire::{PresharedTokens, ServerConfig, ServerIdentity};

use crate::DurabilityArg;

/// File name of the pre-shared device tokens inside the data dir (the default of
/// `--device-tokens`).
pub const DEVICE_TOKENS_FILE: &str = "device-tokens.txt";

/// Options of `bluewave serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// UDP address of the QUIC ingest endpoint. The default listens on loopback only: serving
    /// the fleet means choosing the interface, e.g. `0.0.0.0:4433`.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic_listen: SocketAddr,
    /// Server certificate chain (PEM). Without it a self-signed identity is generated on first
    /// run in `<data-dir>/tls/` and its SHA-256 pin printed for the clients.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Pre-shared device tokens, one `<buoy_id> <token>` per line. Default
    /// `<data-dir>/device-tokens.txt`. Re-read on SIGHUP.
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
    /// Open buoy connections; beyond it HELLO is refused SERVER_BUSY.
    #[arg(long, default_value_t = ServerConfig::default().connections_max)]
    pub connections_max: usize,
    /// fsync policy of the engine; `relaxed` is for benchmarks only.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Strict)]
    pub durability: DurabilityArg,
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
    /// The TLS identity could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] bluewave_wire::TlsError),
    /// The device tokens file is unreadable or malformed.
    #[error(transparent)]
    Tokens(#[from] bluewave_wire::TokenFileError),
    /// The async runtime or the signal handlers could not be set up.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The tokens file `--device-tokens` names, or the default in the data dir.
pub fn tokens_path(data_dir: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map_or_else(|| data_dir.join(DEVICE_TOKENS_FILE), Path::to_path_buf)
}

/// Runs `bluewave serve` to completion.
pub fn run(data_dir: &Path, args: &ServeArgs) -> Result<(), ServeError> {
    let mut engine_config = EngineConfig::new(data_dir);
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
    let tokens_file = tokens_path(data_dir, args.device_tokens.as_deref());
    let tokens = Arc::new(PresharedTokens::load(&tokens_file)?);
    let config = ServerConfig {
        listen: args.quic_listen,
        connections_max: args.connections_max,
        ..ServerConfig::default()
    };
    config.validate()?;
    let engine = Engine::open(engine_config)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bluewave-net").build()?;
    let served = runtime.block_on(serve(engine.clone(), identity, tokens, &tokens_file, config));
    // The server is stopped (or never started): make everything acknowledged durable in files.
    let flushed =
        engine.flush().map(|report| println!("flushed {} files, {} rows", report.files, report.rows));
    let shut = engine.shutdown();
    served?;
    flushed?;
    shut?;
    Ok(())
}

async fn serve(
    engine: Engine,
    identity: ServerIdentity,
    tokens: Arc<PresharedTokens>,
    tokens_file: &Path,
    config: ServerConfig,
) -> Result<(), ServeError> {
    let pin = identity.pin_sha256();
    let handle = bluewave_wire::start(config, &identity, engine, tokens.clone()).await?;
    println!("QUIC ingest listening on {} (ALPN bluewave/1)", handle.local_addr());
    println!("certificate SHA-256 pin: {pin}");
    println!("device tokens: {} ({} tokens)", tokens_file.display(), tokens.len());
    wait_for_stop(&tokens).await?;
    println!("stopping: draining in-flight batches");
    let report = handle.shutdown().await;
    let metrics = handle.metrics();
    println!(
        "server stopped (drained: {}); {} connections served, {} batches, {} readings, {} stored, {} duplicate, {} rejected, {} busy",
        report.drained,
        metrics.connections_accepted,
        metrics.batches_received,
        metrics.readings_received,
        metrics.acks_stored,
        metrics.acks_duplicate,
        metrics.acks_rejected,
        metrics.acks_busy
    );
    Ok(())
}

/// Returns on SIGINT or SIGTERM; reloads the device tokens on SIGHUP.
#[cfg(unix)]
async fn wait_for_stop(tokens: &PresharedTokens) -> Result<(), ServeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => return Ok(()),
            _ = interrupt.recv() => return Ok(()),
            _ = hangup.recv() => match tokens.reload() {
                Ok(count) => println!("device tokens reloaded: {count} tokens"),
                // A bad edit keeps the previous table; the operator fixes the named line.
                Err(e) => eprintln!("device tokens not reloaded: {e}"),
            },
        }
    }
}

/// Returns on Ctrl-C.
#[cfg(not(unix))]
async fn wait_for_stop(_tokens: &PresharedTokens) -> Result<(), ServeError> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
