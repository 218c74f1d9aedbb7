//! Identity, tokens, roles, plans: everything that decides who a caller is and what they may do.
//!
//! Layout:
//! - `service`: [`AuthService`], the entry point, one file per concern (users, login, sessions,
//!   device tokens, RBAC, plans); every state change is audited.
//! - `token`: JWT claims, signing, and the ordered verification checks.
//! - `keys`: Ed25519 signing keys on disk, rotation.
//! - `password`: argon2id hashing and the password rules.
//! - `mfa`: TOTP (RFC 6238), sealing of TOTP secrets (AES-256-GCM), backup codes, QR SVG.
//! - `limit`: login brute-force limits (per IP, per account).
//! - `rbac`: roles, permissions, default table.
//! - `plan`: data plans and the [`PolicyGrant`] they give.
//! - `store`: `accounts.redb` tables and records.
//! - `secret`: [`Secret`] (redacting wrapper) and randomness.
//! - `clock`: [`AuthClock`], the time of logins, MFA steps and the fresh-auth window.
//! - `error`: [`AuthError`], [`TokenRefusal`], [`DeviceRefusal`].

mod clock;
mod error;
mod keys;
mod limit;
mod mfa;
mod password;
mod plan;
mod rbac;
mod secret;
mod service;
mod store;
mod token;

pub use clock::AuthClock;
pub use error::{AuthError, AuthResult, DeviceRefusal, TokenRefusal};
pub use keys::{KID_CHARS, SIGNING_KEYS_MAX};
pub use limit::{
    ACCOUNT_BACKOFF_BASE_S, ACCOUNT_BACKOFF_MAX_S, ACCOUNT_FAILURE_WINDOW_S, ACCOUNT_FAILURES_FREE,
    LOGIN_ATTEMPTS_PER_IP_PER_MINUTE, LoginLimits, TRACKED_ACCOUNTS_MAX, TRACKED_IPS_MAX,
};
pub use mfa::{
    BACKUP_CODE_CHARS, BACKUP_CODES, MFA_CODE_BYTES_MAX, MFA_KEY_FILE, TOTP_DIGITS, TOTP_SECRET_BYTES,
    TOTP_SKEW_STEPS, TOTP_STEP_S, base32, base32_decode, totp_code,
};
pub use password::{
    COMMON_PASSWORDS, PASSWORD_BYTES_MAX, PASSWORD_CHARS_MIN, PasswordParams, check_password_rules,
    is_common_password, stored_params,
};
pub use plan::{
    BuoyScope, PLAN_BUOYS_MAX, PLANS_MAX, Plan, PlanDecision, PlanSource, PlanSpec, PolicyGrant, grant_for,
};
pub use rbac::{Permission, Role};
pub use secret::{Secret, random_token_text};
pub use service::{
    ACCESS_TTL_S_DEFAULT, ACCESS_TTL_S_MAX, ACCOUNTS_FILE_NAME, AuthConfig, AuthService,
    BROWSER_ABSOLUTE_S_DEFAULT, BROWSER_ABSOLUTE_S_MAX, BROWSER_IDLE_S_DEFAULT,
    BROWSER_SESSIONS_PER_USER_MAX, BrowserLogin, BrowserSession, BrowserSessionInfo, Caller,
    DEVICE_TOKENS_MAX, DEVICE_TTL_S_DEFAULT, DEVICE_TTL_S_MAX, DEVICE_TTL_S_MIN, DeviceTokenInfo,
    EMAIL_BYTES_MAX, FRESH_AUTH_S_DEFAULT, FRESH_AUTH_S_MAX, FirstAdmin, IssuedDeviceToken, LINKS_MAX,
    LoginOutcome, MFA_CHALLENGE_TTL_S, MFA_CHALLENGES_MAX, MFA_FAILURES_MAX, MfaEnrolment, NewBrowserSession,
    NewUser, ONE_TIME_LINK_TTL_S, REFRESH_ABSOLUTE_S_DEFAULT, REFRESH_ABSOLUTE_S_MAX, REFRESH_TTL_S_DEFAULT,
    REFRESH_TTL_S_MAX, REVOKED_SESSIONS_MAX, ROTATIONS_PER_SESSION_MAX, SESSIONS_PER_USER_MAX, SessionInfo,
    TokenPair, USERS_MAX, USERS_PAGE_MAX, UserInfo, normalize_email,
};
pub use service::{
    API_TOKEN_NAME_BYTES_MAX, API_TOKEN_PREFIX, API_TOKEN_RECORDS_PER_USER_MAX, API_TOKEN_TOUCH_S,
    API_TOKEN_TTL_DAYS, API_TOKEN_USES_PENDING_MAX, API_TOKENS_MAX, API_TOKENS_PER_USER_MAX, ApiTokenInfo,
    DayUsage, IssuedApiToken, QueryUsage, USAGE_HISTORY_DAYS,
};
pub use store::UserStatus;
pub use token::{LEEWAY_S, TOKEN_BYTES_MAX, TYP_ACCESS, TYP_DEVICE, TokenClaims};
