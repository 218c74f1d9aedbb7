//! Auth, query and engine errors become API answers here, and only here: caller mistakes and
//! refusals are 4xx with a message for the client, faults are 500 (logged, never shown).

use bluewave_engine::Error as EngineError;

use crate::api::IdempotencyError;
use crate::auth::AuthError;
use crate::http::ApiError;

/// Seconds until the next UTC day, when daily quotas reset.
fn seconds_to_next_utc_day() -> u64 {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    86_400 - now_s % 86_400
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidCredentials
            | AuthError::MfaRequired
            | AuthError::MfaChallengeInvalid
            | AuthError::MfaCodeInvalid
            | AuthError::Token(_)
            | AuthError::RefreshInvalid
            | AuthError::RefreshReused => Self::Unauthorized(error.to_string()),
            AuthError::RateLimited { retry_after_secs } => {
                Self::TooManyRequests { retry_after_s: retry_after_secs.max(1) }
            }
            AuthError::StepUpRequired { max_age_s } => Self::StepUpRequired { max_age_s },
            AuthError::Forbidden { .. }
            | AuthError::RoleEscalation { .. }
            | AuthError::MfaEnrolmentRequired => Self::Forbidden(error.to_string()),
            AuthError::WeakPassword(_) | AuthError::InvalidInput { .. } => {
                Self::InvalidInput(error.to_string())
            }
            AuthError::EmailTaken | AuthError::LimitReached { .. } | AuthError::MfaAlreadyEnabled => {
                Self::Conflict(error.to_string())
            }
            AuthError::NotFound { .. } => Self::NotFound(error.to_string()),
            AuthError::Unavailable { retry_after_secs, .. } => {
                Self::Unavailable { retry_after_s: retry_after_secs.max(1) }
            }
            AuthError::EmailUnverified => Self::EmailUnverified(error.to_string()),
            AuthError::LinkInvalid => Self::LinkInvalid(error.to_string()),
            AuthError::QuotaExceeded { .. } => {
                Self::TooManyRequests { retry_after_s: seconds_to_next_utc_day() }
            }
            AuthError::Store(_)
            | AuthError::CorruptRecord { .. }
            | AuthError::KeyIo { .. }
            | AuthError::KeyInvalid { .. }
            | AuthError::Crypto(_)
            | AuthError::Audit(_)
            | AuthError::Mail(_)
            | AuthError::Poisoned => Self::internal(error),
        }
    }
}

impl From<IdempotencyError> for ApiError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::InvalidKey => Self::InvalidInput(error.to_string()),
            IdempotencyError::InUse => Self::IdempotencyKeyInUse,
            IdempotencyError::Reused => Self::IdempotencyKeyReused,
            IdempotencyError::InvalidConfig { .. }
            | IdempotencyError::FormatVersion { .. }
            | IdempotencyError::Storage(_)
            | IdempotencyError::Record(_) => Self::internal(error),
        }
    }
}

impl From<bluewave_query::Error> for ApiError {
    fn from(error: bluewave_query::Error) -> Self {
        use bluewave_query::Error as Q;
        match error {
            Q::InvalidSql(_) | Q::Refused(_) | Q::InvalidFilter(_) => Self::InvalidInput(error.to_string()),
            Q::RowLimit { .. } | Q::MemoryLimit { .. } | Q::TableFunctionLimit { .. } => {
                Self::QueryLimit { code: error.code(), message: error.to_string() }
            }
            // A buoy outside the caller's plan: the same answer as a buoy that does not exist.
            Q::PolicyDenied(_) => Self::NotFound("no such buoy".to_owned()),
            Q::Timeout { .. } | Q::Stalled { .. } => {
                Self::QueryTimeout { code: error.code(), message: error.to_string() }
            }
            Q::Busy { .. } => Self::Unavailable { retry_after_s: 1 },
            Q::InvalidConfig(_) | Q::Engine(_) | Q::Internal(_) | Q::Encode(_) => Self::internal(error),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Input(input) => Self::InvalidInput(input.to_string()),
            EngineError::Busy { retry_after_ms, .. } => {
                Self::Unavailable { retry_after_s: retry_after_ms.div_ceil(1_000).max(1) }
            }
            EngineError::ShuttingDown => Self::Unavailable { retry_after_s: 1 },
            EngineError::Io { .. }
            | EngineError::Corrupt { .. }
            | EngineError::Catalog(_)
            | EngineError::Parquet(_)
            | EngineError::WriterFailed { .. }
            | EngineError::Config(_) => Self::internal(error),
        }
    }
}
