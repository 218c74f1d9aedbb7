//! `bluewave devices add`: registers buoys in the engine and issues each a random pre-shared
//! device token, appended to the tokens file that `bluewave serve` reads.
//!
//! Run it while the server is stopped (the engine's catalog is single-writer), or send the
//! server SIGHUP afterwards for a running one to pick the tokens up once the buoys are
//! registered. The admin API (issue 4) will do this live.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bluewave_engine::{BuoyId, BuoyInfo, Engine, EngineConfig};
use ring::rand::SecureRandom;

/// Most buoys one `devices add` registers.
pub const DEVICES_ADD_MAX: usize = 100_000;
/// Random bytes per token (base64url: 43 characters).
pub const TOKEN_RANDOM_BYTES: usize = 32;

/// `bluewave devices ...`.
#[derive(clap::Subcommand, Debug)]
pub enum DevicesCommand {
    /// Register buoys and issue each a device token (printed, and appended to the tokens file).
    Add(AddArgs),
}

/// Options of `bluewave devices add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// Buoy ids to register (`[A-Za-z0-9_.-]{1,64}`).
    #[arg(conflicts_with = "count", required_unless_present = "count")]
    pub buoys: Vec<String>,
    /// Register this many buoys named `<prefix>NNNN`, skipping ids already registered.
    #[arg(long)]
    pub count: Option<usize>,
    /// Name prefix for `--count`.
    #[arg(long, default_value = "sim-")]
    pub prefix: String,
    /// Tokens file to append to. Default `<data-dir>/device-tokens.txt`.
    #[arg(long)]
    pub device_tokens: Option<PathBuf>,
}

/// Why `devices` failed.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// A buoy id is invalid or the engine failed.
    #[error(transparent)]
    Engine(#[from] bluewave_engine::Error),
    /// Writing the tokens file failed.
    #[error(transparent)]
    Tokens(#[from] bluewave_wire::TokenFileError),
    /// The request is above a limit or names no buoy.
    #[error("{0}")]
    Usage(String),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// Runs a `devices` subcommand.
pub fn run(data_dir: &Path, command: &DevicesCommand) -> Result<(), DevicesError> {
    match command {
        DevicesCommand::Add(args) => add(data_dir, args),
    }
}

fn add(data_dir: &Path, args: &AddArgs) -> Result<(), DevicesError> {
    let requested = args.count.unwrap_or(args.buoys.len());
    if requested == 0 || requested > DEVICES_ADD_MAX {
        return Err(DevicesError::Usage(format!("add 1-{DEVICES_ADD_MAX} buoys at a time")));
    }
    let engine = Engine::open(EngineConfig::new(data_dir))?;
    let result = register_and_issue(&engine, data_dir, args, requested);
    let shut = engine.shutdown();
    result?;
    shut?;
    Ok(())
}

fn register_and_issue(
    engine: &Engine,
    data_dir: &Path,
    args: &AddArgs,
    requested: usize,
) -> Result<(), DevicesError> {
    let ids: Vec<BuoyId> = match args.count {
        Some(count) => {
            let existing: std::collections::HashSet<String> =
                engine.buoys().iter().map(|b| b.id.to_string()).collect();
            let mut ids = Vec::with_capacity(count);
            let mut n = 1usize;
            while ids.len() < count {
                let id = format!("{}{n:04}", args.prefix);
                if !existing.contains(&id) {
                    ids.push(BuoyId::new(&id).map_err(bluewave_engine::Error::from)?);
                }
                n += 1;
            }
            ids
        }
        None => args
            .buoys
            .iter()
            .map(|b| BuoyId::new(b).map_err(bluewave_engine::Error::from))
            .collect::<Result<_, _>>()?,
    };
    debug_assert_eq!(ids.len(), requested);
    let rng = ring::rand::SystemRandom::new();
    let mut issued = Vec::with_capacity(ids.len());
    for id in ids {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        rng.fill(&mut bytes).map_err(|_| DevicesError::Random)?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        issued.push((id, token));
    }
    // Register first: a token for an unregistered buoy would only be refused at HELLO.
    for (id, _) in &issued {
        engine.register_buoy(BuoyInfo::new(id))?;
    }
    let path = crate::serve::tokens_path(data_dir, args.device_tokens.as_deref());
    bluewave_wire::append_tokens(&path, &issued)?;
    for (id, token) in &issued {
        println!("{id} {token}");
    }
    eprintln!("registered {} buoys; tokens appended to {}", issued.len(), path.display());
    Ok(())
}
