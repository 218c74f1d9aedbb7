//! MFA building blocks: TOTP (RFC 6238 through `totp-rs`), the sealing of TOTP secrets at rest
//! (AES-256-GCM from `ring`, key in `<data-dir>/keys/`), backup codes (stored as HMAC-SHA-256
//! tags, key in `<data-dir>/keys/` too), and the enrolment QR code
//! (SVG rendered by the server, so the secret never goes to a third party).
//!
//! TOTP parameters are the ones every authenticator app reads from an `otpauth://` URL without
//! asking: HMAC-SHA-1, 6 digits, 30-second steps; a code of step T-1, T or T+1 is accepted and
//! the matched step is returned, so the caller can refuse a step that was already used (replay).
//!
//! Sealed secret layout (base64url, no padding, of): `version (1 byte = 1) || nonce (12 bytes,
//! random) || ciphertext (20 bytes) || GCM tag (16 bytes)`; the additional data is the user id,
//! so a sealed secret moved to another account does not open.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use totp_rs::{Algorithm, Builder, Totp};

use super::error::{AuthError, AuthResult};
use super::secret::{Secret, random_bytes};

/// Bytes of a TOTP secret: 160 bits, the RFC 4226 recommendation for HMAC-SHA-1.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Digits of a TOTP code.
pub const TOTP_DIGITS: u8 = 6;
/// Seconds of one TOTP step.
pub const TOTP_STEP_S: u64 = 30;
/// Steps accepted on either side of the current one (T-1, T, T+1).
pub const TOTP_SKEW_STEPS: u16 = 1;
/// Backup codes handed out at enrolment (each single use).
pub const BACKUP_CODES: usize = 10;
/// Random characters of one backup code (base32: 5 bits each, so 50 bits per code).
pub const BACKUP_CODE_CHARS: usize = 10;
/// Longest MFA code accepted before any work (a backup code with its dash and spaces).
pub const MFA_CODE_BYTES_MAX: usize = 32;
/// File name of the AEAD key that seals TOTP secrets, in `<data-dir>/keys/`.
pub const MFA_KEY_FILE: &str = "mfa-secrets.aes256gcm";
/// File name of the HMAC-SHA-256 key of stored backup codes, in `<data-dir>/keys/`.
pub const BACKUP_CODE_KEY_FILE: &str = "mfa-backup-codes.hmac-sha256";

/// Version byte of a sealed secret.
const SEALED_VERSION: u8 = 1;
/// Bytes of the AES-256-GCM key.
const AEAD_KEY_BYTES: usize = 32;
/// The alphabet of backup codes: RFC 4648 base32 in lower case, without the look-alikes
/// that base32 already leaves out (0, 1, 8, 9).
const BACKUP_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The AEAD key that seals TOTP secrets.
pub(crate) struct SecretSealer {
    key: LessSafeKey,
    /// HMAC-SHA-256 key of the stored form of backup codes ([`BACKUP_CODE_KEY_FILE`]).
    backup_key: hmac::Key,
}

impl SecretSealer {
    /// Loads `<keys_dir>/<MFA_KEY_FILE>` and `<keys_dir>/<BACKUP_CODE_KEY_FILE>`, creating them
    /// (mode 0600, 32 random bytes, fsynced) on first use. A file of the wrong size is an
    /// error, never replaced: a new key would make every enrolled secret unreadable.
    pub(crate) fn open(keys_dir: &Path) -> AuthResult<Self> {
        let (path, bytes) = load_or_create_key(keys_dir, MFA_KEY_FILE)?;
        let (_, backup_bytes) = load_or_create_key(keys_dir, BACKUP_CODE_KEY_FILE)?;
        let backup_key = hmac::Key::new(hmac::HMAC_SHA256, &backup_bytes);
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| AuthError::KeyInvalid { path, reason: "not an AES-256 key".into() })?;
        Ok(Self { key: LessSafeKey::new(key), backup_key })
    }

    /// Seals `secret` for `user_id` (random nonce; the user id is the additional data).
    pub(crate) fn seal(&self, user_id: &str, secret: &[u8]) -> AuthResult<String> {
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut in_out = secret.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(user_id.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| AuthError::Crypto("seal MFA secret".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&in_out);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed secret of `user_id`; a damaged or foreign one is an internal fault.
    pub(crate) fn open_sealed(&self, user_id: &str, sealed: &str) -> AuthResult<Vec<u8>> {
        let corrupt = || AuthError::CorruptRecord { table: "mfa", key: user_id.to_owned() };
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| corrupt())?;
        let (version, rest) = bytes.split_first().ok_or_else(corrupt)?;
        if *version != SEALED_VERSION || rest.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt())?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(user_id.as_bytes()), &mut in_out)
            .map_err(|_| corrupt())?;
        Ok(plain.to_vec())
    }
}

/// A fresh TOTP secret from the OS CSPRNG.
pub(crate) fn new_totp_secret() -> AuthResult<[u8; TOTP_SECRET_BYTES]> {
    random_bytes::<TOTP_SECRET_BYTES>()
}

fn totp(secret: &[u8]) -> AuthResult<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(TOTP_DIGITS)
        .with_skew(TOTP_SKEW_STEPS)
        .with_step_duration(TOTP_STEP_S)
        .with_secret(secret.to_vec())
        .build()
        .map_err(|e| AuthError::Crypto(format!("TOTP parameters: {e}")))
}

/// The step a 6-digit `code` matches at `now_s` (T-1, T or T+1), or `None`.
pub(crate) fn totp_step(secret: &[u8], code: &str, now_s: u64) -> AuthResult<Option<u64>> {
    let code = code.trim();
    if code.len() != usize::from(TOTP_DIGITS) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    Ok(totp(secret)?.check(code, now_s))
}

/// The code of `secret` at `time_s` (for tests and tools; the server never shows one).
pub fn totp_code(secret: &[u8], time_s: u64) -> AuthResult<String> {
    Ok(totp(secret)?.generate(time_s).to_string())
}

/// Base32 (RFC 4648, no padding) of a secret, as authenticator apps take it.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes [`base32`] text (upper or lower case, no padding); `None` for anything else.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let value = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// Percent-encodes everything outside RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `otpauth://totp/...` URL of the Key Uri Format that authenticator apps scan.
pub(crate) fn otpauth_url(issuer: &str, account: &str, secret: &[u8]) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_STEP_S}",
        percent_encode(issuer),
        percent_encode(account),
        base32(secret),
        percent_encode(issuer),
    )
}

/// The QR code of `data` as a standalone SVG document (dark modules on white).
pub(crate) fn qr_svg(data: &str) -> AuthResult<String> {
    let code = qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M)
        .map_err(|e| AuthError::InvalidInput { field: "otpauth", reason: format!("QR code: {e}") })?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// Ten fresh backup codes (`xxxxx-xxxxx`, 50 random bits each).
pub(crate) fn new_backup_codes() -> AuthResult<Vec<Secret>> {
    let mut codes = Vec::with_capacity(BACKUP_CODES);
    for _ in 0..BACKUP_CODES {
        let bytes = random_bytes::<BACKUP_CODE_CHARS>()?;
        let chars: String = bytes.iter().map(|b| char::from(BACKUP_ALPHABET[usize::from(b & 31)])).collect();
        let (left, right) = chars.split_at(BACKUP_CODE_CHARS / 2);
        codes.push(Secret::new(format!("{left}-{right}")));
    }
    Ok(codes)
}

impl SecretSealer {
    /// The stored form of a backup code of `user_id`: HMAC-SHA-256 (key in
    /// [`BACKUP_CODE_KEY_FILE`]) of the user id and the normalised code (lower case, without the
    /// dash and spaces), base64url. Keyed and salted by the account, so a copy of the store alone
    /// does not allow an offline search of the 50-bit codes.
    pub(crate) fn backup_code_tag(&self, user_id: &str, code: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.backup_key, &backup_code_input(user_id, code)))
    }

    /// The position of `code` among `stored` tags of `user_id`, if any. Every tag is compared
    /// (in constant time, by `ring::hmac::verify`), with no early exit on a match.
    pub(crate) fn backup_code_position(&self, user_id: &str, code: &str, stored: &[String]) -> Option<usize> {
        let input = backup_code_input(user_id, code);
        let mut found = None;
        for (i, tag) in stored.iter().enumerate() {
            let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else { continue };
            if hmac::verify(&self.backup_key, &input, &tag).is_ok() && found.is_none() {
                found = Some(i);
            }
        }
        found
    }
}

/// The HMAC input of a backup code: the user id's length (8 bytes, little-endian), the user id,
/// the normalised code.
fn backup_code_input(user_id: &str, code: &str) -> Vec<u8> {
    let normalised: String =
        code.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    let mut input = Vec::with_capacity(8 + user_id.len() + normalised.len());
    input.extend_from_slice(&(user_id.len() as u64).to_le_bytes());
    input.extend_from_slice(user_id.as_bytes());
    input.extend_from_slice(normalised.as_bytes());
    input
}

/// Whether `code` looks like a backup code rather than a TOTP code.
pub(crate) fn is_backup_code(code: &str) -> bool {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).count() == BACKUP_CODE_CHARS
}

/// Loads the 32-byte key `<keys_dir>/<file_name>`, creating it on first use. Creation is
/// race-free across threads and processes: the key is written and fsynced under a unique
/// temporary name and installed with `hard_link`, which fails when the file already exists;
/// the loser of a race drops its key and reads the winner's. An existing key is never replaced.
fn load_or_create_key(keys_dir: &Path, file_name: &str) -> AuthResult<(PathBuf, Vec<u8>)> {
    let path = keys_dir.join(file_name);
    let io = |op: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| AuthError::KeyIo { op, path, source }
    };
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes::<AEAD_KEY_BYTES>()?;
            let suffix = crate::audit::hex(&random_bytes::<8>()?);
            let tmp = keys_dir.join(format!("{file_name}.{suffix}.tmp"));
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            file.write_all(&key).map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("fsync", &tmp))?;
            let installed = fs::hard_link(&tmp, &path);
            fs::remove_file(&tmp).map_err(io("remove", &tmp))?;
            fs::File::open(keys_dir).and_then(|d| d.sync_all()).map_err(io("fsync", &path))?;
            match installed {
                Ok(()) => key.to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    fs::read(&path).map_err(io("read", &path))?
                }
                Err(e) => return Err(AuthError::KeyIo { op: "link", path, source: e }),
            }
        }
        Err(e) => return Err(AuthError::KeyIo { op: "read", path, source: e }),
    };
    let mode = fs::metadata(&path).map_err(io("stat", &path))?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io("chmod", &path))?;
    }
    if bytes.len() != AEAD_KEY_BYTES {
        return Err(AuthError::KeyInvalid { path, reason: format!("want {AEAD_KEY_BYTES} bytes") });
    }
    Ok((path, bytes))
}
