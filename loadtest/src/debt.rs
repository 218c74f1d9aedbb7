//! Compaction debt over a run: the server's `/metrics` sampled once a second while the fleet
//! sends (flush generations per partition, most and total; bytes waiting for compaction; the
//! memory budget in use), for the JSON report, the table and the chart. A debt that keeps
//! growing means the sustained rate is bought by putting compaction off.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::https::{ApiClient, ApiTarget};
use crate::timeline::TIMELINE_INTERVALS_MAX;

/// How often `/metrics` is read.
pub const DEBT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Most samples kept (an hour at one a second); later ones replace the last.
pub const DEBT_SAMPLES_MAX: usize = TIMELINE_INTERVALS_MAX;

/// The engine's compaction debt and memory at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DebtPoint {
    /// Seconds since the start of the run (the timeline's origin).
    pub t_s: f64,
    /// Most flush generations in one partition (`bluewave_engine_compaction_generations_max`).
    pub generations_max: u64,
    /// Flush generations over all partitions.
    pub generations_total: u64,
    /// Partitions with more than one generation.
    pub partitions_waiting: u64,
    /// Bytes of the files compaction has yet to rewrite.
    pub bytes_waiting: u64,
    /// Memory reserved against the engine's budget (`bluewave_engine_memory_used_bytes`).
    pub memory_used_bytes: u64,
}

/// The debt of a whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DebtFigures {
    /// Samples taken.
    pub samples: u64,
    /// Peak of the most generations in one partition.
    pub generations_max_peak: u64,
    /// Peak of the generations over all partitions.
    pub generations_total_peak: u64,
    /// Peak of the bytes waiting.
    pub bytes_waiting_peak: u64,
    /// The last sample's most generations in one partition.
    pub generations_max_end: u64,
    /// The last sample's bytes waiting.
    pub bytes_waiting_end: u64,
    /// Peak of the memory reserved against the engine's budget.
    pub memory_used_peak_bytes: u64,
}

impl DebtFigures {
    /// Peaks and end values of `points`; `None` when there are none.
    pub fn of(points: &[DebtPoint]) -> Option<Self> {
        let last = points.last()?;
        let peak = |f: fn(&DebtPoint) -> u64| points.iter().map(f).max().unwrap_or(0);
        Some(Self {
            samples: points.len() as u64,
            generations_max_peak: peak(|p| p.generations_max),
            generations_total_peak: peak(|p| p.generations_total),
            bytes_waiting_peak: peak(|p| p.bytes_waiting),
            generations_max_end: last.generations_max,
            bytes_waiting_end: last.bytes_waiting,
            memory_used_peak_bytes: peak(|p| p.memory_used_bytes),
        })
    }
}

/// The debt gauges of an OpenMetrics text (`/metrics`), at `t_s`; `None` when the text has no
/// compaction gauge (a server without them).
pub fn parse_metrics(text: &str, t_s: f64) -> Option<DebtPoint> {
    let mut point = DebtPoint { t_s, ..DebtPoint::default() };
    let mut found = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else { continue };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let value = if value.is_finite() && value >= 0.0 { value as u64 } else { continue };
        let field = match name {
            "bluewave_engine_compaction_generations_max" => &mut point.generations_max,
            "bluewave_engine_compaction_generations_total" => &mut point.generations_total,
            "bluewave_engine_compaction_partitions_waiting" => &mut point.partitions_waiting,
            "bluewave_engine_compaction_bytes_waiting" => &mut point.bytes_waiting,
            "bluewave_engine_memory_used_bytes" => &mut point.memory_used_bytes,
            _ => continue,
        };
        *field = value;
        found |= name.starts_with("bluewave_engine_compaction_");
    }
    found.then_some(point)
}

/// Reads `/metrics` of `target` every [`DEBT_SAMPLE_INTERVAL`] until `stop` fires; returns
/// each sample with the instant it was taken (failed reads are skipped: the run goes on).
pub async fn sample(
    target: ApiTarget,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(Instant, DebtPoint)> {
    let mut client = ApiClient::new(target, None);
    let mut samples: Vec<(Instant, DebtPoint)> = Vec::new();
    let mut ticker = tokio::time::interval(DEBT_SAMPLE_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stop => return samples,
        }
        let at = Instant::now();
        let Ok(body) = client.get("/metrics").await else { continue };
        let Some(point) = parse_metrics(&String::from_utf8_lossy(&body), 0.0) else { continue };
        if samples.len() >= DEBT_SAMPLES_MAX {
            samples.pop();
        }
        samples.push((at, point));
    }
}

/// `samples` with times counted from `start` (samples taken before it are dropped).
pub fn since(start: Instant, samples: Vec<(Instant, DebtPoint)>) -> Vec<DebtPoint> {
    samples
        .into_iter()
        .filter_map(|(at, point)| {
            at.checked_duration_since(start).map(|d| DebtPoint { t_s: d.as_secs_f64(), ..point })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_openmetrics_text() {
        let text = "# HELP bluewave_engine_compaction_generations_max Compaction debt\n\
                    # TYPE bluewave_engine_compaction_generations_max gauge\n\
                    bluewave_engine_compaction_generations_max 12\n\
                    bluewave_engine_compaction_generations_total 40\n\
                    bluewave_engine_compaction_partitions_waiting 2\n\
                    bluewave_engine_compaction_bytes_waiting 123456789\n\
                    bluewave_engine_memory_used_bytes 1048576\n\
                    bluewave_engine_buffer_bytes 5\n\
                    # EOF\n";
        let point = parse_metrics(text, 3.0).unwrap();
        assert_eq!(
            point,
            DebtPoint {
                t_s: 3.0,
                generations_max: 12,
                generations_total: 40,
                partitions_waiting: 2,
                bytes_waiting: 123_456_789,
                memory_used_bytes: 1 << 20,
            }
        );
        assert_eq!(parse_metrics("bluewave_engine_buffer_bytes 5\n", 0.0), None);
        assert_eq!(parse_metrics("bluewave_engine_compaction_generations_max NaN\n", 0.0), None);
    }

    #[test]
    fn figures_are_peaks_and_end_values() {
        let p = |t_s: f64, generations_max: u64, bytes_waiting: u64| DebtPoint {
            t_s,
            generations_max,
            generations_total: generations_max * 2,
            bytes_waiting,
            ..DebtPoint::default()
        };
        let figures = DebtFigures::of(&[p(1.0, 3, 100), p(2.0, 9, 900), p(3.0, 2, 50)]).unwrap();
        assert_eq!(
            (figures.samples, figures.generations_max_peak, figures.generations_total_peak),
            (3, 9, 18)
        );
        assert_eq!(
            (figures.bytes_waiting_peak, figures.generations_max_end, figures.bytes_waiting_end),
            (900, 2, 50)
        );
        assert_eq!(DebtFigures::of(&[]), None);
        let start = Instant::now();
        let later = start + Duration::from_millis(1_500);
        let kept = since(later, vec![(start, p(0.0, 1, 1)), (later + Duration::from_secs(2), p(0.0, 4, 4))]);
        assert_eq!(kept.len(), 1);
        assert!((kept[0].t_s - 2.0).abs() < 1e-9);
    }
}
