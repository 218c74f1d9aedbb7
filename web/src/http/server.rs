//! The listener: TLS (rustls, ALPN h2 + http/1.1), one task per connection, the connection
//! limit, idle and handshake timeouts, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::http::config::{HYPER_HEADERS_ON_STACK, HttpConfig};
use crate::http::error::ServerError;
use crate::http::metrics::HttpMetrics;
use crate::http::pipeline;
use crate::http::router::Router;

/// The server's certificate chain (leaf first) and private key, DER-encoded. The binary passes
/// the same self-signed identity the QUIC endpoint uses, or a real one.
#[derive(Debug)]
pub struct TlsIdentity {
    /// Certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PrivateKeyDer<'static>,
}

/// How the shutdown went, returned by [`HttpServer::serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// Connections that were open when shutdown began and closed on their own in time.
    pub connections_drained: usize,
    /// Connections cut because `shutdown_drain_timeout_ms` ran out.
    pub connections_aborted: usize,
}

/// What every connection and request shares: the routes, the limits and the metrics.
pub(crate) struct Shared<S> {
    pub(crate) router: Router<S>,
    pub(crate) config: HttpConfig,
    pub(crate) metrics: HttpMetrics,
    pub(crate) registry: Registry,
    /// The OpenAPI document, serialized once at start-up.
    pub(crate) openapi_json: Bytes,
    pub(crate) request_ids: RequestIds,
}

/// Request ids: a per-server prefix (so ids from two runs differ) and a counter.
pub(crate) struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos() ^ (elapsed.as_secs() as u32));
        Self { prefix: nanos ^ std::process::id().rotate_left(16), next: AtomicU64::new(1) }
    }

    pub(crate) fn next(&self) -> String {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{number:x}", self.prefix)
    }
}

/// The HTTPS server: bound, not yet serving.
pub struct HttpServer<S> {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared<S>>,
}

impl<S: Send + Sync + 'static> HttpServer<S> {
    /// Binds `addr` and prepares TLS and the routes. `registry` is the application's Prometheus
    /// registry with its own collectors (engine, wire, query) already registered; the HTTP
    /// metrics are added to it and `/metrics` serves all of it.
    pub async fn bind(
        addr: SocketAddr,
        identity: TlsIdentity,
        config: HttpConfig,
        router: Router<S>,
        mut registry: Registry,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        let tls = tls_config(identity)?;
        let openapi_json = Bytes::from(serde_json::to_vec(router.openapi()).map_err(ServerError::OpenApi)?);
        let listener = TcpListener::bind(addr).await.map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr, source })?;
        let metrics = HttpMetrics::register(&mut registry);
        let shared =
            Shared { router, config, metrics, registry, openapi_json, request_ids: RequestIds::new() };
        Ok(Self { listener, local_addr, acceptor: TlsAcceptor::from(tls), shared: Arc::new(shared) })
    }

    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// for up to `shutdown_drain_timeout_ms`, cuts what is left and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> ShutdownSummary {
        let Self { listener, local_addr, acceptor, shared } = self;
        let config = &shared.config;
        let permits = Arc::new(Semaphore::new(config.connections_max));
        let (stop_sender, stop_receiver) = watch::channel(false);
        let mut connections = JoinSet::new();
        tracing::info!(%local_addr, "HTTPS server listening");
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            // Reap finished connection tasks so the set stays as small as the open connections.
            while connections.try_join_next().is_some() {}
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            shared.metrics.connections_accepted.inc();
            let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                shared.metrics.connections_rejected.inc();
                tracing::debug!(%peer, "connections_max reached; closing the new connection");
                drop(tcp);
                continue;
            };
            let shared = Arc::clone(&shared);
            let acceptor = acceptor.clone();
            let stop = stop_receiver.clone();
            connections.spawn(async move {
                shared.metrics.connections_open.inc();
                serve_connection(&shared, acceptor, tcp, peer, stop).await;
                shared.metrics.connections_open.dec();
                drop(permit);
            });
        }
        drop(listener);
        let open = connections.len();
        tracing::info!(open_connections = open, "HTTPS server stopping: draining connections");
        // Every connection task watches this and starts its graceful shutdown.
        let _ = stop_sender.send(true);
        let drain = Duration::from_millis(config.shutdown_drain_timeout_ms);
        let drained =
            tokio::time::timeout(drain, async { while connections.join_next().await.is_some() {} }).await;
        let aborted = if drained.is_ok() { 0 } else { connections.len() };
        connections.abort_all();
        while connections.join_next().await.is_some() {}
        tracing::info!(drained = open - aborted, aborted, "HTTPS server stopped");
        ShutdownSummary { connections_drained: open - aborted, connections_aborted: aborted }
    }
}

/// Pause after a failed `accept` (e.g. EMFILE) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

fn tls_config(identity: TlsIdentity) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // TLS 1.3 first: rustls picks the highest version both sides support.
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain, identity.key)
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn serve_connection<S: Send + Sync + 'static>(
    shared: &Arc<Shared<S>>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    // Small answers should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let handshake = Duration::from_millis(config.tls_handshake_timeout_ms);
    let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.tls_handshake_failures.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Arc::new(ConnectionActivity::new());
    let service = {
        let shared = Arc::clone(shared);
        let activity = Arc::clone(&activity);
        service_fn(move |request| pipeline::handle(Arc::clone(&shared), activity.begin(), peer, request))
    };
    let io = TokioIo::new(tls);
    // The protocol comes from ALPN, never from sniffing the first bytes, so a silent client
    // is always under a timer (the header read timeout on HTTP/1.1, PING/idle on HTTP/2).
    let result = if is_h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_streams_max)
            .max_header_list_size(u32::try_from(config.header_bytes_max).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_millis(config.h2_keep_alive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(config.h2_keep_alive_interval_ms));
        let connection = builder.serve_connection(io, service);
        drive(connection, |connection| connection.graceful_shutdown(), &activity, shared, stop).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms))
            .max_header_size(config.header_bytes_max)
            .keep_alive(true);
        if config.headers_max != HYPER_HEADERS_ON_STACK {
            builder.max_headers(config.headers_max);
        }
        let connection = builder.serve_connection(io, service);
        drive(connection, |connection| connection.graceful_shutdown(), &activity, shared, stop).await
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Runs a connection to its end; starts its graceful shutdown when the server stops or when
/// it has had nothing in flight for `idle_timeout_ms`, and cuts it when a response body makes
/// no progress for `response_stall_timeout_ms`.
async fn drive<C, S>(
    connection: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    activity: &ConnectionActivity,
    shared: &Shared<S>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let config = &shared.config;
    let idle_timeout = Duration::from_millis(config.idle_timeout_ms);
    let stall_timeout = Duration::from_millis(config.response_stall_timeout_ms);
    let check_period = (idle_timeout.min(stall_timeout) / 4).max(ACTIVITY_CHECK_MIN);
    let mut activity_check = tokio::time::interval(check_period);
    activity_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    let mut idle_close_started: Option<Instant> = None;
    if *stop.borrow_and_update() {
        graceful_shutdown(connection.as_mut());
        closing = true;
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            // A dropped sender means the server is gone: close as well.
            _ = stop.changed(), if !closing => {
                graceful_shutdown(connection.as_mut());
                closing = true;
            }
            _ = activity_check.tick() => {
                if activity.is_stalled_for(stall_timeout) {
                    // Dropping the connection closes the socket; the stuck body goes with it.
                    shared.metrics.responses_stalled.inc();
                    tracing::info!("response made no progress for response_stall_timeout_ms; cutting the connection");
                    return Ok(());
                }
                if activity.is_idle_for(idle_timeout) {
                    match idle_close_started {
                        None => {
                            if !closing {
                                graceful_shutdown(connection.as_mut());
                                closing = true;
                            }
                            idle_close_started = Some(Instant::now());
                        }
                        // A peer that never completes the close (e.g. an HTTP/2 client that
                        // never sent its preface) gets one more idle period, then is dropped.
                        Some(started) if started.elapsed() >= idle_timeout => return Ok(()),
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// Finest granularity of the idle and stall checks.
const ACTIVITY_CHECK_MIN: Duration = Duration::from_millis(10);

/// In-flight requests of one connection, the responses sending their body, and when each last
/// moved.
pub(crate) struct ConnectionActivity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` of the last request start or end.
    last_change_ms: AtomicU64,
    /// Responses whose head is out and whose body is not finished.
    sending: AtomicUsize,
    /// Milliseconds after `started` of the last body chunk handed to the connection (or the
    /// last response that started sending).
    last_progress_ms: AtomicU64,
}

impl ConnectionActivity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_change_ms: AtomicU64::new(0),
            sending: AtomicUsize::new(0),
            last_progress_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_change_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn progress(&self) {
        self.last_progress_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight { activity: Arc::clone(self), sending: false }
    }

    fn is_stalled_for(&self, stall_timeout: Duration) -> bool {
        if self.sending.load(Ordering::Acquire) == 0 {
            return false;
        }
        let last_progress = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last_progress) >= stall_timeout
    }

    fn is_idle_for(&self, idle_timeout: Duration) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let last_change = Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last_change) >= idle_timeout
    }
}

/// One request in flight on a connection, from its head until its response body is done.
pub(crate) struct InFlight {
    activity: Arc<ConnectionActivity>,
    /// Whether this response counts in `ConnectionActivity::sending`.
    sending: bool,
}

impl InFlight {
    /// The response head is out; its body starts moving.
    pub(crate) fn start_body(&mut self) {
        if !self.sending {
            self.sending = true;
            self.activity.sending.fetch_add(1, Ordering::AcqRel);
            self.activity.progress();
        }
    }

    /// A body chunk was handed to the connection.
    pub(crate) fn progress(&self) {
        self.activity.progress();
    }

    /// The body is complete (or failed): it can no longer stall.
    pub(crate) fn finish_body(&mut self) {
        if self.sending {
            self.sending = false;
            self.activity.sending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.finish_body();
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.activity.touch();
    }
}
