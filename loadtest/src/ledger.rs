//! Key bookkeeping of the durability check: which readings the server acknowledged, and how
//! that compares with what it serves back.
//!
//! A simulated buoy sends readings `first..first + n` of its deterministic marine series per
//! batch (`Workload::batch_of_readings`), so an acknowledged batch is one range of reading
//! numbers: the ledger keeps ranges, not keys (a few bytes per batch, whatever its size). A
//! stored row maps back to its reading number from `(metric, ts)` because the workload's
//! timestamps sit on a grid (no jitter): `reading = (ts - start) / interval * metrics + metric`.
//! The check then needs no copy of what was sent: it recomputes the expected value too.

use std::collections::BTreeMap;

use bluewave_engine::workload::Workload;
use serde::{Deserialize, Serialize};

/// Most example keys a [`DurabilityCheck`] lists per kind of fault (the counts are exact).
pub const CHECK_EXAMPLES_MAX: usize = 20;

/// Acknowledged reading ranges of every simulated buoy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckLedger {
    /// Per buoy index: `first_reading -> readings` of each acknowledged batch.
    buoys: BTreeMap<usize, BTreeMap<u64, u64>>,
}

impl AckLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the batch of `readings` readings starting at `first_reading` of buoy
    /// `buoy_index` was acknowledged (stored or duplicate).
    pub fn record(&mut self, buoy_index: usize, first_reading: u64, readings: u64) {
        if readings > 0 {
            self.buoys.entry(buoy_index).or_default().insert(first_reading, readings);
        }
    }

    /// Adds every range of `other`.
    pub fn merge(&mut self, other: &AckLedger) {
        for (buoy, ranges) in &other.buoys {
            let mine = self.buoys.entry(*buoy).or_default();
            for (first, n) in ranges {
                mine.insert(*first, *n);
            }
        }
    }

    /// Acknowledged readings of every buoy (a reading acknowledged twice counts once per range
    /// start, as batches never overlap).
    pub fn readings(&self) -> u64 {
        self.buoys.values().flat_map(|r| r.values()).sum()
    }

    /// Buoy indexes with at least one acknowledged batch.
    pub fn buoy_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.buoys.keys().copied()
    }

    /// The acknowledged ranges of one buoy, `(first_reading, readings)` in order.
    pub fn ranges(&self, buoy_index: usize) -> Vec<(u64, u64)> {
        self.buoys.get(&buoy_index).map(|r| r.iter().map(|(a, n)| (*a, *n)).collect()).unwrap_or_default()
    }
}

/// One row the server returned for a buoy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRow {
    /// Metric name.
    pub metric: String,
    /// Timestamp, ns since the epoch.
    pub ts: i64,
    /// Value.
    pub value: f64,
}

/// The outcome of comparing acknowledged with stored readings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DurabilityCheck {
    /// Readings acknowledged.
    pub acked: u64,
    /// Rows the server returned for the checked buoys.
    pub stored_rows: u64,
    /// Acknowledged readings the server does not return.
    pub lost: u64,
    /// Rows returned more than once for one key (each extra copy counts).
    pub duplicated: u64,
    /// Rows whose value differs from what the workload sent for that key.
    pub altered: u64,
    /// Rows that are no reading of the workload (off its time grid or an unknown metric).
    pub unexpected: u64,
    /// Rows stored whose batch was never acknowledged (sent before a kill, ack lost): allowed.
    pub stored_unacked: u64,
    /// Up to [`CHECK_EXAMPLES_MAX`] lost keys, `buoy metric ts`.
    pub lost_examples: Vec<String>,
    /// Up to [`CHECK_EXAMPLES_MAX`] duplicated keys.
    pub duplicated_examples: Vec<String>,
    /// Up to [`CHECK_EXAMPLES_MAX`] altered or unexpected rows.
    pub altered_examples: Vec<String>,
}

impl DurabilityCheck {
    /// True when nothing acknowledged is missing, doubled or altered.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.altered == 0 && self.unexpected == 0
    }

    /// Adds another buoy's check.
    pub fn merge(&mut self, other: DurabilityCheck) {
        self.acked += other.acked;
        self.stored_rows += other.stored_rows;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.altered += other.altered;
        self.unexpected += other.unexpected;
        self.stored_unacked += other.stored_unacked;
        for (mine, theirs) in [
            (&mut self.lost_examples, other.lost_examples),
            (&mut self.duplicated_examples, other.duplicated_examples),
            (&mut self.altered_examples, other.altered_examples),
        ] {
            let room = CHECK_EXAMPLES_MAX.saturating_sub(mine.len());
            mine.extend(theirs.into_iter().take(room));
        }
    }

    /// One line per fault kind, with the examples.
    pub fn summary(&self) -> String {
        format!(
            "acked {} readings, {} rows stored ({} of unacknowledged batches); lost {} {:?}; \
             duplicated {} {:?}; altered {} + unexpected {} {:?}",
            self.acked,
            self.stored_rows,
            self.stored_unacked,
            self.lost,
            self.lost_examples,
            self.duplicated,
            self.duplicated_examples,
            self.altered,
            self.unexpected,
            self.altered_examples
        )
    }
}

fn push_example(list: &mut Vec<String>, text: impl FnOnce() -> String) {
    if list.len() < CHECK_EXAMPLES_MAX {
        list.push(text());
    }
}

/// The reading number of `(metric, ts)` in `workload`'s series, or `None` when it is none of
/// them. Needs a workload without clock jitter (the load generator never sets one).
pub fn reading_number(workload: &Workload, metric: &str, ts: i64) -> Option<(u64, usize)> {
    let config = workload.config();
    let metric_index = workload.metric_names().iter().position(|m| m.as_str() == metric)?;
    let offset = ts.checked_sub(config.start_ts)?;
    if offset < 0 || config.jitter_ns_max != 0 || offset % config.sample_interval_ns != 0 {
        return None;
    }
    let sample = u64::try_from(offset / config.sample_interval_ns).ok()?;
    let reading = sample.checked_mul(config.metrics as u64)?.checked_add(metric_index as u64)?;
    Some((reading, metric_index))
}

/// Compares buoy `buoy_index`'s acknowledged ranges with the rows the server returned for it.
pub fn check_buoy(
    workload: &Workload,
    buoy_index: usize,
    buoy_id: &str,
    acked: &[(u64, u64)],
    rows: &[StoredRow],
) -> DurabilityCheck {
    let mut check = DurabilityCheck {
        acked: acked.iter().map(|(_, n)| n).sum(),
        stored_rows: rows.len() as u64,
        ..DurabilityCheck::default()
    };
    let metrics = workload.config().metrics as u64;
    let key_text = |reading: u64| {
        let metric_index = (reading % metrics) as usize;
        let metric = workload.metric_names().get(metric_index).map_or("?", |m| m.as_str());
        let ts = workload.sample_timestamp(buoy_index, reading / metrics).unwrap_or(i64::MIN);
        format!("{buoy_id} {metric} {ts}")
    };
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        let Some((reading, metric_index)) = reading_number(workload, &row.metric, row.ts) else {
            check.unexpected += 1;
            push_example(&mut check.altered_examples, || {
                format!("{buoy_id} {} {} (not a workload key)", row.metric, row.ts)
            });
            continue;
        };
        let expected = workload.value(buoy_index, metric_index, reading / metrics).ok();
        if expected.map(f64::to_bits) != Some(row.value.to_bits()) {
            check.altered += 1;
            push_example(&mut check.altered_examples, || {
                format!("{} = {} (sent {:?})", key_text(reading), row.value, expected)
            });
        }
        stored.push(reading);
    }
    stored.sort_unstable();
    let before = stored.len();
    let mut last = None;
    for &reading in &stored {
        if last == Some(reading) {
            push_example(&mut check.duplicated_examples, || key_text(reading));
        }
        last = Some(reading);
    }
    stored.dedup();
    check.duplicated = (before - stored.len()) as u64;
    let mut acked_present = 0u64;
    for &(first, n) in acked {
        let end = first.saturating_add(n);
        let lo = stored.partition_point(|&r| r < first);
        let hi = stored.partition_point(|&r| r < end);
        let present = (hi - lo) as u64;
        acked_present += present;
        if present < n {
            check.lost += n - present;
            let mut next = lo;
            for reading in first..end {
                if check.lost_examples.len() >= CHECK_EXAMPLES_MAX {
                    break;
                }
                if stored.get(next) == Some(&reading) {
                    next += 1;
                } else {
                    check.lost_examples.push(key_text(reading));
                }
            }
        }
    }
    check.stored_unacked = (stored.len() as u64).saturating_sub(acked_present);
    check
}
