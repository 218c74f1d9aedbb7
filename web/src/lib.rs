//! `bluewave-web`: the hyper HTTPS front (REST API, auth, shop and subscription pages).
//!
//! Layout:
//! - `auth`: identity and tokens (argon2id accounts in `accounts.redb`, EdDSA JWT access and
//!   device tokens, rotating refresh tokens, brute-force limits), roles and permissions, plans
//!   ([`AuthService`] is the entry point).
//! - `audit`: the append-only, hash-chained audit log in `<data-dir>/audit/` ([`AuditLog`]).
//!
//! The HTTP server is being built (issue 4); nothing of it is here yet.
//!
//! # Example
//!
//! ```no_run
//! use bluewave_web::{AuthConfig, AuthService, Secret};
//!
//! # fn main() -> Result<(), bluewave_web::AuthError> {
//! let auth = AuthService::open(std::path::Path::new("./bluewave-data"), AuthConfig::default())?;
//! auth.ensure_first_admin("admin@example.org", Some(Secret::new("correct horse battery staple")))?;
//! let pair = auth.login("admin@example.org", &Secret::new("correct horse battery staple"), [127, 0, 0, 1].into())?;
//! let caller = auth.verify_access_token(pair.access_token.expose())?;
//! auth.authorize(&caller, bluewave_web::Permission::UsersManage)?;
//! # Ok(())
//! # }
//! ```

mod audit;
mod auth;

pub use audit::{
    AUDIT_DETAILS_BYTES_MAX, AUDIT_FIELD_BYTES_MAX, AUDIT_FILE_NAME, AUDIT_FORMAT_VERSION,
    AUDIT_LINE_BYTES_MAX, AUDIT_PAGE_ENTRIES_MAX, AuditEntry, AuditError, AuditEvent, AuditLog, AuditPage,
    AuditResult, OpenReport, VerifyReport, verify_file,
};
pub use auth::*;
