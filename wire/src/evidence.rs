//! Evidence of refused HELLOs (PROTOCOL.md §3.4, *Refusals leave evidence*): every REFUSED is
//! counted by reason ([`crate::ServerMetrics::refused`]); an authentication refusal is logged at
//! `warn` with the peer address, at most [`REFUSAL_LOG_LINES_PER_S`] lines a second (a flood
//! cannot fill the disk; the lines left out are counted in the next one); and an address that
//! collects [`REFUSALS_AUDIT_THRESHOLD`] authentication refusals within
//! [`REFUSALS_AUDIT_WINDOW_MS`] is reported once per window to the [`RefusalAudit`] the binary
//! hands in (it writes the audit log, which lives in `web`: `wire` does not depend on it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::DefaultClock;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::RefuseReason;

/// Warn lines about refused HELLOs per second, over all addresses (burst: the same number).
pub const REFUSAL_LOG_LINES_PER_S: u32 = 10;
/// Authentication refusals from one address within [`REFUSALS_AUDIT_WINDOW_MS`] that make an
/// audit entry.
pub const REFUSALS_AUDIT_THRESHOLD: u32 = 10;
/// The window of [`REFUSALS_AUDIT_THRESHOLD`], ms: one minute. An address is audited at most
/// once per window.
pub const REFUSALS_AUDIT_WINDOW_MS: u64 = 60_000;
/// Addresses whose refusals are being counted at most. When full, windows that ended are
/// dropped; if none did, a new address is not counted (its refusals are still counted by
/// reason and logged) until room frees, so the table's memory is bounded whatever a flood does.
pub const REFUSAL_ADDRESSES_MAX: usize = 4_096;

/// Told about an address that keeps being refused; implemented by the binary over the audit
/// log. Called off the network tasks (on Tokio's blocking pool), once per address and window.
pub trait RefusalAudit: Send + Sync + 'static {
    /// `peer` had `refusals` authentication refusals within [`REFUSALS_AUDIT_WINDOW_MS`]; the
    /// last one was `reason`.
    fn repeated_refusals(&self, peer: IpAddr, refusals: u32, reason: RefuseReason);
}

/// True for the reasons that say a token or device was not accepted (1–7): the ones a spoofing
/// attempt produces. `BAD_DICTIONARY`, `SERVER_BUSY` and `SHUTTING_DOWN` are not.
pub fn is_authentication_refusal(reason: RefuseReason) -> bool {
    !matches!(reason, RefuseReason::BadDictionary | RefuseReason::ServerBusy | RefuseReason::ShuttingDown)
}

/// One address's count in its current window.
struct Window {
    started: Instant,
    refusals: u32,
    audited: bool,
}

/// The server's refusal evidence (held in its shared state for the server's life).
pub(crate) struct RefusalEvidence {
    /// Budget of warn lines ([`REFUSAL_LOG_LINES_PER_S`]).
    lines: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    /// Lines left out since the last one written.
    suppressed: AtomicU64,
    /// Authentication refusals per address, at most [`REFUSAL_ADDRESSES_MAX`] entries; touched
    /// once per refused HELLO (never on the batch path).
    windows: Mutex<HashMap<IpAddr, Window>>,
    /// Set once by the binary (`ServerHandle::set_refusal_audit`).
    audit: OnceLock<Arc<dyn RefusalAudit>>,
    /// Addresses reported to the audit hook.
    audited: AtomicU64,
}

impl RefusalEvidence {
    pub(crate) fn new() -> Self {
        let per_second = NonZeroU32::new(REFUSAL_LOG_LINES_PER_S).unwrap_or(NonZeroU32::MIN);
        Self {
            lines: RateLimiter::direct(Quota::per_second(per_second)),
            suppressed: AtomicU64::new(0),
            windows: Mutex::new(HashMap::new()),
            audit: OnceLock::new(),
            audited: AtomicU64::new(0),
        }
    }

    /// Installs the audit hook; false if one was already set.
    pub(crate) fn set_audit(&self, audit: Arc<dyn RefusalAudit>) -> bool {
        self.audit.set(audit).is_ok()
    }

    /// Addresses reported to the audit hook so far.
    pub(crate) fn audited(&self) -> u64 {
        self.audited.load(Ordering::Relaxed)
    }

    /// Records one REFUSED sent to `peer` (counted by reason by the caller).
    pub(crate) fn refused(&self, peer: SocketAddr, reason: RefuseReason, message: &str) {
        if !is_authentication_refusal(reason) {
            tracing::debug!(%peer, ?reason, "HELLO refused: {message}");
            return;
        }
        if self.lines.check().is_ok() {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(%peer, ?reason, suppressed, "HELLO refused: {message}");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(refusals) = self.count(peer.ip(), Instant::now())
            && let Some(audit) = self.audit.get()
        {
            self.audited.fetch_add(1, Ordering::Relaxed);
            let audit = Arc::clone(audit);
            let ip = peer.ip();
            // The audit log fsyncs: off the network task.
            drop(tokio::task::spawn_blocking(move || audit.repeated_refusals(ip, refusals, reason)));
        }
    }

    /// Counts a refusal of `ip` at `now`; `Some(count)` when it crosses the threshold (once per
    /// window).
    fn count(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        let window = Duration::from_millis(REFUSALS_AUDIT_WINDOW_MS);
        // Every update is one insert/remove/field write: a poisoned lock holds a usable table.
        let mut windows = self.windows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !windows.contains_key(&ip) && windows.len() >= REFUSAL_ADDRESSES_MAX {
            windows.retain(|_, w| now.duration_since(w.started) < window);
            if windows.len() >= REFUSAL_ADDRESSES_MAX {
                return None;
            }
        }
        let entry = windows.entry(ip).or_insert(Window { started: now, refusals: 0, audited: false });
        if now.duration_since(entry.started) >= window {
            *entry = Window { started: now, refusals: 0, audited: false };
        }
        entry.refusals = entry.refusals.saturating_add(1);
        if entry.refusals >= REFUSALS_AUDIT_THRESHOLD && !entry.audited {
            entry.audited = true;
            return Some(entry.refusals);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_reported_once_per_window_at_the_threshold() {
        let evidence = RefusalEvidence::new();
        let ip: IpAddr = [192, 0, 2, 7].into();
        let start = Instant::now();
        let counts: Vec<_> = (0..25).map(|_| evidence.count(ip, start)).collect();
        let threshold = REFUSALS_AUDIT_THRESHOLD as usize;
        assert_eq!(counts.iter().filter(|c| c.is_some()).count(), 1);
        assert_eq!(counts.get(threshold - 1), Some(&Some(REFUSALS_AUDIT_THRESHOLD)));
        // A new window counts from zero again.
        let later = start + Duration::from_millis(REFUSALS_AUDIT_WINDOW_MS);
        let again: Vec<_> = (0..threshold).map(|_| evidence.count(ip, later)).collect();
        assert_eq!(again.last(), Some(&Some(REFUSALS_AUDIT_THRESHOLD)));
    }

    #[test]
    fn the_address_table_is_bounded() {
        let evidence = RefusalEvidence::new();
        let now = Instant::now();
        for i in 0..REFUSAL_ADDRESSES_MAX as u32 {
            evidence.count(IpAddr::from(i.to_be_bytes()), now);
        }
        let newcomer: IpAddr = [10, 255, 255, 255].into();
        assert_eq!(evidence.count(newcomer, now), None);
        assert_eq!(evidence.windows.lock().map(|w| w.len()).unwrap_or(0), REFUSAL_ADDRESSES_MAX);
        // Once the old windows end, the newcomer is counted.
        let later = now + Duration::from_millis(REFUSALS_AUDIT_WINDOW_MS);
        evidence.count(newcomer, later);
        assert_eq!(evidence.windows.lock().map(|w| w.len()).unwrap_or(0), 1);
    }
}
