//! `bluewave keys rotate`: a new signing key becomes current; the old ones keep verifying tokens
//! (by `kid`) until the tokens they signed have expired, then they are deleted at a later start.
//!
//! Run it with the server stopped: `accounts.redb` is opened exclusively, so against a running
//! server it stops with the store's "already open" error and changes nothing, and a running
//! server reads its key set only at start.

use std::path::{Path, PathBuf};

use bluewave_web::AuthService;

use crate::config_file::ConfigFile;

/// `bluewave keys ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new signing key current; older keys verify their tokens until those expire.
    Rotate {
        /// The server's config file, for its `[auth]` token lifetimes (how long old keys are
        /// kept); default `<data-dir>/bluewave.toml` when it exists, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs a keys subcommand against `<data_dir>`.
pub fn run(data_dir: &Path, command: &KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Rotate { config } => {
            let auth_config = ConfigFile::for_data_dir(data_dir, config.as_deref())
                .and_then(|file| file.auth_config())
                .map_err(|e| e.to_string())?;
            let auth = AuthService::open(data_dir, auth_config).map_err(|e| e.to_string())?;
            let kid = auth.rotate_signing_key_offline().map_err(|e| e.to_string())?;
            println!("new signing key {kid} is current; older keys verify until their tokens expire");
            Ok(())
        }
    }
}
