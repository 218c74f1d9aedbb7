//! The QUIC ingest server: a quinn endpoint on rustls that authenticates buoys (HELLO), reads
//! one BATCH per bidirectional stream, hands it to the engine and answers the durable outcome.
//!
//! Task layout (all on the caller's Tokio runtime):
//!
//! - one accept task: takes each `Incoming`, refuses it outright above `incoming_max`, asks
//!   unvalidated addresses for a QUIC Retry while more than `retry_handshakes_threshold`
//!   connections are pending (handshake or HELLO), and spawns a connection task;
//! - one task per connection: handshake (bounded by `handshake_timeout_ms`), HELLO (bounded by
//!   `hello_deadline_ms`), then the batch loop, which accepts streams up to QUIC's
//!   `MAX_STREAMS` (`streams_per_connection_max`) and spawns one task per batch stream;
//! - one task per batch stream: read the frame (bounded by `stream_deadline_ms`), decode into a
//!   `ReadingBatch`, `Engine::ingest`, await the ticket (a future: no Tokio worker ever blocks
//!   on an fsync), write the ACK.
//!
//! Memory is bounded by the QUIC windows: at most `connection_receive_window_bytes` of
//! unread data per connection, and at most `streams_per_connection_max` frames
//! (each ≤ `frame_bytes_max`) being decoded or ingested per connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewave_engine::{BuoyId, Engine, IngestOutcome};
use quinn::{Connection, Incoming, RecvStream, SendStream, VarInt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout, timeout_at};

use crate::auth::{DeviceAuthenticator, Refusal};
use crate::evidence::{RefusalAudit, RefusalEvidence};
use crate::io::{ReadFrameError, read_frame, reset_stream, write_frame};
use crate::metrics::{Metrics, ServerMetrics};
use crate::tls::ServerIdentity;
use crate::{
    ALPN, Accepted, Ack, AckStatus, BATCH_READINGS_MAX_WIRE, ConnectionCloseCode, Disposition,
    FRAME_BYTES_MAX, FrameType, HEADER_BYTES, HELLO_PAYLOAD_BYTES_MAX, Hello, MetricDictionary, RefuseReason,
    Refused, RejectReason, StreamErrorCode, UDP_BUFFER_BYTES_DEFAULT, decode_batch, peek_batch_seq,
};

/// How long the server waits for the client to acknowledge a REFUSED or the last ACK before it
/// closes the connection, so the frame is not discarded by the close.
pub const FRAME_LINGER_MS: u64 = 1_000;
/// How long `shutdown` waits, after closing the endpoint, for connection tasks to exit and the
/// endpoint to go idle.
pub const SHUTDOWN_EXIT_MS: u64 = 3_000;

/// Every limit of the server (PROTOCOL.md §5, *Server settings*). `Default` gives the
/// documented defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// UDP address to listen on. Default `127.0.0.1:4433` (loopback only: exposing the port is
    /// an explicit choice of the operator).
    pub listen: SocketAddr,
    /// The QUIC + TLS handshake must finish within this. Default 10,000.
    pub handshake_timeout_ms: u64,
    /// From handshake completion to a complete HELLO; else close `HELLO_TIMEOUT`. Default 5,000.
    pub hello_deadline_ms: u64,
    /// From a batch stream's opening to its FIN; else reset `STREAM_TIMEOUT`. Default 10,000.
    pub stream_deadline_ms: u64,
    /// QUIC max idle timeout. Default 30,000.
    pub idle_timeout_ms: u64,
    /// Connections past ACCEPTED; a HELLO beyond it is REFUSED `SERVER_BUSY`. Default 10,000.
    pub connections_max: usize,
    /// Hard cap on pending connections (in their handshake or HELLO phase) plus open
    /// connections: beyond it a new connection
    /// attempt is refused before the handshake (QUIC `CONNECTION_REFUSED`), and quinn keeps at
    /// most this many un-handled attempts. Default 12,000.
    pub incoming_max: usize,
    /// While more connections than this are pending (handshake or HELLO), an attempt from an
    /// address not yet validated is answered with a QUIC Retry (address validation), so a
    /// flood of spoofed Initial packets costs one stateless packet each. Default 256.
    pub retry_handshakes_threshold: usize,
    /// Concurrent bidirectional streams per connection (QUIC `MAX_STREAMS`). Default 64.
    pub streams_per_connection_max: u32,
    /// Receive window per stream, ≥ `frame_bytes_max`. Default 2 MiB.
    pub stream_receive_window_bytes: u32,
    /// Receive window per connection (quinn's default is unlimited; never here). Default 16 MiB.
    pub connection_receive_window_bytes: u32,
    /// Largest frame taken, header included, announced in ACCEPTED. Default and maximum
    /// [`FRAME_BYTES_MAX`] (1,245,206).
    pub frame_bytes_max: u32,
    /// Most readings per BATCH, announced in ACCEPTED; more is rejected `TOO_MANY_READINGS`.
    /// Default and maximum 65,536.
    pub batch_readings_max: u32,
    /// Malformed frames per connection before close `TOO_MANY_VIOLATIONS` (the connection is
    /// closed at the `violations_max + 1`-th). Default 3.
    pub violations_max: u32,
    /// `retry_after_ms` of a REFUSED `SERVER_BUSY`. Default 1,000.
    pub busy_retry_after_ms: u32,
    /// While the engine throttles ingest (its buffer is full, or its compaction debt is past
    /// `compaction_debt_slowdown_generations`: `Engine::ingest_throttled`), how long a received
    /// batch waits for room (a flush, a compaction) before it is handed over, and answered
    /// `busy` if still refused: the client's in-flight window then throttles it (backpressure)
    /// instead of a resend every `retry_after_ms`, which costs both sides a transfer and a
    /// decode per refusal. 0 answers at once; at most 60,000. Default 2,000.
    pub busy_wait_ms: u64,
    /// Frame bytes of batches waiting that way, over all connections (a batch waits before it
    /// is decoded); past it a batch is answered `busy` at once, so waiting never holds more
    /// memory than this. Default 128 MiB.
    pub busy_wait_bytes_max: usize,
    /// `retry_after_ms` of a REFUSED `SHUTTING_DOWN`. Default 5,000.
    pub shutdown_retry_after_ms: u32,
    /// On shutdown, how long in-flight batches may take to be read, stored and answered before
    /// the connections are closed anyway. Default 10,000.
    pub drain_deadline_ms: u64,
    /// Receive and send buffer asked of the UDP socket (`SO_RCVBUF` / `SO_SNDBUF`): datagrams
    /// that arrive while the endpoint's task waits for a core queue here, and what does not fit
    /// is dropped and recovered late by QUIC loss detection. The kernel caps it (Linux:
    /// `net.core.rmem_max` / `wmem_max`; the server warns at start when it got less). Within
    /// [`crate::UDP_BUFFER_BYTES_MIN`]`..=`[`crate::UDP_BUFFER_BYTES_MAX`]; default
    /// [`UDP_BUFFER_BYTES_DEFAULT`] (4 MiB).
    pub udp_buffer_bytes: usize,
    /// The stateless-reset secret (`StatelessResetKey`): with one kept on disk, a server
    /// restarted after a crash ends its predecessor's connections at their next packet instead
    /// of leaving them to the idle timeout. `None` (the default): a random one per start.
    pub stateless_reset_key: Option<crate::StatelessResetKey>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            handshake_timeout_ms: 10_000,
            hello_deadline_ms: 5_000,
            stream_deadline_ms: 10_000,
            idle_timeout_ms: 30_000,
            connections_max: 10_000,
            incoming_max: 12_000,
            retry_handshakes_threshold: 256,
            streams_per_connection_max: 64,
            stream_receive_window_bytes: 2 * 1024 * 1024,
            connection_receive_window_bytes: 16 * 1024 * 1024,
            frame_bytes_max: FRAME_BYTES_MAX as u32,
            batch_readings_max: BATCH_READINGS_MAX_WIRE as u32,
            violations_max: 3,
            busy_retry_after_ms: 1_000,
            busy_wait_ms: 2_000,
            busy_wait_bytes_max: 128 << 20,
            shutdown_retry_after_ms: 5_000,
            drain_deadline_ms: 10_000,
            udp_buffer_bytes: UDP_BUFFER_BYTES_DEFAULT,
            stateless_reset_key: None,
        }
    }
}

impl ServerConfig {
    /// Checks the settings against each other and the protocol's bounds.
    pub fn validate(&self) -> Result<(), ServerError> {
        let bad = |what: &str| Err(ServerError::Config(what.to_owned()));
        let frame_min = HEADER_BYTES + crate::BATCH_FIXED_BYTES + crate::BATCH_COLUMN_BYTES_PER_READING;
        let frame = self.frame_bytes_max as usize;
        if !(frame_min..=FRAME_BYTES_MAX).contains(&frame) {
            return bad("frame_bytes_max must be within 41..=1245206");
        }
        if self.batch_readings_max == 0 || self.batch_readings_max as usize > BATCH_READINGS_MAX_WIRE {
            return bad("batch_readings_max must be within 1..=65536");
        }
        if self.stream_receive_window_bytes < self.frame_bytes_max {
            return bad("stream_receive_window_bytes must be at least frame_bytes_max");
        }
        if self.connection_receive_window_bytes < self.stream_receive_window_bytes {
            return bad("connection_receive_window_bytes must be at least stream_receive_window_bytes");
        }
        if self.streams_per_connection_max == 0 {
            return bad("streams_per_connection_max must be at least 1");
        }
        if self.connections_max == 0 || self.incoming_max < self.connections_max {
            return bad("connections_max must be at least 1 and incoming_max at least connections_max");
        }
        let times = [
            self.handshake_timeout_ms,
            self.hello_deadline_ms,
            self.stream_deadline_ms,
            self.idle_timeout_ms,
            self.drain_deadline_ms,
        ];
        if times.iter().any(|&t| t == 0 || t > 24 * 3_600_000) {
            return bad("every timeout must be within 1 ms..=24 h");
        }
        if self.busy_wait_ms > 60_000 {
            return bad("busy_wait_ms must be within 0..=60000");
        }
        if let Err(what) = crate::udp::check_buffer_bytes(self.udp_buffer_bytes) {
            return bad(what);
        }
        Ok(())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The settings are invalid (operator mistake).
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// The certificate or key was refused by TLS (operator mistake: wrong key for the
    /// certificate, unsupported key type).
    #[error("TLS identity refused: {0}")]
    Tls(String),
    /// The UDP socket could not be bound (address in use, no permission, no Tokio runtime).
    #[error("binding QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What `shutdown` achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every connection past ACCEPTED drained (in-flight batches answered) within
    /// `drain_deadline_ms`.
    pub drained: bool,
    /// Connection tasks left when the endpoint was closed: 0 unless a task ignored the close.
    pub tasks_aborted: usize,
}

/// State shared by the handle and every task.
struct Control {
    config: ServerConfig,
    metrics: Metrics,
    /// Connections in their handshake or HELLO phase (for Retry and the hard cap).
    handshakes: AtomicUsize,
    /// Connections past ACCEPTED (for `connections_max` and the drain).
    sessions: AtomicUsize,
    sessions_changed: Notify,
    /// Bytes of batches waiting for engine room (bounded by `busy_wait_bytes_max`).
    busy_waiting_bytes: AtomicUsize,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    /// Open connections by buoy, for `disconnect_buoy`. Touched at ACCEPTED and at close only.
    registry: Mutex<HashMap<BuoyId, HashMap<usize, Connection>>>,
    /// Warn lines and per-address audit of refused HELLOs (`evidence`); lives with the server.
    evidence: RefusalEvidence,
}

impl Control {
    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<BuoyId, HashMap<usize, Connection>>> {
        // Every update is one insert/remove: a panic elsewhere cannot leave it inconsistent.
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the tasks need besides `Control`; owned by tasks only, so the engine is released once
/// the server's tasks are gone.
struct Core {
    control: Arc<Control>,
    engine: Engine,
    auth: Arc<dyn DeviceAuthenticator>,
}

/// A running server. Cheap to clone. Dropping every handle does not stop the server; call
/// [`ServerHandle::shutdown`].
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    accept_task: Arc<Mutex<Option<tokio::task::JoinHandle<usize>>>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.local_addr).finish()
    }
}

/// Starts the server on the current Tokio runtime: binds `config.listen`, and serves until
/// [`ServerHandle::shutdown`]. `engine` must stay open while the server runs; after `shutdown`
/// returns the caller flushes and shuts down the engine.
pub async fn start(
    config: ServerConfig,
    identity: &ServerIdentity,
    engine: Engine,
    auth: Arc<dyn DeviceAuthenticator>,
) -> Result<ServerHandle, ServerError> {
    config.validate()?;
    let quinn_config = quinn_server_config(&config, identity)?;
    let endpoint_config = config
        .stateless_reset_key
        .as_ref()
        .map_or_else(quinn::EndpointConfig::default, crate::StatelessResetKey::endpoint_config);
    let (endpoint, buffers) = crate::udp::endpoint_with(
        config.listen,
        config.udp_buffer_bytes,
        Some(quinn_config),
        endpoint_config,
    )
    .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    if buffers.below(config.udp_buffer_bytes) {
        tracing::warn!(
            requested = config.udp_buffer_bytes,
            recv_bytes = buffers.recv_bytes,
            send_bytes = buffers.send_bytes,
            "the kernel granted smaller UDP buffers than udp_buffer_bytes: datagrams that arrive \
             while the server is busy may be dropped and their acks delayed (Linux: raise \
             net.core.rmem_max and net.core.wmem_max)"
        );
    }
    let local_addr =
        endpoint.local_addr().map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let (shutdown_tx, _) = watch::channel(false);
    let control = Arc::new(Control {
        config,
        metrics: Metrics::default(),
        handshakes: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        sessions_changed: Notify::new(),
        busy_waiting_bytes: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        shutdown_tx,
        registry: Mutex::new(HashMap::new()),
        evidence: RefusalEvidence::new(),
    });
    let core = Arc::new(Core { control: control.clone(), engine, auth });
    let accept_task = tokio::spawn(accept_loop(core, endpoint.clone()));
    tracing::info!(%local_addr, "QUIC ingest server listening");
    Ok(ServerHandle { control, endpoint, local_addr, accept_task: Arc::new(Mutex::new(Some(accept_task))) })
}

fn quinn_server_config(
    config: &ServerConfig,
    identity: &ServerIdentity,
) -> Result<quinn::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0-RTT off: a replayed 0-RTT batch would be a second write. rustls' default is already 0;
    // set it anyway so a change of default cannot turn it on.
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .map_err(|e| ServerError::Config(format!("idle_timeout_ms: {e}")))?;
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.streams_per_connection_max))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_receive_window_bytes))
        .receive_window(VarInt::from_u32(config.connection_receive_window_bytes))
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(None);
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    server.migration(false);
    server.max_incoming(config.incoming_max);
    Ok(server)
}

impl ServerHandle {
    /// The bound UDP address (with the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> ServerMetrics {
        self.control.metrics.snapshot()
    }

    /// Hands in what records addresses that keep being refused (the binary writes them to the
    /// audit log; `evidence` module). Returns false, changing nothing, if one was set before.
    pub fn set_refusal_audit(&self, audit: Arc<dyn RefusalAudit>) -> bool {
        self.control.evidence.set_audit(audit)
    }

    /// Addresses reported to the refusal audit hook since start.
    pub fn refusals_audited(&self) -> u64 {
        self.control.evidence.audited()
    }

    /// The settings in force.
    pub fn config(&self) -> &ServerConfig {
        &self.control.config
    }

    /// Closes every open connection of `buoy` with `DEVICE_REVOKED` (in-flight batches on them
    /// are abandoned; the client must not resend them to this server). Revoke the device in the
    /// authenticator first so its next HELLO is refused. Returns the number of connections
    /// closed.
    pub fn disconnect_buoy(&self, buoy: &BuoyId) -> usize {
        let connections: Vec<Connection> =
            self.control.registry().get(buoy).map(|m| m.values().cloned().collect()).unwrap_or_default();
        for connection in &connections {
            close(&self.control, connection, ConnectionCloseCode::DeviceRevoked, "device revoked");
        }
        connections.len()
    }

    /// Graceful shutdown: new HELLOs are refused `SHUTTING_DOWN`; each connection stops taking
    /// new streams, answers the batches it has started reading (bounded by
    /// `drain_deadline_ms`), and is closed `GOING_AWAY`; then the endpoint closes and goes idle.
    /// Idempotent. The engine is not touched: the caller flushes and shuts it down afterwards.
    pub async fn shutdown(&self) -> ShutdownReport {
        let control = &self.control;
        control.shutting_down.store(true, Ordering::Release);
        control.shutdown_tx.send_replace(true);
        let drain_until = Instant::now()
            + Duration::from_millis(control.config.drain_deadline_ms)
            + Duration::from_millis(FRAME_LINGER_MS);
        let drained = timeout_at(drain_until, async {
            loop {
                let changed = control.sessions_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if control.sessions.load(Ordering::Acquire) == 0 {
                    return;
                }
                changed.await;
            }
        })
        .await
        .is_ok();
        self.endpoint.close(ConnectionCloseCode::GoingAway.into(), b"server shutting down");
        let task = self.accept_task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let mut tasks_aborted = 0;
        if let Some(task) = task {
            match task.await {
                Ok(aborted) => tasks_aborted = aborted,
                Err(e) => tracing::error!("accept task failed: {e}"),
            }
        }
        let _ = timeout(Duration::from_millis(SHUTDOWN_EXIT_MS), self.endpoint.wait_idle()).await;
        tracing::info!(drained, tasks_aborted, "QUIC ingest server stopped");
        ShutdownReport { drained, tasks_aborted }
    }
}

impl From<ConnectionCloseCode> for VarInt {
    fn from(code: ConnectionCloseCode) -> Self {
        VarInt::from_u32(code as u32)
    }
}

fn close(control: &Control, connection: &Connection, code: ConnectionCloseCode, reason: &str) {
    control.metrics.closed(code);
    connection.close(code.into(), reason.as_bytes());
}

/// Counts a connection as pending (handshake or HELLO) while alive.
struct HandshakeGuard<'a>(&'a AtomicUsize);

impl Drop for HandshakeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connection attempts until the endpoint closes; returns the number of connection
/// tasks that had to be aborted afterwards.
async fn accept_loop(core: Arc<Core>, endpoint: quinn::Endpoint) -> usize {
    let control = &core.control;
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let in_progress = control.handshakes.load(Ordering::Acquire);
                if in_progress + control.sessions.load(Ordering::Acquire) >= control.config.incoming_max {
                    control.metrics.incoming_refused();
                    incoming.refuse();
                    continue;
                }
                if in_progress >= control.config.retry_handshakes_threshold
                    && !incoming.remote_address_validated()
                    && incoming.may_retry()
                {
                    control.metrics.incoming_retried();
                    // Fails only if the incoming was already validated, checked above.
                    let _ = incoming.retry();
                    continue;
                }
                control.handshakes.fetch_add(1, Ordering::AcqRel);
                tasks.spawn(serve_connection(core.clone(), incoming));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // The endpoint is closed: every connection got CONNECTION_CLOSE, so the tasks end promptly.
    let exit = timeout(Duration::from_millis(SHUTDOWN_EXIT_MS), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if exit.is_err() {
        let left = tasks.len();
        tracing::warn!(tasks = left, "connection tasks did not exit after close; aborting them");
        tasks.shutdown().await;
        return left;
    }
    0
}

/// One connection, from handshake to close.
async fn serve_connection(core: Arc<Core>, incoming: Incoming) {
    let control = &core.control;
    // Counted as pending from the first packet until ACCEPTED or refusal, so connections that
    // finish the handshake but never send HELLO count against `incoming_max` too.
    let pending = HandshakeGuard(&control.handshakes);
    let connection = {
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                control.metrics.handshake_failed();
                tracing::debug!("handshake refused: {e}");
                return;
            }
        };
        match timeout(Duration::from_millis(control.config.handshake_timeout_ms), connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => {
                control.metrics.handshake_failed();
                tracing::debug!("handshake failed: {e}");
                return;
            }
            Err(_) => {
                control.metrics.handshake_failed();
                tracing::debug!("handshake timed out");
                return;
            }
        }
    };
    let session = hello(&core, &connection).await;
    drop(pending);
    let Some(session) = session else { return };
    let session = Arc::new(session);
    let id = connection.stable_id();
    serve_batches(&core, &connection, &session).await;
    control.registry().get_mut(&session.buoy).map(|m| m.remove(&id));
    {
        let mut registry = control.registry();
        if registry.get(&session.buoy).is_some_and(HashMap::is_empty) {
            registry.remove(&session.buoy);
        }
    }
    control.metrics.connection_closed();
    control.sessions.fetch_sub(1, Ordering::AcqRel);
    control.sessions_changed.notify_waiters();
}

/// What a connection is bound to after ACCEPTED.
struct Session {
    buoy: BuoyId,
    dictionary: MetricDictionary,
    violations: AtomicU32,
}

/// Runs the HELLO exchange. `Some` once ACCEPTED was sent (the session is counted and
/// registered); `None` when the connection was refused or closed.
async fn hello(core: &Core, connection: &Connection) -> Option<Session> {
    let control = &core.control;
    let deadline = Instant::now() + Duration::from_millis(control.config.hello_deadline_ms);
    let (mut send, mut recv) = match timeout_at(deadline, connection.accept_bi()).await {
        Err(_) => {
            close(control, connection, ConnectionCloseCode::HelloTimeout, "no HELLO within the deadline");
            return None;
        }
        Ok(Err(_)) => return None,
        Ok(Ok(streams)) => streams,
    };
    let read = tokio::select! {
        read = timeout_at(deadline, read_frame(&mut recv, FrameType::Hello, HEADER_BYTES + HELLO_PAYLOAD_BYTES_MAX)) => read,
        second = connection.accept_bi() => {
            if second.is_ok() {
                close(control, connection, ConnectionCloseCode::ProtocolViolation, "stream opened before ACCEPTED");
            }
            return None;
        }
    };
    let frame = match read {
        Err(_) => {
            // A half-read HELLO: the close ends stream 0 (no reset first; see protocol_violation).
            close(control, connection, ConnectionCloseCode::HelloTimeout, "no HELLO within the deadline");
            return None;
        }
        Ok(Err(ReadFrameError::Frame(e))) => {
            protocol_violation(control, connection, &e);
            return None;
        }
        Ok(Err(_)) => return None,
        Ok(Ok(frame)) => frame,
    };
    control.metrics.bytes_in(frame.len());
    let hello = match Hello::decode(&frame) {
        Ok(hello) => hello,
        Err(e) => match e.disposition() {
            Disposition::Reject(_) => {
                let message = format!("bad metric dictionary: {e}");
                refuse(control, connection, send, RefuseReason::BadDictionary, 0, &message).await;
                return None;
            }
            Disposition::ResetStream(_) => {
                protocol_violation(control, connection, &e);
                return None;
            }
        },
    };
    drop(frame);
    if control.shutting_down.load(Ordering::Acquire) {
        let retry = control.config.shutdown_retry_after_ms;
        refuse(control, connection, send, RefuseReason::ShuttingDown, retry, "server shutting down").await;
        return None;
    }
    if hello.token.is_empty() {
        refuse(control, connection, send, RefuseReason::TokenMissing, 0, "no device token").await;
        return None;
    }
    // The engine has no single-buoy lookup; one HELLO per connection makes this scan cheap
    // enough next to the TLS handshake it follows.
    let registered = |buoy: &str| core.engine.buoys().iter().any(|info| *info.id == *buoy);
    let buoy = match core.auth.authenticate(&hello.token) {
        Ok(buoy) => buoy,
        // A verified token of a revoked device whose buoy is not registered (any more): the
        // registration is what the buoy must fix first (PROTOCOL.md §3.4, order of checks).
        Err(Refusal::DeviceRevoked(buoy)) if BuoyId::new(&buoy).is_ok() && !registered(&buoy) => {
            let message = format!("buoy {buoy} is not registered");
            refuse(control, connection, send, RefuseReason::BuoyNotRegistered, 0, &message).await;
            return None;
        }
        Err(refusal) => {
            refuse(control, connection, send, refusal.reason(), 0, &refusal.to_string()).await;
            return None;
        }
    };
    if !registered(buoy.as_str()) {
        let message = format!("buoy {buoy} is not registered");
        refuse(control, connection, send, RefuseReason::BuoyNotRegistered, 0, &message).await;
        return None;
    }
    let connections_max = control.config.connections_max;
    let reserved = control
        .sessions
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < connections_max).then_some(n + 1))
        .is_ok();
    if !reserved {
        let retry = control.config.busy_retry_after_ms;
        refuse(control, connection, send, RefuseReason::ServerBusy, retry, "at the connection limit").await;
        return None;
    }
    control.metrics.connection_opened();
    control.registry().entry(buoy.clone()).or_default().insert(connection.stable_id(), connection.clone());
    // A revocation between `authenticate` and the registration above would miss this
    // connection in `disconnect_buoy`; asking again closes that gap.
    if let Err(refusal) = core.auth.authenticate(&hello.token) {
        close(control, connection, ConnectionCloseCode::DeviceRevoked, &refusal.to_string());
    }
    let accepted = Accepted {
        buoy: buoy.clone(),
        frame_bytes_max: control.config.frame_bytes_max,
        batch_readings_max: control.config.batch_readings_max,
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + crate::ACCEPTED_PAYLOAD_BYTES_MAX);
    // Cannot fail: the buoy id is valid and the limits were validated with the config.
    if accepted.encode(&mut out).is_ok() && write_frame(&mut send, &out).await.is_ok() {
        control.metrics.bytes_out(out.len());
    }
    tracing::debug!(%buoy, remote = %connection.remote_address(), "buoy connected");
    Some(Session { buoy, dictionary: hello.dictionary, violations: AtomicU32::new(0) })
}

/// A malformed HELLO: closes the connection `PROTOCOL_VIOLATION` (the close's reason names the
/// fault). Stream 0 is not reset first: a close discards frames still queued, so a reset sent
/// just before it would never reach the client (PROTOCOL.md §3.2); the close ends stream 0.
fn protocol_violation(control: &Control, connection: &Connection, e: &crate::Error) {
    close(control, connection, ConnectionCloseCode::ProtocolViolation, &format!("bad HELLO: {e}"));
}

/// Sends REFUSED, waits (bounded) for the client to get it, then closes `HELLO_REFUSED`.
async fn refuse(
    control: &Control,
    connection: &Connection,
    mut send: SendStream,
    reason: RefuseReason,
    retry_after_ms: u32,
    message: &str,
) {
    control.metrics.refused(reason);
    control.evidence.refused(connection.remote_address(), reason, message);
    let mut message = message.to_owned();
    if message.len() > crate::REFUSED_MESSAGE_BYTES_MAX {
        let mut end = crate::REFUSED_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let refused = Refused { reason, retry_after_ms, message };
    let mut out = Vec::new();
    if refused.encode(&mut out).is_ok() && write_frame(&mut send, &out).await.is_ok() {
        control.metrics.bytes_out(out.len());
        let _ = timeout(Duration::from_millis(FRAME_LINGER_MS), send.stopped()).await;
    }
    close(control, connection, ConnectionCloseCode::HelloRefused, "HELLO refused");
}

/// The batch loop of an accepted connection; returns when the connection is gone or, on
/// shutdown, after draining and closing it `GOING_AWAY`.
async fn serve_batches(core: &Arc<Core>, connection: &Connection, session: &Arc<Session>) {
    let control = &core.control;
    let mut shutdown_rx = control.shutdown_tx.subscribe();
    let mut tasks = JoinSet::new();
    let shutting_down = loop {
        tokio::select! {
            changed = shutdown_rx.wait_for(|stop| *stop) => break changed.is_ok(),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tasks.spawn(serve_batch(core.clone(), session.clone(), connection.clone(), send, recv));
                }
                Err(_) => break false,
            },
        }
    };
    if !shutting_down {
        // The connection is gone: nobody can read an ACK any more.
        tasks.shutdown().await;
        return;
    }
    let drain = Duration::from_millis(control.config.drain_deadline_ms);
    let drained = timeout(drain, async { while tasks.join_next().await.is_some() {} }).await.is_ok();
    if !drained {
        tracing::warn!(buoy = %session.buoy, batches = tasks.len(), "drain deadline passed; batches abandoned");
        tasks.shutdown().await;
    }
    close(control, connection, ConnectionCloseCode::GoingAway, "server shutting down");
}

/// What to do with a batch stream once its outcome is known.
enum Answer {
    Ack(Ack),
    /// Reset with this code; `fault` also closes the connection `INTERNAL_ERROR`.
    Reset {
        code: StreamErrorCode,
        violation: bool,
        fault: bool,
    },
}

async fn serve_batch(
    core: Arc<Core>,
    session: Arc<Session>,
    connection: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let control = &core.control;
    let deadline = Duration::from_millis(control.config.stream_deadline_ms);
    let frame_bytes_max = control.config.frame_bytes_max as usize;
    let answer = match timeout(deadline, read_frame(&mut recv, FrameType::Batch, frame_bytes_max)).await {
        Err(_) => Answer::Reset { code: StreamErrorCode::StreamTimeout, violation: false, fault: false },
        Ok(Err(ReadFrameError::Frame(e))) => match e.disposition() {
            Disposition::ResetStream(code) => Answer::Reset { code, violation: true, fault: false },
            // Not produced by `read_frame` (it checks framing only); treat as malformed.
            Disposition::Reject(_) => {
                Answer::Reset { code: StreamErrorCode::MalformedFrame, violation: true, fault: false }
            }
        },
        // Reset by the client or the connection is gone: nothing to answer.
        Ok(Err(_)) => return,
        Ok(Ok(frame)) => {
            control.metrics.bytes_in(frame.len());
            ingest(&core, &session, &frame).await
        }
    };
    match answer {
        Answer::Ack(ack) => {
            let mut out = Vec::with_capacity(HEADER_BYTES + crate::ACK_PAYLOAD_BYTES);
            ack.encode(&mut out);
            if write_frame(&mut send, &out).await.is_ok() {
                control.metrics.ack(&ack.status);
                control.metrics.bytes_out(out.len());
                // Keep the task (and so the drain on shutdown) until the client has the ACK.
                let _ = timeout(Duration::from_millis(FRAME_LINGER_MS), send.stopped()).await;
            }
        }
        Answer::Reset { code, violation, fault } => {
            control.metrics.reset(code);
            reset_stream(&mut send, &mut recv, code);
            if fault {
                close(control, &connection, ConnectionCloseCode::InternalError, "server fault; resend");
            } else if violation {
                let count = session.violations.fetch_add(1, Ordering::AcqRel) + 1;
                if count > control.config.violations_max {
                    close(
                        control,
                        &connection,
                        ConnectionCloseCode::TooManyViolations,
                        "too many bad frames",
                    );
                }
            }
        }
    }
}

/// Bytes counted in a shared total for as long as the guard lives.
struct WaitingBytes<'a> {
    counter: &'a AtomicUsize,
    bytes: usize,
    /// The total with these bytes, when they were added.
    total: usize,
}

impl<'a> WaitingBytes<'a> {
    fn add(counter: &'a AtomicUsize, bytes: usize) -> Self {
        let total = counter.fetch_add(bytes, Ordering::AcqRel) + bytes;
        Self { counter, bytes, total }
    }
}

impl Drop for WaitingBytes<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Decodes a whole BATCH frame, stores it and says how to answer.
async fn ingest(core: &Core, session: &Session, frame: &[u8]) -> Answer {
    let control = &core.control;
    let busy_wait = control.config.busy_wait_ms;
    if busy_wait > 0 && core.engine.ingest_throttled() {
        // Waits before decoding, so a waiting batch holds its frame bytes only. The guard gives
        // them back also when the task is aborted mid-wait (connection lost, drain deadline).
        let held = WaitingBytes::add(&control.busy_waiting_bytes, frame.len());
        if held.total <= control.config.busy_wait_bytes_max {
            // Either way the batch is tried next: it may find room, or be answered busy.
            let _ = tokio::time::timeout(Duration::from_millis(busy_wait), core.engine.ingest_room()).await;
        }
    }
    let decoded = match decode_batch(frame, &session.dictionary) {
        Ok(decoded) => decoded,
        Err(e) => {
            control.metrics.batch_received(0);
            return match (e.disposition(), peek_batch_seq(frame)) {
                (Disposition::Reject(reason), Some(batch_seq)) => {
                    Answer::Ack(Ack { batch_seq, status: AckStatus::Rejected(reason) })
                }
                (Disposition::ResetStream(code), _) => Answer::Reset { code, violation: true, fault: false },
                (Disposition::Reject(_), None) => {
                    Answer::Reset { code: StreamErrorCode::MalformedFrame, violation: true, fault: false }
                }
            };
        }
    };
    let batch_seq = decoded.batch_seq;
    let readings = decoded.batch.len();
    control.metrics.batch_received(readings);
    if readings > control.config.batch_readings_max as usize {
        return Answer::Ack(Ack { batch_seq, status: AckStatus::Rejected(RejectReason::TooManyReadings) });
    }
    let outcome = match core.engine.ingest(&session.buoy, batch_seq, decoded.batch) {
        Ok(ticket) => ticket.await,
        Err(e) => Err(e),
    };
    let status = match outcome {
        Ok(IngestOutcome::Stored { .. }) => AckStatus::Stored,
        Ok(IngestOutcome::Duplicate) => AckStatus::Duplicate,
        Err(bluewave_engine::Error::Input(input)) => AckStatus::Rejected(RejectReason::for_input(&input)),
        Err(bluewave_engine::Error::Busy { retry_after_ms, .. }) => {
            AckStatus::Busy { retry_after_ms: u32::try_from(retry_after_ms).unwrap_or(u32::MAX).max(1) }
        }
        Err(bluewave_engine::Error::ShuttingDown) => {
            return Answer::Reset { code: StreamErrorCode::Cancelled, violation: false, fault: false };
        }
        Err(e) => {
            tracing::error!(buoy = %session.buoy, batch_seq, "engine fault: {e}");
            return Answer::Reset { code: StreamErrorCode::Cancelled, violation: false, fault: true };
        }
    };
    Answer::Ack(Ack { batch_seq, status })
}
