//! The server's TLS identity: certificate chain and private key, from PEM files or a
//! self-signed pair generated on first run and kept in the data dir.
//!
//! Free of quinn types on purpose: the binary hands the same identity to the HTTPS front.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the generated certificate inside the TLS directory.
pub const GENERATED_CERT_FILE: &str = "cert.pem";
/// File name of the generated private key inside the TLS directory (mode 0600).
pub const GENERATED_KEY_FILE: &str = "key.pem";
/// Subject alternative names of a generated certificate. Clients of a generated identity pin
/// the certificate's SHA-256 (PROTOCOL.md §1), so the names matter only to clients that use it
/// as a CA file and connect by one of these names.
pub const GENERATED_SUBJECT_ALT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Largest PEM file read (certificate chain or key), so a wrong path cannot exhaust memory.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Errors loading, generating or storing a TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, written or synced.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key, or is malformed.
    #[error("{}: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating the self-signed certificate failed (an internal fault of the crypto library).
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// Only one of the generated cert/key files exists: refuse to guess, the operator decides.
    #[error("{} exists without {}: remove it to generate a new identity, or restore the other file", present.display(), missing.display())]
    HalfIdentity {
        /// The file found.
        present: PathBuf,
        /// The file missing.
        missing: PathBuf,
    },
}

/// The server's certificate chain (end-entity first) and private key, as DER.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Certificates, end-entity first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The end-entity certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        Self { cert_chain: self.cert_chain.clone(), key: self.key.clone_key() }
    }
}

impl ServerIdentity {
    /// Loads a certificate chain and key from PEM files (e.g. from a real CA).
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = read_limited(cert_path)?;
        let key_pem = read_limited(key_path)?;
        let bad = |path: &Path, reason: String| TlsError::BadPem { path: path.to_owned(), reason };
        let cert_chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(cert_path, e.to_string()))?;
        if cert_chain.is_empty() {
            return Err(bad(cert_path, "no CERTIFICATE block".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad(key_path, e.to_string()))?;
        Ok(Self { cert_chain, key })
    }

    /// A new self-signed identity for [`GENERATED_SUBJECT_ALT_NAMES`] (ECDSA P-256), in memory.
    pub fn generate() -> Result<Self, TlsError> {
        Ok(Self::generate_with_pem()?.0)
    }

    /// A new self-signed identity and its certificate and key as PEM text.
    fn generate_with_pem() -> Result<(Self, String, String), TlsError> {
        let names: Vec<String> = GENERATED_SUBJECT_ALT_NAMES.iter().map(|s| (*s).to_owned()).collect();
        let certified =
            rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| TlsError::Generate(e.to_owned()))?;
        let identity = Self { cert_chain: vec![certified.cert.der().clone()], key };
        Ok((identity, certified.cert.pem(), certified.signing_key.serialize_pem()))
    }

    /// Loads the identity kept in `tls_dir` (normally `<data-dir>/tls`), or on first run
    /// generates a self-signed one and writes it there: the key with mode 0600, each file
    /// written to a temporary name, fsynced and renamed, then the directory fsynced. Returns the
    /// identity and whether it was generated now.
    pub fn load_or_generate(tls_dir: &Path) -> Result<(Self, bool), TlsError> {
        let cert_path = tls_dir.join(GENERATED_CERT_FILE);
        let key_path = tls_dir.join(GENERATED_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Ok((Self::from_pem_files(&cert_path, &key_path)?, false)),
            (true, false) => return Err(TlsError::HalfIdentity { present: cert_path, missing: key_path }),
            (false, true) => return Err(TlsError::HalfIdentity { present: key_path, missing: cert_path }),
            (false, false) => {}
        }
        std::fs::create_dir_all(tls_dir).map_err(|source| io_error("creating", tls_dir, source))?;
        let (identity, cert_pem, key_pem) = Self::generate_with_pem()?;
        // Key first: a crash between the two renames leaves a key without a certificate, which
        // `HalfIdentity` reports instead of silently replacing.
        write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
        write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
        let dir = std::fs::File::open(tls_dir).map_err(|source| io_error("opening", tls_dir, source))?;
        dir.sync_all().map_err(|source| io_error("syncing", tls_dir, source))?;
        Ok((identity, true))
    }

    /// The end-entity certificate (DER).
    pub fn end_entity(&self) -> Option<&CertificateDer<'static>> {
        self.cert_chain.first()
    }

    /// SHA-256 of the end-entity certificate's DER, the pin clients hold (PROTOCOL.md §1).
    pub fn pin_sha256_bytes(&self) -> [u8; 32] {
        cert_sha256(self.end_entity().map_or(&[][..], |c| c.as_ref()))
    }

    /// [`ServerIdentity::pin_sha256_bytes`] as 64 lowercase hex digits.
    pub fn pin_sha256(&self) -> String {
        self.pin_sha256_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// SHA-256 of a certificate's DER bytes (the pin of PROTOCOL.md §1).
pub fn cert_sha256(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Io { op, path: path.to_owned(), source }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::Io { op: "reading", path: path.to_owned(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(TlsError::BadPem { path: path.to_owned(), reason: "file above 1 MiB".into() });
    }
    std::fs::read(path).map_err(io)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(|source| io_error("creating", &tmp, source))?;
    file.write_all(bytes).map_err(|source| io_error("writing", &tmp, source))?;
    file.sync_all().map_err(|source| io_error("syncing", &tmp, source))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|source| io_error("renaming", path, source))?;
    Ok(())
}

/// File name of the stateless-reset secret in the TLS directory.
pub const RESET_KEY_FILE: &str = "quic-reset.key";
/// Bytes of the stateless-reset secret.
pub const RESET_KEY_BYTES: usize = 32;

/// The server's QUIC stateless-reset secret, kept on disk so a restarted server can end the
/// connections of the process before it (RFC 9000 §10.3): the reset token of a connection id
/// is an HMAC under this key, and the server's connection ids are keyed from it too, so the new
/// process recognises the old ids as its own and answers them with a reset their client can
/// authenticate. Never printed (`Debug` hides it).
// Only the server (feature `server`) reads the key; a buoy build keeps the type for its API.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
#[derive(Clone)]
pub struct StatelessResetKey([u8; RESET_KEY_BYTES]);

impl std::fmt::Debug for StatelessResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatelessResetKey(…)")
    }
}

impl StatelessResetKey {
    /// Reads `<tls_dir>/quic-reset.key`, or makes one (32 random bytes, mode 0600) if absent.
    /// A file of another size is refused (`BadPem`), never replaced silently.
    pub fn load_or_generate(tls_dir: &Path) -> Result<Self, TlsError> {
        let path = tls_dir.join(RESET_KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => <[u8; RESET_KEY_BYTES]>::try_from(bytes.as_slice()).map(Self).map_err(|_| {
                TlsError::BadPem { path, reason: format!("a stateless-reset key is {RESET_KEY_BYTES} bytes") }
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; RESET_KEY_BYTES];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| TlsError::Generate("random stateless-reset key".into()))?;
                std::fs::create_dir_all(tls_dir).map_err(|source| io_error("creating", tls_dir, source))?;
                write_atomic(&path, &key, 0o600)?;
                Ok(Self(key))
            }
            Err(source) => Err(io_error("reading", &path, source)),
        }
    }

    /// A key from bytes (tests, or a secret kept elsewhere).
    pub fn from_bytes(bytes: [u8; RESET_KEY_BYTES]) -> Self {
        Self(bytes)
    }

    /// The endpoint configuration that uses this key for reset tokens and connection ids.
    #[cfg(feature = "server")]
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let cid_tag = ring::hmac::sign(&reset, b"bluewave connection id key");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(cid_tag.as_ref().get(..8).unwrap_or(&[0; 8]));
        let cid_key = u64::from_le_bytes(cid_key);
        let mut config = quinn::EndpointConfig::new(std::sync::Arc::new(reset));
        config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        config
    }
}
