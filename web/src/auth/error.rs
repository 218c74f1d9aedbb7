//! The auth module's errors: user mistakes, refusals and internal faults are separate variants so
//! the HTTP layer maps each to one status (400 / 401 / 403 / 404 / 409 / 429 / 500).

use std::path::PathBuf;

use crate::audit::AuditError;

/// Why a token was refused. Each variant is one exact outcome the forgery tests assert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No token was presented.
    #[error("token missing")]
    Missing,
    /// Not a well-formed JWT (segments, base64, JSON, claim types, size).
    #[error("token malformed")]
    Malformed,
    /// The header names an algorithm outside the allowlist (only `EdDSA`), e.g. `none` or `HS256`.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header's `kid` is absent, ill-formed or not in the key set.
    #[error("token key id unknown")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("token signature invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// The `iss` claim is not this server.
    #[error("token issuer wrong")]
    WrongIssuer,
    /// The `aud` claim is not the expected audience.
    #[error("token audience wrong")]
    WrongAudience,
    /// The `typ` claim is not the expected kind (`access` vs `device`).
    #[error("token type wrong")]
    WrongType,
    /// Issued before the account's `valid_after` stamp (logout-all, password or role change).
    #[error("token revoked")]
    Revoked,
    /// The account is disabled.
    #[error("account disabled")]
    AccountDisabled,
    /// The subject account does not exist (deleted, or a token from another deployment).
    #[error("token subject unknown")]
    UnknownSubject,
    /// The device token's `jti` was revoked by an operator (or is not on record).
    #[error("device revoked")]
    DeviceRevoked,
}

/// Refusal of a device token, with the codes of wire/PROTOCOL.md §3.4 (REFUSED reasons 1–6;
/// `BUOY_NOT_REGISTERED` is decided by the server after this check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRefusal {
    /// `TOKEN_MISSING` (1): empty token.
    #[error("TOKEN_MISSING")]
    TokenMissing,
    /// `TOKEN_MALFORMED` (2): not a well-formed JWT.
    #[error("TOKEN_MALFORMED")]
    TokenMalformed,
    /// `TOKEN_BAD_SIGNATURE` (3): signature, algorithm, key id, issuer or audience do not verify.
    #[error("TOKEN_BAD_SIGNATURE")]
    TokenBadSignature,
    /// `TOKEN_EXPIRED` (4): expired or not yet valid.
    #[error("TOKEN_EXPIRED")]
    TokenExpired,
    /// `TOKEN_WRONG_TYPE` (5): a valid token that is not of type `device`.
    #[error("TOKEN_WRONG_TYPE")]
    TokenWrongType,
    /// `DEVICE_REVOKED` (6): revoked by an operator.
    #[error("DEVICE_REVOKED")]
    DeviceRevoked,
    /// `SERVER_BUSY` (9): the check could not be made (store fault); retry later. Fails closed.
    #[error("SERVER_BUSY")]
    ServerUnavailable,
}

impl DeviceRefusal {
    /// The REFUSED reason code of wire/PROTOCOL.md §3.4.
    pub fn code(self) -> u16 {
        match self {
            Self::TokenMissing => 1,
            Self::TokenMalformed => 2,
            Self::TokenBadSignature => 3,
            Self::TokenExpired => 4,
            Self::TokenWrongType => 5,
            Self::DeviceRevoked => 6,
            Self::ServerUnavailable => 9,
        }
    }
}

impl From<TokenRefusal> for DeviceRefusal {
    fn from(r: TokenRefusal) -> Self {
        match r {
            TokenRefusal::Missing => Self::TokenMissing,
            TokenRefusal::Malformed => Self::TokenMalformed,
            TokenRefusal::AlgorithmNotAllowed
            | TokenRefusal::UnknownKey
            | TokenRefusal::BadSignature
            | TokenRefusal::WrongIssuer
            | TokenRefusal::WrongAudience => Self::TokenBadSignature,
            TokenRefusal::Expired | TokenRefusal::NotYetValid => Self::TokenExpired,
            TokenRefusal::WrongType => Self::TokenWrongType,
            TokenRefusal::Revoked
            | TokenRefusal::AccountDisabled
            | TokenRefusal::UnknownSubject
            | TokenRefusal::DeviceRevoked => Self::DeviceRevoked,
        }
    }
}

/// Errors of [`crate::AuthService`].
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong email or password, unknown or disabled account: one answer for all, so a caller
    /// cannot tell which accounts exist (HTTP 401).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Too many attempts from this client IP or on this account (HTTP 429 + `Retry-After`).
    #[error("too many attempts, retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next attempt may succeed (≥ 1).
        retry_after_secs: u64,
    },
    /// An access or device token was refused (HTTP 401).
    #[error("token refused: {0}")]
    Token(TokenRefusal),
    /// The refresh token is unknown, expired, or its session was revoked (HTTP 401).
    #[error("refresh token invalid")]
    RefreshInvalid,
    /// An already-used refresh token was presented: the whole session family was revoked
    /// (HTTP 401). Someone may hold a stolen token.
    #[error("refresh token reused; session revoked")]
    RefreshReused,
    /// A sensitive action needs a login or MFA proof within the last `max_age_s` seconds
    /// (HTTP 401 with a step-up hint).
    #[error("this action needs a fresh login or MFA code (within {max_age_s} s)")]
    StepUpRequired {
        /// The fresh-auth window.
        max_age_s: u64,
    },
    /// The account has MFA: the password step answered a challenge, not tokens
    /// (`AuthService::login_start` / `complete_mfa`).
    #[error("MFA code required")]
    MfaRequired,
    /// The MFA challenge is unknown, expired, or ended by too many wrong codes (HTTP 401).
    #[error("MFA challenge invalid or expired; sign in again")]
    MfaChallengeInvalid,
    /// The MFA code is wrong, already used, or not a code (HTTP 401).
    #[error("MFA code invalid")]
    MfaCodeInvalid,
    /// MFA is already on; disable it before enrolling again (HTTP 409).
    #[error("MFA is already enabled")]
    MfaAlreadyEnabled,
    /// The caller's role requires MFA and the account has none: only enrolment is open (HTTP 403).
    #[error("MFA enrolment required: POST /api/auth/mfa/enrol, then /api/auth/mfa/confirm")]
    MfaEnrolmentRequired,
    /// The caller lacks a permission (HTTP 403).
    #[error("permission {permission} required")]
    Forbidden {
        /// The permission that was checked.
        permission: String,
    },
    /// The caller tried to grant or act on a role above their own (HTTP 403).
    #[error("cannot assign or manage role {role} (above your own)")]
    RoleEscalation {
        /// The role that was refused.
        role: String,
    },
    /// The password breaks the password rules (HTTP 400).
    #[error("password rejected: {0}")]
    WeakPassword(&'static str),
    /// A field failed validation (HTTP 400).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The email is already registered (HTTP 409).
    #[error("email already registered")]
    EmailTaken,
    /// A referenced record does not exist (HTTP 404).
    #[error("{kind} not found")]
    NotFound {
        /// `user`, `plan`, `session`, `device token`.
        kind: &'static str,
    },
    /// A named limit was reached (HTTP 429 or 409 depending on the limit).
    #[error("limit reached: {what} (max {max})")]
    LimitReached {
        /// Which limit.
        what: &'static str,
        /// Its value.
        max: u64,
    },
    /// A server-wide table is full (HTTP 503 + `Retry-After`): not the caller's fault.
    #[error("server busy: {what} full, retry after {retry_after_secs} s")]
    Unavailable {
        /// Which table.
        what: &'static str,
        /// Seconds after which a retry may succeed.
        retry_after_secs: u64,
    },
    /// The account's email is not verified yet: it may sign in, but not buy or query
    /// (HTTP 403 `email_unverified`).
    #[error("verify your email first: follow the link we sent, or ask for a new one")]
    EmailUnverified,
    /// A one-time link is unknown, already used, expired, or of another kind (HTTP 400
    /// `link_invalid`).
    #[error("this link is invalid, used or expired")]
    LinkInvalid,
    /// Sending mail failed (internal fault).
    #[error(transparent)]
    Mail(#[from] crate::mail::MailError),
    /// The caller's plan allows no more queries today (HTTP 429).
    #[error("daily query quota of {quota} used up")]
    QuotaExceeded {
        /// The plan's quota.
        quota: u32,
    },
    /// `accounts.redb` failed (internal fault, HTTP 500).
    #[error("accounts store: {0}")]
    Store(String),
    /// A record in `accounts.redb` does not decode (internal fault: corruption or a bug).
    #[error("accounts store record {table}/{key} undecodable")]
    CorruptRecord {
        /// Table name.
        table: &'static str,
        /// Key.
        key: String,
    },
    /// Reading or writing a key file failed (internal fault).
    #[error("key file {op} {path}: {source}")]
    KeyIo {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file exists but does not hold a valid key (internal fault; never auto-replaced, so
    /// a damaged key is noticed instead of silently logging everyone out).
    #[error("key file {path} invalid: {reason}")]
    KeyInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Hashing, signing or randomness failed (internal fault).
    #[error("crypto failure: {0}")]
    Crypto(String),
    /// The audit log refused the entry (internal fault).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A lock was poisoned by a panic in another thread (internal fault).
    #[error("auth state lock poisoned")]
    Poisoned,
}

impl AuthError {
    /// True for faults of the server (HTTP 500), false for answers to the caller.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Store(_)
                | Self::CorruptRecord { .. }
                | Self::KeyIo { .. }
                | Self::KeyInvalid { .. }
                | Self::Crypto(_)
                | Self::Audit(_)
                | Self::Mail(_)
                | Self::Poisoned
        )
    }
}

impl From<TokenRefusal> for AuthError {
    fn from(r: TokenRefusal) -> Self {
        Self::Token(r)
    }
}

macro_rules! store_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for AuthError {
            fn from(e: $t) -> Self {
                Self::Store(e.to_string())
            }
        }
    )*};
}
store_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Result of auth operations.
pub type AuthResult<T> = std::result::Result<T, AuthError>;
