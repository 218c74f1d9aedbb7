//! Shared set-up for the auth tests: a real `AuthService` on a tempdir (real redb, real keys,
//! real audit log), logged-in callers, and a raw JWT signer that uses the server's own key file
//! so forged tokens differ from real ones in exactly one respect.

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bluewave_web::{AuthConfig, AuthService, Caller, NewUser, Role, Secret, TokenPair};
use ed25519_dalek::Signer as _;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use tempfile::TempDir;

pub const ADMIN_EMAIL: &str = "admin@example.org";
pub const ADMIN_PASSWORD: &str = "admin-password-long-enough";
pub const USER_PASSWORD: &str = "user-password-long-enough";

pub struct Fixture {
    pub dir: TempDir,
    pub auth: AuthService,
}

pub fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

pub fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The default settings without the MFA requirement of admins and operators: the suites that
/// predate MFA act as admin with a password alone (the MFA suite uses the real default).
pub fn no_mfa() -> AuthConfig {
    AuthConfig { mfa_required_roles: std::collections::BTreeSet::new(), ..AuthConfig::default() }
}

impl Fixture {
    /// A fresh service with default (OWASP) settings, no MFA requirement, and a first admin.
    pub fn new() -> Self {
        Self::with_config(no_mfa())
    }

    pub fn with_config(config: AuthConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthService::open(dir.path(), config).unwrap();
        auth.ensure_first_admin(ADMIN_EMAIL, Some(Secret::new(ADMIN_PASSWORD))).unwrap();
        Self { dir, auth }
    }

    pub fn reopen(self, config: AuthConfig) -> Self {
        let Self { dir, auth } = self;
        drop(auth);
        let auth = AuthService::open(dir.path(), config).unwrap();
        Self { dir, auth }
    }

    pub fn login(&self, email: &str, password: &str) -> TokenPair {
        self.auth.login(email, &Secret::new(password), ip(1)).unwrap()
    }

    pub fn caller(&self, pair: &TokenPair) -> Caller {
        self.auth.verify_access_token(pair.access_token.expose()).unwrap()
    }

    pub fn admin(&self) -> Caller {
        let pair = self.login(ADMIN_EMAIL, ADMIN_PASSWORD);
        self.caller(&pair)
    }

    /// Creates a user with `role` (by the admin) and returns its logged-in caller.
    pub fn user(&self, email: &str, role: Role) -> (Caller, TokenPair) {
        let admin = self.admin();
        self.auth
            .create_user(
                &admin,
                NewUser { email: email.into(), password: Secret::new(USER_PASSWORD), role, plan_id: None },
            )
            .unwrap();
        let pair = self.login(email, USER_PASSWORD);
        (self.caller(&pair), pair)
    }

    /// The audit log's text.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.auth.audit_log().path()).unwrap()
    }
}

/// The server's signing key `kid`, read from its key file.
pub fn server_key(keys_dir: &Path, kid: &str) -> SigningKey {
    let der = std::fs::read(keys_dir.join(format!("{kid}.ed25519"))).unwrap();
    SigningKey::from_pkcs8_der(&der).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with exactly this header and payload JSON, signed with `key` (EdDSA).
pub fn sign_raw(key: &SigningKey, header: &serde_json::Value, payload: &serde_json::Value) -> String {
    let message = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let signature = key.sign(message.as_bytes());
    format!("{message}.{}", b64(&signature.to_bytes()))
}

/// The decoded header and payload of a real token.
pub fn parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = token.split('.');
    let header = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    let payload = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    (serde_json::from_slice(&header).unwrap(), serde_json::from_slice(&payload).unwrap())
}

/// A genuine token, its decoded parts and the server key that signed it: forged variants
/// differ from it in exactly one claim or header field.
pub struct GenuineToken {
    pub header: serde_json::Value,
    pub payload: serde_json::Value,
    pub key: SigningKey,
    pub genuine: String,
}

impl GenuineToken {
    /// Decodes `genuine` and loads its signing key from `keys_dir` (by its `kid`).
    pub fn new(genuine: String, keys_dir: &Path) -> Self {
        let (header, payload) = parts(&genuine);
        let key = server_key(keys_dir, header["kid"].as_str().unwrap());
        Self { header, payload, key, genuine }
    }

    /// Re-signs the genuine token with one payload field changed.
    pub fn with_claim(&self, name: &str, value: serde_json::Value) -> String {
        let mut payload = self.payload.clone();
        payload[name] = value;
        sign_raw(&self.key, &self.header, &payload)
    }

    /// Re-signs the genuine token with one header field changed.
    pub fn with_header(&self, name: &str, value: serde_json::Value) -> String {
        let mut header = self.header.clone();
        header[name] = value;
        sign_raw(&self.key, &header, &self.payload)
    }
}
