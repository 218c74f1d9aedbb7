//! `bluewave users reset-mfa EMAIL`: removes an account's MFA (a lost authenticator) and ends
//! its sessions, audited as `cli`. The account enrols again at its next login (its role may
//! require it). Run it with the server stopped: `accounts.redb` is opened exclusively.

use std::path::{Path, PathBuf};

use bluewave_web::AuthService;

use crate::config_file::ConfigFile;

/// `bluewave users ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Remove an account's MFA and end its sessions (audited).
    ResetMfa {
        /// The account's email.
        email: String,
        /// The server's config file, for its `[auth]` settings; default
        /// `<data-dir>/bluewave.toml` when it exists, as for `serve`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs a users subcommand against `<data_dir>`.
pub fn run(data_dir: &Path, command: &UsersCommand) -> Result<(), String> {
    match command {
        UsersCommand::ResetMfa { email, config } => {
            let auth_config = ConfigFile::for_data_dir(data_dir, config.as_deref())
                .and_then(|file| file.auth_config())
                .map_err(|e| e.to_string())?;
            let auth = AuthService::open(data_dir, auth_config).map_err(|e| e.to_string())?;
            let user_id = auth.reset_mfa_offline(email).map_err(|e| e.to_string())?;
            println!("MFA removed and sessions ended for user {user_id}; it enrols again at its next login");
            Ok(())
        }
    }
}
