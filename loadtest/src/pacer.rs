//! Open-loop pacing: the k-th operation is due at `start + k / rate`, whatever happened to the
//! previous ones. Latency is measured from the due time, not from the moment the operation
//! was finally sent, so a stalled server shows up in the percentiles instead of silently
//! slowing the generator down ("coordinated omission", as wrk2 and HdrHistogram describe it).

use std::time::{Duration, Instant};

/// Due times of a fixed-rate schedule.
#[derive(Clone, Debug)]
pub struct Pacer {
    start: Instant,
    /// Seconds between operations; `None` = open throttle.
    period_s: Option<f64>,
    next: u64,
}

impl Pacer {
    /// A schedule of `rate_per_s` operations per second from `start`; a rate of 0 (or not
    /// finite) means no pacing: every operation is due at once.
    pub fn new(start: Instant, rate_per_s: f64) -> Self {
        let period_s = (rate_per_s.is_finite() && rate_per_s > 0.0).then(|| 1.0 / rate_per_s);
        Self { start, period_s, next: 0 }
    }

    /// The due time of the next operation (`now`-ish for an open throttle).
    pub fn next_due(&mut self) -> Instant {
        let k = self.next;
        self.next += 1;
        match self.period_s {
            Some(period) => self.start + Duration::from_secs_f64(k as f64 * period),
            None => Instant::now(),
        }
    }

    /// Operations scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_exactly() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start, 400.0);
        let due: Vec<Duration> = (0..5).map(|_| pacer.next_due() - start).collect();
        assert_eq!(due, [0, 2_500, 5_000, 7_500, 10_000].map(Duration::from_micros));
        assert_eq!(pacer.scheduled(), 5);
    }

    #[test]
    fn zero_rate_is_an_open_throttle() {
        let before = Instant::now();
        let mut pacer = Pacer::new(before + Duration::from_secs(60), 0.0);
        assert!(pacer.next_due() < before + Duration::from_secs(1));
        let mut nan = Pacer::new(before + Duration::from_secs(60), f64::NAN);
        assert!(nan.next_due() < before + Duration::from_secs(1));
    }
}
