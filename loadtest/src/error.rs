//! The crate's one error type.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a load-generator run could not be made (or failed its check). User mistakes
/// ([`Error::Config`]) are kept apart from what went wrong with the server or this machine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A knob is outside its documented bounds, or two knobs contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file the run reads or writes (tokens file, report, chart) could not be used.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The tokens file is malformed or holds fewer devices than asked.
    #[error("tokens file {path}: {what}")]
    Tokens {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The spawned `bluewave serve` could not be started, did not become ready in time, or
    /// exited on its own.
    #[error("spawned server: {0}")]
    Spawn(String),
    /// An HTTPS API call failed (transport, TLS, status or body).
    #[error("HTTPS API {what}: {detail}")]
    Api {
        /// Which call.
        what: String,
        /// Status line or transport error.
        detail: String,
    },
    /// The buoy SDK refused the configuration or could not start.
    #[error("buoy client: {0}")]
    Client(#[from] bluewave_wire::ClientError),
    /// The marine workload refused its configuration.
    #[error("workload: {0}")]
    Workload(String),
    /// A process or runtime facility (tokio runtime, UDP endpoint, rlimit) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The durability check found acknowledged readings missing, doubled or altered.
    #[error("durability check failed: {0}")]
    DurabilityViolated(String),
    /// A bug in the load generator (an internal invariant did not hold).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn api(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Api { what: what.into(), detail: detail.to_string() }
    }
}
