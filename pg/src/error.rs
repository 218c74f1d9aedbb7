//! The crate's error type, and the SQLSTATE every refusal reaches the client with.

use bluewave_web::AuthError;
use pgwire::error::{ErrorInfo, PgWireError};

/// Why the Postgres front could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (a zero limit).
    #[error("invalid Postgres front configuration: {0}")]
    InvalidConfig(String),
    /// The TLS identity was refused by rustls.
    #[error("Postgres front TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// The listening socket could not be bound or accept failed.
    #[error("Postgres front socket: {0}")]
    Io(#[source] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLSTATE codes this crate answers with (PostgreSQL's appendix A names).
pub(crate) mod sqlstate {
    /// `invalid_authorization_specification`: TLS required, MFA account, rate limited.
    pub(crate) const INVALID_AUTHORIZATION: &str = "28000";
    /// `invalid_password`: wrong password, unknown account, bad token.
    pub(crate) const INVALID_PASSWORD: &str = "28P01";
    /// `too_many_connections`.
    pub(crate) const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `insufficient_privilege`: policy refusal, missing `query:sql`.
    pub(crate) const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// `syntax_error`: SQL that does not parse or plan.
    pub(crate) const SYNTAX_ERROR: &str = "42601";
    /// `read_only_sql_transaction`: DDL, DML, `SET`, several statements.
    pub(crate) const READ_ONLY: &str = "25006";
    /// `query_canceled`: timeout, stall, cancel request.
    pub(crate) const QUERY_CANCELED: &str = "57014";
    /// `out_of_memory`: the query's memory pool is exhausted.
    pub(crate) const OUT_OF_MEMORY: &str = "53200";
    /// `insufficient_resources`: too many queries running.
    pub(crate) const INSUFFICIENT_RESOURCES: &str = "53000";
    /// `configuration_limit_exceeded`: the daily query quota is used up.
    pub(crate) const CONFIGURATION_LIMIT: &str = "53400";
    /// `program_limit_exceeded`: row limit, table-function limit.
    pub(crate) const PROGRAM_LIMIT: &str = "54000";
    /// `invalid_parameter_value`: a bad typed filter, an undecodable `$n` value.
    pub(crate) const INVALID_PARAMETER: &str = "22023";
    /// `feature_not_supported`: a result column type with no Postgres mapping.
    pub(crate) const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `internal_error`.
    pub(crate) const INTERNAL: &str = "XX000";
}

/// An `ERROR` (the session goes on) with `code`.
pub(crate) fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

/// A `FATAL` error (the server closes the connection after sending it).
pub(crate) fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message.into())))
}

/// A query layer error as the client sees it.
pub(crate) fn from_query(e: &bluewave_query::Error) -> PgWireError {
    use bluewave_query::Error as Q;
    let code = match e {
        Q::InvalidSql(_) => sqlstate::SYNTAX_ERROR,
        Q::Refused(_) => sqlstate::READ_ONLY,
        Q::InvalidFilter(_) => sqlstate::INVALID_PARAMETER,
        Q::PolicyDenied(_) => sqlstate::INSUFFICIENT_PRIVILEGE,
        Q::RowLimit { .. } | Q::TableFunctionLimit { .. } => sqlstate::PROGRAM_LIMIT,
        Q::MemoryLimit { .. } => sqlstate::OUT_OF_MEMORY,
        Q::Timeout { .. } | Q::Stalled { .. } => sqlstate::QUERY_CANCELED,
        Q::Busy { .. } => sqlstate::INSUFFICIENT_RESOURCES,
        _ => {
            tracing::warn!(error = %e, "Postgres front: internal query error");
            sqlstate::INTERNAL
        }
    };
    error(code, e.to_string())
}

/// An auth layer refusal met while running a query (permission, quota): an `ERROR`.
pub(crate) fn from_auth(e: &AuthError) -> PgWireError {
    let code = match e {
        AuthError::Forbidden { .. } => sqlstate::INSUFFICIENT_PRIVILEGE,
        AuthError::QuotaExceeded { .. } => sqlstate::CONFIGURATION_LIMIT,
        _ => {
            tracing::warn!(error = %e, "Postgres front: auth error while querying");
            sqlstate::INTERNAL
        }
    };
    error(code, e.to_string())
}

/// An auth layer refusal at login: always `FATAL` (the connection ends).
pub(crate) fn login_refusal(e: &AuthError) -> PgWireError {
    match e {
        AuthError::InvalidCredentials | AuthError::Token(_) => {
            fatal(sqlstate::INVALID_PASSWORD, "password authentication failed")
        }
        AuthError::MfaRequired => fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "this account uses MFA: sign in through the API and give the access token as the password",
        ),
        AuthError::MfaEnrolmentRequired => fatal(
            sqlstate::INVALID_AUTHORIZATION,
            "this account must enrol in MFA (through the web pages or API) before it can query",
        ),
        AuthError::RateLimited { .. } => fatal(sqlstate::INVALID_AUTHORIZATION, e.to_string()),
        _ => {
            tracing::warn!(error = %e, "Postgres front: auth error at login");
            fatal(sqlstate::INTERNAL, "authentication failed on the server")
        }
    }
}
