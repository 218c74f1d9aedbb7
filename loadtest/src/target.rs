//! The server a run talks to: a spawned `bluewave serve` child on a temporary (or given) data
//! dir, or a running server at a given address. Either way the run gets the QUIC target with
//! one device token per simulated buoy, and API access for checks and analysts.
//!
//! Devices come from a tokens file (`<buoy_id> <token>` lines, as `bluewave devices add`
//! writes), or are registered through the HTTPS API with an operator login
//! (`POST /api/buoys` + `POST /api/buoys/{id}/device-tokens`). A spawned server registers them
//! with `bluewave devices add` before it starts (fast, pre-shared tokens) or through the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bluewave_wire::{Trust, parse_pin};

use crate::error::{Error, Result};
use crate::https::{ApiClient, ApiTarget};
use crate::ingest::{Device, IngestTarget};
use crate::spawn::{SPAWN_ADMIN_EMAIL, ServerProcess, SpawnConfig, add_devices, seed_shop_demo};

/// Largest tokens file read, bytes.
pub const TOKENS_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Name of the tokens file a spawned server's devices are written to (in its data dir).
pub const SPAWN_TOKENS_FILE: &str = "loadtest-device-tokens.txt";

/// How a spawned server's buoys are registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    /// `bluewave devices add` before the server starts; pre-shared tokens (`--device-tokens`).
    Cli,
    /// Through the HTTPS API after it starts; device JWTs.
    Api,
}

/// Where the run's server is, or how to start one.
#[derive(Clone, Debug, clap::Args)]
pub struct TargetOptions {
    /// Start `bluewave serve` as a child on loopback ports and a temporary data dir, and stop
    /// it at the end.
    #[arg(long)]
    pub spawn: bool,
    /// The `bluewave` binary to spawn (default: `bluewave` beside this program, else on PATH).
    #[arg(long)]
    pub bluewave_bin: Option<PathBuf>,
    /// Data dir of the spawned server (kept afterwards); default a temporary one, removed.
    #[arg(long)]
    pub spawn_data_dir: Option<PathBuf>,
    /// Run the spawned server with `--durability relaxed` (no fsync; benchmarks only).
    #[arg(long)]
    pub relaxed: bool,
    /// `--connections-max` of the spawned server.
    #[arg(long)]
    pub server_connections_max: Option<usize>,
    /// How a spawned server's buoys are registered.
    #[arg(long, value_enum, default_value_t = Registration::Cli)]
    pub registration: Registration,
    /// QUIC address of a running server.
    #[arg(long, default_value = "127.0.0.1:4433")]
    pub quic: SocketAddr,
    /// HTTPS address of a running server.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https: SocketAddr,
    /// Name in the server certificate (with --ca).
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// SHA-256 pin of a running server's certificate (64 hex digits, as `serve` prints it).
    #[arg(long, conflicts_with = "ca")]
    pub pin: Option<String>,
    /// PEM file of the CA that signed a running server's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Device tokens of a running server: `<buoy_id> <token>` per line.
    #[arg(long)]
    pub tokens: Option<PathBuf>,
    /// Operator (or admin) email: registers buoys and mints device tokens through the API, and
    /// logs the checks and analysts in. Password from `BLUEWAVE_LOADTEST_PASSWORD`.
    #[arg(long)]
    pub operator_email: Option<String>,
    /// Prefix of the buoy ids registered by the load generator.
    #[arg(long, default_value = "lt-")]
    pub buoy_prefix: String,
    /// Pid of a running server on this machine, to read its CPU and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Environment variable holding the operator's password for a running server.
pub const OPERATOR_PASSWORD_ENV: &str = "BLUEWAVE_LOADTEST_PASSWORD";

impl TargetOptions {
    /// Spawn defaults for tests: `binary`, API-issued or CLI tokens, a temporary data dir.
    pub fn spawn_with(binary: PathBuf) -> Self {
        Self {
            spawn: true,
            bluewave_bin: Some(binary),
            spawn_data_dir: None,
            relaxed: false,
            server_connections_max: None,
            registration: Registration::Cli,
            quic: SocketAddr::from(([127, 0, 0, 1], 4433)),
            https: SocketAddr::from(([127, 0, 0, 1], 8443)),
            server_name: "localhost".into(),
            pin: None,
            ca: None,
            tokens: None,
            operator_email: None,
            buoy_prefix: "lt-".into(),
            server_pid: None,
        }
    }
}

/// API access with a login.
#[derive(Clone, Debug)]
pub struct ApiAccess {
    /// Where and how to trust.
    pub target: ApiTarget,
    /// Login email.
    pub email: String,
    /// Login password.
    pub password: String,
}

impl ApiAccess {
    /// A logged-in client (bound to `source_ip` when given).
    pub async fn client(&self, source_ip: Option<std::net::IpAddr>) -> Result<ApiClient> {
        let mut client = ApiClient::new(self.target.clone(), source_ip);
        client.login(&self.email, &self.password).await?;
        Ok(client)
    }
}

/// A spawned server and its data dir (the server is stopped before the dir is removed:
/// fields drop in order).
#[derive(Debug)]
pub struct Spawned {
    /// The child.
    pub server: ServerProcess,
    /// The temporary data dir, removed on drop (None for a given dir).
    pub temp_dir: Option<tempfile::TempDir>,
}

/// Everything a run needs from its server.
#[derive(Debug)]
pub struct Prepared {
    /// The QUIC side: address, trust, devices.
    pub ingest: IngestTarget,
    /// The API side, when a login is available.
    pub api: Option<ApiAccess>,
    /// The spawned server, when `--spawn`.
    pub spawned: Option<Spawned>,
}

impl Prepared {
    /// The data dir of a spawned server.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.spawned.as_ref().map(|s| s.server.config().data_dir.clone())
    }
}

/// Reads `wanted` devices from a tokens file (`#` comments and blank lines skipped).
pub fn read_tokens(path: &Path, wanted: usize) -> Result<Vec<Device>> {
    let bad = |what: String| Error::Tokens { path: path.to_path_buf(), what };
    let size =
        std::fs::metadata(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?.len();
    if size > TOKENS_FILE_BYTES_MAX {
        return Err(bad(format!("larger than {TOKENS_FILE_BYTES_MAX} bytes")));
    }
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::File { path: path.to_path_buf(), source })?;
    let mut devices = Vec::with_capacity(wanted);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(buoy_id), Some(token), None) => {
                devices.push(Device { buoy_id: buoy_id.to_owned(), token: token.to_owned() })
            }
            _ => return Err(bad(format!("line {}: expected `<buoy_id> <token>`", number + 1))),
        }
        if devices.len() == wanted {
            return Ok(devices);
        }
    }
    Err(bad(format!("holds {} devices, {wanted} needed", devices.len())))
}

/// The `bluewave` binary: the flag, else beside this executable, else `bluewave` on PATH.
pub fn bluewave_binary(flag: Option<&Path>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bluewave")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bluewave"))
}

/// Registers `buoys` buoys `<prefix>NNNNNN` through the API and mints a device token for each.
pub async fn register_through_api(api: &ApiAccess, prefix: &str, buoys: usize) -> Result<Vec<Device>> {
    let mut client = api.client(None).await?;
    let mut devices = Vec::with_capacity(buoys);
    for index in 0..buoys {
        let buoy_id = format!("{prefix}{index:06}");
        client.register_buoy(&buoy_id).await?;
        let token = client.issue_device_token(&buoy_id).await?;
        devices.push(Device { buoy_id, token });
    }
    Ok(devices)
}

fn pin_bytes(hex: &str) -> Result<[u8; 32]> {
    parse_pin(hex).map_err(|e| Error::Config(format!("pin: {e}")))
}

/// Starts (or finds) the server and gets `buoys` devices.
pub async fn prepare(options: &TargetOptions, buoys: usize) -> Result<Prepared> {
    prepare_with(options, buoys, false).await
}

/// [`prepare`], and for a spawned server `bluewave shop seed-demo` before it starts when
/// `shop_demo` (a running server's shop must hold the demo catalogue already).
pub async fn prepare_with(options: &TargetOptions, buoys: usize, shop_demo: bool) -> Result<Prepared> {
    if options.spawn {
        return prepare_spawned(options, buoys, shop_demo).await;
    }
    let (trust, api_target) = match (&options.pin, &options.ca) {
        (Some(pin), None) => {
            let pin = pin_bytes(pin)?;
            (Trust::Pinned(vec![pin]), ApiTarget::pinned(options.https, pin)?)
        }
        (None, Some(ca)) => {
            (Trust::CaFile(ca.clone()), ApiTarget::ca_file(options.https, &options.server_name, ca)?)
        }
        _ => return Err(Error::Config("give --spawn, or --pin or --ca for a running server".into())),
    };
    let api = match &options.operator_email {
        Some(email) => {
            let password = std::env::var(OPERATOR_PASSWORD_ENV).map_err(|_| {
                Error::Config(format!("--operator-email needs the password in {OPERATOR_PASSWORD_ENV}"))
            })?;
            Some(ApiAccess { target: api_target, email: email.clone(), password })
        }
        None => None,
    };
    let devices = match (&options.tokens, &api) {
        (Some(path), _) => read_tokens(path, buoys)?,
        (None, Some(api)) => register_through_api(api, &options.buoy_prefix, buoys).await?,
        (None, None) => {
            return Err(Error::Config("a running server needs --tokens FILE or --operator-email".into()));
        }
    };
    Ok(Prepared {
        ingest: IngestTarget {
            quic_addr: options.quic,
            server_name: options.server_name.clone(),
            trust,
            devices,
            server_pid: options.server_pid,
        },
        api,
        spawned: None,
    })
}

async fn prepare_spawned(options: &TargetOptions, buoys: usize, shop_demo: bool) -> Result<Prepared> {
    let binary = bluewave_binary(options.bluewave_bin.as_deref());
    let (data_dir, temp_dir) = match &options.spawn_data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::File { path: dir.clone(), source })?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("bluewave-loadtest-")
                .tempdir()
                .map_err(|source| Error::Io { what: "create a temporary data dir", source })?;
            (temp.path().join("data"), Some(temp))
        }
    };
    let mut config = SpawnConfig::new(binary.clone(), data_dir.clone())?;
    config.relaxed = options.relaxed;
    config.connections_max = options.server_connections_max;
    let tokens_path = data_dir.join(SPAWN_TOKENS_FILE);
    let registration = options.registration;
    if registration == Registration::Cli {
        let binary = binary.clone();
        let (dir, prefix, path) = (data_dir.clone(), options.buoy_prefix.clone(), tokens_path.clone());
        tokio::task::spawn_blocking(move || add_devices(&binary, &dir, buoys, &prefix, &path))
            .await
            .map_err(|e| Error::Internal(format!("devices add task: {e}")))??;
        config.device_tokens = Some(tokens_path.clone());
    }
    if shop_demo {
        let (binary, dir) = (binary.clone(), data_dir.clone());
        tokio::task::spawn_blocking(move || seed_shop_demo(&binary, &dir))
            .await
            .map_err(|e| Error::Internal(format!("shop seed task: {e}")))??;
    }
    let password = config.admin_password.clone();
    let server = tokio::task::spawn_blocking(move || ServerProcess::start(config))
        .await
        .map_err(|e| Error::Internal(format!("spawn task: {e}")))??;
    let spawned = Spawned { server, temp_dir };
    let info = spawned.server.info().clone();
    let pin = pin_bytes(&info.pin_hex)?;
    let api = ApiAccess {
        target: ApiTarget::pinned(info.https_addr, pin)?,
        email: SPAWN_ADMIN_EMAIL.to_owned(),
        password,
    };
    let devices = match registration {
        Registration::Cli => read_tokens(&tokens_path, buoys)?,
        Registration::Api => register_through_api(&api, &options.buoy_prefix, buoys).await?,
    };
    Ok(Prepared {
        ingest: IngestTarget {
            quic_addr: info.quic_addr,
            server_name: "localhost".into(),
            trust: Trust::Pinned(vec![pin]),
            devices,
            server_pid: spawned.server.pid(),
        },
        api: Some(api),
        spawned: Some(spawned),
    })
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
