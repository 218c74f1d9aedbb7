//! The one place where errors become HTTP answers, and the server's own start-up errors.
//!
//! Handlers return [`ApiError`]; the pipeline turns it into a status, a JSON body
//! `{"error": "<stable_code>", "message": "<human text>"}` and, where the client should come back
//! later, a `Retry-After` header. Client mistakes carry a message meant for the client; internal
//! faults carry a source that is logged with the request id and never sent.

use std::error::Error as StdError;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::http::body::Body;

/// A boxed error from a lower layer (engine, query, I/O) behind an internal fault.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Errors of starting and running the server itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A limit in `HttpConfig` is zero or outside what hyper accepts (caller mistake).
    #[error("invalid HTTP configuration: `{field}` is out of range")]
    InvalidConfig {
        /// The offending `HttpConfig` field.
        field: &'static str,
    },
    /// The TLS identity (certificate chain + key) was refused by rustls.
    #[error("invalid TLS identity: {0}")]
    Tls(#[source] rustls::Error),
    /// Two routes overlap or a route pattern is malformed (programming mistake in the router set-up).
    #[error("invalid route `{path}`: {reason}")]
    Route {
        /// The route pattern that was refused.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The listening socket could not be bound or queried.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The OpenAPI document could not be serialized (a bug in a route's annotation).
    #[error("cannot serialize the OpenAPI document: {0}")]
    OpenApi(#[source] serde_json::Error),
}

/// A request that could not be answered with success. Each variant has a fixed status and a
/// stable machine-readable code ([`ApiError::code`]); client mistakes (4xx) and internal faults
/// (5xx) are different variants.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path has characters, percent-escapes or segments (`..`, `//`) the API never uses (400).
    #[error("the request path is not valid")]
    InvalidPath,
    /// The JSON body does not parse or does not fit the expected shape (400); carries serde's reason.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The query string does not parse or does not fit the expected shape (400).
    #[error("invalid query string: {0}")]
    InvalidQuery(String),
    /// The request body could not be read to its end (client aborted or sent a malformed body) (400).
    #[error("the request body could not be read")]
    InvalidBody,
    /// A well-formed request with a value the endpoint refuses (400).
    #[error("{0}")]
    InvalidInput(String),
    /// No or an unusable bearer credential (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// A sensitive action and an authentication older than `max_age_s` (401 with
    /// `WWW-Authenticate: Bearer error="insufficient_user_authentication", max_age=…` as in
    /// RFC 9470, and a `step_up` hint in the body): log in again, or confirm with an MFA code.
    #[error("this action needs a fresh authentication: sign in again or confirm with an MFA code")]
    StepUpRequired {
        /// How recent the authentication must be, s.
        max_age_s: u64,
    },
    /// The caller is known but may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The account's email is not verified: it may sign in but not buy or query (403).
    #[error("{0}")]
    EmailUnverified(String),
    /// A one-time link (verification, password reset, email change) is unknown, used or
    /// expired (400).
    #[error("{0}")]
    LinkInvalid(String),
    /// No such route or resource, or one the caller may not see (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method (405, with `Allow`).
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// The methods the path does accept, comma-separated (the `Allow` header value).
        allow: String,
    },
    /// The endpoint cannot produce any representation the `Accept` header allows (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// The request conflicts with the current state of the resource (409).
    #[error("{0}")]
    Conflict(String),
    /// A request with the same `Idempotency-Key` is still running (409, with `Retry-After`).
    #[error("a request with this Idempotency-Key is still running; retry when it has answered")]
    IdempotencyKeyInUse,
    /// The `Idempotency-Key` was used before with another body (422).
    #[error("this Idempotency-Key was used before with a different body")]
    IdempotencyKeyReused,
    /// The body is larger than the route's limit (413).
    #[error("request body larger than {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The route's body limit.
        limit_bytes: u64,
    },
    /// The body's `Content-Type` is missing or not the one the route reads (415).
    #[error("Content-Type must be {expected}")]
    UnsupportedMediaType {
        /// The media type the route reads.
        expected: &'static str,
    },
    /// The caller sent too many requests (429, with `Retry-After`).
    #[error("too many requests; retry after {retry_after_s} s")]
    TooManyRequests {
        /// Seconds the client should wait.
        retry_after_s: u64,
    },
    /// The handler did not answer within the route's request timeout (503, with `Retry-After`).
    #[error("the request took longer than {timeout_ms} ms")]
    Timeout {
        /// The deadline that ran out.
        timeout_ms: u64,
    },
    /// A query ran past its time budget or its stall limit and was cancelled (503, no
    /// `Retry-After`: the same query would run as long again). `code` is the query layer's
    /// (`query_timeout`, `query_stalled`).
    #[error("{message}")]
    QueryTimeout {
        /// The query layer's stable code.
        code: &'static str,
        /// What happened, for the client.
        message: String,
    },
    /// A query hit a limit of the caller's policy (400): `code` is the query layer's
    /// (`query_row_limit`, `query_memory_limit`, `table_function_limit`).
    #[error("{message}")]
    QueryLimit {
        /// The query layer's stable code.
        code: &'static str,
        /// Which limit, for the client.
        message: String,
    },
    /// A dependency is busy or the server is shutting down (503, with `Retry-After`).
    #[error("service unavailable; retry after {retry_after_s} s")]
    Unavailable {
        /// Seconds the client should wait.
        retry_after_s: u64,
    },
    /// A fault inside the server (500). The source is logged with the request id, never sent.
    #[error("internal error: {0}")]
    Internal(#[source] BoxError),
}

/// The JSON body of every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Stable machine-readable code, e.g. `not_found`, `payload_too_large`.
    pub error: &'a str,
    /// Human-readable explanation; never contains internal details.
    pub message: &'a str,
    /// Only on `step_up_required`: how to get a fresh authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUpHint>,
}

/// The step-up hint of a `step_up_required` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StepUpHint {
    /// How recent a login or MFA proof must be, s.
    pub max_age_s: u64,
    /// Endpoints that give a fresh authentication: a new login, or an MFA code for the session.
    pub endpoints: &'static [&'static str],
}

/// Endpoints named by the step-up hint.
const STEP_UP_ENDPOINTS: &[&str] = &["/api/auth/token", "/api/auth/mfa/step-up"];

impl ApiError {
    /// Wraps an internal fault (engine, I/O, bug) so it is logged, never shown.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal(source.into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidPath
            | Self::InvalidJson(_)
            | Self::InvalidQuery(_)
            | Self::InvalidBody
            | Self::InvalidInput(_)
            | Self::QueryLimit { .. }
            | Self::LinkInvalid(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) | Self::StepUpRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::EmailUnverified(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Conflict(_) | Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout { .. } | Self::QueryTimeout { .. } | Self::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code in the `error` field; clients may match on it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPath => "invalid_path",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidQuery(_) => "invalid_query",
            Self::InvalidBody => "invalid_body",
            Self::InvalidInput(_) => "invalid_input",
            Self::Unauthorized(_) => "unauthorized",
            Self::StepUpRequired { .. } => "step_up_required",
            Self::Forbidden(_) => "forbidden",
            Self::EmailUnverified(_) => "email_unverified",
            Self::LinkInvalid(_) => "link_invalid",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NotAcceptable(_) => "not_acceptable",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyKeyInUse => "idempotency_key_in_use",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::Timeout { .. } => "timeout",
            Self::QueryTimeout { code, .. } | Self::QueryLimit { code, .. } => code,
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after_s } | Self::Unavailable { retry_after_s } => {
                Some(*retry_after_s)
            }
            Self::Timeout { .. } | Self::IdempotencyKeyInUse => Some(1),
            _ => None,
        }
    }

    /// Turns the error into the answer sent to the client. Internal faults are logged here with
    /// the request id (the only place they are), and the client sees only the id.
    pub(crate) fn into_response(self, request_id: &str) -> http::Response<Body> {
        let status = self.status();
        let message = match &self {
            Self::Internal(source) => {
                tracing::error!(request_id, error = %source, "internal error while answering a request");
                format!("internal error; the server log has the details under request id {request_id}")
            }
            other => other.to_string(),
        };
        let step_up = match &self {
            Self::StepUpRequired { max_age_s } => {
                Some(StepUpHint { max_age_s: *max_age_s, endpoints: STEP_UP_ENDPOINTS })
            }
            _ => None,
        };
        let json = serde_json::to_vec(&ErrorBody { error: self.code(), message: &message, step_up })
            // Serializing two strings cannot fail; fall back to a fixed body all the same.
            .unwrap_or_else(|_| br#"{"error":"internal","message":"internal error"}"#.to_vec());
        let mut response = http::Response::new(Body::full(Bytes::from(json)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = self.retry_after_s() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        match &self {
            Self::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            Self::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::StepUpRequired { max_age_s } => {
                let challenge = format!(
                    "Bearer error=\"insufficient_user_authentication\", \
                     error_description=\"fresh authentication required\", max_age={max_age_s}"
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}
