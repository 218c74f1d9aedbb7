//! `bluewave-wire`: the QUIC ingest protocol between buoys and BlueWave.
//!
//! The protocol (`bluewave/1`) is specified in `wire/PROTOCOL.md`: ALPN and TLS, which stream
//! carries what, the byte layout of every frame, limits, error codes and retry rules. This crate
//! is its Rust implementation.
//!
//! # Layout
//!
//! - `codec` — encoders and decoders of every frame (HELLO, ACCEPTED, REFUSED, BATCH, ACK). A
//!   BATCH decodes straight into the model's [`bluewave_model::ReadingBatch`]. Decoders check
//!   the declared length against the frame type's limit before they allocate and never panic.
//! - `io` — reads one frame from a quinn stream, check before parse: header, limit, payload,
//!   FIN ([`read_frame`]); shared by the server and the client SDK.
//! - `tls` — the server's identity ([`ServerIdentity`]): PEM files, or a self-signed pair
//!   generated once into `<data-dir>/tls/`; its SHA-256 pin for clients.
//! - `auth` — [`DeviceAuthenticator`] (token → buoy or [`Refusal`]) and [`PresharedTokens`], the
//!   token-file implementation used until the web crate supplies JWT device tokens.
//! - `evidence` (feature `server`) — what a refused HELLO leaves: a rate-limited `warn` line
//!   with the peer address, and a report of addresses refused again and again to the binary's
//!   [`RefusalAudit`] (the audit log lives in `web`).
//! - `server` (cargo feature `server`, on by default) — the quinn endpoint (`start` →
//!   `ServerHandle`): HELLO, one batch per stream into `Engine::ingest`, the durable ACK; every
//!   limit in `ServerConfig`. It is the only module that needs the storage engine: a buoy build
//!   takes the crate with `default-features = false` and depends on `bluewave-model` alone (no
//!   Parquet, Arrow or redb).
//! - `metrics` — the server's lock-free counters, read as [`ServerMetrics`].
//! - `client` — the buoy SDK ([`Client`], [`ClientConfig`], [`Trust`]): one QUIC connection,
//!   HELLO, a window of batch streams, a bounded offline buffer, reconnect with backoff and
//!   resend of unacked batches under the same `batch_seq`. Its errors are the sub-enum
//!   [`ClientError`].
//! - `spool` — the client's optional on-disk spool of unacked batches ([`Spool`]): crash-safe
//!   files with magic, version and CRC32C; layout in its module docs. Errors: [`SpoolError`].
//! - this file — the crate's one error type [`Error`] and the protocol's numeric codes
//!   ([`StreamErrorCode`], [`ConnectionCloseCode`], [`RejectReason`], [`RefuseReason`]), with the
//!   single mapping from an error to its answer on the wire ([`Error::disposition`]).
//!
//! # Example
//!
//! ```
//! use bluewave_model::{MetricName, ReadingBatch};
//! use bluewave_wire::{MetricDictionary, decode_batch, encode_batch};
//!
//! let names = vec![MetricName::new("salinity_psu")?, MetricName::new("ph")?];
//! let dictionary = MetricDictionary::new(names.clone())?;
//! let batch = ReadingBatch::new(names, vec![1_000, 1_000, 2_000], vec![0, 1, 0], vec![35.1, 8.0, 35.2])?;
//!
//! let mut frame = Vec::new();
//! encode_batch(7, &batch, &dictionary, &mut frame)?;
//! let decoded = decode_batch(&frame, &dictionary)?;
//! assert_eq!(decoded.batch_seq, 7);
//! assert_eq!(decoded.batch, batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod client;
mod codec;
#[cfg(feature = "server")]
mod evidence;
mod io;
// The server's counters; a buoy build (no `server` feature) keeps only the public snapshot type.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
mod metrics;
#[cfg(feature = "server")]
mod server;
mod spool;
mod tls;
mod udp;

pub use bluewave_model::InputError;
pub use codec::{
    ACCEPTED_PAYLOAD_BYTES_MAX, ACK_PAYLOAD_BYTES, ALPN, Accepted, Ack, AckStatus,
    BATCH_COLUMN_BYTES_PER_READING, BATCH_FIXED_BYTES, BATCH_PAYLOAD_BYTES_MAX, BATCH_READINGS_MAX_WIRE,
    BUOY_ID_BYTES_MAX, DICTIONARY_METRICS_MAX, DecodedBatch, FRAME_BYTES_MAX, FrameHeader, FrameType,
    HEADER_BYTES, HELLO_PAYLOAD_BYTES_MAX, Hello, MAGIC, METRIC_NAME_BYTES_MAX, MetricDictionary,
    REFUSED_MESSAGE_BYTES_MAX, REFUSED_PAYLOAD_BYTES_MAX, RefuseReason, Refused, RejectReason,
    TOKEN_BYTES_MAX, VARINT_BYTES_MAX, VERSION, decode_batch, encode_batch, peek_batch_seq, put_varint,
    unzigzag, zigzag,
};

pub use auth::{
    DeviceAuthenticator, PRESHARED_DEVICES_MAX, PRESHARED_TOKEN_BYTES_MAX, PRESHARED_TOKEN_BYTES_MIN,
    PresharedTokens, Refusal, TOKEN_FILE_BYTES_MAX, TokenFileError, append_tokens,
};
pub use client::{
    AckFuture, AckOutcome, AckReport, BACKOFF_INITIAL_MS_DEFAULT, BACKOFF_MAX_MS_DEFAULT,
    BUFFER_BATCHES_DEFAULT, BUFFER_BATCHES_MAX, BUFFER_BYTES_DEFAULT, CA_CERTIFICATES_MAX,
    CLIENT_UDP_BUFFER_BYTES_DEFAULT, CLOSE_TIMEOUT_MS_DEFAULT, CONNECT_TIMEOUT_MS_DEFAULT, Client,
    ClientConfig, ClientError, ClientResult, ClientStats, IDLE_TIMEOUT_MS_DEFAULT,
    KEEP_ALIVE_INTERVAL_MS_DEFAULT, PINS_MAX, ServerLimits, Trust, WINDOW_DEFAULT, certificate_sha256,
    parse_pin, rustls_config,
};
#[cfg(feature = "server")]
pub use evidence::{
    REFUSAL_ADDRESSES_MAX, REFUSAL_LOG_LINES_PER_S, REFUSALS_AUDIT_THRESHOLD, REFUSALS_AUDIT_WINDOW_MS,
    RefusalAudit, is_authentication_refusal,
};
pub use io::{ReadFrameError, read_frame, reset_stream, write_frame};
pub use metrics::ServerMetrics;
#[cfg(feature = "server")]
pub use server::{
    FRAME_LINGER_MS, SHUTDOWN_EXIT_MS, ServerConfig, ServerError, ServerHandle, ShutdownReport, start,
};
pub use spool::{
    SEQ_LEASE_BATCHES, SPOOL_BATCH_MAGIC, SPOOL_LEASE_MAGIC, SPOOL_RECORD_BYTES_MAX, SPOOL_VERSION, Spool,
    SpoolConfig, SpoolError, SpoolRecovery, SpoolResult, SpooledBatch,
};
pub use tls::{
    GENERATED_CERT_FILE, GENERATED_KEY_FILE, GENERATED_SUBJECT_ALT_NAMES, PEM_FILE_BYTES_MAX,
    RESET_KEY_BYTES, RESET_KEY_FILE, ServerIdentity, StatelessResetKey, TlsError, cert_sha256,
};
pub use udp::{
    UDP_BUFFER_BYTES_DEFAULT, UDP_BUFFER_BYTES_MAX, UDP_BUFFER_BYTES_MIN, UdpBuffers, bind as bind_udp,
    endpoint as udp_endpoint,
};

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with a frame, on decode or encode. Each variant names one
/// violation of `PROTOCOL.md`; [`Error::disposition`] maps it to the wire answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The header declares a payload above its frame type's limit (checked before any
    /// allocation).
    #[error(
        "{frame_type:?} frame declares {payload_len} payload bytes, above the limit of {payload_bytes_max}"
    )]
    FrameTooLarge {
        /// Type from the header.
        frame_type: FrameType,
        /// Declared payload length.
        payload_len: u32,
        /// The type's limit.
        payload_bytes_max: usize,
    },
    /// The frame does not start with `BWAV`.
    #[error("bad frame magic {0:02x?}, expected \"BWAV\"")]
    BadMagic([u8; 4]),
    /// The header's version is not one this build speaks.
    #[error("unsupported protocol version {0}, this server speaks 1")]
    UnsupportedVersion(u8),
    /// The header's type byte names no frame type.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A frame of a known type where another was required (e.g. an ACK on a batch stream).
    #[error("expected a {expected:?} frame, got {found:?}")]
    UnexpectedFrameType {
        /// The type the stream requires here.
        expected: FrameType,
        /// The type received.
        found: FrameType,
    },
    /// A reserved field is not zero (or a field that must be zero for this status is not).
    #[error("{field} must be zero")]
    ReservedNotZero {
        /// Which field.
        field: &'static str,
    },
    /// The bytes end before the frame (or a field inside it) does.
    #[error("truncated frame: needs {needed} bytes, has {available}")]
    Truncated {
        /// Bytes the frame or field needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// Bytes after the end of the frame's content.
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A timestamp delta varint longer than 10 bytes or above 64 bits.
    #[error("timestamp delta of reading {index} is a varint above 64 bits")]
    VarintOverflow {
        /// Row of the reading.
        index: usize,
    },
    /// The base timestamp, or the running sum of deltas, leaves `TIMESTAMP_MIN..=TIMESTAMP_MAX`.
    #[error("timestamp of reading {index} decodes to {ts} ns, outside the supported range (years 1823-2116)")]
    TimestampOverflow {
        /// Row of the reading.
        index: usize,
        /// The decoded value (two's-complement wrapping sum).
        ts: i64,
    },
    /// A reading's metric id is not in the HELLO dictionary.
    #[error("reading {index} has metric id {id}, outside the connection's metric dictionary")]
    UnknownMetricId {
        /// Row of the reading.
        index: usize,
        /// The bad id.
        id: u8,
    },
    /// The HELLO token is longer than `TOKEN_BYTES_MAX` or holds a byte outside visible ASCII.
    #[error("device token must be at most 8192 bytes of visible ASCII")]
    InvalidToken,
    /// A REFUSED message that is not UTF-8.
    #[error("text field is not valid UTF-8")]
    InvalidUtf8,
    /// A REFUSED message above `REFUSED_MESSAGE_BYTES_MAX`.
    #[error("message of {len} bytes is above the limit of 512")]
    MessageTooLong {
        /// Its length.
        len: usize,
    },
    /// A status, reason or code field holds a value the protocol does not define.
    #[error("unknown {field} {code}")]
    UnknownCode {
        /// Which field.
        field: &'static str,
        /// The value.
        code: u16,
    },
    /// ACCEPTED limits outside the protocol's bounds.
    #[error("ACCEPTED limits are outside the protocol's bounds")]
    BadLimits,
    /// Encoding only: the batch names a metric the HELLO dictionary lacks.
    #[error("metric {0:?} is not in the connection's metric dictionary")]
    MetricNotInDictionary(String),
    /// Well-framed content the engine's rules refuse (empty batch, too many readings, non-finite
    /// value, bad metric name, duplicate dictionary entry, …).
    #[error(transparent)]
    Invalid(#[from] InputError),
}

/// Application error code on a stream reset (`RESET_STREAM` / `STOP_SENDING`), QUIC varint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamErrorCode {
    /// The header declares a payload above the limit.
    FrameTooLarge = 0x101,
    /// The frame's structure is wrong: magic, reserved bytes, truncation, trailing bytes, varint,
    /// text encoding, unknown code values.
    MalformedFrame = 0x102,
    /// The header's version differs from the negotiated one.
    UnsupportedVersion = 0x103,
    /// A frame type that is unknown or not allowed on this stream.
    UnexpectedFrame = 0x104,
    /// The frame did not arrive in full within the stream deadline.
    StreamTimeout = 0x105,
    /// The server gave up the stream without storing the batch (e.g. shutdown); resend it.
    Cancelled = 0x106,
}

/// Application error code on `CONNECTION_CLOSE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ConnectionCloseCode {
    /// Orderly close by either side.
    NoError = 0x0,
    /// The server is shutting down; in-flight batches were answered. Reconnect later.
    GoingAway = 0x1,
    /// A server fault; reconnect with backoff and resend unacked batches.
    InternalError = 0x2,
    /// No complete HELLO within the HELLO deadline.
    HelloTimeout = 0x10,
    /// The HELLO was refused (a REFUSED frame was sent first).
    HelloRefused = 0x11,
    /// The client broke the stream rules (a frame before HELLO, a second HELLO, a
    /// unidirectional stream, a malformed HELLO).
    ProtocolViolation = 0x12,
    /// The device was revoked while connected.
    DeviceRevoked = 0x13,
    /// Too many malformed frames on this connection.
    TooManyViolations = 0x14,
}

/// How the server answers a decode error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The frame was well formed but its content is refused: answer an ACK `rejected` with this
    /// reason (for a HELLO: a REFUSED `bad_dictionary`). The stream ends normally.
    Reject(RejectReason),
    /// The stream cannot be trusted: reset it (and stop sending) with this code.
    ResetStream(StreamErrorCode),
}

impl Error {
    /// The one mapping from an error to its answer on the wire (PROTOCOL.md, *Errors*).
    pub fn disposition(&self) -> Disposition {
        use Disposition::{Reject, ResetStream};
        match self {
            Self::FrameTooLarge { .. } => ResetStream(StreamErrorCode::FrameTooLarge),
            Self::UnsupportedVersion(_) => ResetStream(StreamErrorCode::UnsupportedVersion),
            Self::UnknownFrameType(_) | Self::UnexpectedFrameType { .. } => {
                ResetStream(StreamErrorCode::UnexpectedFrame)
            }
            Self::BadMagic(_)
            | Self::ReservedNotZero { .. }
            | Self::Truncated { .. }
            | Self::TrailingBytes { .. }
            | Self::VarintOverflow { .. }
            | Self::InvalidToken
            | Self::InvalidUtf8
            | Self::MessageTooLong { .. }
            | Self::UnknownCode { .. }
            | Self::BadLimits => ResetStream(StreamErrorCode::MalformedFrame),
            Self::TimestampOverflow { .. } => Reject(RejectReason::TimestampOutOfRange),
            Self::UnknownMetricId { .. } | Self::MetricNotInDictionary(_) => {
                Reject(RejectReason::UnknownMetricId)
            }
            Self::Invalid(input) => Reject(RejectReason::for_input(input)),
        }
    }
}
