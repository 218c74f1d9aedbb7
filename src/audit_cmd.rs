//! `bluewave audit verify`: walks the audit log's hash chain (read-only; safe while a server
//! runs) and reports the first broken entry. Exit code 0 when intact, 1 when broken or unreadable.

use std::path::Path;
use std::process::ExitCode;

use bluewave_web::{AUDIT_FILE_NAME, VerifyReport, verify_file};

/// `bluewave audit ...` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain and report the first broken entry.
    Verify,
}

/// Runs an audit subcommand against `<data_dir>/audit/`.
pub fn run(data_dir: &Path, command: &AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify => verify(data_dir),
    }
}

fn verify(data_dir: &Path) -> ExitCode {
    let path = data_dir.join("audit").join(AUDIT_FILE_NAME);
    match verify_file(&path) {
        Ok(VerifyReport::Intact { entries, head_hash }) => {
            println!("audit log {}: intact, {entries} entries, head {head_hash}", path.display());
            ExitCode::SUCCESS
        }
        Ok(VerifyReport::Broken { line, seq, reason }) => {
            let seq = seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
            println!("audit log {}: BROKEN at line {line} (seq {seq}): {reason}", path.display());
            println!("entries before line {line} are intact; the log must not be trusted from there on");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bluewave: {e}");
            ExitCode::FAILURE
        }
    }
}
