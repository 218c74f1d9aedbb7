//! What a handler receives: the request head, its path parameters, lazy body reading with the
//! route's limit, typed query/JSON extraction and the bearer-token hook.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Uri, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;
use crate::http::server::Shared;

/// Verifies the caller's bearer token. The application implements it (JWT and device tokens in
/// `web::auth`) on its state type; handlers call [`Request::caller`].
///
/// It is synchronous on purpose: verifying an access token is a signature check plus an
/// in-memory lookup, and it runs on the request's task.
pub trait Authenticator: Send + Sync + 'static {
    /// Who is calling, as the application needs it (subject, role, access policy, …).
    type Caller: Send + 'static;

    /// Verifies `bearer` (the token after `Bearer `) and says who it belongs to. Return
    /// [`ApiError::Unauthorized`] for a bad or expired token.
    fn authenticate(&self, bearer: &str) -> Result<Self::Caller, ApiError>;
}

/// One request as a handler sees it. `S` is the application state shared by all handlers.
pub struct Request<S> {
    pub(crate) shared: Arc<Shared<S>>,
    pub(crate) head: http::request::Parts,
    pub(crate) body: Option<Incoming>,
    /// Names of the matched route's parameters, in pattern order.
    pub(crate) param_names: Arc<[String]>,
    /// Their values, in the same order.
    pub(crate) param_values: Vec<String>,
    pub(crate) body_bytes_max: u64,
    pub(crate) request_id: Arc<str>,
    /// The TCP peer of the connection (the client, or the proxy in front of it).
    pub(crate) peer: std::net::SocketAddr,
}

impl<S> Request<S> {
    /// The application state.
    pub fn state(&self) -> &S {
        &self.shared.router.state
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.head.method
    }

    /// The request URI (already checked for odd paths).
    pub fn uri(&self) -> &Uri {
        &self.head.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The address of the connection's peer (for per-IP limits such as the login limiter).
    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }

    /// The id of this request, also sent back as `X-Request-Id` and written in every log line.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The value of the route parameter `name` (`{id}` in `/api/buoys/{id}`). Values are the raw
    /// path text; the router only lets RFC 3986 path characters without `%` through.
    pub fn param(&self, name: &str) -> Result<&str, ApiError> {
        self.param_names
            .iter()
            .position(|key| key == name)
            .and_then(|index| self.param_values.get(index))
            .map(String::as_str)
            // Asking for a parameter the route does not declare is a bug in the handler.
            .ok_or_else(|| ApiError::internal(format!("route has no parameter `{name}`")))
    }

    /// Parses the query string into `T` (an absent query string parses as empty).
    pub fn query<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_urlencoded::from_str(self.head.uri.query().unwrap_or(""))
            .map_err(|error| ApiError::InvalidQuery(error.to_string()))
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer(&self) -> Result<&str, ApiError> {
        let value = self
            .head
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".to_owned()))?;
        let text = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed Authorization header".to_owned()))?;
        let (scheme, token) = text
            .split_once(' ')
            .ok_or_else(|| ApiError::Unauthorized("malformed Authorization header".to_owned()))?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::Unauthorized("expected a bearer token".to_owned()));
        }
        Ok(token)
    }

    /// Reads the whole body, refusing more than the route's limit: a declared `Content-Length`
    /// over it is refused before reading, a chunked body is cut off as soon as it crosses it.
    pub async fn bytes(&mut self) -> Result<Bytes, ApiError> {
        let limit_bytes = self.body_bytes_max;
        if let Some(length) = self.content_length()?
            && length > limit_bytes
        {
            return Err(ApiError::PayloadTooLarge { limit_bytes });
        }
        let body = self.body.take().ok_or_else(|| ApiError::internal("the request body was read twice"))?;
        let limit = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                self.shared.metrics.request_body_bytes.inc_by(bytes.len() as u64);
                Ok(bytes)
            }
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(ApiError::PayloadTooLarge { limit_bytes })
            }
            Err(_) => Err(ApiError::InvalidBody),
        }
    }

    /// Reads the body as JSON into `T`: `Content-Type` must be `application/json` (415
    /// otherwise), the size is limited as in [`Request::bytes`], and a parse error answers 400
    /// with serde's reason (line, column, what was expected).
    pub async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        const JSON: &str = "application/json";
        let is_json = self
            .head
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or("").trim())
            .is_some_and(|media_type| media_type.eq_ignore_ascii_case(JSON));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType { expected: JSON });
        }
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|error| ApiError::InvalidJson(error.to_string()))
    }

    fn content_length(&self) -> Result<Option<u64>, ApiError> {
        match self.head.headers.get(header::CONTENT_LENGTH) {
            None => Ok(None),
            // hyper has already refused malformed lengths on HTTP/1.1; HTTP/2 passes them on.
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| ApiError::InvalidInput("malformed Content-Length".to_owned())),
        }
    }
}

impl<S: Authenticator> Request<S> {
    /// Verifies the bearer token through the application's [`Authenticator`] and returns the
    /// caller; 401 when the header is missing or the token is refused.
    pub fn caller(&self) -> Result<S::Caller, ApiError> {
        let token = self.bearer()?;
        self.shared.router.state.authenticate(token)
    }
}
