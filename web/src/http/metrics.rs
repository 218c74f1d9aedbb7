//! HTTP counters and histograms, registered into the application's Prometheus registry.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the request latency histogram: 0.5 ms to 10 s.
const LATENCY_BUCKETS_S: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Route label of requests that matched no route: keeps label cardinality bounded by the
/// number of routes whatever paths clients try.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// Route pattern (`/api/buoys/{id}`) or `unmatched`.
    pub(crate) route: Arc<String>,
    /// Method, or `other` for methods no route uses.
    pub(crate) method: &'static str,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) route: Arc<String>,
}

/// The HTTP server's metrics; every field is a cheap handle onto the registered series.
#[derive(Clone)]
pub(crate) struct HttpMetrics {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) latency: Family<RouteLabels, Histogram>,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_accepted: Counter,
    pub(crate) connections_rejected: Counter,
    pub(crate) tls_handshake_failures: Counter,
    pub(crate) request_body_bytes: Counter,
    pub(crate) response_body_bytes: Counter,
    pub(crate) responses_stalled: Counter,
    pub(crate) unmatched_route: Arc<String>,
}

impl HttpMetrics {
    /// Creates the metrics and registers them under the `bluewave_http` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS_S)),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_rejected: Counter::default(),
            tls_handshake_failures: Counter::default(),
            request_body_bytes: Counter::default(),
            response_body_bytes: Counter::default(),
            responses_stalled: Counter::default(),
            unmatched_route: Arc::new(UNMATCHED_ROUTE.to_owned()),
        };
        let http = registry.sub_registry_with_prefix("bluewave_http");
        http.register(
            "requests",
            "HTTP requests answered, by route, method and status",
            metrics.requests.clone(),
        );
        http.register(
            "request_duration_seconds",
            "Time from request head to response head, by route",
            metrics.latency.clone(),
        );
        http.register("connections_open", "TLS connections open now", metrics.connections_open.clone());
        http.register(
            "connections_accepted",
            "TCP connections accepted",
            metrics.connections_accepted.clone(),
        );
        http.register(
            "connections_rejected",
            "TCP connections closed at once because connections_max was reached",
            metrics.connections_rejected.clone(),
        );
        http.register(
            "tls_handshake_failures",
            "Connections whose TLS handshake failed or timed out",
            metrics.tls_handshake_failures.clone(),
        );
        http.register(
            "request_body_bytes",
            "Request body bytes read by handlers",
            metrics.request_body_bytes.clone(),
        );
        http.register(
            "response_body_bytes",
            "Response body bytes handed to the connection",
            metrics.response_body_bytes.clone(),
        );
        http.register(
            "responses_stalled",
            "Connections cut because a response body made no progress for response_stall_timeout_ms",
            metrics.responses_stalled.clone(),
        );
        metrics
    }
}
