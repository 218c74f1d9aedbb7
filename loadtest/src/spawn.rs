//! `--spawn`: a `bluewave serve` child on a data dir and loopback ports of our choosing,
//! started, killed (SIGKILL, for the durability run), restarted on the same data dir and ports,
//! and stopped (SIGTERM, then SIGKILL after a deadline). [`ServerProcess`] always stops its
//! child in `Drop`, so a failing run never leaves a server behind.
//!
//! Readiness is read from the child's stdout, which `serve` writes for its operator:
//! `HTTPS API listening on https://ADDR ...`, `QUIC ingest listening on ADDR ...` and
//! `certificate SHA-256 pin: HEX`. Its stderr (the log) goes to a file beside the data dir.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a spawned server may take to print its listening lines, ms (a debug build opening
/// a data dir with a long WAL to replay takes a while).
pub const READY_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// How long `stop` waits after SIGTERM before SIGKILL, ms (the server flushes on the way out).
pub const STOP_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// How long `bluewave devices add` (or another offline command before the start) may take, ms
/// (one catalog commit per buoy: 10,000 buoys take over two minutes with a debug build on a
/// loaded 2-core machine).
pub const DEVICES_ADD_TIMEOUT_MS: u64 = 900_000;
/// Most lines of the child's log quoted in an error.
const LOG_TAIL_LINES: usize = 20;
/// Email of the first admin of a spawned server.
pub const SPAWN_ADMIN_EMAIL: &str = "admin@localhost";
/// Environment variable `serve` reads the first admin's password from.
const ADMIN_PASSWORD_ENV: &str = "BLUEWAVE_ADMIN_PASSWORD";

/// How to run the child.
#[derive(Clone, Debug)]
pub struct SpawnConfig {
    /// The `bluewave` binary.
    pub binary: PathBuf,
    /// Its data dir (kept across restarts).
    pub data_dir: PathBuf,
    /// QUIC listen address (fixed, so clients reconnect to a restarted server).
    pub quic_addr: SocketAddr,
    /// HTTPS listen address (fixed).
    pub https_addr: SocketAddr,
    /// `--durability relaxed` (no fsync: benchmarks only).
    pub relaxed: bool,
    /// `--device-tokens FILE` (pre-shared tokens) instead of API-issued device JWTs.
    pub device_tokens: Option<PathBuf>,
    /// `--connections-max`.
    pub connections_max: Option<usize>,
    /// The first admin's password (set through the environment on the first start).
    pub admin_password: String,
    /// See [`READY_TIMEOUT_MS_DEFAULT`].
    pub ready_timeout_ms: u64,
    /// See [`STOP_TIMEOUT_MS_DEFAULT`].
    pub stop_timeout_ms: u64,
}

impl SpawnConfig {
    /// A configuration on two free loopback ports, strict durability, API-issued tokens and a
    /// random admin password.
    pub fn new(binary: PathBuf, data_dir: PathBuf) -> Result<Self> {
        let (quic_addr, https_addr) = free_loopback_ports()?;
        Ok(Self {
            binary,
            data_dir,
            quic_addr,
            https_addr,
            relaxed: false,
            device_tokens: None,
            connections_max: None,
            admin_password: random_secret()?,
            ready_timeout_ms: READY_TIMEOUT_MS_DEFAULT,
            stop_timeout_ms: STOP_TIMEOUT_MS_DEFAULT,
        })
    }

    /// The log file of the child (beside the data dir).
    pub fn log_path(&self) -> PathBuf {
        let mut name = self.data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".server.log");
        self.data_dir.with_file_name(name)
    }

    /// The child's config file (beside the data dir): this throwaway server's admin sets up
    /// buoys, users and tokens through the API with a password alone, so the MFA requirement
    /// of admins and operators is off.
    pub fn server_config_path(&self) -> PathBuf {
        let mut name = self.data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".server.toml");
        self.data_dir.with_file_name(name)
    }
}

/// 24 random bytes as hex: the spawned server's admin password.
pub fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("system random generator: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A free UDP port and a free TCP port on 127.0.0.1 (bound, read, released: another process
/// could take them in between, which makes the spawn fail visibly rather than misroute).
pub fn free_loopback_ports() -> Result<(SocketAddr, SocketAddr)> {
    let io = |what| move |source| Error::Io { what, source };
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind a UDP port"))?;
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind a TCP port"))?;
    let quic = udp.local_addr().map_err(io("read the UDP port"))?;
    let https = tcp.local_addr().map_err(io("read the TCP port"))?;
    Ok((quic, https))
}

/// Registers `count` buoys named `<prefix>NNNN` and appends their pre-shared tokens to
/// `tokens_file`, with `bluewave devices add` (the server must not be running on that data dir).
pub fn add_devices(
    binary: &Path,
    data_dir: &Path,
    count: usize,
    prefix: &str,
    tokens_file: &Path,
) -> Result<()> {
    let count = count.to_string();
    let args = ["devices", "add", "--count", &count, "--prefix", prefix, "--device-tokens"];
    run_offline(binary, data_dir, &args, Some(tokens_file), "devices add")
}

/// Loads the shop's demo catalogue and plan offers with `bluewave shop seed-demo` (the server
/// must not be running on that data dir).
pub fn seed_shop_demo(binary: &Path, data_dir: &Path) -> Result<()> {
    run_offline(binary, data_dir, &["shop", "seed-demo"], None, "shop seed-demo")
}

/// Runs `bluewave --data-dir <dir> <args> [<last>]` to completion, within
/// [`DEVICES_ADD_TIMEOUT_MS`]; its stderr in the error when it fails.
fn run_offline(binary: &Path, data_dir: &Path, args: &[&str], last: Option<&Path>, what: &str) -> Result<()> {
    let mut command = Command::new(binary);
    command.arg("--data-dir").arg(data_dir).args(args);
    if let Some(last) = last {
        command.arg(last);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Spawn(format!("cannot run {} {what}: {e}", binary.display())))?;
    let deadline = Instant::now() + Duration::from_millis(DEVICES_ADD_TIMEOUT_MS);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut text = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut text);
                }
                return Err(Error::Spawn(format!("{what} exited with {status}: {}", text.trim())));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Spawn(format!("{what} took longer than {DEVICES_ADD_TIMEOUT_MS} ms")));
            }
            Err(e) => return Err(Error::Spawn(format!("{what}: {e}"))),
        }
    }
}

/// What a ready child printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    /// QUIC ingest address.
    pub quic_addr: SocketAddr,
    /// HTTPS API address.
    pub https_addr: SocketAddr,
    /// SHA-256 pin of its certificate, hex.
    pub pin_hex: String,
}

/// A running `bluewave serve` child.
#[derive(Debug)]
pub struct ServerProcess {
    config: SpawnConfig,
    child: Option<Child>,
    info: ServerInfo,
    starts: u64,
}

impl ServerProcess {
    /// Starts the child and waits until it is ready.
    pub fn start(config: SpawnConfig) -> Result<Self> {
        let (child, info) = launch(&config)?;
        Ok(Self { config, child: Some(child), info, starts: 1 })
    }

    /// What the child printed when it became ready (the same after every restart).
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SpawnConfig {
        &self.config
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Times the child was started.
    pub fn starts(&self) -> u64 {
        self.starts
    }

    /// SIGKILL, then waits for the child to be gone.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::KILL);
            child.wait().map_err(|source| Error::Io { what: "wait for the killed server", source })?;
        }
        Ok(())
    }

    /// Starts the child again on the same data dir and ports (after [`ServerProcess::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        let (child, info) = launch(&self.config)?;
        if info != self.info {
            self.child = Some(child);
            return Err(Error::Spawn(format!("restarted server differs: {info:?} vs {:?}", self.info)));
        }
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// SIGTERM, waits up to `stop_timeout_ms` for a clean exit, then SIGKILL. Returns the
    /// exit status of a clean exit, `None` if it had to be killed (or was not running).
    pub fn stop(&mut self) -> Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else { return Ok(None) };
        signal(&child, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_millis(self.config.stop_timeout_ms);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(Some(status)),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    signal(&child, rustix::process::Signal::KILL);
                    let _ = child.wait();
                    return Ok(None);
                }
            }
        }
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        // ESRCH (already gone) is fine: the wait that follows reaps it.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The last lines of the child's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn launch(config: &SpawnConfig) -> Result<(Child, ServerInfo)> {
    let log_path = config.log_path();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| Error::File { path: log_path.clone(), source })?;
    let config_path = config.server_config_path();
    std::fs::write(&config_path, "[auth]\nmfa_required_roles = []\n")
        .map_err(|source| Error::File { path: config_path.clone(), source })?;
    let mut command = Command::new(&config.binary);
    command
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("serve")
        .arg("--quic-listen")
        .arg(config.quic_addr.to_string())
        .arg("--https-listen")
        .arg(config.https_addr.to_string())
        .arg("--config")
        .arg(&config_path)
        .args(["--admin-email", SPAWN_ADMIN_EMAIL])
        // The load generator does not speak Postgres; a fixed default port would collide
        // between spawned servers.
        .args(["--pg-listen", "off"])
        .env(ADMIN_PASSWORD_ENV, &config.admin_password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if config.relaxed {
        command.args(["--durability", "relaxed"]);
    }
    if let Some(tokens) = &config.device_tokens {
        command.arg("--device-tokens").arg(tokens);
    }
    if let Some(max) = config.connections_max {
        command.args(["--connections-max", &max.to_string()]);
    }
    let mut child =
        command.spawn().map_err(|e| Error::Spawn(format!("cannot run {}: {e}", config.binary.display())))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Internal("child stdout was not piped".into()));
    };
    // The reader thread forwards lines until the child closes stdout; after readiness nobody
    // listens and the lines are dropped, which keeps the pipe from filling up.
    let (tx, rx) = mpsc::sync_channel::<String>(64);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Nobody waits any more: keep draining.
                continue;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_millis(config.ready_timeout_ms);
    let (mut quic, mut https, mut pin) = (None, None, None);
    let fail = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Error::Spawn(format!("{why}; server log {}:\n{}", log_path.display(), log_tail(&log_path)))
    };
    while quic.is_none() || https.is_none() || pin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(line) => parse_ready_line(&line, &mut quic, &mut https, &mut pin),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if left.is_zero() {
                    return Err(fail(&mut child, format!("not ready within {} ms", config.ready_timeout_ms)));
                }
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(fail(&mut child, format!("exited with {status} before it was ready")));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail(&mut child, "closed its stdout before it was ready".into()));
            }
        }
    }
    let (Some(quic_addr), Some(https_addr), Some(pin_hex)) = (quic, https, pin) else {
        return Err(fail(&mut child, "readiness lines incomplete".into()));
    };
    Ok((child, ServerInfo { quic_addr, https_addr, pin_hex }))
}

/// Reads one stdout line of `serve` into the readiness fields it names.
pub fn parse_ready_line(
    line: &str,
    quic: &mut Option<SocketAddr>,
    https: &mut Option<SocketAddr>,
    pin: &mut Option<String>,
) {
    let first_word = |rest: &str| rest.split_whitespace().next().and_then(|w| w.parse::<SocketAddr>().ok());
    if let Some(rest) = line.strip_prefix("HTTPS API listening on https://") {
        *https = first_word(rest);
    } else if let Some(rest) = line.strip_prefix("QUIC ingest listening on ") {
        *quic = first_word(rest);
    } else if let Some(rest) = line.strip_prefix("certificate SHA-256 pin: ") {
        let hex = rest.trim();
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            *pin = Some(hex.to_owned());
        }
    }
}
