//! Device authentication: a HELLO's token becomes a [`BuoyId`] or a [`Refusal`].
//!
//! `wire` knows nothing of JWT: the web crate implements [`DeviceAuthenticator`] over its
//! signed device tokens. [`PresharedTokens`] is the implementation the binary uses until then
//! (and the tests use): a text file of `<buoy_id> <token>` lines. Tokens are never kept or
//! compared in clear: the table maps SHA-256(token) to the buoy, so a lookup costs one hash and a
//! hash-map probe whose timing says nothing about how close a guess was.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bluewave_model::BuoyId;

use crate::RefuseReason;

/// Why a device token was refused. Each variant maps to one REFUSED reason of PROTOCOL.md §3.4
/// ([`Refusal::reason`]); the `Display` text becomes the REFUSED message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The HELLO carried an empty token.
    #[error("no device token")]
    TokenMissing,
    /// The token is not well formed (for a JWT: not three base64url parts, bad JSON, …).
    #[error("malformed device token: {0}")]
    TokenMalformed(String),
    /// The token does not verify: bad signature, unknown key id, or (pre-shared tokens) a token
    /// nobody issued.
    #[error("device token does not verify")]
    TokenBadSignature,
    /// The token expired or is not valid yet.
    #[error("device token expired or not yet valid")]
    TokenExpired,
    /// A valid token that is not a device token.
    #[error("not a device token")]
    TokenWrongType,
    /// The device was revoked by an operator.
    #[error("device {0} was revoked")]
    DeviceRevoked(String),
    /// The token could not be checked now (the authenticator's store failed); refused
    /// `SERVER_BUSY` so the buoy retries later. Fails closed.
    #[error("device token could not be checked now; retry later")]
    Unavailable,
}

impl Refusal {
    /// The REFUSED reason code sent on the wire.
    pub fn reason(&self) -> RefuseReason {
        match self {
            Self::TokenMissing => RefuseReason::TokenMissing,
            Self::TokenMalformed(_) => RefuseReason::TokenMalformed,
            Self::TokenBadSignature => RefuseReason::TokenBadSignature,
            Self::TokenExpired => RefuseReason::TokenExpired,
            Self::TokenWrongType => RefuseReason::TokenWrongType,
            Self::DeviceRevoked(_) => RefuseReason::DeviceRevoked,
            Self::Unavailable => RefuseReason::ServerBusy,
        }
    }
}

/// Turns a HELLO's device token into the buoy it speaks for. Called once per connection (not
/// on the batch path); must not block for long (it runs on a network task).
pub trait DeviceAuthenticator: Send + Sync + 'static {
    /// The buoy the token was issued for, or why it is refused. The server refuses an empty
    /// token itself (`TOKEN_MISSING`) before calling this.
    fn authenticate(&self, token: &str) -> Result<BuoyId, Refusal>;
}

/// Longest token accepted in the tokens file (the protocol's `TOKEN_BYTES_MAX`).
pub const PRESHARED_TOKEN_BYTES_MAX: usize = crate::TOKEN_BYTES_MAX;
/// Shortest token accepted in the tokens file: 16 bytes, so a typo'd short token cannot be
/// guessed (the CLI issues 43-byte tokens: 32 random bytes, base64url).
pub const PRESHARED_TOKEN_BYTES_MIN: usize = 16;
/// Most devices one tokens file may hold, so a wrong file cannot exhaust memory.
pub const PRESHARED_DEVICES_MAX: usize = 1_000_000;
/// Largest tokens file read, in bytes.
pub const TOKEN_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A mistake in a tokens file, or a failure to read it.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading device tokens {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line breaks the format `<buoy_id> <token>`.
    #[error("device tokens line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never quotes the token).
        reason: String,
    },
    /// The file is above [`TOKEN_FILE_BYTES_MAX`] or holds more than [`PRESHARED_DEVICES_MAX`]
    /// devices.
    #[error("device tokens file is above its limit ({limit})")]
    TooLarge {
        /// The limit hit.
        limit: &'static str,
    },
    /// The same token appears on two lines (of different buoys, or twice).
    #[error("device tokens line {line}: token already used on line {first_line}")]
    DuplicateToken {
        /// The second line.
        line: usize,
        /// The first line.
        first_line: usize,
    },
}

type TokenHash = [u8; 32];

fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[derive(Default)]
struct TokenTable {
    by_hash: HashMap<TokenHash, BuoyId>,
    revoked: HashSet<BuoyId>,
}

/// Pre-shared device tokens: SHA-256(token) → buoy, plus a set of revoked buoys.
///
/// File format (UTF-8): one device per line, `<buoy_id> <token>` separated by spaces or tabs;
/// blank lines and lines starting with `#` are ignored. A buoy may have several tokens (one
/// per line, e.g. during a rotation); a token belongs to one line only. Revocation is kept in
/// memory and survives [`PresharedTokens::reload`]; to revoke for good, also delete the line.
pub struct PresharedTokens {
    path: Option<PathBuf>,
    table: RwLock<TokenTable>,
}

impl std::fmt::Debug for PresharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresharedTokens").field("path", &self.path).field("devices", &self.len()).finish()
    }
}

impl Default for PresharedTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl PresharedTokens {
    /// An empty table not backed by a file (tokens added with [`PresharedTokens::insert`]).
    pub fn new() -> Self {
        Self { path: None, table: RwLock::new(TokenTable::default()) }
    }

    /// Reads the tokens file at `path`. A missing file is an empty table (the binary creates
    /// it on `bluewave devices add`).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let by_hash = read_file(&path)?;
        Ok(Self { path: Some(path), table: RwLock::new(TokenTable { by_hash, revoked: HashSet::new() }) })
    }

    /// Parses the text of a tokens file.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let by_hash = parse_text(text)?;
        Ok(Self { path: None, table: RwLock::new(TokenTable { by_hash, revoked: HashSet::new() }) })
    }

    /// Re-reads the file this table was loaded from (a no-op for a table without file). On a
    /// parse error the table is left as it was. Returns the number of tokens now known.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let Some(path) = &self.path else { return Ok(self.len()) };
        let by_hash = read_file(path)?;
        let count = by_hash.len();
        self.write().by_hash = by_hash;
        Ok(count)
    }

    /// Adds (or replaces) a token for `buoy` in memory.
    pub fn insert(&self, buoy: BuoyId, token: &str) {
        self.write().by_hash.insert(token_hash(token), buoy);
    }

    /// Refuses every token of `buoy` from now on (`DEVICE_REVOKED`). Returns false if it was
    /// already revoked. Closing the buoy's open connections is the server's part
    /// (`ServerHandle::disconnect_buoy`).
    pub fn revoke(&self, buoy: &BuoyId) -> bool {
        self.write().revoked.insert(buoy.clone())
    }

    /// Lifts a revocation. Returns false if the buoy was not revoked.
    pub fn unrevoke(&self, buoy: &BuoyId) -> bool {
        self.write().revoked.remove(buoy)
    }

    /// Number of tokens known.
    pub fn len(&self) -> usize {
        self.table.read().map_or(0, |t| t.by_hash.len())
    }

    /// True when no token is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TokenTable> {
        // A panic while holding the lock cannot leave the table half-updated (every update is
        // one insert/remove/assignment), so a poisoned lock is safe to keep using.
        self.table.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl DeviceAuthenticator for PresharedTokens {
    fn authenticate(&self, token: &str) -> Result<BuoyId, Refusal> {
        if token.is_empty() {
            return Err(Refusal::TokenMissing);
        }
        let hash = token_hash(token);
        let table = self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let buoy = table.by_hash.get(&hash).ok_or(Refusal::TokenBadSignature)?;
        if table.revoked.contains(buoy) {
            return Err(Refusal::DeviceRevoked(buoy.to_string()));
        }
        Ok(buoy.clone())
    }
}

fn read_file(path: &Path) -> Result<HashMap<TokenHash, BuoyId>, TokenFileError> {
    let io = |source| TokenFileError::Io { path: path.to_owned(), source };
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io(e)),
    };
    if len > TOKEN_FILE_BYTES_MAX {
        return Err(TokenFileError::TooLarge { limit: "256 MiB" });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_text(&text)
}

fn parse_text(text: &str) -> Result<HashMap<TokenHash, BuoyId>, TokenFileError> {
    let mut by_hash: HashMap<TokenHash, (BuoyId, usize)> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parse = |reason: String| TokenFileError::Parse { line, reason };
        let mut fields = trimmed.split_whitespace();
        let (Some(buoy), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(parse("expected `<buoy_id> <token>`".into()));
        };
        let buoy = BuoyId::new(buoy).map_err(|e| parse(e.to_string()))?;
        if token.len() < PRESHARED_TOKEN_BYTES_MIN || token.len() > PRESHARED_TOKEN_BYTES_MAX {
            return Err(parse(format!(
                "token of {} bytes: use {PRESHARED_TOKEN_BYTES_MIN}-{PRESHARED_TOKEN_BYTES_MAX} bytes",
                token.len()
            )));
        }
        if !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(parse("token must be visible ASCII (0x21-0x7E)".into()));
        }
        if by_hash.len() >= PRESHARED_DEVICES_MAX {
            return Err(TokenFileError::TooLarge { limit: "1,000,000 tokens" });
        }
        if let Some((_, first_line)) = by_hash.insert(token_hash(token), (buoy, line)) {
            return Err(TokenFileError::DuplicateToken { line, first_line });
        }
    }
    Ok(by_hash.into_iter().map(|(hash, (buoy, _))| (hash, buoy)).collect())
}

/// Appends `<buoy_id> <token>` lines to the tokens file at `path` (created with mode 0600 if
/// missing) and fsyncs it. Used by `bluewave devices add`.
pub fn append_tokens(path: &Path, devices: &[(BuoyId, String)]) -> Result<(), TokenFileError> {
    use std::io::Write;
    let io = |source| TokenFileError::Io { path: path.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut text = String::new();
    for (buoy, token) in devices {
        text.push_str(buoy.as_str());
        text.push(' ');
        text.push_str(token);
        text.push('\n');
    }
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}
