//! [`AuthClock`]: the time of authentication events — when a login or an MFA proof happened
//! (`auth_time`, checked by the fresh-auth gate), MFA time steps and challenge lifetimes.
//!
//! Production uses the system clock. Tests make a manual clock and move it, so the fresh-auth
//! window and the TOTP steps T-2..T+2 are exercised without waiting. Token lifetimes (`iat`,
//! `exp`, the per-account `valid_after` stamp) always follow the system clock: the JWT library
//! checks `exp`/`nbf` against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The clock of authentication events. Cheap to clone; clones of a manual clock share its time.
#[derive(Debug, Clone, Default)]
pub struct AuthClock {
    /// `None`: the system clock. `Some`: seconds since the epoch, set by [`AuthClock::set_s`]
    /// (written by tests only, read by every auth-time check).
    manual_s: Option<Arc<AtomicU64>>,
}

impl AuthClock {
    /// The system clock.
    pub fn system() -> Self {
        Self { manual_s: None }
    }

    /// A clock that stands at `now_s` until it is set or advanced.
    pub fn manual(now_s: u64) -> Self {
        Self { manual_s: Some(Arc::new(AtomicU64::new(now_s))) }
    }

    /// Seconds since the Unix epoch.
    pub fn now_s(&self) -> u64 {
        match &self.manual_s {
            Some(s) => s.load(Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }

    /// Sets a manual clock (no effect on the system clock).
    pub fn set_s(&self, now_s: u64) {
        if let Some(s) = &self.manual_s {
            s.store(now_s, Ordering::SeqCst);
        }
    }

    /// Moves a manual clock forward by `seconds` (no effect on the system clock).
    pub fn advance_s(&self, seconds: u64) {
        if let Some(s) = &self.manual_s {
            s.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}
