//! One request from head to answer: path check, routing, the handler under its deadline, error
//! mapping, security headers, metrics and the access log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Version, header};
use hyper::body::Incoming;

use crate::http::body::Body;
use crate::http::error::ApiError;
use crate::http::metrics::{RequestLabels, RouteLabels};
use crate::http::request::Request;
use crate::http::server::{InFlight, Shared};

/// Content-Security-Policy of every answer that does not set its own: nothing may load,
/// nothing may frame it.
pub(crate) const CSP_STRICT: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Longest path written to the access log; longer ones are cut (the header limit bounds them
/// anyway, this keeps log lines short).
const LOGGED_PATH_BYTES_MAX: usize = 256;

pub(crate) async fn handle<S: Send + Sync + 'static>(
    shared: Arc<Shared<S>>,
    in_flight: InFlight,
    peer: SocketAddr,
    request: hyper::Request<Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id: Arc<str> = shared.request_ids.next().into();
    let method = request.method().clone();
    let version = request.version();
    let path = request.uri().path();
    let is_api = path == "/api" || path.starts_with("/api/");
    let logged_path = path.get(..LOGGED_PATH_BYTES_MAX).unwrap_or(path).to_owned();

    let (route, outcome) = dispatch(&shared, request, &request_id, peer).await;
    let mut response = match outcome {
        Ok(reply) => reply.response,
        Err(error) => {
            // A refused body may still be on the wire; HTTP/1.1 cannot reuse the connection.
            let close = matches!(error, ApiError::PayloadTooLarge { .. }) && version < Version::HTTP_2;
            let mut response = error.into_response(&request_id);
            if close {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    let status = response.status();
    secure_headers(response.headers_mut(), is_api, &request_id);

    let elapsed = started.elapsed();
    let metrics = &shared.metrics;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: Arc::clone(&route),
            method: method_label(&method),
            status: status.as_u16(),
        })
        .inc();
    metrics.latency.get_or_create(&RouteLabels { route: Arc::clone(&route) }).observe(elapsed.as_secs_f64());
    response.body_mut().attach(metrics.response_body_bytes.clone(), in_flight);
    // The access log: never headers (Authorization, Cookie), never the query string (it may
    // carry filters a customer considers private), never bodies.
    tracing::info!(
        target: "bluewave_web::access",
        request_id = &*request_id,
        %peer,
        method = method.as_str(),
        path = logged_path,
        route = route.as_str(),
        status = status.as_u16(),
        duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        version = ?version,
        "request"
    );
    Ok(response)
}

/// Finds and runs the handler; returns the route label and the handler's outcome.
async fn dispatch<S: Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    request: hyper::Request<Incoming>,
    request_id: &Arc<str>,
    peer: SocketAddr,
) -> (Arc<String>, Result<crate::http::Reply, ApiError>) {
    let unmatched = || Arc::clone(&shared.metrics.unmatched_route);
    let path = request.uri().path();
    if let Err(error) = check_path(path) {
        return (unmatched(), Err(error));
    }
    let router = &shared.router;
    let found = match router.find(request.method(), path) {
        Ok(found) => found,
        Err(error) => {
            let route = router.pattern_of(path).map_or_else(unmatched, Arc::clone);
            return (route, Err(error));
        }
    };
    let route = Arc::clone(&found.routes.pattern);
    let options = found.endpoint.options;
    let timeout_ms = options.request_timeout_ms.unwrap_or(shared.config.request_timeout_ms);
    let (head, body) = request.into_parts();
    let handler_request = Request {
        shared: Arc::clone(shared),
        head,
        body: Some(body),
        param_names: Arc::clone(&found.routes.param_names),
        param_values: found.param_values,
        body_bytes_max: options.body_bytes_max.unwrap_or(shared.config.body_bytes_max),
        request_id: Arc::clone(request_id),
        peer,
    };
    let future = found.endpoint.handler.call(handler_request);
    let outcome = match tokio::time::timeout(Duration::from_millis(timeout_ms), future).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ApiError::Timeout { timeout_ms }),
    };
    (route, outcome)
}

/// Refuses paths the API never uses, before routing: only RFC 3986 path characters without
/// percent-escapes (so `%2e%2e`, `%00`, `%2f` never reach a handler), no `\`, no empty segment
/// (`//`), no `.` or `..` segment.
pub(crate) fn check_path(path: &str) -> Result<(), ApiError> {
    const ALLOWED_PUNCTUATION: &[u8] = b"-._~!$&'()*+,;=:@/";
    let well_formed = path.starts_with('/')
        && path.bytes().all(|byte| byte.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(&byte))
        && !path.contains("//")
        && path.split('/').all(|segment| segment != "." && segment != "..");
    if well_formed { Ok(()) } else { Err(ApiError::InvalidPath) }
}

fn secure_headers(headers: &mut HeaderMap, is_api: bool, request_id: &str) {
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=63072000; includeSubDomains"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP_STRICT));
    }
    // API answers carry per-caller data: never stored by a cache. Elsewhere a handler may opt in.
    if is_api || !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

/// The method as a metrics label; unusual methods share one label so clients cannot grow the
/// label set.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
