//! One memory budget (`memory_bytes_max`, DESIGN.md contract 8): the buffer (and the queued
//! batches that become it), the flush working set, the compaction working set and the
//! query-side caches all draw on one [`MemoryBudget`]. A consumer takes a [`MemoryReservation`]
//! before it allocates and the reservation gives its bytes back when it is dropped, so the
//! accounting follows the memory: a buffered chunk's reservation lives inside the chunk and is
//! released when the last snapshot holding the chunk lets it go.
//!
//! The sum of reservations never passes the limit: a reservation is taken with one
//! compare-and-swap that refuses to cross it (the high-water mark records the most ever held).
//! What a consumer does when refused is its own policy:
//!
//! - ingest answers `Busy(MemoryBudget)` (and slows before that, `Engine::ingest_throttled`);
//! - a flush waits for memory, and always gets it: a quarter of the budget
//!   (`flush_reserve_bytes`) is kept for flushes, which are what frees the buffer, and a flush
//!   takes a partition in pieces no larger than that quarter allows;
//! - a compaction shrinks its slices, then merges fewer files, then waits;
//! - the query caches reserve their capacity when the server starts (refused: the server
//!   does not start).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Who holds a reservation; each has its own gauge in [`crate::MetricsSnapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MemoryConsumer {
    /// Batches queued for a WAL writer, then the buffered chunks built from them.
    #[default]
    Ingest,
    /// The rows a flush sorts and encodes (one piece of a partition per flush thread).
    Flush,
    /// A compaction's input files and merge slices.
    Compaction,
    /// Caches of the query side (file metadata), reserved at their capacity.
    QueryCache,
}

const CONSUMERS: usize = 4;

impl MemoryConsumer {
    fn index(self) -> usize {
        match self {
            Self::Ingest => 0,
            Self::Flush => 1,
            Self::Compaction => 2,
            Self::QueryCache => 3,
        }
    }
}

/// How long a waiting flush or compaction sleeps between attempts. Memory comes back when a
/// flush piece, a compaction or a snapshot ends, which takes milliseconds at least.
const WAIT_TICK: Duration = Duration::from_millis(2);

/// The shared account of `memory_bytes_max`. One per engine (`Shared::memory`), shared with
/// the query side through [`crate::Engine::memory_budget`]; lives as long as any reservation.
#[derive(Debug)]
pub struct MemoryBudget {
    /// `memory_bytes_max`. Set at open, never changed.
    limit: usize,
    /// Bytes kept for flushes: every other consumer is refused once the reservations held
    /// reach `limit - flush_reserve`. Set at open, never changed.
    flush_reserve: usize,
    /// Bytes reserved now, by every consumer. Changed by every reservation and release.
    used: AtomicUsize,
    /// Most bytes ever reserved at once. Raised by the reservation that reached it.
    high_water: AtomicUsize,
    /// Bytes reserved now per consumer ([`MemoryConsumer::index`]).
    by_consumer: [AtomicUsize; CONSUMERS],
    /// Reservations refused (any consumer), for the metrics.
    refusals: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes of which `flush_reserve` are kept for flushes.
    pub(crate) fn new(limit: usize, flush_reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            flush_reserve: flush_reserve.min(limit),
            used: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            by_consumer: std::array::from_fn(|_| AtomicUsize::new(0)),
            refusals: AtomicU64::new(0),
        })
    }

    /// `memory_bytes_max`.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Most bytes ever reserved at once; never above [`Self::limit`].
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Bytes `consumer` holds now.
    pub fn used_by(&self, consumer: MemoryConsumer) -> usize {
        self.by_consumer[consumer.index()].load(Ordering::Relaxed)
    }

    /// Reservations refused so far.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The most `consumer` may bring the total to: the whole budget for a flush, the budget
    /// less the flush reserve for everyone else.
    pub(crate) fn ceiling(&self, consumer: MemoryConsumer) -> usize {
        match consumer {
            MemoryConsumer::Flush => self.limit,
            _ => self.limit - self.flush_reserve,
        }
    }

    /// Bytes `consumer` could still reserve now.
    pub(crate) fn room(&self, consumer: MemoryConsumer) -> usize {
        self.ceiling(consumer).saturating_sub(self.used())
    }

    /// Takes `bytes` for `consumer` if the total stays within its ceiling; `None` (counted as a
    /// refusal) otherwise. Never blocks.
    pub fn try_reserve(
        self: &Arc<Self>,
        consumer: MemoryConsumer,
        bytes: usize,
    ) -> Option<MemoryReservation> {
        if self.take(consumer, bytes) {
            Some(MemoryReservation { budget: Some(self.clone()), consumer, bytes })
        } else {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Takes `bytes` for `consumer`, waiting while the budget is short; `None` when `give_up`
    /// says so first (the engine is stopping) or when `bytes` is above the consumer's ceiling
    /// (it could never be had).
    pub(crate) fn reserve_waiting(
        self: &Arc<Self>,
        consumer: MemoryConsumer,
        bytes: usize,
        give_up: &dyn Fn() -> bool,
    ) -> Option<MemoryReservation> {
        if bytes > self.ceiling(consumer) {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        loop {
            if self.take(consumer, bytes) {
                return Some(MemoryReservation { budget: Some(self.clone()), consumer, bytes });
            }
            if give_up() {
                return None;
            }
            std::thread::sleep(WAIT_TICK);
        }
    }

    /// Takes `bytes` whatever the ceiling: only for the buffer replayed from the WAL at open,
    /// which is acknowledged data and cannot be refused, and for the flush that frees it (the
    /// high-water mark then shows it).
    pub(crate) fn reserve_forced(
        self: &Arc<Self>,
        consumer: MemoryConsumer,
        bytes: usize,
    ) -> MemoryReservation {
        let before = self.used.fetch_add(bytes, Ordering::AcqRel);
        self.high_water.fetch_max(before + bytes, Ordering::Relaxed);
        self.by_consumer[consumer.index()].fetch_add(bytes, Ordering::Relaxed);
        MemoryReservation { budget: Some(self.clone()), consumer, bytes }
    }

    fn take(&self, consumer: MemoryConsumer, bytes: usize) -> bool {
        let ceiling = self.ceiling(consumer);
        let taken = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(bytes).filter(|&total| total <= ceiling)
        });
        match taken {
            Ok(before) => {
                self.high_water.fetch_max(before + bytes, Ordering::Relaxed);
                self.by_consumer[consumer.index()].fetch_add(bytes, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn release(&self, consumer: MemoryConsumer, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
        self.by_consumer[consumer.index()].fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Bytes held against a [`MemoryBudget`]; given back when dropped.
#[derive(Debug, Default)]
pub struct MemoryReservation {
    /// `None` for an empty reservation that belongs to no budget.
    budget: Option<Arc<MemoryBudget>>,
    consumer: MemoryConsumer,
    bytes: usize,
}

impl MemoryReservation {
    /// A reservation of nothing (for chunks built outside an engine, e.g. in benches).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes over `other`'s bytes (same budget and consumer, or `self` empty).
    pub(crate) fn absorb(&mut self, mut other: Self) {
        if self.budget.is_none() {
            std::mem::swap(self, &mut other);
            return;
        }
        debug_assert_eq!(self.consumer, other.consumer);
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Gives back what is held above `bytes`.
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        if let Some(budget) = &self.budget
            && bytes < self.bytes
        {
            budget.release(self.consumer, self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for MemoryReservation {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget
            && self.bytes > 0
        {
            budget.release(self.consumer, self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_ceiling_and_come_back_on_drop() {
        let budget = MemoryBudget::new(1_000, 250);
        let a = budget.try_reserve(MemoryConsumer::Ingest, 700);
        assert!(a.is_some());
        assert!(budget.try_reserve(MemoryConsumer::Compaction, 100).is_none(), "above 750 for non-flush");
        let flush = budget.try_reserve(MemoryConsumer::Flush, 300);
        assert!(flush.is_some(), "a flush may use the reserve");
        assert!(budget.try_reserve(MemoryConsumer::Flush, 1).is_none());
        assert_eq!((budget.used(), budget.high_water()), (1_000, 1_000));
        assert_eq!(budget.used_by(MemoryConsumer::Flush), 300);
        drop(a);
        assert_eq!(budget.used(), 300);
        let mut merged = MemoryReservation::empty();
        merged.absorb(budget.try_reserve(MemoryConsumer::Ingest, 10).unwrap_or_default());
        merged.absorb(budget.try_reserve(MemoryConsumer::Ingest, 20).unwrap_or_default());
        assert_eq!((merged.bytes(), budget.used_by(MemoryConsumer::Ingest)), (30, 30));
        merged.shrink_to(12);
        assert_eq!(budget.used_by(MemoryConsumer::Ingest), 12);
        drop((merged, flush));
        assert_eq!((budget.used(), budget.high_water()), (0, 1_000));
        assert_eq!(budget.refusals(), 2);
        assert!(budget.reserve_waiting(MemoryConsumer::Compaction, 751, &|| false).is_none());
    }

    #[test]
    fn concurrent_reservations_stay_within_the_limit() {
        let budget = MemoryBudget::new(10_000, 0);
        std::thread::scope(|s| {
            for t in 0..4 {
                let budget = &budget;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..2_000usize {
                        if let Some(r) = budget.try_reserve(MemoryConsumer::Ingest, 100 + (i * 7 + t) % 900) {
                            held.push(r);
                        }
                        if held.len() > 5 {
                            held.remove(0);
                        }
                    }
                });
            }
        });
        assert!(budget.high_water() <= 10_000);
        assert_eq!(budget.used(), 0);
    }
}
