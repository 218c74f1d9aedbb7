//! Ed25519 signing keys in `<data-dir>/keys/`.
//!
//! Each key is one file `<kid>.ed25519` holding its PKCS#8 v1 DER private key (48 bytes), mode
//! 0600, written as tmp + fsync + rename + directory fsync. `kid` is 16 random bytes in hex (32
//! chars), chosen by us: file names never come from a token. The key list (kid, created,
//! retired) lives in `accounts.redb` (table `signing_keys`), so adding or retiring a key is one
//! transaction.
//!
//! Rotation: [`KeySet`] signs with its one active key. A rotation creates a new active key and
//! marks the previous one retired; a retired key still verifies access tokens for the access
//! token lifetime (+ leeway) and device tokens for the device token lifetime after retirement
//! (tokens it signed cannot outlive that), then it is deleted at the next open or rotation.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde::{Deserialize, Serialize};

use super::error::{AuthError, AuthResult};
use super::secret::random_bytes;

/// Length of a key id (hex chars).
pub const KID_CHARS: usize = 32;
/// Most keys (active + retired) kept at once; a rotation beyond it is refused with
/// [`AuthError::LimitReached`] until old keys age out.
pub const SIGNING_KEYS_MAX: usize = 16;
const KEY_FILE_SUFFIX: &str = ".ed25519";

/// A key's bookkeeping row (JSON in `signing_keys`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub created_s: u64,
    pub retired_s: Option<u64>,
}

/// One loaded key.
pub(crate) struct LoadedKey {
    pub kid: String,
    pub record: KeyRecord,
    pub encoding: EncodingKey,
    pub decoding: DecodingKey,
}

/// Which token kind a verification is for: decides how long a retired key still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyUse {
    Access,
    Device,
}

/// The loaded keys: one active (signing), others retired (verify only).
pub(crate) struct KeySet {
    pub keys: Vec<LoadedKey>,
}

impl KeySet {
    /// The active key (the newest unretired one).
    pub fn active(&self) -> Option<&LoadedKey> {
        self.keys.iter().filter(|k| k.record.retired_s.is_none()).max_by_key(|k| k.record.created_s)
    }

    /// The key `kid` if it may still verify a token of `key_use` at `now_s`. `grace_s` is how long
    /// after retirement a key keeps verifying that kind. `kid` is only compared, never used as a
    /// path.
    pub fn verifier(&self, kid: &str, key_use: KeyUse, now_s: u64, grace: &KeyGrace) -> Option<&DecodingKey> {
        let key = self.keys.iter().find(|k| k.kid == kid)?;
        match key.record.retired_s {
            None => Some(&key.decoding),
            Some(retired_s) => {
                let grace_s = match key_use {
                    KeyUse::Access => grace.access_s,
                    KeyUse::Device => grace.device_s,
                };
                (now_s <= retired_s.saturating_add(grace_s)).then_some(&key.decoding)
            }
        }
    }
}

/// How long retired keys keep verifying each token kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyGrace {
    pub access_s: u64,
    pub device_s: u64,
}

impl KeyGrace {
    /// Retired keys older than this verify nothing and can be deleted.
    pub fn max_s(&self) -> u64 {
        self.access_s.max(self.device_s)
    }
}

/// True when `kid` has the form of our key ids (hex, [`KID_CHARS`] long).
pub(crate) fn kid_well_formed(kid: &str) -> bool {
    kid.len() == KID_CHARS && kid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Path of `kid`'s file; `kid` must be well formed (checked here too).
fn key_path(dir: &Path, kid: &str) -> AuthResult<PathBuf> {
    if !kid_well_formed(kid) {
        return Err(AuthError::KeyInvalid { path: dir.to_path_buf(), reason: format!("bad key id {kid:?}") });
    }
    Ok(dir.join(format!("{kid}{KEY_FILE_SUFFIX}")))
}

/// Creates the keys directory (mode 0700).
pub(crate) fn ensure_dir(dir: &Path) -> AuthResult<()> {
    fs::create_dir_all(dir).map_err(|source| AuthError::KeyIo {
        op: "create dir",
        path: dir.to_path_buf(),
        source,
    })?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| AuthError::KeyIo {
        op: "chmod",
        path: dir.to_path_buf(),
        source,
    })
}

/// Generates a key, writes its file durably and returns it (not yet recorded in the store).
pub(crate) fn generate(dir: &Path, now_s: u64) -> AuthResult<LoadedKey> {
    let kid = crate::audit::hex(&random_bytes::<16>()?);
    let seed: [u8; 32] = random_bytes()?;
    let signing = SigningKey::from_bytes(&seed);
    let der = signing.to_pkcs8_der().map_err(|e| AuthError::Crypto(format!("encode key: {e}")))?;
    let path = key_path(dir, &kid)?;
    let tmp = dir.join(format!("{kid}{KEY_FILE_SUFFIX}.tmp"));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuthError::KeyIo { op, path, source }
    };
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(der.as_bytes()).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync dir", dir))?;
    let record = KeyRecord { created_s: now_s, retired_s: None };
    Ok(loaded(kid, record, &signing))
}

/// Loads `kid`'s file.
pub(crate) fn load(dir: &Path, kid: &str, record: KeyRecord) -> AuthResult<LoadedKey> {
    let path = key_path(dir, kid)?;
    let der =
        fs::read(&path).map_err(|source| AuthError::KeyIo { op: "read", path: path.clone(), source })?;
    let signing = SigningKey::from_pkcs8_der(&der)
        .map_err(|e| AuthError::KeyInvalid { path: path.clone(), reason: e.to_string() })?;
    Ok(loaded(kid.to_owned(), record, &signing))
}

/// Deletes `kid`'s file (a key that aged out). A missing file is fine.
pub(crate) fn delete(dir: &Path, kid: &str) -> AuthResult<()> {
    let path = key_path(dir, kid)?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AuthError::KeyIo { op: "delete", path, source }),
    }
}

/// Removes leftover `*.tmp` files of an interrupted generation, and key files not in `known`
/// (a crash between writing a key and recording it), so no unused private key stays on disk.
/// Other files are left alone.
pub(crate) fn remove_stray_files(dir: &Path, known: &[&str]) -> AuthResult<()> {
    let entries = fs::read_dir(dir).map_err(|source| AuthError::KeyIo {
        op: "list",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stray_key = name
            .strip_suffix(KEY_FILE_SUFFIX)
            .is_some_and(|kid| kid_well_formed(kid) && !known.contains(&kid));
        if name.ends_with(".tmp") || stray_key {
            fs::remove_file(&path).map_err(|source| AuthError::KeyIo {
                op: "delete",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn loaded(kid: String, record: KeyRecord, signing: &SigningKey) -> LoadedKey {
    // jsonwebtoken's rust_crypto EdDSA signer takes PKCS#8 DER, its verifier the raw 32-byte
    // public key.
    let der = signing.to_pkcs8_der().map(|d| d.as_bytes().to_vec()).unwrap_or_default();
    LoadedKey {
        kid,
        record,
        encoding: EncodingKey::from_ed_der(&der),
        decoding: DecodingKey::from_ed_der(signing.verifying_key().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retired key verifies each token kind for exactly its grace after retirement, then
    /// nothing; the active key always verifies. (Unit test: the integration tests cannot wait
    /// out a real grace period.)
    #[test]
    fn retired_key_verifies_only_within_its_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = generate(dir.path(), 1_000).unwrap();
        old.record.retired_s = Some(2_000);
        let new = generate(dir.path(), 2_000).unwrap();
        let (old_kid, new_kid) = (old.kid.clone(), new.kid.clone());
        let set = KeySet { keys: vec![old, new] };
        let grace = KeyGrace { access_s: 930, device_s: 100_000 };
        assert_eq!(set.active().map(|k| k.kid.as_str()), Some(new_kid.as_str()));
        let ok = |kid: &str, key_use, now| set.verifier(kid, key_use, now, &grace).is_some();
        assert!(ok(&old_kid, KeyUse::Access, 2_930));
        assert!(!ok(&old_kid, KeyUse::Access, 2_931));
        assert!(ok(&old_kid, KeyUse::Device, 102_000));
        assert!(!ok(&old_kid, KeyUse::Device, 102_001));
        assert!(ok(&new_kid, KeyUse::Access, u64::MAX));
        assert!(!ok("../../etc/passwd", KeyUse::Access, 2_000));
        assert!(key_path(dir.path(), "../../etc/passwd").is_err());
    }
}
