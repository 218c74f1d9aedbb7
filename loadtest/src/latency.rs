//! Latency histograms: HDR histograms in microseconds, mergeable across tasks, summarised as
//! the percentiles every report prints.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Smallest latency a histogram tells apart, in microseconds.
pub const LATENCY_US_MIN: u64 = 1;
/// Largest latency recorded, in microseconds (60 s); longer ones are clamped to it and counted
/// in [`LatencyRecorder::clamped`].
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits kept (3: 0.1% relative error).
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

// hdrhistogram's rules for the bounds: low >= 1, high >= 2 * low, at most 5 digits.
const _: () =
    assert!(LATENCY_US_MIN >= 1 && LATENCY_US_MAX >= 2 * LATENCY_US_MIN && LATENCY_SIGNIFICANT_DIGITS <= 5);

/// One histogram of latencies.
#[derive(Clone, Debug)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
    clamped: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder covering [`LATENCY_US_MIN`]..=[`LATENCY_US_MAX`].
    pub fn new() -> Self {
        match Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS) {
            Ok(histogram) => Self { histogram, clamped: 0 },
            // The const assertion above checks every rule `new_with_bounds` applies.
            Err(e) => unreachable!("latency histogram bounds: {e:?}"),
        }
    }

    /// Records one latency; values outside the range are clamped into it.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if us > LATENCY_US_MAX {
            self.clamped += 1;
        }
        self.histogram.saturating_record(us.clamp(LATENCY_US_MIN, LATENCY_US_MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Both histograms have the same bounds, so `add` cannot fail; were it to, the values
        // are re-recorded one bucket at a time.
        if self.histogram.add(&other.histogram).is_err() {
            for v in other.histogram.iter_recorded() {
                self.histogram.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.clamped += other.clamped;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Values above [`LATENCY_US_MAX`], recorded as that maximum.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Forgets every value.
    pub fn reset(&mut self) {
        self.histogram.reset();
        self.clamped = 0;
    }

    /// The percentiles of the report, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let ms = |us: u64| us as f64 / 1_000.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1_000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Percentiles of a [`LatencyRecorder`], in milliseconds (all 0 when nothing was recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Within hdrhistogram's resolution: 3 significant digits.
    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-3 + 1e-3
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = LatencyRecorder::new();
        for ms in 1..=1_000u64 {
            r.record(Duration::from_millis(ms));
        }
        let s = r.summary();
        assert_eq!(s.count, 1_000);
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p90_ms, 900.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.p999_ms, 999.0), "{s:?}");
        assert!(close(s.max_ms, 1_000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) =
            (LatencyRecorder::new(), LatencyRecorder::new(), LatencyRecorder::new());
        for us in (1..50_000u64).step_by(7) {
            let d = Duration::from_micros(us);
            if us % 2 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn out_of_range_values_are_clamped_and_counted() {
        let mut r = LatencyRecorder::new();
        r.record(Duration::ZERO);
        r.record(Duration::from_secs(3_600));
        assert_eq!((r.count(), r.clamped()), (2, 1));
        assert!(close(r.summary().max_ms, 60_000.0));
        r.reset();
        assert_eq!((r.count(), r.clamped(), r.summary()), (0, 0, LatencySummary::default()));
    }
}
