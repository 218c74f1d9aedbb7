//! What a handler answers on success: a status, a few headers and a [`Body`].

use bytes::Bytes;
use futures_core::Stream;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::http::body::Body;
use crate::http::error::{ApiError, BoxError};

/// A successful answer. Security headers, the request id and `Cache-Control` are added by the
/// pipeline afterwards, so a handler only says what is specific to it.
pub struct Reply {
    pub(crate) response: http::Response<Body>,
}

impl Reply {
    /// A `200 OK` with `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, ApiError> {
        let bytes = serde_json::to_vec(value).map_err(ApiError::internal)?;
        Ok(Self::bytes("application/json", bytes))
    }

    /// A `200 OK` with a fixed body of the given media type.
    pub fn bytes(content_type: &'static str, bytes: impl Into<Bytes>) -> Self {
        Self::with_body(content_type, Body::full(bytes))
    }

    /// A `200 OK` whose body is pulled from `stream` as the client reads (see [`Body::stream`]).
    pub fn stream<S, E>(content_type: &'static str, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Self::with_body(content_type, Body::stream(stream))
    }

    /// An answer with no body (e.g. `204 No Content` after `.status(..)`).
    pub fn empty() -> Self {
        Self { response: http::Response::new(Body::empty()) }
    }

    fn with_body(content_type: &'static str, body: Body) -> Self {
        let mut response = http::Response::new(body);
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self { response }
    }

    /// Sets the status (default `200 OK`).
    pub fn status(mut self, status: StatusCode) -> Self {
        *self.response.status_mut() = status;
        self
    }

    /// Sets a header, replacing an earlier value of the same name.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.response.headers_mut().insert(name, value);
        self
    }
}
