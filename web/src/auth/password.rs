//! Password hashing (argon2id, PHC strings) and the password rules.
//!
//! Rules (checked on every password set, never on login so old accounts can still sign in):
//! - at least [`PASSWORD_CHARS_MIN`] characters (Unicode scalar values), at most
//!   [`PASSWORD_BYTES_MAX`] bytes (bounds the hashing input);
//! - not equal to the account's email, ignoring case;
//! - not one of the [`COMMON_PASSWORDS`] most common passwords, ignoring case.
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

/// How many common passwords are refused.
pub const COMMON_PASSWORDS: usize = 10_000;

/// The 10,000 most common passwords, one per line, sorted (byte order) for binary search.
///
/// Source: the first 10,000 entries (ranked by frequency) of the `PASSWORDS` list in the
/// `zxcvbn` crate 3.1.1 from crates.io (`src/frequency_lists.rs`; the list of Dropbox's zxcvbn,
/// drawn from leaked password corpora), MIT licence, Copyright (c) 2016 Joshua Holmer and
/// (c) 2012-2016 Dan Wheeler and Dropbox, Inc. All entries are lower-case ASCII.
const COMMON_PASSWORDS_TEXT: &str = include_str!("common_passwords.txt");

/// True when `password` (compared in lower case) is one of the [`COMMON_PASSWORDS`] most
/// common passwords: a binary search over the embedded sorted list (its line index is built
/// once, at the first call).
pub fn is_common_password(password: &str) -> bool {
    static LIST: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let list = LIST.get_or_init(|| COMMON_PASSWORDS_TEXT.lines().collect());
    list.binary_search(&password.to_lowercase().as_str()).is_ok()
}

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
    if is_common_password(password) {
        return Err(AuthError::WeakPassword("one of the 10,000 most common passwords"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_password_list_is_sorted_complete_and_searched_ignoring_case() {
        let lines: Vec<&str> = COMMON_PASSWORDS_TEXT.lines().collect();
        assert_eq!(lines.len(), COMMON_PASSWORDS);
        assert!(lines.windows(2).all(|pair| pair[0] < pair[1]), "sorted, no duplicates");
        assert!(is_common_password("password") && is_common_password("PassWord"));
        assert!(is_common_password("1qaz2wsx3edc"));
        assert!(!is_common_password("correct horse battery staple"));
        assert!(matches!(
            check_password_rules("1QAZ2WSX3EDC", "a@b.c"),
            Err(AuthError::WeakPassword("one of the 10,000 most common passwords"))
        ));
    }
}
