//! Password hashing (argon2id, PHC strings) and the password rules.
//!
//! Rules (checked on every password set, never on login so old accounts can still sign in):
//! - at least [`PASSWORD_CHARS_MIN`] characters (Unicode scalar values), at most
//!   [`PASSWORD_BYTES_MAX`] bytes (bounds the hashing input);
//! - not equal to the account's email, ignoring case.
//!
//! Length is what resists guessing (NIST SP 800-63B); composition rules are not imposed.
//! Hashing costs tens of milliseconds of one core and 19 MiB by design: callers on an async
//! runtime must run it on a blocking pool (`tokio::task::spawn_blocking`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::error::{AuthError, AuthResult};
use super::secret::random_bytes;

/// Fewest characters a new password may have.
pub const PASSWORD_CHARS_MIN: usize = 12;
/// Most bytes a password may have (login input above it is refused without hashing).
pub const PASSWORD_BYTES_MAX: usize = 1_024;

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl PasswordParams {
    /// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Self = Self { memory_kib: 19_456, iterations: 2, parallelism: 1 };

    fn argon2(self) -> AuthResult<Argon2<'static>> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| AuthError::Crypto(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// Checks the password rules for a new password of the account `email` (already normalised).
pub fn check_password_rules(password: &str, email: &str) -> AuthResult<()> {
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(AuthError::WeakPassword("longer than 1024 bytes"));
    }
    if password.chars().count() < PASSWORD_CHARS_MIN {
        return Err(AuthError::WeakPassword("shorter than 12 characters"));
    }
    if password.trim().to_lowercase() == email {
        return Err(AuthError::WeakPassword("equal to the email"));
    }
    Ok(())
}

/// Hashes `password` with a fresh random salt; returns the PHC string.
pub fn hash_password(password: &str, params: PasswordParams) -> AuthResult<String> {
    let salt_bytes: [u8; 16] = random_bytes()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| AuthError::Crypto(format!("salt: {e}")))?;
    let hash = params
        .argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AuthError::Crypto(format!("argon2 hash: {e}")))?;
    Ok(hash.to_string())
}

/// Outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Wrong password (or an unreadable stored hash).
    No,
    /// Right password, stored with the current parameters.
    Yes,
    /// Right password, but stored with other parameters or algorithm: rehash now.
    YesNeedsRehash,
}

/// Verifies `password` against the PHC string `stored`. A stored hash that does not parse
/// counts as a wrong password (and is logged), never as success.
pub fn verify_password(password: &str, stored: &str, current: PasswordParams) -> AuthResult<Verified> {
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::error!("stored password hash does not parse; refusing the login");
        return Ok(Verified::No);
    };
    // Verify with the parameters recorded in the hash itself (argon2 reads them from the PHC
    // string), so accounts hashed under older parameters can still sign in.
    let ok = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    if !ok {
        return Ok(Verified::No);
    }
    let same = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() == current.memory_kib
                && p.t_cost() == current.iterations
                && p.p_cost() == current.parallelism
        })
        && parsed.version == Some(Version::V0x13 as u32);
    Ok(if same { Verified::Yes } else { Verified::YesNeedsRehash })
}

/// Parameters recorded in a PHC string, if it parses.
pub fn stored_params(stored: &str) -> Option<PasswordParams> {
    let parsed = PasswordHash::new(stored).ok()?;
    let p = Params::try_from(&parsed).ok()?;
    Some(PasswordParams { memory_kib: p.m_cost(), iterations: p.t_cost(), parallelism: p.p_cost() })
}
