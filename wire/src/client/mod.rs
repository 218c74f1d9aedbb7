//! The buoy client SDK: one QUIC connection to BlueWave, batches sent on their own streams, a
//! bounded offline buffer (with an optional on-disk spool), automatic reconnect and resend of
//! unacked batches with the same sequence numbers (PROTOCOL.md §1, §2, §6, §7).
//!
//! # How a batch travels
//!
//! [`Client::send`] encodes the batch once into a BATCH frame, takes room in the offline buffer
//! (batches and bytes, both bounded), assigns the next `batch_seq`, writes it to the spool when
//! there is one, and queues it. A background task owns the connection: it connects (timeout),
//! sends HELLO, reads ACCEPTED, then keeps up to `window` batch streams open. Each ACK settles
//! the batch's [`AckFuture`]: `stored`, `duplicate` or `rejected`. `busy`, a reset with
//! `STREAM_TIMEOUT`/`CANCELLED`, a lost connection and `GOING_AWAY` are handled inside: the
//! same frame bytes are sent again (same seq) after `retry_after_ms` or a reconnect with
//! exponential backoff and full jitter. Terminal refusals (REFUSED with `retry_after_ms` 0, a
//! close with `DEVICE_REVOKED`, `PROTOCOL_VIOLATION` or `TOO_MANY_VIOLATIONS`, a server
//! certificate that fails verification) fail every pending future and stop reconnecting.
//!
//! Batches larger than the server's announced limits (`frame_bytes_max`, `batch_readings_max`)
//! are refused with [`ClientError::BatchTooLarge`]; the SDK does not split them (the caller
//! chooses batch boundaries, see [`Client::server_limits`]).

mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bluewave_model::{BuoyId, DEDUP_WINDOW, MetricName, ReadingBatch};
use bytes::Bytes;
use quinn::{ConnectionError, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

pub use trust::{CA_CERTIFICATES_MAX, PINS_MAX, Trust, certificate_sha256, parse_pin, rustls_config};

use crate::codec::{
    ACK_PAYLOAD_BYTES, Accepted, Ack, AckStatus, BATCH_READINGS_MAX_WIRE, FRAME_BYTES_MAX, FrameHeader,
    FrameType, HEADER_BYTES, Hello, MetricDictionary, REFUSED_PAYLOAD_BYTES_MAX, RefuseReason, Refused,
    RejectReason, encode_batch,
};
use crate::spool::{Spool, SpoolConfig, SpoolError, SpooledBatch};
use crate::{ConnectionCloseCode, StreamErrorCode};

/// Default batches in flight on the connection (streams open at once).
pub const WINDOW_DEFAULT: usize = 32;
/// Default most batches held unacked (memory and spool).
pub const BUFFER_BATCHES_DEFAULT: usize = 1_024;
/// Default most bytes of encoded frames held unacked.
pub const BUFFER_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Upper bound of the unacked batches: the server's dedup window (PROTOCOL.md §7).
pub const BUFFER_BATCHES_MAX: usize = DEDUP_WINDOW as usize;
/// Default first reconnect delay bound, ms.
pub const BACKOFF_INITIAL_MS_DEFAULT: u64 = 100;
/// Default largest reconnect delay bound, ms.
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 30_000;
/// Default QUIC PING interval when idle, ms (PROTOCOL.md §5).
pub const KEEP_ALIVE_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Default QUIC idle timeout, ms (the server's default).
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time for the QUIC handshake plus the HELLO answer, ms.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time [`Client::close`] waits for outstanding ACKs, ms.
pub const CLOSE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default UDP buffer request of a client's own endpoint: 1 MiB (it receives ACKs, 28 bytes
/// each, and sends at most a window of frames).
pub const CLIENT_UDP_BUFFER_BYTES_DEFAULT: usize = 1 << 20;
/// Receive window of the client's side of each stream: an ACK is 28 bytes.
const STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 * 1024;
/// Receive window of the client's side of the connection.
const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 1024 * 1024;
/// Largest answer to HELLO (ACCEPTED or REFUSED), header included.
const HELLO_ANSWER_BYTES_MAX: usize = HEADER_BYTES + REFUSED_PAYLOAD_BYTES_MAX;
/// Offset of `batch_seq` in a BATCH frame (first payload field).
const BATCH_SEQ_OFFSET: usize = HEADER_BYTES;

const _: () = assert!(BUFFER_BATCHES_DEFAULT <= BUFFER_BATCHES_MAX);
const _: () = assert!(WINDOW_DEFAULT <= BUFFER_BATCHES_DEFAULT);

/// Result of the client SDK.
pub type ClientResult<T> = std::result::Result<T, ClientError>;

/// Errors of the client SDK (the client layer's sub-enum of the crate's errors). `Clone` so one
/// terminal error can settle every pending [`AckFuture`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The configuration is invalid (user mistake): bad window, bounds, pin, CA file, name.
    #[error("client configuration: {0}")]
    Config(String),
    /// [`Client::try_send`] found the offline buffer full (batches or bytes).
    #[error(
        "offline buffer full: {batches} batches / {bytes} bytes held, limits {batches_max} / {bytes_max}"
    )]
    BufferFull {
        /// Batches held.
        batches: usize,
        /// Bytes held.
        bytes: u64,
        /// The batch bound.
        batches_max: usize,
        /// The byte bound.
        bytes_max: u64,
    },
    /// The batch is larger than the server (or the buffer) takes; split it before sending.
    #[error(
        "batch too large: {readings} readings / {frame_bytes} frame bytes, limits {readings_max} / {frame_bytes_max}"
    )]
    BatchTooLarge {
        /// Readings in the batch.
        readings: usize,
        /// Encoded frame bytes.
        frame_bytes: usize,
        /// Most readings allowed.
        readings_max: usize,
        /// Most frame bytes allowed.
        frame_bytes_max: usize,
    },
    /// The batch cannot be encoded (empty, or a metric missing from the configured dictionary).
    #[error("batch cannot be encoded: {0}")]
    Encode(#[from] crate::Error),
    /// [`Client::send_with_seq`] with a seq that is already unacked in this client.
    #[error("batch_seq {0} is already pending")]
    SeqInUse(u64),
    /// The spool failed (disk full, I/O error, damaged lease) or is full.
    #[error(transparent)]
    Spool(Arc<SpoolError>),
    /// The UDP socket could not be bound.
    #[error("cannot open the UDP endpoint: {0}")]
    Endpoint(Arc<std::io::Error>),
    /// Terminal: the server refused HELLO and said not to retry (`retry_after_ms` 0).
    #[error("server refused the connection: {reason:?}: {message}")]
    Refused {
        /// The REFUSED reason.
        reason: RefuseReason,
        /// The server's message, for people.
        message: String,
    },
    /// Terminal: the TLS handshake failed verification (pin mismatch, unknown CA, wrong name,
    /// no common ALPN). Never retried with relaxed verification.
    #[error("TLS handshake refused: {0}")]
    Tls(String),
    /// Terminal: the server closed the connection with a code that means "stop" (device
    /// revoked, protocol violation, too many violations).
    #[error("server closed the connection with code 0x{code:x} ({reason})")]
    ServerClosed {
        /// The application close code.
        code: u64,
        /// The server's reason text.
        reason: String,
    },
    /// The server reset the batch stream with a code that forbids a resend (0x101–0x104).
    #[error("server reset the batch stream with code 0x{code:x}")]
    StreamReset {
        /// The reset code.
        code: u64,
    },
    /// The server sent an answer that breaks the protocol (a bug in the server).
    #[error("server broke the protocol: {0}")]
    ServerProtocol(String),
    /// The client was closed (or its task stopped) before the batch was acked. With a spool,
    /// the batch stays on disk and is resent by the next client on that spool.
    #[error("client closed before the batch was acked")]
    Closed,
}

impl From<SpoolError> for ClientError {
    fn from(e: SpoolError) -> Self {
        Self::Spool(Arc::new(e))
    }
}

/// Everything a [`Client`] needs. Build with [`ClientConfig::new`], then adjust fields.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's UDP address.
    pub server_addr: SocketAddr,
    /// The name in the server certificate (SNI and, with a CA file, the name verified).
    pub server_name: String,
    /// How the server certificate is trusted.
    pub trust: Trust,
    /// The device token sent in HELLO.
    pub device_token: String,
    /// The metric dictionary sent in HELLO; every batch's metrics must be in it.
    pub metrics: Vec<MetricName>,
    /// Batches in flight at once (streams open). Default [`WINDOW_DEFAULT`]; keep it ≤ the
    /// server's `streams_per_connection_max` (64 by default), extra streams just wait.
    pub window: usize,
    /// Most unacked batches held (in flight + waiting). Default [`BUFFER_BATCHES_DEFAULT`],
    /// at most [`BUFFER_BATCHES_MAX`]. Also the spool's batch bound.
    pub buffer_batches_max: usize,
    /// Most bytes of unacked frames held. Default [`BUFFER_BYTES_DEFAULT`]. Also bounds the spool.
    pub buffer_bytes_max: u64,
    /// Directory of the on-disk spool, or `None` for memory only. With a spool, batches
    /// survive a reboot and `batch_seq` continues where it stopped.
    pub spool_dir: Option<PathBuf>,
    /// First `batch_seq` when no spool remembers one (default 1). Without a spool a restarted
    /// client must be given a seq above every seq it used before, or new batches are answered
    /// `duplicate` (i.e. dropped).
    pub first_batch_seq: u64,
    /// Upper bound of the first reconnect delay, ms (full jitter: uniform in 0..=bound).
    pub backoff_initial_ms: u64,
    /// Largest reconnect delay bound, ms; the bound doubles per failed attempt up to this.
    pub backoff_max_ms: u64,
    /// QUIC PING interval, ms.
    pub keep_alive_interval_ms: u64,
    /// QUIC idle timeout, ms.
    pub idle_timeout_ms: u64,
    /// Handshake plus HELLO answer must finish within this, ms.
    pub connect_timeout_ms: u64,
    /// How long [`Client::close`] waits for outstanding ACKs, ms.
    pub close_timeout_ms: u64,
    /// UDP receive and send buffer asked for the endpoint [`Client::connect`] opens (not used
    /// by [`Client::connect_on`], whose endpoint is the caller's). Within
    /// [`crate::UDP_BUFFER_BYTES_MIN`]`..=`[`crate::UDP_BUFFER_BYTES_MAX`]. Default
    /// [`CLIENT_UDP_BUFFER_BYTES_DEFAULT`].
    pub udp_buffer_bytes: usize,
}

impl ClientConfig {
    /// A configuration with every documented default.
    pub fn new(
        server_addr: SocketAddr,
        server_name: impl Into<String>,
        trust: Trust,
        device_token: impl Into<String>,
        metrics: Vec<MetricName>,
    ) -> Self {
        Self {
            server_addr,
            server_name: server_name.into(),
            trust,
            device_token: device_token.into(),
            metrics,
            window: WINDOW_DEFAULT,
            buffer_batches_max: BUFFER_BATCHES_DEFAULT,
            buffer_bytes_max: BUFFER_BYTES_DEFAULT,
            spool_dir: None,
            first_batch_seq: 1,
            backoff_initial_ms: BACKOFF_INITIAL_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            keep_alive_interval_ms: KEEP_ALIVE_INTERVAL_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            close_timeout_ms: CLOSE_TIMEOUT_MS_DEFAULT,
            udp_buffer_bytes: CLIENT_UDP_BUFFER_BYTES_DEFAULT,
        }
    }

    fn validate(&self) -> ClientResult<()> {
        let bad = |what: &str| Err(ClientError::Config(what.to_owned()));
        if self.window == 0 || self.window > self.buffer_batches_max {
            return bad("window must be 1..=buffer_batches_max");
        }
        if self.buffer_batches_max == 0 || self.buffer_batches_max > BUFFER_BATCHES_MAX {
            return bad("buffer_batches_max must be 1..=4096 (the server's dedup window)");
        }
        if self.buffer_bytes_max < FRAME_BYTES_MAX as u64 || self.buffer_bytes_max > u64::from(u32::MAX) {
            return bad("buffer_bytes_max must be between FRAME_BYTES_MAX and 4 GiB");
        }
        if self.first_batch_seq == 0 {
            return bad("first_batch_seq starts at 1");
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return bad("backoff: 0 < initial <= max");
        }
        if self.connect_timeout_ms == 0 || self.idle_timeout_ms == 0 || self.keep_alive_interval_ms == 0 {
            return bad("timeouts and intervals must be > 0");
        }
        if let Err(what) = crate::udp::check_buffer_bytes(self.udp_buffer_bytes) {
            return bad(what);
        }
        Ok(())
    }
}

/// The final answer for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Stored and durable.
    Stored,
    /// Stored before (a resend); durable, not stored twice.
    Duplicate,
    /// Not stored; do not resend it unchanged.
    Rejected(RejectReason),
}

/// What an [`AckFuture`] resolves to: the outcome plus the latency measurement hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckReport {
    /// The batch's sequence number.
    pub batch_seq: u64,
    /// The server's final answer.
    pub outcome: AckOutcome,
    /// From the moment the batch entered the buffer (inside `send`) to the ACK's arrival.
    pub latency: Duration,
    /// Times the batch was sent (1 unless it was resent).
    pub sends: u32,
}

/// Resolves when the server has answered the batch for good (stored, duplicate, rejected) or
/// the client gave up on it (a terminal error or [`Client::close`]).
#[derive(Debug)]
pub struct AckFuture {
    batch_seq: u64,
    rx: oneshot::Receiver<ClientResult<AckReport>>,
}

impl AckFuture {
    /// The batch's sequence number.
    pub fn batch_seq(&self) -> u64 {
        self.batch_seq
    }
}

impl std::future::Future for AckFuture {
    type Output = ClientResult<AckReport>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(ClientError::Closed)))
    }
}

/// The limits the server announced in ACCEPTED, and the buoy the connection is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// The buoy the token names.
    pub buoy: BuoyId,
    /// Largest frame the server takes, header included.
    pub frame_bytes_max: usize,
    /// Most readings per batch the server takes.
    pub batch_readings_max: usize,
}

/// Connection state, as seen by [`Client::wait_connected`].
#[derive(Clone, Debug)]
enum Status {
    Connecting,
    Connected(ServerLimits),
    Failed(ClientError),
    Closed,
}

/// Client-side counters (monotonic since connect).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Batch streams opened (first sends and resends).
    pub batches_sent: u64,
    /// Resends among them.
    pub resends: u64,
    /// ACKs `stored`.
    pub acked_stored: u64,
    /// ACKs `duplicate`.
    pub acked_duplicate: u64,
    /// ACKs `rejected`.
    pub acked_rejected: u64,
    /// ACKs `busy` (each followed by a resend).
    pub busy_answers: u64,
    /// Batch streams reset by the server.
    pub stream_resets: u64,
    /// Connections accepted (HELLO answered ACCEPTED).
    pub connections: u64,
    /// Connection attempts after the first (every reconnect, failed or not).
    pub reconnects: u64,
    /// Readings in batches acked stored or duplicate.
    pub readings_acked: u64,
}

#[derive(Default)]
struct Counters {
    batches_sent: AtomicU64,
    resends: AtomicU64,
    acked_stored: AtomicU64,
    acked_duplicate: AtomicU64,
    acked_rejected: AtomicU64,
    busy_answers: AtomicU64,
    stream_resets: AtomicU64,
    connections: AtomicU64,
    reconnects: AtomicU64,
    readings_acked: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    /// Waiting for a stream (also after a reconnect).
    Queued,
    /// Sent on the connection of this generation; waiting for its ACK.
    InFlight(u64),
    /// Waiting out a busy answer or a retryable reset before it is queued again.
    Waiting,
}

/// One unacked batch.
struct Entry {
    frame: Bytes,
    readings: usize,
    state: EntryState,
    /// Sends so far; a stream result for an older attempt is ignored.
    sends: u32,
    reply: Option<oneshot::Sender<ClientResult<AckReport>>>,
    buffered_at: Instant,
    /// Room in the offline buffer, given back when the entry is dropped.
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

#[derive(Default)]
struct Book {
    entries: BTreeMap<u64, Entry>,
    /// Seqs with state `Queued`, sent lowest first.
    queued: BTreeSet<u64>,
    terminal: Option<ClientError>,
}

struct Shared {
    config: ClientConfig,
    dictionary: MetricDictionary,
    book: Mutex<Book>,
    /// Wakes the connection task: new batch queued, busy wait over, close requested.
    wake: tokio::sync::Notify,
    batch_room: Arc<Semaphore>,
    byte_room: Arc<Semaphore>,
    spool: Option<Arc<Spool>>,
    next_seq: AtomicU64,
    closing: AtomicBool,
    counters: Counters,
    status: watch::Sender<Status>,
    limits: Mutex<Option<ServerLimits>>,
}

impl Shared {
    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update of the book is a few steps with no await and no panic path.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn limits(&self) -> Option<ServerLimits> {
        self.limits.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Removes a settled batch, forgets it in the spool and answers its future.
    fn settle(&self, batch_seq: u64, result: ClientResult<AckOutcome>) {
        let entry = {
            let mut book = self.book();
            book.queued.remove(&batch_seq);
            book.entries.remove(&batch_seq)
        };
        let Some(entry) = entry else { return };
        let report = result.map(|outcome| {
            let counter = match outcome {
                AckOutcome::Stored => &self.counters.acked_stored,
                AckOutcome::Duplicate => &self.counters.acked_duplicate,
                AckOutcome::Rejected(_) => &self.counters.acked_rejected,
            };
            bump(counter, 1);
            if !matches!(outcome, AckOutcome::Rejected(_)) {
                bump(&self.counters.readings_acked, entry.readings as u64);
            }
            AckReport { batch_seq, outcome, latency: entry.buffered_at.elapsed(), sends: entry.sends }
        });
        // A rejected or stream-reset batch will never be stored as sent either: drop it too.
        // After a terminal error the batch stays in the spool for a fixed configuration.
        let forget_on_disk = matches!(report, Ok(_) | Err(ClientError::StreamReset { .. }));
        let Entry { reply, _permits, .. } = entry;
        if let Some(reply) = reply {
            let _ = reply.send(report);
        }
        match (&self.spool, forget_on_disk) {
            (Some(spool), true) => {
                let spool = spool.clone();
                // The buffer room is given back only after the unlink, so the spool (bounded
                // like the buffer) never holds more than the buffer does.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = spool.remove(batch_seq) {
                        tracing::error!(batch_seq, error = %e, "cannot remove an acked batch from the spool");
                    }
                    drop(_permits);
                });
            }
            _ => drop(_permits),
        }
    }

    /// Fails every pending batch with `error` and remembers it for later sends.
    fn fail_all(&self, error: ClientError) {
        let entries = {
            let mut book = self.book();
            if book.terminal.is_none() {
                book.terminal = Some(error.clone());
            }
            book.queued.clear();
            std::mem::take(&mut book.entries)
        };
        for (_, entry) in entries {
            if let Some(reply) = entry.reply {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// A handle to one buoy's connection to BlueWave. Cheap to share behind an `Arc`; every method
/// takes `&self` except [`Client::close`].
pub struct Client {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    /// True when the client made its endpoint ([`Client::connect`]) and so closes it; an
    /// endpoint handed in ([`Client::connect_on`]) is shared with other clients and stays open:
    /// only this client's connection closes (dropping its last handle closes it).
    owns_endpoint: bool,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("server", &self.shared.config.server_addr).finish_non_exhaustive()
    }
}

impl Drop for Client {
    /// A client dropped without [`Client::close`] stops its connection task at once: pending
    /// futures fail with [`ClientError::Closed`] (spooled batches stay on disk).
    fn drop(&mut self) {
        self.task.abort();
        if self.owns_endpoint {
            self.endpoint.close(VarInt::from_u32(ConnectionCloseCode::NoError as u32), b"client dropped");
        }
    }
}

impl Client {
    /// Starts a client on its own UDP endpoint. Returns at once: the connection is made in the
    /// background (see [`Client::wait_connected`]); batches sent before it is up wait in the
    /// offline buffer. Opens the spool first when configured and queues its unacked batches.
    pub async fn connect(config: ClientConfig) -> ClientResult<Self> {
        let bind: SocketAddr = if config.server_addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        config.validate()?;
        let (endpoint, _) = crate::udp_endpoint(bind, config.udp_buffer_bytes, None)
            .map_err(|e| ClientError::Endpoint(Arc::new(e)))?;
        let mut client = Self::connect_on(endpoint, config).await?;
        client.owns_endpoint = true;
        Ok(client)
    }

    /// Like [`Client::connect`] on an existing endpoint, so many clients (a simulated fleet)
    /// can share one UDP socket. Closing or dropping this client closes its own connection
    /// only; the endpoint stays open for the others.
    pub async fn connect_on(endpoint: quinn::Endpoint, config: ClientConfig) -> ClientResult<Self> {
        config.validate()?;
        let dictionary = MetricDictionary::new(config.metrics.clone())?;
        let quic_config = quic_client_config(&config)?;
        let (status, _) = watch::channel(Status::Connecting);
        let mut shared = Shared {
            dictionary,
            book: Mutex::new(Book::default()),
            wake: tokio::sync::Notify::new(),
            batch_room: Arc::new(Semaphore::new(config.buffer_batches_max)),
            byte_room: Arc::new(Semaphore::new(
                usize::try_from(config.buffer_bytes_max).unwrap_or(usize::MAX),
            )),
            spool: None,
            next_seq: AtomicU64::new(config.first_batch_seq),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            status,
            limits: Mutex::new(None),
            config,
        };
        if let Some(dir) = shared.config.spool_dir.clone() {
            let spool_config = SpoolConfig {
                dir,
                batches_max: shared.config.buffer_batches_max,
                bytes_max: shared.config.buffer_bytes_max,
                first_batch_seq: shared.config.first_batch_seq,
            };
            let (spool, recovery) = tokio::task::spawn_blocking(move || Spool::open(spool_config))
                .await
                .map_err(|_| ClientError::Closed)??;
            for path in &recovery.corrupt_files {
                tracing::error!(path = %path.display(), "damaged spool file moved aside");
            }
            for batch in recovery.batches {
                shared.adopt_spooled(batch)?;
            }
            shared.spool = Some(Arc::new(spool));
        }
        let shared = Arc::new(shared);
        let task = tokio::spawn(drive(shared.clone(), endpoint.clone(), quic_config));
        Ok(Self { shared, endpoint, owns_endpoint: false, task })
    }

    /// Waits until the server accepted HELLO (returns its limits) or the client failed for good.
    pub async fn wait_connected(&self) -> ClientResult<ServerLimits> {
        let mut rx = self.shared.status.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Status::Connected(limits) => return Ok(limits.clone()),
                Status::Failed(e) => return Err(e.clone()),
                Status::Closed => return Err(ClientError::Closed),
                Status::Connecting => {}
            }
            rx.changed().await.map_err(|_| ClientError::Closed)?;
        }
    }

    /// The limits of the last ACCEPTED, if a connection was accepted yet.
    pub fn server_limits(&self) -> Option<ServerLimits> {
        self.shared.limits()
    }

    /// Queues a batch under the next `batch_seq`, waiting for room in the offline buffer. The
    /// returned future resolves with the server's final answer.
    pub async fn send(&self, batch: &ReadingBatch) -> ClientResult<AckFuture> {
        self.enqueue(None, batch, true).await
    }

    /// Like [`Client::send`], but fails with [`ClientError::BufferFull`] instead of waiting.
    /// (It still waits for the spool write when there is a spool.)
    pub async fn try_send(&self, batch: &ReadingBatch) -> ClientResult<AckFuture> {
        self.enqueue(None, batch, false).await
    }

    /// Queues a batch under a sequence the caller manages (load generators, durability
    /// checkers). Do not mix with [`Client::send`] on one client: the SDK's own counter does not
    /// skip the seqs used here.
    pub async fn send_with_seq(&self, batch_seq: u64, batch: &ReadingBatch) -> ClientResult<AckFuture> {
        self.enqueue(Some(batch_seq), batch, true).await
    }

    /// Client-side counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClientStats {
            batches_sent: get(&c.batches_sent),
            resends: get(&c.resends),
            acked_stored: get(&c.acked_stored),
            acked_duplicate: get(&c.acked_duplicate),
            acked_rejected: get(&c.acked_rejected),
            busy_answers: get(&c.busy_answers),
            stream_resets: get(&c.stream_resets),
            connections: get(&c.connections),
            reconnects: get(&c.reconnects),
            readings_acked: get(&c.readings_acked),
        }
    }

    /// Batches sent or queued but not yet answered for good.
    pub fn unacked(&self) -> usize {
        self.shared.book().entries.len()
    }

    /// Waits (at most `close_timeout_ms`) for every outstanding ACK, then closes the connection
    /// with `NO_ERROR`. Batches still unacked fail with [`ClientError::Closed`] (with a spool
    /// they stay on disk for the next start). Returns how many were left unacked.
    pub async fn close(mut self) -> usize {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let timeout = Duration::from_millis(self.shared.config.close_timeout_ms);
        if tokio::time::timeout(timeout, &mut self.task).await.is_err() {
            self.task.abort();
        }
        let left = self.shared.book().entries.len();
        self.shared.fail_all(ClientError::Closed);
        // Acked batches give their buffer room back only after their spool file is removed:
        // once all room is back, the spool holds exactly the unacked batches.
        let all_room = u32::try_from(self.shared.config.buffer_batches_max).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(timeout, self.shared.batch_room.acquire_many(all_room)).await;
        self.shared.status.send_replace(Status::Closed);
        if self.owns_endpoint {
            self.endpoint.close(VarInt::from_u32(ConnectionCloseCode::NoError as u32), b"client closed");
        }
        left
    }

    async fn enqueue(&self, seq: Option<u64>, batch: &ReadingBatch, wait: bool) -> ClientResult<AckFuture> {
        let shared = &self.shared;
        if let Some(e) = shared.book().terminal.clone() {
            return Err(e);
        }
        if shared.closing.load(Ordering::SeqCst) {
            return Err(ClientError::Closed);
        }
        let mut frame = Vec::new();
        encode_batch(0, batch, &shared.dictionary, &mut frame)?;
        let (readings_max, frame_bytes_max) = match shared.limits() {
            Some(l) => (l.batch_readings_max, l.frame_bytes_max),
            None => (BATCH_READINGS_MAX_WIRE, FRAME_BYTES_MAX),
        };
        if batch.len() > readings_max || frame.len() > frame_bytes_max {
            return Err(ClientError::BatchTooLarge {
                readings: batch.len(),
                frame_bytes: frame.len(),
                readings_max,
                frame_bytes_max,
            });
        }
        let frame_bytes = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let permits = if wait {
            let batch_permit =
                shared.batch_room.clone().acquire_owned().await.map_err(|_| ClientError::Closed)?;
            let byte_permit = shared
                .byte_room
                .clone()
                .acquire_many_owned(frame_bytes)
                .await
                .map_err(|_| ClientError::Closed)?;
            (batch_permit, byte_permit)
        } else {
            let full = || {
                let batches = shared.config.buffer_batches_max - shared.batch_room.available_permits();
                let bytes = shared.config.buffer_bytes_max - shared.byte_room.available_permits() as u64;
                ClientError::BufferFull {
                    batches,
                    bytes,
                    batches_max: shared.config.buffer_batches_max,
                    bytes_max: shared.config.buffer_bytes_max,
                }
            };
            let batch_permit = shared.batch_room.clone().try_acquire_owned().map_err(|_| full())?;
            let byte_permit =
                shared.byte_room.clone().try_acquire_many_owned(frame_bytes).map_err(|_| full())?;
            (batch_permit, byte_permit)
        };
        let batch_seq = match (seq, &shared.spool) {
            (Some(seq), _) => seq,
            (None, Some(spool)) => {
                let spool = spool.clone();
                tokio::task::spawn_blocking(move || spool.next_seq())
                    .await
                    .map_err(|_| ClientError::Closed)??
            }
            (None, None) => shared.next_seq.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(field) = frame.get_mut(BATCH_SEQ_OFFSET..BATCH_SEQ_OFFSET + 8) {
            field.copy_from_slice(&batch_seq.to_le_bytes());
        }
        if shared.book().entries.contains_key(&batch_seq) {
            return Err(ClientError::SeqInUse(batch_seq));
        }
        let frame = Bytes::from(frame);
        if let Some(spool) = &shared.spool {
            let spooled =
                SpooledBatch { batch_seq, dictionary: shared.config.metrics.clone(), frame: frame.to_vec() };
            let spool = spool.clone();
            tokio::task::spawn_blocking(move || spool.write(&spooled))
                .await
                .map_err(|_| ClientError::Closed)??;
        }
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            frame,
            readings: batch.len(),
            state: EntryState::Queued,
            sends: 0,
            reply: Some(tx),
            buffered_at: Instant::now(),
            _permits: Some(permits),
        };
        {
            let mut book = shared.book();
            if let Some(e) = book.terminal.clone() {
                return Err(e);
            }
            if book.entries.contains_key(&batch_seq) {
                return Err(ClientError::SeqInUse(batch_seq));
            }
            book.entries.insert(batch_seq, entry);
            book.queued.insert(batch_seq);
        }
        shared.wake.notify_one();
        Ok(AckFuture { batch_seq, rx })
    }
}

impl Shared {
    /// Takes a batch recovered from the spool into the book (no future waits for it).
    fn adopt_spooled(&mut self, batch: SpooledBatch) -> ClientResult<()> {
        let frame = if batch.dictionary == self.config.metrics {
            batch.frame
        } else {
            // The dictionary changed since the batch was spooled: the same readings, re-encoded
            // against the new dictionary, same seq.
            let old = MetricDictionary::new(batch.dictionary)?;
            let decoded = crate::codec::decode_batch(&batch.frame, &old)?;
            let mut frame = Vec::new();
            encode_batch(batch.batch_seq, &decoded.batch, &self.dictionary, &mut frame)?;
            frame
        };
        let readings = frame_reading_count(&frame);
        let frame_bytes = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let full = |book: &Book| ClientError::BufferFull {
            batches: book.entries.len(),
            bytes: 0,
            batches_max: self.config.buffer_batches_max,
            bytes_max: self.config.buffer_bytes_max,
        };
        let book = self.book.get_mut().unwrap_or_else(PoisonError::into_inner);
        let batch_permit = self.batch_room.clone().try_acquire_owned().map_err(|_| full(book))?;
        let byte_permit =
            self.byte_room.clone().try_acquire_many_owned(frame_bytes).map_err(|_| full(book))?;
        let entry = Entry {
            frame: Bytes::from(frame),
            readings,
            state: EntryState::Queued,
            sends: 0,
            reply: None,
            buffered_at: Instant::now(),
            _permits: Some((batch_permit, byte_permit)),
        };
        book.entries.insert(batch.batch_seq, entry);
        book.queued.insert(batch.batch_seq);
        let next = batch.batch_seq.saturating_add(1).max(self.next_seq.load(Ordering::Relaxed));
        self.next_seq.store(next, Ordering::Relaxed);
        Ok(())
    }
}

/// The reading_count field of an encoded BATCH frame (0 if the frame is too short).
fn frame_reading_count(frame: &[u8]) -> usize {
    let mut word = [0u8; 4];
    if let Some(field) = frame.get(BATCH_SEQ_OFFSET + 8..BATCH_SEQ_OFFSET + 12) {
        word.copy_from_slice(field);
    }
    usize::try_from(u32::from_le_bytes(word)).unwrap_or(usize::MAX)
}

/// quinn's client configuration: rustls per `trust`, bounded receive windows, keep-alive, idle
/// timeout, no streams opened by the server.
fn quic_client_config(config: &ClientConfig) -> ClientResult<quinn::ClientConfig> {
    let tls = trust::rustls_config(&config.trust)?;
    let quic_tls = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(format!("TLS setup for QUIC: {e}")))?;
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(config.idle_timeout_ms))
        .map_err(|_| ClientError::Config("idle_timeout_ms too large".into()))?;
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(Duration::from_millis(config.keep_alive_interval_ms)))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
        .datagram_receive_buffer_size(None);
    let mut quic = quinn::ClientConfig::new(Arc::new(quic_tls));
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

/// How a connection (or an attempt) ended.
enum SessionEnd {
    /// The client was closed: stop.
    Closed,
    /// A terminal error: fail everything and stop.
    Terminal(ClientError),
    /// Reconnect after backoff, and not before `after_ms` when the server asked for it.
    Retry { after_ms: u64, accepted: bool },
}

/// The connection task: connect, run, back off, reconnect, until closed or a terminal error.
async fn drive(shared: Arc<Shared>, endpoint: quinn::Endpoint, quic: quinn::ClientConfig) {
    let mut jitter = Jitter::new();
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        if shared.closing.load(Ordering::SeqCst) && shared.book().entries.is_empty() {
            break;
        }
        if !first {
            bump(&shared.counters.reconnects, 1);
        }
        first = false;
        match session(&shared, &endpoint, &quic).await {
            SessionEnd::Closed => break,
            SessionEnd::Terminal(error) => {
                tracing::error!(%error, "client stops: terminal error");
                shared.status.send_replace(Status::Failed(error.clone()));
                shared.fail_all(error);
                return;
            }
            SessionEnd::Retry { after_ms, accepted } => {
                shared.status.send_replace(Status::Connecting);
                failures = if accepted { 1 } else { failures.saturating_add(1) };
                let bound_ms = shared
                    .config
                    .backoff_initial_ms
                    .saturating_mul(1u64 << failures.saturating_sub(1).min(32))
                    .min(shared.config.backoff_max_ms);
                let delay_ms = jitter.below(bound_ms).max(after_ms);
                tracing::debug!(delay_ms, failures, "reconnecting");
                let sleep = tokio::time::sleep(Duration::from_millis(delay_ms));
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        () = shared.wake.notified() => {
                            if shared.closing.load(Ordering::SeqCst) && shared.book().entries.is_empty() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    shared.status.send_replace(Status::Closed);
}

/// Result of one batch stream.
struct StreamResult {
    batch_seq: u64,
    sends: u32,
    outcome: StreamOutcome,
}

enum StreamOutcome {
    Answer(Ack),
    /// The server reset or stopped the stream with this code.
    Reset(u64),
    /// The connection went away; the batch is resent on the next one.
    Lost,
    /// The answer broke the protocol.
    Malformed(String),
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// One connection: handshake, HELLO, then batch streams up to the window until it ends.
async fn session(shared: &Arc<Shared>, endpoint: &quinn::Endpoint, quic: &quinn::ClientConfig) -> SessionEnd {
    let config = &shared.config;
    let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
    let connecting = match endpoint.connect_with(quic.clone(), config.server_addr, &config.server_name) {
        Ok(c) => c,
        Err(quinn::ConnectError::EndpointStopping) => return SessionEnd::Closed,
        Err(e) => return SessionEnd::Terminal(ClientError::Config(format!("cannot connect: {e}"))),
    };
    let conn = match tokio::time::timeout(connect_timeout, connecting).await {
        Err(_) => return SessionEnd::Retry { after_ms: 0, accepted: false },
        Ok(Err(e)) => return classify(e, false),
        Ok(Ok(conn)) => conn,
    };
    let limits = match tokio::time::timeout(connect_timeout, hello(shared, &conn)).await {
        Err(_) => {
            conn.close(VarInt::from_u32(ConnectionCloseCode::NoError as u32), b"no HELLO answer in time");
            return SessionEnd::Retry { after_ms: 0, accepted: false };
        }
        Ok(Err(end)) => return end,
        Ok(Ok(limits)) => limits,
    };
    bump(&shared.counters.connections, 1);
    *shared.limits.lock().unwrap_or_else(PoisonError::into_inner) = Some(limits.clone());
    shared.status.send_replace(Status::Connected(limits.clone()));
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);

    // Everything unacked is sent again on this connection, lowest seq first; batches over the
    // server's limits fail now instead.
    let mut too_large = Vec::new();
    {
        let mut book = shared.book();
        let book = &mut *book;
        book.queued.clear();
        for (&seq, entry) in book.entries.iter_mut() {
            if entry.readings > limits.batch_readings_max || entry.frame.len() > limits.frame_bytes_max {
                too_large.push((seq, entry.readings, entry.frame.len()));
            } else {
                entry.state = EntryState::Queued;
                book.queued.insert(seq);
            }
        }
    }
    for (seq, readings, frame_bytes) in too_large {
        let error = ClientError::BatchTooLarge {
            readings,
            frame_bytes,
            readings_max: limits.batch_readings_max,
            frame_bytes_max: limits.frame_bytes_max,
        };
        shared.settle(seq, Err(error));
    }

    let window = config.window;
    let (done_tx, mut done_rx) = mpsc::channel::<StreamResult>(window);
    let mut in_flight = 0usize;
    loop {
        while in_flight < window {
            let next = {
                let mut book = shared.book();
                let book = &mut *book;
                let Some(seq) = book.queued.pop_first() else { break };
                match book.entries.get_mut(&seq) {
                    Some(entry) => {
                        entry.state = EntryState::InFlight(generation);
                        entry.sends += 1;
                        Some((seq, entry.sends, entry.frame.clone()))
                    }
                    None => None,
                }
            };
            let Some((batch_seq, sends, frame)) = next else { continue };
            bump(&shared.counters.batches_sent, 1);
            if sends > 1 {
                bump(&shared.counters.resends, 1);
            }
            in_flight += 1;
            tokio::spawn(batch_stream(conn.clone(), batch_seq, sends, frame, done_tx.clone()));
        }
        if shared.closing.load(Ordering::SeqCst) && shared.book().entries.is_empty() {
            conn.close(VarInt::from_u32(ConnectionCloseCode::NoError as u32), b"client done");
            return SessionEnd::Closed;
        }
        tokio::select! {
            biased;
            Some(result) = done_rx.recv() => {
                in_flight = in_flight.saturating_sub(1);
                handle_result(shared, generation, result);
            }
            error = conn.closed() => return classify(error, true),
            () = shared.wake.notified() => {}
        }
    }
}

/// Sends HELLO on stream 0 and reads ACCEPTED or REFUSED.
async fn hello(shared: &Shared, conn: &quinn::Connection) -> Result<ServerLimits, SessionEnd> {
    let mut frame = Vec::new();
    let hello = Hello { token: shared.config.device_token.clone(), dictionary: shared.dictionary.clone() };
    if let Err(e) = hello.encode(&mut frame) {
        return Err(SessionEnd::Terminal(ClientError::Encode(e)));
    }
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(e, false))?;
    let write = async {
        send.write_all(&frame).await.map_err(|_| ())?;
        send.finish().map_err(|_| ())
    };
    if write.await.is_err() {
        return Err(classify(conn.closed().await, false));
    }
    // The answer is ACCEPTED or REFUSED, so it is read whole (bounded by the larger of the two)
    // and its header checked before either decoder runs.
    let answer = match recv.read_to_end(HELLO_ANSWER_BYTES_MAX).await {
        Ok(answer) => answer,
        Err(quinn::ReadToEndError::TooLong) => {
            return Err(SessionEnd::Terminal(ClientError::ServerProtocol("HELLO answer too long".into())));
        }
        // A REFUSED is followed by a close; if the close won the race, classify it.
        Err(_) => return Err(classify(conn.closed().await, false)),
    };
    let header = FrameHeader::decode(&answer)
        .map_err(|e| SessionEnd::Terminal(ClientError::ServerProtocol(format!("HELLO answer: {e}"))))?;
    let protocol =
        |e: crate::Error| SessionEnd::Terminal(ClientError::ServerProtocol(format!("HELLO answer: {e}")));
    match header.frame_type {
        FrameType::Accepted => {
            let accepted = Accepted::decode(&answer).map_err(protocol)?;
            Ok(ServerLimits {
                buoy: accepted.buoy,
                frame_bytes_max: usize::try_from(accepted.frame_bytes_max).unwrap_or(FRAME_BYTES_MAX),
                batch_readings_max: usize::try_from(accepted.batch_readings_max).unwrap_or(1),
            })
        }
        FrameType::Refused => {
            let refused: Refused = Refused::decode(&answer).map_err(protocol)?;
            tracing::warn!(reason = ?refused.reason, retry_after_ms = refused.retry_after_ms, message = %refused.message, "HELLO refused");
            if refused.retry_after_ms == 0 {
                Err(SessionEnd::Terminal(ClientError::Refused {
                    reason: refused.reason,
                    message: refused.message,
                }))
            } else {
                Err(SessionEnd::Retry { after_ms: u64::from(refused.retry_after_ms), accepted: false })
            }
        }
        other => Err(SessionEnd::Terminal(ClientError::ServerProtocol(format!(
            "HELLO answered with a {other:?} frame"
        )))),
    }
}

/// Maps how a connection ended to what the client does next.
fn classify(error: ConnectionError, accepted: bool) -> SessionEnd {
    const CRYPTO_CODES: std::ops::Range<u64> = 0x100..0x200;
    match error {
        ConnectionError::LocallyClosed => SessionEnd::Closed,
        ConnectionError::TransportError(e) if CRYPTO_CODES.contains(&u64::from(e.code)) => {
            SessionEnd::Terminal(ClientError::Tls(e.reason))
        }
        ConnectionError::ConnectionClosed(c) if CRYPTO_CODES.contains(&u64::from(c.error_code)) => {
            SessionEnd::Terminal(ClientError::Tls(format!(
                "server closed the handshake: {}",
                String::from_utf8_lossy(&c.reason)
            )))
        }
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let stop = [
                ConnectionCloseCode::ProtocolViolation,
                ConnectionCloseCode::DeviceRevoked,
                ConnectionCloseCode::TooManyViolations,
            ];
            if stop.iter().any(|&c| c as u64 == code) {
                SessionEnd::Terminal(ClientError::ServerClosed { code, reason })
            } else {
                tracing::info!(code, %reason, "server closed the connection; reconnecting");
                SessionEnd::Retry { after_ms: 0, accepted }
            }
        }
        other => {
            tracing::info!(error = %other, "connection lost; reconnecting");
            SessionEnd::Retry { after_ms: 0, accepted }
        }
    }
}

/// One batch on its own stream: write the frame, FIN, read the ACK.
async fn batch_stream(
    conn: quinn::Connection,
    batch_seq: u64,
    sends: u32,
    frame: Bytes,
    done: mpsc::Sender<StreamResult>,
) {
    let outcome = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|_| StreamOutcome::Lost)?;
        match send.write_chunk(frame).await {
            Ok(()) => {}
            Err(quinn::WriteError::Stopped(code)) => return Err(StreamOutcome::Reset(code.into_inner())),
            Err(_) => return Err(StreamOutcome::Lost),
        }
        // Finishing can only fail if the stream is already closed; the read below tells why.
        let _ = send.finish();
        let answer = match crate::io::read_frame(&mut recv, FrameType::Ack, HEADER_BYTES + ACK_PAYLOAD_BYTES)
            .await
        {
            Ok(answer) => answer,
            Err(crate::io::ReadFrameError::Reset(code)) => return Err(StreamOutcome::Reset(code)),
            Err(crate::io::ReadFrameError::Frame(e)) => return Err(StreamOutcome::Malformed(e.to_string())),
            Err(_) => return Err(StreamOutcome::Lost),
        };
        Ack::decode(&answer).map_err(|e| StreamOutcome::Malformed(e.to_string()))
    }
    .await;
    let outcome = outcome.map_or_else(|o| o, StreamOutcome::Answer);
    // The session may have ended (receiver dropped): the batch is then resent on the next one.
    let _ = done.send(StreamResult { batch_seq, sends, outcome }).await;
}

/// Applies one stream's result to the book.
fn handle_result(shared: &Arc<Shared>, generation: u64, result: StreamResult) {
    let StreamResult { batch_seq, sends, outcome } = result;
    {
        let book = shared.book();
        let Some(entry) = book.entries.get(&batch_seq) else { return };
        if entry.sends != sends || entry.state != EntryState::InFlight(generation) {
            return; // an older attempt; the current one will report
        }
    }
    match outcome {
        StreamOutcome::Answer(ack) if ack.batch_seq != batch_seq => shared.settle(
            batch_seq,
            Err(ClientError::ServerProtocol(format!(
                "ACK for seq {} on the stream of seq {batch_seq}",
                ack.batch_seq
            ))),
        ),
        StreamOutcome::Answer(ack) => match ack.status {
            AckStatus::Stored => shared.settle(batch_seq, Ok(AckOutcome::Stored)),
            AckStatus::Duplicate => shared.settle(batch_seq, Ok(AckOutcome::Duplicate)),
            AckStatus::Rejected(reason) => shared.settle(batch_seq, Ok(AckOutcome::Rejected(reason))),
            AckStatus::Busy { retry_after_ms } => {
                bump(&shared.counters.busy_answers, 1);
                resend_later(shared, batch_seq, sends, u64::from(retry_after_ms).max(1));
            }
        },
        StreamOutcome::Reset(code) => {
            bump(&shared.counters.stream_resets, 1);
            let retryable = [StreamErrorCode::StreamTimeout as u64, StreamErrorCode::Cancelled as u64];
            if retryable.contains(&code) {
                resend_later(shared, batch_seq, sends, shared.config.backoff_initial_ms);
            } else {
                shared.settle(batch_seq, Err(ClientError::StreamReset { code }));
            }
        }
        // Left in flight: the next session queues it again.
        StreamOutcome::Lost => {}
        StreamOutcome::Malformed(why) => shared.settle(batch_seq, Err(ClientError::ServerProtocol(why))),
    }
}

/// Queues the batch again after `delay_ms`, unless it was settled or re-sent meanwhile.
fn resend_later(shared: &Arc<Shared>, batch_seq: u64, sends: u32, delay_ms: u64) {
    if let Some(entry) = shared.book().entries.get_mut(&batch_seq) {
        entry.state = EntryState::Waiting;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let requeued = {
            let mut book = shared.book();
            let book = &mut *book;
            match book.entries.get_mut(&batch_seq) {
                Some(entry) if entry.sends == sends && entry.state == EntryState::Waiting => {
                    entry.state = EntryState::Queued;
                    book.queued.insert(batch_seq);
                    true
                }
                _ => false,
            }
        };
        if requeued {
            shared.wake.notify_one();
        }
    });
}

/// Full-jitter random source (splitmix64): reconnect delays only, not cryptographic.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        static SALT: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos ^ SALT.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed))
    }

    /// Uniform in `0..=bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % bound.saturating_add(1)
    }
}
