//! Frame codec of protocol `bluewave/1` (byte layouts in `wire/PROTOCOL.md`).
//!
//! Every decoder takes one whole frame (header + payload) as a byte slice and checks before it
//! parses: the header is read first, its length is compared with the frame type's limit before
//! anything is allocated, and every later read goes through a bounds-checked cursor. No input
//! makes a decoder panic; every violation is a named [`Error`] variant, and
//! [`Error::disposition`] says how the server answers it on the wire.

use bluewave_model::{
    BATCH_METRICS_MAX, BATCH_READINGS_MAX, BuoyId, InputError, MetricName, ReadingBatch, TIMESTAMP_MAX,
    TIMESTAMP_MIN, TimestampNs,
};

use crate::{Error, Result};

/// ALPN protocol id of this version of the protocol.
pub const ALPN: &[u8] = b"bluewave/1";
/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"BWAV";
/// Protocol version carried in every frame header; equals the version in [`ALPN`].
pub const VERSION: u8 = 1;
/// Bytes of the frame header: magic 4, version 1, type 1, reserved 2, payload length 4.
pub const HEADER_BYTES: usize = 12;

/// Longest device token in a HELLO, in bytes.
pub const TOKEN_BYTES_MAX: usize = 8_192;
/// Longest metric name (same bound as the engine's `NAME_LEN_MAX`).
pub const METRIC_NAME_BYTES_MAX: usize = 64;
/// Longest buoy id in an ACCEPTED frame.
pub const BUOY_ID_BYTES_MAX: usize = 64;
/// Longest human-readable message in a REFUSED frame, in bytes of UTF-8.
pub const REFUSED_MESSAGE_BYTES_MAX: usize = 512;
/// Most metrics a HELLO dictionary may name; ids are one byte, so at most 256.
pub const DICTIONARY_METRICS_MAX: usize = BATCH_METRICS_MAX;
/// Most readings in one BATCH frame (the engine's bound).
pub const BATCH_READINGS_MAX_WIRE: usize = BATCH_READINGS_MAX;
/// Longest zigzag LEB128 varint (64 bits in 7-bit groups).
pub const VARINT_BYTES_MAX: usize = 10;

/// Fixed part of a BATCH payload: batch sequence u64, reading count u32, base timestamp i64.
pub const BATCH_FIXED_BYTES: usize = 8 + 4 + 8;
/// Bytes per reading besides its timestamp delta: metric id u8 + value f64.
pub const BATCH_COLUMN_BYTES_PER_READING: usize = 1 + 8;

/// Largest HELLO payload: token length u16, token, metric count u16, (length u8, name) per metric.
pub const HELLO_PAYLOAD_BYTES_MAX: usize =
    2 + TOKEN_BYTES_MAX + 2 + DICTIONARY_METRICS_MAX * (1 + METRIC_NAME_BYTES_MAX);
/// Largest ACCEPTED payload: buoy id length u8, buoy id, frame_bytes_max u32, readings_max u32.
pub const ACCEPTED_PAYLOAD_BYTES_MAX: usize = 1 + BUOY_ID_BYTES_MAX + 4 + 4;
/// Largest REFUSED payload: reason u16, message length u16, retry_after_ms u32, message.
pub const REFUSED_PAYLOAD_BYTES_MAX: usize = 2 + 2 + 4 + REFUSED_MESSAGE_BYTES_MAX;
/// Largest BATCH payload: the fixed part, one varint per reading after the first, the columns.
pub const BATCH_PAYLOAD_BYTES_MAX: usize = BATCH_FIXED_BYTES
    + (BATCH_READINGS_MAX_WIRE - 1) * VARINT_BYTES_MAX
    + BATCH_READINGS_MAX_WIRE * BATCH_COLUMN_BYTES_PER_READING;
/// ACK payload (fixed size): batch seq u64, status u8, reserved u8, reason u16, retry_after_ms u32.
pub const ACK_PAYLOAD_BYTES: usize = 8 + 1 + 1 + 2 + 4;
/// Largest frame of any type, header included (a full BATCH of worst-case varints).
pub const FRAME_BYTES_MAX: usize = HEADER_BYTES + BATCH_PAYLOAD_BYTES_MAX;

const _: () = assert!(DICTIONARY_METRICS_MAX <= 1 << 8, "metric ids are one byte");
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize, "payload length is a u32");
const _: () = assert!(BATCH_READINGS_MAX_WIRE <= u32::MAX as usize, "reading count is a u32");
const _: () = assert!(TOKEN_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(REFUSED_MESSAGE_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(BUOY_ID_BYTES_MAX <= u8::MAX as usize && METRIC_NAME_BYTES_MAX <= u8::MAX as usize);

/// The kind of a frame (header byte 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client → server, first stream: device token and metric dictionary.
    Hello = 0x01,
    /// Server → client, answer to HELLO: the connection is bound to a buoy.
    Accepted = 0x02,
    /// Server → client, answer to HELLO: refused; the connection is closed next.
    Refused = 0x03,
    /// Client → server, one per batch stream: readings.
    Batch = 0x04,
    /// Server → client, answer to BATCH.
    Ack = 0x05,
}

impl FrameType {
    /// Parses the header byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(Self::Hello),
            0x02 => Some(Self::Accepted),
            0x03 => Some(Self::Refused),
            0x04 => Some(Self::Batch),
            0x05 => Some(Self::Ack),
            _ => None,
        }
    }

    /// Largest payload a frame of this type may declare.
    pub fn payload_bytes_max(self) -> usize {
        match self {
            Self::Hello => HELLO_PAYLOAD_BYTES_MAX,
            Self::Accepted => ACCEPTED_PAYLOAD_BYTES_MAX,
            Self::Refused => REFUSED_PAYLOAD_BYTES_MAX,
            Self::Batch => BATCH_PAYLOAD_BYTES_MAX,
            Self::Ack => ACK_PAYLOAD_BYTES,
        }
    }
}

/// A checked frame header: the magic, version and reserved bytes were right and the payload
/// length is within its type's limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Kind of frame.
    pub frame_type: FrameType,
    /// Bytes of payload after the header; at most `frame_type.payload_bytes_max()`.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Reads and checks the first [`HEADER_BYTES`] of `bytes` (more may follow). A reader of a
    /// stream calls this on the first 12 bytes, and only then reads `payload_len` more bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let magic: [u8; 4] = r.array()?;
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let type_byte = r.u8()?;
        let frame_type = FrameType::from_u8(type_byte).ok_or(Error::UnknownFrameType(type_byte))?;
        if r.u16()? != 0 {
            return Err(Error::ReservedNotZero { field: "header reserved" });
        }
        let payload_len = r.u32()?;
        let payload_bytes_max = frame_type.payload_bytes_max();
        if usize::try_from(payload_len).map_or(true, |len| len > payload_bytes_max) {
            return Err(Error::FrameTooLarge { frame_type, payload_len, payload_bytes_max });
        }
        Ok(Self { frame_type, payload_len })
    }

    /// Header plus payload, in bytes.
    pub fn frame_len(&self) -> usize {
        // `decode` bounded payload_len by a usize limit, so this cannot overflow.
        HEADER_BYTES.saturating_add(usize::try_from(self.payload_len).unwrap_or(usize::MAX))
    }
}

/// Splits one whole frame into its checked header and payload, requiring `frame` to hold exactly
/// one frame of type `expected`.
fn open_frame(frame: &[u8], expected: FrameType) -> Result<Reader<'_>> {
    if frame.len() < HEADER_BYTES {
        return Err(Error::Truncated { needed: HEADER_BYTES, available: frame.len() });
    }
    let header = FrameHeader::decode(frame)?;
    if header.frame_type != expected {
        return Err(Error::UnexpectedFrameType { expected, found: header.frame_type });
    }
    let frame_len = header.frame_len();
    if frame.len() < frame_len {
        return Err(Error::Truncated { needed: frame_len, available: frame.len() });
    }
    if frame.len() > frame_len {
        return Err(Error::TrailingBytes { extra: frame.len() - frame_len });
    }
    Ok(Reader::new(frame.get(HEADER_BYTES..).unwrap_or_default()))
}

/// Appends a header for a payload of `payload_len` bytes; returns where the length field is.
fn begin_frame(out: &mut Vec<u8>, frame_type: FrameType) -> usize {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(frame_type as u8);
    out.extend_from_slice(&0u16.to_le_bytes());
    let length_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    length_at
}

/// Patches the payload length of the frame begun at `length_at - 8`.
fn finish_frame(out: &mut [u8], length_at: usize) {
    let payload_len = out.len().saturating_sub(length_at + 4);
    debug_assert!(payload_len <= BATCH_PAYLOAD_BYTES_MAX);
    let bytes = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    if let Some(field) = out.get_mut(length_at..length_at + 4) {
        field.copy_from_slice(&bytes);
    }
}

/// The buoy's metric dictionary, sent once in HELLO: metric id `i` (one byte) names entry `i`.
/// 1–256 distinct valid metric names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricDictionary {
    names: Vec<MetricName>,
}

impl MetricDictionary {
    /// Checks the dictionary: 1–[`DICTIONARY_METRICS_MAX`] names, no duplicates.
    pub fn new(names: Vec<MetricName>) -> Result<Self> {
        if names.is_empty() || names.len() > DICTIONARY_METRICS_MAX {
            return Err(Error::Invalid(InputError::BadMetricDictionary { names: names.len() }));
        }
        for (i, name) in names.iter().enumerate() {
            if names.iter().take(i).any(|earlier| earlier == name) {
                return Err(Error::Invalid(InputError::DuplicateMetricName(name.to_string())));
            }
        }
        Ok(Self { names })
    }

    /// The names, indexed by metric id.
    pub fn names(&self) -> &[MetricName] {
        &self.names
    }

    /// Number of names (1–256).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false for a checked dictionary.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The id of `name`, if the dictionary holds it.
    pub fn id_of(&self, name: &MetricName) -> Option<u8> {
        self.names.iter().position(|n| n == name).and_then(|i| u8::try_from(i).ok())
    }
}

/// HELLO: the first frame of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Device token (a JWT of type `device`), visible ASCII, 0–[`TOKEN_BYTES_MAX`] bytes. An
    /// empty token decodes; the server refuses it with [`RefuseReason::TokenMissing`].
    pub token: String,
    /// The metric dictionary every BATCH on this connection indexes.
    pub dictionary: MetricDictionary,
}

impl Hello {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        check_token(self.token.as_bytes())?;
        let length_at = begin_frame(out, FrameType::Hello);
        put_u16(out, self.token.len());
        out.extend_from_slice(self.token.as_bytes());
        put_u16(out, self.dictionary.len());
        for name in self.dictionary.names() {
            out.push(u8::try_from(name.as_str().len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name.as_str().as_bytes());
        }
        finish_frame(out, length_at);
        Ok(())
    }

    /// Decodes one whole HELLO frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = open_frame(frame, FrameType::Hello)?;
        let token_len = usize::from(r.u16()?);
        if token_len > TOKEN_BYTES_MAX {
            return Err(Error::InvalidToken);
        }
        let token_bytes = r.take(token_len)?;
        check_token(token_bytes)?;
        let token = String::from_utf8(token_bytes.to_vec()).map_err(|_| Error::InvalidToken)?;
        let count = usize::from(r.u16()?);
        if count == 0 || count > DICTIONARY_METRICS_MAX {
            return Err(Error::Invalid(InputError::BadMetricDictionary { names: count }));
        }
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(r.u8()?);
            let bytes = r.take(len)?;
            let text = std::str::from_utf8(bytes).map_err(|_| {
                Error::Invalid(InputError::InvalidMetricName(String::from_utf8_lossy(bytes).into_owned()))
            })?;
            names.push(MetricName::new(text)?);
        }
        r.finish()?;
        Ok(Self { token, dictionary: MetricDictionary::new(names)? })
    }
}

/// Tokens are visible ASCII (0x21–0x7E), at most [`TOKEN_BYTES_MAX`] bytes.
fn check_token(token: &[u8]) -> Result<()> {
    if token.len() > TOKEN_BYTES_MAX || !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Error::InvalidToken);
    }
    Ok(())
}

/// ACCEPTED: the server's answer to a good HELLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The buoy this connection is now bound to (the token's subject).
    pub buoy: BuoyId,
    /// Largest frame the server takes on this connection, header included
    /// (≤ [`FRAME_BYTES_MAX`]).
    pub frame_bytes_max: u32,
    /// Most readings per BATCH the server takes (1–[`BATCH_READINGS_MAX_WIRE`]).
    pub batch_readings_max: u32,
}

impl Accepted {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        self.check()?;
        let length_at = begin_frame(out, FrameType::Accepted);
        out.push(u8::try_from(self.buoy.as_str().len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.buoy.as_str().as_bytes());
        out.extend_from_slice(&self.frame_bytes_max.to_le_bytes());
        out.extend_from_slice(&self.batch_readings_max.to_le_bytes());
        finish_frame(out, length_at);
        Ok(())
    }

    /// Decodes one whole ACCEPTED frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = open_frame(frame, FrameType::Accepted)?;
        let len = usize::from(r.u8()?);
        let bytes = r.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::Invalid(InputError::InvalidBuoyId(String::from_utf8_lossy(bytes).into_owned()))
        })?;
        let buoy = BuoyId::new(text)?;
        let frame_bytes_max = r.u32()?;
        let batch_readings_max = r.u32()?;
        r.finish()?;
        let accepted = Self { buoy, frame_bytes_max, batch_readings_max };
        accepted.check()?;
        Ok(accepted)
    }

    fn check(&self) -> Result<()> {
        let frame_ok = usize::try_from(self.frame_bytes_max).is_ok_and(|n| {
            (HEADER_BYTES + BATCH_FIXED_BYTES + BATCH_COLUMN_BYTES_PER_READING..=FRAME_BYTES_MAX).contains(&n)
        });
        let readings_ok = usize::try_from(self.batch_readings_max)
            .is_ok_and(|n| (1..=BATCH_READINGS_MAX_WIRE).contains(&n));
        if frame_ok && readings_ok { Ok(()) } else { Err(Error::BadLimits) }
    }
}

/// Why a HELLO was refused (REFUSED frame, u16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RefuseReason {
    /// The HELLO carried no token.
    TokenMissing = 1,
    /// The token is not a well-formed JWT.
    TokenMalformed = 2,
    /// The token's signature or key id does not verify.
    TokenBadSignature = 3,
    /// The token has expired (or is not valid yet).
    TokenExpired = 4,
    /// The token is valid but not of type `device`.
    TokenWrongType = 5,
    /// The device was revoked.
    DeviceRevoked = 6,
    /// The token's buoy is not registered.
    BuoyNotRegistered = 7,
    /// The metric dictionary is empty, too long, has a duplicate or an invalid name.
    BadDictionary = 8,
    /// The server is at its connection limit; retry after `retry_after_ms`.
    ServerBusy = 9,
    /// The server is shutting down; reconnect later (possibly to another server).
    ShuttingDown = 10,
}

impl RefuseReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 10] = [
        Self::TokenMissing,
        Self::TokenMalformed,
        Self::TokenBadSignature,
        Self::TokenExpired,
        Self::TokenWrongType,
        Self::DeviceRevoked,
        Self::BuoyNotRegistered,
        Self::BadDictionary,
        Self::ServerBusy,
        Self::ShuttingDown,
    ];

    /// The name PROTOCOL.md §3.4 gives the reason (`TOKEN_BAD_SIGNATURE`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenMissing => "TOKEN_MISSING",
            Self::TokenMalformed => "TOKEN_MALFORMED",
            Self::TokenBadSignature => "TOKEN_BAD_SIGNATURE",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::TokenWrongType => "TOKEN_WRONG_TYPE",
            Self::DeviceRevoked => "DEVICE_REVOKED",
            Self::BuoyNotRegistered => "BUOY_NOT_REGISTERED",
            Self::BadDictionary => "BAD_DICTIONARY",
            Self::ServerBusy => "SERVER_BUSY",
            Self::ShuttingDown => "SHUTTING_DOWN",
        }
    }

    /// Parses the wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::TokenMissing,
            2 => Self::TokenMalformed,
            3 => Self::TokenBadSignature,
            4 => Self::TokenExpired,
            5 => Self::TokenWrongType,
            6 => Self::DeviceRevoked,
            7 => Self::BuoyNotRegistered,
            8 => Self::BadDictionary,
            9 => Self::ServerBusy,
            10 => Self::ShuttingDown,
            _ => return None,
        })
    }
}

/// REFUSED: the server's answer to a HELLO it does not accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Machine-readable reason.
    pub reason: RefuseReason,
    /// Suggested delay before reconnecting; 0 = do not retry with the same token.
    pub retry_after_ms: u32,
    /// Human-readable detail, at most [`REFUSED_MESSAGE_BYTES_MAX`] bytes of UTF-8.
    pub message: String,
}

impl Refused {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        if self.message.len() > REFUSED_MESSAGE_BYTES_MAX {
            return Err(Error::MessageTooLong { len: self.message.len() });
        }
        let length_at = begin_frame(out, FrameType::Refused);
        out.extend_from_slice(&(self.reason as u16).to_le_bytes());
        put_u16(out, self.message.len());
        out.extend_from_slice(&self.retry_after_ms.to_le_bytes());
        out.extend_from_slice(self.message.as_bytes());
        finish_frame(out, length_at);
        Ok(())
    }

    /// Decodes one whole REFUSED frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = open_frame(frame, FrameType::Refused)?;
        let code = r.u16()?;
        let reason =
            RefuseReason::from_u16(code).ok_or(Error::UnknownCode { field: "refuse reason", code })?;
        let len = usize::from(r.u16()?);
        if len > REFUSED_MESSAGE_BYTES_MAX {
            return Err(Error::MessageTooLong { len });
        }
        let retry_after_ms = r.u32()?;
        let message = std::str::from_utf8(r.take(len)?).map_err(|_| Error::InvalidUtf8)?.to_owned();
        r.finish()?;
        Ok(Self { reason, retry_after_ms, message })
    }
}

/// Why a well-framed BATCH was not stored (ACK status `rejected`, u16). The client must not
/// resend a rejected batch unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RejectReason {
    /// Reading count 0.
    EmptyBatch = 1,
    /// More readings than the server's `batch_readings_max`.
    TooManyReadings = 2,
    /// A metric id outside the HELLO dictionary.
    UnknownMetricId = 3,
    /// A value is NaN or infinite.
    NonFiniteValue = 4,
    /// A timestamp outside years 1823–2116 (`TIMESTAMP_MIN..=TIMESTAMP_MAX`).
    TimestampOutOfRange = 5,
    /// The batch sequence is older than the server's deduplication window, so it cannot be told
    /// apart from an already-stored retry.
    StaleSequence = 6,
    /// The buoy was unregistered after HELLO.
    UnknownBuoy = 7,
    /// Any other content error.
    Invalid = 8,
}

impl RejectReason {
    /// Parses the wire value.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::EmptyBatch,
            2 => Self::TooManyReadings,
            3 => Self::UnknownMetricId,
            4 => Self::NonFiniteValue,
            5 => Self::TimestampOutOfRange,
            6 => Self::StaleSequence,
            7 => Self::UnknownBuoy,
            8 => Self::Invalid,
            _ => return None,
        })
    }

    /// The reason for an engine input error.
    pub fn for_input(e: &InputError) -> Self {
        match e {
            InputError::EmptyBatch => Self::EmptyBatch,
            InputError::BatchTooLarge { .. } => Self::TooManyReadings,
            InputError::UnknownMetricId { .. } => Self::UnknownMetricId,
            InputError::NonFiniteValue { .. } => Self::NonFiniteValue,
            InputError::TimestampOutOfRange { .. } => Self::TimestampOutOfRange,
            InputError::StaleSequence { .. } => Self::StaleSequence,
            InputError::UnknownBuoy(_) => Self::UnknownBuoy,
            _ => Self::Invalid,
        }
    }
}

/// The outcome an ACK reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// Stored and durable.
    Stored,
    /// Stored earlier (a retry); durable, nothing stored again.
    Duplicate,
    /// Not stored and never will be as sent.
    Rejected(RejectReason),
    /// Not stored: the server is full. Resend the same batch after `retry_after_ms`.
    Busy {
        /// Suggested delay before the resend, ms.
        retry_after_ms: u32,
    },
}

/// ACK: the server's answer on a batch stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The batch sequence of the BATCH answered.
    pub batch_seq: u64,
    /// What happened to it.
    pub status: AckStatus,
}

const ACK_STORED: u8 = 0;
const ACK_DUPLICATE: u8 = 1;
const ACK_REJECTED: u8 = 2;
const ACK_BUSY: u8 = 3;

impl Ack {
    /// Appends the encoded frame (always `HEADER_BYTES + ACK_PAYLOAD_BYTES` bytes) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (status, reason, retry_after_ms) = match self.status {
            AckStatus::Stored => (ACK_STORED, 0u16, 0u32),
            AckStatus::Duplicate => (ACK_DUPLICATE, 0, 0),
            AckStatus::Rejected(reason) => (ACK_REJECTED, reason as u16, 0),
            AckStatus::Busy { retry_after_ms } => (ACK_BUSY, 0, retry_after_ms),
        };
        let length_at = begin_frame(out, FrameType::Ack);
        out.extend_from_slice(&self.batch_seq.to_le_bytes());
        out.push(status);
        out.push(0);
        out.extend_from_slice(&reason.to_le_bytes());
        out.extend_from_slice(&retry_after_ms.to_le_bytes());
        finish_frame(out, length_at);
    }

    /// Decodes one whole ACK frame.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let mut r = open_frame(frame, FrameType::Ack)?;
        let batch_seq = r.u64()?;
        let status = r.u8()?;
        if r.u8()? != 0 {
            return Err(Error::ReservedNotZero { field: "ack reserved" });
        }
        let reason = r.u16()?;
        let retry_after_ms = r.u32()?;
        r.finish()?;
        let status = match (status, reason, retry_after_ms) {
            (ACK_STORED, 0, 0) => AckStatus::Stored,
            (ACK_DUPLICATE, 0, 0) => AckStatus::Duplicate,
            (ACK_REJECTED, code, 0) => AckStatus::Rejected(
                RejectReason::from_u16(code).ok_or(Error::UnknownCode { field: "reject reason", code })?,
            ),
            (ACK_BUSY, 0, retry_after_ms) => AckStatus::Busy { retry_after_ms },
            (ACK_STORED..=ACK_BUSY, _, _) => {
                return Err(Error::ReservedNotZero { field: "ack reason/retry" });
            }
            (other, _, _) => return Err(Error::UnknownCode { field: "ack status", code: u16::from(other) }),
        };
        Ok(Self { batch_seq, status })
    }
}

/// A decoded BATCH: its sequence number and the validated readings, whose metric dictionary is
/// the connection's HELLO dictionary.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedBatch {
    /// The buoy's batch sequence number (the engine's idempotency key with the buoy id).
    pub batch_seq: u64,
    /// The readings, ready for `Engine::ingest`.
    pub batch: ReadingBatch,
}

/// Appends a BATCH frame carrying `batch` under `batch_seq` to `out`. Each metric of `batch` is
/// sent as its id in `dictionary` (the one sent in HELLO); a metric the dictionary lacks is
/// [`Error::MetricNotInDictionary`]. Nothing is appended on error.
pub fn encode_batch(
    batch_seq: u64,
    batch: &ReadingBatch,
    dictionary: &MetricDictionary,
    out: &mut Vec<u8>,
) -> Result<()> {
    // Map the batch's own dictionary to wire ids once.
    let mut wire_ids = Vec::with_capacity(batch.metric_names().len());
    for name in batch.metric_names() {
        wire_ids.push(dictionary.id_of(name).ok_or_else(|| Error::MetricNotInDictionary(name.to_string()))?);
    }
    let timestamps = batch.timestamps();
    let (Some(&base_ts), Ok(count)) = (timestamps.first(), u32::try_from(timestamps.len())) else {
        return Err(Error::Invalid(InputError::EmptyBatch));
    };
    out.reserve(HEADER_BYTES + BATCH_FIXED_BYTES + timestamps.len() * (3 + BATCH_COLUMN_BYTES_PER_READING));
    let length_at = begin_frame(out, FrameType::Batch);
    out.extend_from_slice(&batch_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&base_ts.to_le_bytes());
    let mut previous = base_ts;
    for &ts in timestamps.iter().skip(1) {
        put_varint(out, zigzag(ts.wrapping_sub(previous)));
        previous = ts;
    }
    for &id in batch.metric_ids() {
        out.push(wire_ids.get(usize::from(id)).copied().unwrap_or(u8::MAX));
    }
    for &value in batch.values() {
        out.extend_from_slice(&value.to_le_bytes());
    }
    finish_frame(out, length_at);
    Ok(())
}

/// Decodes one whole BATCH frame into a validated [`ReadingBatch`] whose metric dictionary is
/// `dictionary` (the connection's HELLO dictionary).
pub fn decode_batch(frame: &[u8], dictionary: &MetricDictionary) -> Result<DecodedBatch> {
    let mut r = open_frame(frame, FrameType::Batch)?;
    let batch_seq = r.u64()?;
    let count = r.u32()?;
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count == 0 {
        return Err(Error::Invalid(InputError::EmptyBatch));
    }
    if count > BATCH_READINGS_MAX_WIRE {
        return Err(Error::Invalid(InputError::BatchTooLarge {
            readings: count,
            readings_max: BATCH_READINGS_MAX_WIRE,
        }));
    }
    let base_ts = r.i64()?;
    // Check before allocating: the smallest encoding of `count` readings must fit what is left.
    let needed = (count - 1) + count * BATCH_COLUMN_BYTES_PER_READING;
    if r.remaining() < needed {
        return Err(Error::Truncated {
            needed: r.position() + needed,
            available: frame.len() - HEADER_BYTES,
        });
    }
    if !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&base_ts) {
        return Err(Error::TimestampOverflow { index: 0, ts: base_ts });
    }
    let mut timestamps: Vec<TimestampNs> = Vec::with_capacity(count);
    timestamps.push(base_ts);
    let mut previous = base_ts;
    // Hot loop: one-byte varints (equal or nearby timestamps) take the inline path on the
    // remaining slice; longer ones go through the checked reader.
    let mut index = 1;
    while index < count {
        let rest = r.rest();
        let mut used = 0;
        let run_start = index;
        // The range is checked once per run (min/max), not once per reading; a run that left
        // it is scanned for its first offender, so the error is the same as a per-reading check.
        let (mut low, mut high) = (previous, previous);
        while index < count {
            let Some(&byte) = rest.get(used) else { break };
            if byte >= 0x80 {
                break;
            }
            used += 1;
            let ts = previous.wrapping_add(unzigzag(u64::from(byte)));
            low = low.min(ts);
            high = high.max(ts);
            timestamps.push(ts);
            previous = ts;
            index += 1;
        }
        if low < TIMESTAMP_MIN || high > TIMESTAMP_MAX {
            let run = timestamps.get(run_start..).unwrap_or_default();
            if let Some(offset) = run.iter().position(|ts| !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(ts)) {
                let ts = run.get(offset).copied().unwrap_or_default();
                return Err(Error::TimestampOverflow { index: run_start + offset, ts });
            }
        }
        r.advance(used);
        if index < count {
            let delta = unzigzag(r.varint(index)?);
            let ts = previous.wrapping_add(delta);
            if !(TIMESTAMP_MIN..=TIMESTAMP_MAX).contains(&ts) {
                return Err(Error::TimestampOverflow { index, ts });
            }
            timestamps.push(ts);
            previous = ts;
            index += 1;
        }
    }
    let ids = r.take(count)?;
    let dictionary_len = dictionary.len();
    if let Some(index) = ids.iter().position(|&id| usize::from(id) >= dictionary_len) {
        let id = ids.get(index).copied().unwrap_or(u8::MAX);
        return Err(Error::UnknownMetricId { index, id });
    }
    let metric_ids: Vec<u16> = ids.iter().map(|&id| u16::from(id)).collect();
    let value_bytes = r.take(count * 8)?;
    // Whole 8-byte words (`take` returned exactly 8 × count bytes), so the copy is a plain load
    // per value that the compiler vectorizes.
    let (words, _) = value_bytes.as_chunks::<8>();
    let values: Vec<f64> = words.iter().map(|word| f64::from_le_bytes(*word)).collect();
    r.finish()?;
    let batch = ReadingBatch::new(dictionary.names().to_vec(), timestamps, metric_ids, values)?;
    Ok(DecodedBatch { batch_seq, batch })
}

/// The batch sequence of a BATCH frame whose content [`decode_batch`] rejected, so the server can
/// answer the ACK `rejected` for the right batch. `None` unless the header is a valid BATCH
/// header and the payload holds at least its 8-byte sequence field.
pub fn peek_batch_seq(frame: &[u8]) -> Option<u64> {
    let header = FrameHeader::decode(frame).ok()?;
    if header.frame_type != FrameType::Batch {
        return None;
    }
    let field = frame.get(HEADER_BYTES..HEADER_BYTES + 8)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(field);
    Some(u64::from_le_bytes(word))
}

/// Zigzag-maps a signed delta so small magnitudes of either sign give short varints.
#[inline]
pub fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Appends `v` as an unsigned LEB128 varint (1–10 bytes, shortest form).
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_u16(out: &mut Vec<u8>, n: usize) {
    debug_assert!(n <= usize::from(u16::MAX));
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_le_bytes());
}

/// A bounds-checked cursor over untrusted bytes: every read returns `Truncated` instead of
/// panicking when the bytes run out.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn position(&self) -> usize {
        self.position
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    /// The bytes not read yet.
    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// Skips `n` bytes of [`Reader::rest`] (callers pass at most its length).
    fn advance(&mut self, n: usize) {
        self.position = self.position.saturating_add(n).min(self.bytes.len());
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.position.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.position..end)) {
            Some(slice) => {
                self.position += n;
                Ok(slice)
            }
            None => {
                Err(Error::Truncated { needed: self.position.saturating_add(n), available: self.bytes.len() })
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads one LEB128 varint of at most 64 bits (10 bytes, the last ≤ 0x01). `index` names the
    /// reading for the error.
    fn varint(&mut self, index: usize) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..VARINT_BYTES_MAX {
            let Some(&byte) = self.bytes.get(self.position) else {
                return Err(Error::Truncated { needed: self.position + 1, available: self.bytes.len() });
            };
            self.position += 1;
            let shift = 7 * i;
            if i == VARINT_BYTES_MAX - 1 && byte > 0x01 {
                return Err(Error::VarintOverflow { index });
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::VarintOverflow { index })
    }

    /// Requires that the payload was consumed exactly.
    fn finish(self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(Error::TrailingBytes { extra }),
        }
    }
}
