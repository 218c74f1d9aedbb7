//! Login brute-force limits: a per-client-IP rate (governor, keyed GCRA) and a per-account
//! exponential backoff after failed attempts. Both are checked before any password hashing,
//! so a flood costs no argon2 work. State is in memory (a restart forgets it; the audit log
//! keeps every attempt).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::error::{AuthError, AuthResult};

/// Login attempts per client IP per minute (burst of the same size).
pub const LOGIN_ATTEMPTS_PER_IP_PER_MINUTE: u32 = 10;
/// Failed attempts on one account before backoff starts.
pub const ACCOUNT_FAILURES_FREE: u32 = 5;
/// First backoff after [`ACCOUNT_FAILURES_FREE`] failures, doubled per further failure.
pub const ACCOUNT_BACKOFF_BASE_S: u64 = 1;
/// Longest backoff, in seconds.
pub const ACCOUNT_BACKOFF_MAX_S: u64 = 900;
/// A failure older than this no longer counts.
pub const ACCOUNT_FAILURE_WINDOW_S: u64 = 3_600;
/// Most client IPs tracked at once. Above it stale entries are dropped; if all are fresh,
/// new IPs are refused ([`AuthError::RateLimited`]) rather than growing memory.
pub const TRACKED_IPS_MAX: usize = 100_000;
/// Most accounts with recent failures tracked at once (same policy as [`TRACKED_IPS_MAX`]).
pub const TRACKED_ACCOUNTS_MAX: usize = 100_000;

/// Limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Attempts per IP per minute.
    pub per_ip_per_minute: u32,
    /// Failures on one account before backoff.
    pub account_failures_free: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            per_ip_per_minute: LOGIN_ATTEMPTS_PER_IP_PER_MINUTE,
            account_failures_free: ACCOUNT_FAILURES_FREE,
        }
    }
}

struct Failures {
    count: u32,
    last: Instant,
}

pub(crate) struct LoginLimiter {
    limits: LoginLimits,
    per_ip: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>,
    clock: DefaultClock,
    accounts: Mutex<HashMap<String, Failures>>,
}

impl LoginLimiter {
    pub fn new(limits: LoginLimits) -> Self {
        let per_minute = NonZeroU32::new(limits.per_ip_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let clock = DefaultClock::default();
        Self {
            limits,
            per_ip: RateLimiter::hashmap_with_clock(Quota::per_minute(per_minute), clock.clone()),
            clock,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt from `ip`'s budget. IPv6 clients are keyed by their /64 (one
    /// subscriber's usual allocation), otherwise one host could rotate through 2^64 addresses.
    pub fn check_ip(&self, ip: IpAddr) -> AuthResult<()> {
        let ip = limit_key(ip);
        if self.per_ip.len() >= TRACKED_IPS_MAX {
            self.per_ip.retain_recent();
            if self.per_ip.len() >= TRACKED_IPS_MAX {
                return Err(AuthError::RateLimited { retry_after_secs: 60 });
            }
        }
        self.per_ip.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            AuthError::RateLimited { retry_after_secs: ceil_secs(wait) }
        })
    }

    /// Refuses while `account` (normalised email) is in backoff.
    pub fn check_account(&self, account: &str) -> AuthResult<()> {
        let accounts = self.accounts.lock().map_err(|_| AuthError::Poisoned)?;
        let Some(f) = accounts.get(account) else { return Ok(()) };
        match self.backoff(f) {
            Some(wait) => Err(AuthError::RateLimited { retry_after_secs: ceil_secs(wait) }),
            None => Ok(()),
        }
    }

    /// Records a failed attempt on `account`.
    pub fn record_failure(&self, account: &str) -> AuthResult<()> {
        let mut accounts = self.accounts.lock().map_err(|_| AuthError::Poisoned)?;
        let now = Instant::now();
        if !accounts.contains_key(account) && accounts.len() >= TRACKED_ACCOUNTS_MAX {
            let window = Duration::from_secs(ACCOUNT_FAILURE_WINDOW_S);
            accounts.retain(|_, f| now.duration_since(f.last) < window);
            if accounts.len() >= TRACKED_ACCOUNTS_MAX {
                return Err(AuthError::LimitReached {
                    what: "accounts tracked for login backoff",
                    max: TRACKED_ACCOUNTS_MAX as u64,
                });
            }
        }
        let entry = accounts.entry(account.to_owned()).or_insert(Failures { count: 0, last: now });
        if now.duration_since(entry.last) >= Duration::from_secs(ACCOUNT_FAILURE_WINDOW_S) {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Ok(())
    }

    /// Forgets `account`'s failures after a successful login.
    pub fn record_success(&self, account: &str) -> AuthResult<()> {
        self.accounts.lock().map_err(|_| AuthError::Poisoned)?.remove(account);
        Ok(())
    }

    /// Remaining backoff of an account with `f`, if any.
    fn backoff(&self, f: &Failures) -> Option<Duration> {
        if f.count < self.limits.account_failures_free {
            return None;
        }
        let doublings = (f.count - self.limits.account_failures_free).min(20);
        let backoff_s = ACCOUNT_BACKOFF_BASE_S.saturating_mul(1u64 << doublings).min(ACCOUNT_BACKOFF_MAX_S);
        let until = f.last + Duration::from_secs(backoff_s);
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Starts an attempt on `account` whose outcome is known only after the check (an MFA
    /// code): refuses while the account is in backoff, and otherwise counts the attempt as a
    /// failure at once, under the same lock. Parallel attempts therefore each see the ones
    /// before them, and a burst cannot slip past the backoff between a check and its failure.
    /// [`LoginLimiter::record_success`] clears the count when the attempt succeeds.
    pub fn begin_attempt(&self, account: &str) -> AuthResult<()> {
        let mut accounts = self.accounts.lock().map_err(|_| AuthError::Poisoned)?;
        if let Some(f) = accounts.get(account)
            && let Some(wait) = self.backoff(f)
        {
            return Err(AuthError::RateLimited { retry_after_secs: ceil_secs(wait) });
        }
        let now = Instant::now();
        if !accounts.contains_key(account) && accounts.len() >= TRACKED_ACCOUNTS_MAX {
            let window = Duration::from_secs(ACCOUNT_FAILURE_WINDOW_S);
            accounts.retain(|_, f| now.duration_since(f.last) < window);
            if accounts.len() >= TRACKED_ACCOUNTS_MAX {
                return Err(AuthError::RateLimited { retry_after_secs: 60 });
            }
        }
        let entry = accounts.entry(account.to_owned()).or_insert(Failures { count: 0, last: now });
        if now.duration_since(entry.last) >= Duration::from_secs(ACCOUNT_FAILURE_WINDOW_S) {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        Ok(())
    }
}

/// The limiter key of a client address: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}
