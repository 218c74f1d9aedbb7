//! Server counters: lock-free atomics bumped on the connection and stream tasks, read as a
//! [`ServerMetrics`] snapshot. Relaxed ordering everywhere: each counter is exact on its own, a
//! snapshot is not one atomic cut across counters (good enough for dashboards and tests that
//! wait for quiescence).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::{ConnectionCloseCode, RefuseReason, StreamErrorCode};

/// Number of REFUSED reason codes (1–10); index 0 is unused.
const REFUSE_REASONS: usize = 11;
/// Number of stream reset codes (`0x101`–`0x106`).
const RESET_CODES: usize = 6;

/// The live counters of one server.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    handshakes_failed: AtomicU64,
    incoming_refused: AtomicU64,
    incoming_retried: AtomicU64,
    refused: [AtomicU64; REFUSE_REASONS],
    batches_received: AtomicU64,
    readings_received: AtomicU64,
    acks_stored: AtomicU64,
    acks_duplicate: AtomicU64,
    acks_rejected: AtomicU64,
    acks_busy: AtomicU64,
    resets: [AtomicU64; RESET_CODES],
    closed_hello_timeout: AtomicU64,
    closed_protocol_violation: AtomicU64,
    closed_too_many_violations: AtomicU64,
    closed_device_revoked: AtomicU64,
    closed_internal_error: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Relaxed);
        self.connections_accepted.fetch_add(1, Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Relaxed);
    }

    pub(crate) fn incoming_refused(&self) {
        self.incoming_refused.fetch_add(1, Relaxed);
    }

    pub(crate) fn incoming_retried(&self) {
        self.incoming_retried.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused(&self, reason: RefuseReason) {
        if let Some(counter) = self.refused.get(usize::from(reason as u16)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn batch_received(&self, readings: usize) {
        self.batches_received.fetch_add(1, Relaxed);
        self.readings_received.fetch_add(readings as u64, Relaxed);
    }

    pub(crate) fn ack(&self, status: &crate::AckStatus) {
        let counter = match status {
            crate::AckStatus::Stored => &self.acks_stored,
            crate::AckStatus::Duplicate => &self.acks_duplicate,
            crate::AckStatus::Rejected(_) => &self.acks_rejected,
            crate::AckStatus::Busy { .. } => &self.acks_busy,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn reset(&self, code: StreamErrorCode) {
        let index = (code as u32).saturating_sub(StreamErrorCode::FrameTooLarge as u32) as usize;
        if let Some(counter) = self.resets.get(index) {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn closed(&self, code: ConnectionCloseCode) {
        let counter = match code {
            ConnectionCloseCode::HelloTimeout => &self.closed_hello_timeout,
            ConnectionCloseCode::ProtocolViolation => &self.closed_protocol_violation,
            ConnectionCloseCode::TooManyViolations => &self.closed_too_many_violations,
            ConnectionCloseCode::DeviceRevoked => &self.closed_device_revoked,
            ConnectionCloseCode::InternalError => &self.closed_internal_error,
            // Orderly closes and refusals are counted elsewhere (refused by reason).
            ConnectionCloseCode::NoError
            | ConnectionCloseCode::GoingAway
            | ConnectionCloseCode::HelloRefused => {
                return;
            }
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn bytes_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ServerMetrics {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let mut refused = [0u64; REFUSE_REASONS];
        for (out, c) in refused.iter_mut().zip(&self.refused) {
            *out = load(c);
        }
        let mut resets = [0u64; RESET_CODES];
        for (out, c) in resets.iter_mut().zip(&self.resets) {
            *out = load(c);
        }
        ServerMetrics {
            connections_open: load(&self.connections_open),
            connections_accepted: load(&self.connections_accepted),
            handshakes_failed: load(&self.handshakes_failed),
            incoming_refused: load(&self.incoming_refused),
            incoming_retried: load(&self.incoming_retried),
            refused_by_reason: refused,
            batches_received: load(&self.batches_received),
            readings_received: load(&self.readings_received),
            acks_stored: load(&self.acks_stored),
            acks_duplicate: load(&self.acks_duplicate),
            acks_rejected: load(&self.acks_rejected),
            acks_busy: load(&self.acks_busy),
            resets_by_code: resets,
            closed_hello_timeout: load(&self.closed_hello_timeout),
            closed_protocol_violation: load(&self.closed_protocol_violation),
            closed_too_many_violations: load(&self.closed_too_many_violations),
            closed_device_revoked: load(&self.closed_device_revoked),
            closed_internal_error: load(&self.closed_internal_error),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
        }
    }
}

/// A snapshot of the server's counters (all since start, except `connections_open`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerMetrics {
    /// Connections past ACCEPTED and not yet closed.
    pub connections_open: u64,
    /// Connections that got ACCEPTED.
    pub connections_accepted: u64,
    /// QUIC/TLS handshakes that failed or timed out (`handshake_timeout_ms`).
    pub handshakes_failed: u64,
    /// Connection attempts refused before the handshake (hard cap `incoming_max`).
    pub incoming_refused: u64,
    /// Connection attempts sent a QUIC Retry (address validation under load).
    pub incoming_retried: u64,
    /// HELLOs refused, indexed by REFUSED reason code (index 0 unused); see
    /// [`ServerMetrics::refused`].
    pub refused_by_reason: [u64; REFUSE_REASONS],
    /// BATCH frames read in full (well formed or not).
    pub batches_received: u64,
    /// Readings in the batches that decoded.
    pub readings_received: u64,
    /// ACKs `stored` sent.
    pub acks_stored: u64,
    /// ACKs `duplicate` sent.
    pub acks_duplicate: u64,
    /// ACKs `rejected` sent.
    pub acks_rejected: u64,
    /// ACKs `busy` sent.
    pub acks_busy: u64,
    /// Stream resets sent, indexed by `code - 0x101`; see [`ServerMetrics::resets`].
    pub resets_by_code: [u64; RESET_CODES],
    /// Connections closed `HELLO_TIMEOUT`.
    pub closed_hello_timeout: u64,
    /// Connections closed `PROTOCOL_VIOLATION`.
    pub closed_protocol_violation: u64,
    /// Connections closed `TOO_MANY_VIOLATIONS`.
    pub closed_too_many_violations: u64,
    /// Connections closed `DEVICE_REVOKED`.
    pub closed_device_revoked: u64,
    /// Connections closed `INTERNAL_ERROR` (engine faults).
    pub closed_internal_error: u64,
    /// Frame bytes read from clients (headers included).
    pub bytes_in: u64,
    /// Frame bytes written to clients.
    pub bytes_out: u64,
}

impl ServerMetrics {
    /// HELLOs refused with `reason`.
    pub fn refused(&self, reason: RefuseReason) -> u64 {
        self.refused_by_reason.get(usize::from(reason as u16)).copied().unwrap_or(0)
    }

    /// Stream resets sent with `code`.
    pub fn resets(&self, code: StreamErrorCode) -> u64 {
        let index = (code as u32).saturating_sub(StreamErrorCode::FrameTooLarge as u32) as usize;
        self.resets_by_code.get(index).copied().unwrap_or(0)
    }
}
