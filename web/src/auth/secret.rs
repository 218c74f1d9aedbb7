//! Secret values: random generation and a wrapper whose `Debug`/`Display` never show the
//! content, so a token or password cannot reach a log line by accident.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroize;

use super::error::{AuthError, AuthResult};

/// A secret string (password, access/refresh/device token). Prints as `[redacted]`; read it
/// with [`Secret::expose`] only where it is sent to its owner.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: wipe this copy before its memory is freed (copies made by callers with
        // `expose().to_owned()` are theirs to handle).
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// `N` bytes from the OS CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> AuthResult<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Crypto(format!("OS random source: {e}")))?;
    Ok(buf)
}

/// 128 random bits as 32 hex chars: record ids, jti, session family ids.
pub(crate) fn random_id() -> AuthResult<String> {
    Ok(crate::audit::hex(&random_bytes::<16>()?))
}

/// 256 random bits as 43 base64url chars: refresh tokens.
pub(crate) fn random_token() -> AuthResult<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A generated password: 24 base64url chars (144 bits).
pub(crate) fn random_password() -> AuthResult<String> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<18>()?))
}

/// 256 random bits as 43 base64url chars, for callers outside `auth` (page CSRF tokens).
pub fn random_token_text() -> AuthResult<String> {
    random_token()
}
