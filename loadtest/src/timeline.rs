//! Per-interval counters of a run (throughput and latency over time), kept per worker without
//! locks and merged at the end.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use hdrhistogram::Histogram;

use crate::latency::{LATENCY_US_MAX, LATENCY_US_MIN};

/// Most intervals a timeline keeps (an hour at one-second intervals; longer runs choose a
/// longer interval, see [`interval_for`]); events after the last one are counted in the last.
pub const TIMELINE_INTERVALS_MAX: usize = 3_600;
/// Significant digits of the per-interval latency histograms: 2 (1% error) is plenty for a
/// chart and keeps each histogram near 10 KiB, so a full timeline stays under 40 MiB.
pub const TIMELINE_LATENCY_DIGITS: u8 = 2;

/// The interval that fits a run of `duration` in [`TIMELINE_INTERVALS_MAX`] intervals: one
/// second, or longer for runs over an hour.
pub fn interval_for(duration: Duration) -> Duration {
    let seconds = duration.as_secs().div_ceil(TIMELINE_INTERVALS_MAX as u64).max(1);
    Duration::from_secs(seconds)
}

/// Counters of one interval.
#[derive(Clone, Debug, Default)]
struct Interval {
    readings: u64,
    batches: u64,
    errors: u64,
    /// Latencies in µs; made on the first ack of the interval.
    latency: Option<Histogram<u32>>,
}

impl Interval {
    fn latency_mut(&mut self) -> Option<&mut Histogram<u32>> {
        if self.latency.is_none() {
            self.latency =
                Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, TIMELINE_LATENCY_DIGITS).ok();
        }
        self.latency.as_mut()
    }
}

/// Events bucketed by the interval they happened in, counted from a shared start instant.
#[derive(Clone, Debug)]
pub struct Timeline {
    start: Instant,
    interval: Duration,
    intervals: Vec<Interval>,
}

impl Timeline {
    /// An empty timeline of `interval`-long buckets starting at `start` (the same `start` for
    /// every worker whose timelines are merged). A zero interval is taken as one second.
    pub fn new(start: Instant, interval: Duration) -> Self {
        let interval = if interval.is_zero() { Duration::from_secs(1) } else { interval };
        Self { start, interval, intervals: Vec::new() }
    }

    /// The instant times are counted from.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn slot(&mut self, at: Instant) -> &mut Interval {
        let elapsed = at.saturating_duration_since(self.start);
        let index = (elapsed.as_nanos() / self.interval.as_nanos()).min(TIMELINE_INTERVALS_MAX as u128 - 1);
        let index = index as usize;
        if self.intervals.len() <= index {
            self.intervals.resize_with(index + 1, Interval::default);
        }
        &mut self.intervals[index]
    }

    /// An acknowledged batch of `readings` readings at `at`, `latency` after it was due.
    pub fn record_ack(&mut self, at: Instant, readings: u64, latency: Duration) {
        let slot = self.slot(at);
        slot.readings += readings;
        slot.batches += 1;
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(LATENCY_US_MIN, LATENCY_US_MAX);
        if let Some(h) = slot.latency_mut() {
            h.saturating_record(us);
        }
    }

    /// A failed operation at `at`.
    pub fn record_error(&mut self, at: Instant) {
        self.slot(at).errors += 1;
    }

    /// Adds `other`'s counts (timelines with the same start and interval).
    pub fn merge(&mut self, other: &Timeline) {
        debug_assert_eq!((self.start, self.interval), (other.start, other.interval));
        if self.intervals.len() < other.intervals.len() {
            self.intervals.resize_with(other.intervals.len(), Interval::default);
        }
        for (mine, theirs) in self.intervals.iter_mut().zip(&other.intervals) {
            mine.readings += theirs.readings;
            mine.batches += theirs.batches;
            mine.errors += theirs.errors;
            if let Some(theirs) = &theirs.latency
                && let Some(h) = mine.latency_mut()
            {
                // Same bounds on both sides, so `add` cannot fail.
                let _ = h.add(theirs);
            }
        }
    }

    /// One point per interval, rates per second.
    pub fn points(&self) -> Vec<TimelinePoint> {
        let seconds = self.interval.as_secs_f64();
        self.intervals
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let quantile_ms =
                    |q: f64| slot.latency.as_ref().map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1_000.0);
                TimelinePoint {
                    t_s: (i + 1) as f64 * seconds,
                    readings_per_s: slot.readings as f64 / seconds,
                    batches_per_s: slot.batches as f64 / seconds,
                    errors: slot.errors,
                    p50_ms: quantile_ms(0.50),
                    p99_ms: quantile_ms(0.99),
                }
            })
            .collect()
    }
}

/// One interval of a [`Timeline`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the start of the run.
    pub t_s: f64,
    /// Readings acknowledged per second during the interval.
    pub readings_per_s: f64,
    /// Batches (or queries) completed per second.
    pub batches_per_s: f64,
    /// Failures during the interval.
    pub errors: u64,
    /// Median latency of the interval, ms.
    pub p50_ms: f64,
    /// 99th percentile latency of the interval, ms.
    pub p99_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_their_interval_and_merge() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut a = Timeline::new(start, second);
        let mut b = Timeline::new(start, second);
        a.record_ack(start + Duration::from_millis(100), 1_000, Duration::from_millis(2));
        a.record_ack(start + Duration::from_millis(900), 1_000, Duration::from_millis(4));
        b.record_ack(start + Duration::from_millis(2_500), 500, Duration::from_millis(8));
        b.record_error(start + Duration::from_millis(2_600));
        a.merge(&b);
        let points = a.points();
        assert_eq!(points.len(), 3);
        assert_eq!((points[0].readings_per_s, points[0].batches_per_s, points[0].errors), (2_000.0, 2.0, 0));
        assert_eq!((points[1].readings_per_s, points[1].batches_per_s), (0.0, 0.0));
        assert_eq!((points[2].readings_per_s, points[2].errors), (500.0, 1));
        assert_eq!(points[2].t_s, 3.0);
        assert!((points[2].p99_ms - 8.0).abs() < 0.08, "{:?}", points[2]);
        assert!((points[0].p50_ms - 2.0).abs() < 0.02, "{:?}", points[0]);
    }

    #[test]
    fn long_runs_get_longer_intervals() {
        assert_eq!(interval_for(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(interval_for(Duration::from_secs(3_600)), Duration::from_secs(1));
        assert_eq!(interval_for(Duration::from_secs(3_601)), Duration::from_secs(2));
        assert_eq!(interval_for(Duration::from_secs(86_400)), Duration::from_secs(24));
    }

    #[test]
    fn events_before_the_start_or_after_the_last_interval_are_kept() {
        let start = Instant::now() + Duration::from_secs(5);
        let mut t = Timeline::new(start, Duration::from_millis(500));
        t.record_error(Instant::now());
        t.record_error(start + Duration::from_secs(1_000_000));
        let points = t.points();
        assert_eq!(points.len(), TIMELINE_INTERVALS_MAX);
        assert_eq!((points[0].errors, points[TIMELINE_INTERVALS_MAX - 1].errors), (1, 1));
        assert_eq!(points[0].readings_per_s, 0.0);
    }
}
