//! The shared deterministic marine workload: what a fleet of buoys would send, for benches, the
//! `bluewave ingest-demo` command and the load generator.
//!
//! A [`Workload`] is a pure function of its [`WorkloadConfig`]: every reading of every buoy is
//! computed from `(seed, buoy, metric, sample)` alone, so any batch can be generated at any offset,
//! in any order, on any thread, and comes out bit-identical. A checker can therefore recompute what
//! a buoy sent (say, after a `kill -9`) without storing it.
//!
//! # Readings
//!
//! Buoy `i` is named `buoy-0007`-style ([`Workload::buoy_id`]). It samples the first
//! `config.metrics` of the eight [`MARINE_METRICS`] every `sample_interval_ns`; all metrics of one
//! sample share its timestamp. A buoy's readings are numbered sample-major:
//! `reading = sample * metrics + metric`. [`Workload::batch`] cuts by samples,
//! [`Workload::batch_of_readings`] by readings, [`Workload::iter_batches`] walks the whole fleet.
//!
//! # Signal model
//!
//! Each `(buoy, metric)` series is
//!
//! ```text
//! value = base                                   per series, inside the metric's typical band
//!       + drift    (the buoy's three slow sines, periods ~2.7 d, ~9.3 d, ~31 d with per-buoy
//!                   periods and phases, each weighted by a per-series signed weight)
//!       + wave     (the buoy's fast sine, period 5-20 min: sea state; per-series signed weight)
//!       + diurnal  (afternoon warming / photosynthesis, the M2 tide, or solar charging; a per-buoy
//!                   longitude shifts local time)
//!       + noise    (triangular, about one to three least significant digits of the sensor)
//! ```
//!
//! then clamped to the metric's typical band (the amplitudes are chosen so the clamp never bites,
//! see the `models_never_need_the_clamp` test) and quantized to the sensor's precision as the
//! nearest `f64` of a decimal (`35.127`, `8.093`), like real sensors report. Values stay inside
//! [`DEFAULT_METRIC_RANGES`]; with [`WorkloadConfig::out_of_range_every`] set to `Some(n)`, every
//! `n`-th reading of a buoy is instead replaced by a value outside that range (alternately above the
//! maximum and below the minimum), so quality flagging can be tested.
//!
//! The sines belong to the buoy, not the series: its metrics move together (or against each
//! other) like real ones under the same weather, and the sines are computed once per sample.
//!
//! # Randomness and portability
//!
//! There is no random state. Every pseudo-random number is a SplitMix64 output (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014; constants as in Vigna's
//! reference `splitmix64.c`) keyed by a hash of the coordinates, also built from SplitMix64's
//! mixing function. Sines come from a fixed polynomial (`sin_turns`) instead of the platform's
//! libm, rounding is done by IEEE addition, and otherwise only IEEE-754 `+ - * /`, conversions and
//! integer arithmetic are used (Rust never fuses them into FMAs on its own), so the output is
//! bit-identical on every target with IEEE-754 doubles and across Rust versions, not just from run
//! to run. A test pins 10,000 readings to catch accidental changes of the model.
//!
//! # Cost
//!
//! Generation allocates only the batch's four column `Vec`s (sized up front) plus the batch's copy
//! of the metric dictionary, and touches no locks. Per sample: seven polynomial sines and two
//! integer remainders, shared by its metrics; per reading: one hash, a few multiply-adds and one
//! division. Measured at 20-40 ns per reading in a release build on a shared 2-vCPU AMD EPYC VM
//! (8 metrics, batches of 100 to 10,000 readings, validation by [`ReadingBatch::new`] included):
//! about 25 µs for a batch of 1,000 readings, 25-50 million readings per second per core. Keep it
//! out of timed loops all the same: benches build their batches before `b.iter`.

use std::iter::FusedIterator;
use std::sync::Arc;

use crate::error::InputError;
use crate::types::{
    BATCH_READINGS_MAX, BuoyId, DEFAULT_METRIC_RANGES, MetricName, NANOS_PER_SECOND, ReadingBatch,
    TimestampNs,
};

/// Number of marine metrics a workload can generate ([`MARINE_METRICS`]).
pub const MARINE_METRIC_COUNT: usize = 8;
/// Default fleet size.
pub const DEFAULT_BUOYS: usize = 1_000;
/// Largest fleet a workload describes. Buoy ids are built up front (about 50 bytes each), so the
/// bound keeps [`Workload::new`] under about 50 MB.
pub const BUOYS_MAX: usize = 1_000_000;
/// Default sampling interval: 1 Hz.
pub const DEFAULT_SAMPLE_INTERVAL_NS: i64 = NANOS_PER_SECOND;
/// Default time of sample 0: 2026-06-01T00:00:00Z.
pub const DEFAULT_START_TS: TimestampNs = 1_780_272_000 * NANOS_PER_SECOND;
/// Default seed (the bytes of "BlueWave").
pub const DEFAULT_SEED: u64 = 0x426C_7565_5761_7665;

const NANOS_PER_DAY: i64 = 86_400 * NANOS_PER_SECOND;
/// Principal lunar semi-diurnal tide (M2): 12 h 25 min 14 s.
const TIDE_PERIOD_NS: i64 = 44_714 * NANOS_PER_SECOND;
/// Metric ids of a batch are the metric's index in [`MARINE_METRICS`].
const METRIC_IDS: [u16; MARINE_METRIC_COUNT] = [0, 1, 2, 3, 4, 5, 6, 7];
/// `10^digits` for the supported sensor precisions.
const DECIMAL_SCALES: [f64; 4] = [1.0, 10.0, 100.0, 1_000.0];
/// How far outside the physical range an injected out-of-range value lies, as a fraction of the
/// range's span.
const OUT_OF_RANGE_OVERSHOOT: f64 = 0.25;

const _: () = assert!(MARINE_METRIC_COUNT <= crate::types::BATCH_METRICS_MAX);
const _: () = assert!(DEFAULT_BUOYS <= BUOYS_MAX);

/// One marine metric the workload generates: its name and how its sensor reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MarineMetric {
    /// Metric name, as stored (`[a-z0-9_]`).
    pub name: &'static str,
    /// Decimal digits after the point the sensor reports; every generated value `v` satisfies
    /// `v == (v * 10^d).round() / 10^d`.
    pub decimal_digits: u32,
    /// Smallest value the workload generates (out-of-range injection aside).
    pub typical_min: f64,
    /// Largest value the workload generates (out-of-range injection aside).
    pub typical_max: f64,
}

/// The eight marine metrics, in the order [`WorkloadConfig::metrics`] takes them.
pub const MARINE_METRICS: [MarineMetric; MARINE_METRIC_COUNT] = [
    MarineMetric { name: "salinity_psu", decimal_digits: 3, typical_min: 30.0, typical_max: 38.0 },
    MarineMetric { name: "ph", decimal_digits: 3, typical_min: 7.9, typical_max: 8.3 },
    MarineMetric { name: "water_temp_c", decimal_digits: 2, typical_min: 5.0, typical_max: 28.0 },
    MarineMetric { name: "turbidity_ntu", decimal_digits: 2, typical_min: 0.5, typical_max: 20.0 },
    MarineMetric { name: "nitrate_mg_l", decimal_digits: 3, typical_min: 0.01, typical_max: 2.0 },
    MarineMetric { name: "dissolved_oxygen_mg_l", decimal_digits: 2, typical_min: 6.0, typical_max: 10.0 },
    MarineMetric { name: "battery_v", decimal_digits: 3, typical_min: 11.8, typical_max: 13.4 },
    MarineMetric { name: "pollutant_ppb", decimal_digits: 1, typical_min: 0.0, typical_max: 50.0 },
];

/// The shape of a metric's daily cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Diurnal {
    /// No daily cycle.
    None,
    /// Peaks three hours after local noon (surface warming, photosynthesis).
    Afternoon,
    /// Follows the M2 tide (twice a day); the sign of the amplitude says whether high tide raises
    /// (sea water: salinity) or lowers (river water: turbidity, nitrate) the value.
    Tide,
    /// Solar charging: `amplitude * (max(0, sun) - 0.3)`, a rise by day and a slow sag by night.
    Solar,
}

/// How one metric's series is generated; parallel to [`MARINE_METRICS`]. All amplitudes are peak
/// values, so `base ± (drift + wave + |diurnal| + noise)` bounds the signal.
#[derive(Clone, Copy, Debug)]
struct SignalModel {
    /// Range of the per-series base value.
    base_min: f64,
    base_max: f64,
    /// Peak slow drift: `drift_abs + drift_rel * base` (relative for concentrations).
    drift_abs: f64,
    drift_rel: f64,
    /// Peak of the fast (minutes) wave.
    wave_amplitude: f64,
    diurnal: Diurnal,
    /// Peak of the daily cycle (see [`Diurnal`] for the solar shape's bounds).
    diurnal_amplitude: f64,
    /// Peak sensor noise, about one to three least significant digits.
    noise_amplitude: f64,
}

const MODELS: [SignalModel; MARINE_METRIC_COUNT] = [
    // salinity_psu: 30-38, tidal ±0.15, noise ±0.003.
    SignalModel {
        base_min: 31.5,
        base_max: 36.5,
        drift_abs: 0.8,
        drift_rel: 0.0,
        wave_amplitude: 0.01,
        diurnal: Diurnal::Tide,
        diurnal_amplitude: 0.15,
        noise_amplitude: 0.003,
    },
    // ph: 7.9-8.3, photosynthesis raises it in the afternoon.
    SignalModel {
        base_min: 7.98,
        base_max: 8.20,
        drift_abs: 0.05,
        drift_rel: 0.0,
        wave_amplitude: 0.004,
        diurnal: Diurnal::Afternoon,
        diurnal_amplitude: 0.02,
        noise_amplitude: 0.002,
    },
    // water_temp_c: 5-28, diurnal ±0.5.
    SignalModel {
        base_min: 8.0,
        base_max: 24.0,
        drift_abs: 2.0,
        drift_rel: 0.0,
        wave_amplitude: 0.03,
        diurnal: Diurnal::Afternoon,
        diurnal_amplitude: 0.5,
        noise_amplitude: 0.015,
    },
    // turbidity_ntu: 0.5-20, drift proportional to the base, lower at high tide.
    SignalModel {
        base_min: 2.0,
        base_max: 7.0,
        drift_abs: 0.0,
        drift_rel: 0.55,
        wave_amplitude: 0.15,
        diurnal: Diurnal::Tide,
        diurnal_amplitude: -0.2,
        noise_amplitude: 0.03,
    },
    // nitrate_mg_l: 0.01-2, lower at high tide.
    SignalModel {
        base_min: 0.08,
        base_max: 1.2,
        drift_abs: 0.0,
        drift_rel: 0.5,
        wave_amplitude: 0.005,
        diurnal: Diurnal::Tide,
        diurnal_amplitude: -0.02,
        noise_amplitude: 0.002,
    },
    // dissolved_oxygen_mg_l: 6-10, photosynthesis by day.
    SignalModel {
        base_min: 7.0,
        base_max: 9.0,
        drift_abs: 0.6,
        drift_rel: 0.0,
        wave_amplitude: 0.03,
        diurnal: Diurnal::Afternoon,
        diurnal_amplitude: 0.3,
        noise_amplitude: 0.015,
    },
    // battery_v: 11.8-13.4, solar charging by day.
    SignalModel {
        base_min: 12.2,
        base_max: 12.6,
        drift_abs: 0.1,
        drift_rel: 0.0,
        wave_amplitude: 0.005,
        diurnal: Diurnal::Solar,
        diurnal_amplitude: 0.6,
        noise_amplitude: 0.003,
    },
    // pollutant_ppb: 0-50, no daily cycle.
    SignalModel {
        base_min: 1.0,
        base_max: 15.0,
        drift_abs: 0.0,
        drift_rel: 0.7,
        wave_amplitude: 0.1,
        diurnal: Diurnal::None,
        diurnal_amplitude: 0.0,
        noise_amplitude: 0.15,
    },
];

/// Nominal periods of a buoy's three slow drift sines (each buoy scales them by 0.8-1.25) and
/// their shares of a series' drift amplitude.
const DRIFT_PERIODS_S: [f64; 3] = [2.7 * 86_400.0, 9.3 * 86_400.0, 31.1 * 86_400.0];
const DRIFT_WEIGHTS: [f64; 3] = [0.25, 0.35, 0.4];
/// Range of the fast wave's period.
const WAVE_PERIOD_MIN_S: f64 = 300.0;
const WAVE_PERIOD_MAX_S: f64 = 1_200.0;

/// Hash domains, so the streams of different purposes never coincide.
const DOMAIN_SERIES: u64 = 1;
const DOMAIN_NOISE: u64 = 2;
const DOMAIN_BUOY: u64 = 3;
const DOMAIN_JITTER: u64 = 4;
const DOMAIN_LATE: u64 = 5;

/// What to generate. Validated by [`Workload::new`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkloadConfig {
    /// Fleet size, `1..=BUOYS_MAX`. Default [`DEFAULT_BUOYS`].
    pub buoys: usize,
    /// How many metrics each buoy reports, `1..=8`: the first `metrics` of [`MARINE_METRICS`].
    /// A series does not depend on this number, so metric `m` has the same values whether 3 or 8
    /// metrics are generated. Default 8.
    pub metrics: usize,
    /// Time between two samples of a buoy, ns, above zero. Default 1 s.
    pub sample_interval_ns: i64,
    /// Grid time of sample 0, ns since the epoch. Default [`DEFAULT_START_TS`].
    pub start_ts: TimestampNs,
    /// Seed of every pseudo-random choice. Default [`DEFAULT_SEED`].
    pub seed: u64,
    /// `Some(n)`: the `n`-th, `2n`-th, ... reading of every buoy (counted sample-major from
    /// reading 0) lies outside the metric's [`DEFAULT_METRIC_RANGES`] entry, alternately above and
    /// below. `n` must be at least 1. Default `None`.
    pub out_of_range_every: Option<u64>,
    /// Largest clock jitter, ns: sample `s` of a buoy is stamped `grid(s) + j` with `j` drawn from
    /// `0..=jitter_ns_max` per `(buoy, sample)`. Must stay below `sample_interval_ns`, so a buoy's
    /// timestamps are strictly increasing. Values follow the grid time. Default 0 (on the grid).
    pub jitter_ns_max: i64,
    /// Fraction (`0.0..=1.0`) of batches that [`Workload::iter_batches`] delivers one round late,
    /// after the next round's on-time batches, as a buoy that lost its link briefly would. Which
    /// batches are late is a hash of `(seed, buoy, batch_seq)`. Default 0.
    pub late_fraction: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            buoys: DEFAULT_BUOYS,
            metrics: MARINE_METRIC_COUNT,
            sample_interval_ns: DEFAULT_SAMPLE_INTERVAL_NS,
            start_ts: DEFAULT_START_TS,
            seed: DEFAULT_SEED,
            out_of_range_every: None,
            jitter_ns_max: 0,
            late_fraction: 0.0,
        }
    }
}

impl WorkloadConfig {
    /// Checks every field against its documented bounds.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if self.buoys == 0 || self.buoys > BUOYS_MAX {
            return Err(WorkloadError::BuoyCount { buoys: self.buoys });
        }
        if self.metrics == 0 || self.metrics > MARINE_METRIC_COUNT {
            return Err(WorkloadError::MetricCount { metrics: self.metrics });
        }
        if self.sample_interval_ns <= 0 {
            return Err(WorkloadError::SampleInterval { sample_interval_ns: self.sample_interval_ns });
        }
        if self.out_of_range_every == Some(0) {
            return Err(WorkloadError::OutOfRangeEveryZero);
        }
        if self.jitter_ns_max < 0 || self.jitter_ns_max >= self.sample_interval_ns {
            return Err(WorkloadError::Jitter {
                jitter_ns_max: self.jitter_ns_max,
                sample_interval_ns: self.sample_interval_ns,
            });
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return Err(WorkloadError::LateFraction { late_fraction: self.late_fraction });
        }
        Ok(())
    }
}

/// A workload request the caller got wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    /// `buoys` outside `1..=BUOYS_MAX`.
    #[error("workload of {buoys} buoys: use 1..={BUOYS_MAX}")]
    BuoyCount {
        /// The refused fleet size.
        buoys: usize,
    },
    /// `metrics` outside `1..=8`.
    #[error("workload of {metrics} metrics: use 1..={MARINE_METRIC_COUNT}")]
    MetricCount {
        /// The refused metric count.
        metrics: usize,
    },
    /// A sample interval of zero or less.
    #[error("sample interval of {sample_interval_ns} ns: use more than 0")]
    SampleInterval {
        /// The refused interval.
        sample_interval_ns: i64,
    },
    /// `out_of_range_every: Some(0)`.
    #[error("out_of_range_every must be at least 1 (or None)")]
    OutOfRangeEveryZero,
    /// Jitter below zero or not below the sample interval.
    #[error("jitter of {jitter_ns_max} ns: use 0..{sample_interval_ns} (below the sample interval)")]
    Jitter {
        /// The refused jitter.
        jitter_ns_max: i64,
        /// The sample interval it must stay below.
        sample_interval_ns: i64,
    },
    /// `late_fraction` outside `0.0..=1.0` (or NaN).
    #[error("late fraction {late_fraction}: use 0.0..=1.0")]
    LateFraction {
        /// The refused fraction.
        late_fraction: f64,
    },
    /// A buoy index outside the fleet.
    #[error("buoy index {buoy_index} is outside the fleet of {buoys} buoys")]
    BuoyIndex {
        /// The refused index.
        buoy_index: usize,
        /// Fleet size.
        buoys: usize,
    },
    /// A metric index outside the generated metrics.
    #[error("metric index {metric_index} is outside the {metrics} generated metrics")]
    MetricIndex {
        /// The refused index.
        metric_index: usize,
        /// Generated metrics.
        metrics: usize,
    },
    /// The requested readings lie so far out that their timestamps (or indices) overflow.
    #[error("reading or sample numbers that far out overflow the timestamp (ns since the epoch)")]
    TimestampOverflow,
    /// The requested batch is empty or above [`BATCH_READINGS_MAX`].
    #[error(transparent)]
    Batch(#[from] InputError),
}

/// A validated workload: the fleet's names and the recipe of every reading. Cheap to clone (the
/// names are shared), so each simulator task can own one.
#[derive(Clone)]
pub struct Workload {
    config: WorkloadConfig,
    buoy_ids: Arc<[BuoyId]>,
    metric_names: Arc<[MetricName]>,
    /// Per metric: the injected out-of-range values `[above max, below min]`, quantized.
    out_of_range_values: [[f64; 2]; MARINE_METRIC_COUNT],
}

impl Workload {
    /// Validates `config` and names the fleet (`buoy-0000`, `buoy-0001`, ...; ids grow past four
    /// digits from buoy 10,000 on).
    pub fn new(config: WorkloadConfig) -> Result<Self, WorkloadError> {
        config.validate()?;
        let buoy_ids = (0..config.buoys)
            .map(|i| BuoyId::new(&format!("buoy-{i:04}")))
            .collect::<Result<Arc<[BuoyId]>, InputError>>()?;
        let metric_names = MARINE_METRICS[..config.metrics]
            .iter()
            .map(|m| MetricName::new(m.name))
            .collect::<Result<Arc<[MetricName]>, InputError>>()?;
        let out_of_range_values = std::array::from_fn(|m| {
            let metric = &MARINE_METRICS[m];
            let (min, max) = physical_range(metric);
            let overshoot = (max - min) * OUT_OF_RANGE_OVERSHOOT;
            let scale = decimal_scale(metric);
            [quantize(max + overshoot, scale), quantize(min - overshoot, scale)]
        });
        Ok(Self { config, buoy_ids, metric_names, out_of_range_values })
    }

    /// The validated configuration.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The id of buoy `buoy_index` (`buoy-0007`), or `None` outside the fleet.
    pub fn buoy_id(&self, buoy_index: usize) -> Option<&BuoyId> {
        self.buoy_ids.get(buoy_index)
    }

    /// Every buoy's id, indexed by buoy index.
    pub fn buoy_ids(&self) -> &[BuoyId] {
        &self.buoy_ids
    }

    /// The generated metrics, indexed by metric id (the dictionary of every batch).
    pub fn metric_names(&self) -> &[MetricName] {
        &self.metric_names
    }

    /// The sensor description of each generated metric, indexed by metric id.
    pub fn metrics(&self) -> &'static [MarineMetric] {
        let all: &'static [MarineMetric; MARINE_METRIC_COUNT] = &MARINE_METRICS;
        &all[..self.config.metrics]
    }

    /// Buoy `buoy_index`'s readings of `samples` consecutive samples starting at sample number
    /// `first_sample`: `samples * metrics` readings, all metrics of a sample together.
    ///
    /// Fails for a buoy outside the fleet, an empty batch, more than [`BATCH_READINGS_MAX`]
    /// readings, or timestamps past `i64::MAX`.
    pub fn batch(
        &self,
        buoy_index: usize,
        first_sample: u64,
        samples: usize,
    ) -> Result<ReadingBatch, WorkloadError> {
        let metrics = self.config.metrics;
        let first_reading =
            first_sample.checked_mul(metrics as u64).ok_or(WorkloadError::TimestampOverflow)?;
        // An overflowing product is certainly above the batch limit.
        let readings = samples.saturating_mul(metrics);
        self.batch_of_readings(buoy_index, first_reading, readings)
    }

    /// Exactly `readings` readings of buoy `buoy_index`, starting at reading number
    /// `first_reading` (sample-major: reading `r` is metric `r % metrics` of sample `r / metrics`),
    /// so a batch may start and end in the middle of a sample.
    ///
    /// Fails for a buoy outside the fleet, an empty batch, more than [`BATCH_READINGS_MAX`]
    /// readings, or timestamps past `i64::MAX`.
    pub fn batch_of_readings(
        &self,
        buoy_index: usize,
        first_reading: u64,
        readings: usize,
    ) -> Result<ReadingBatch, WorkloadError> {
        self.check_buoy(buoy_index)?;
        if readings == 0 {
            return Err(InputError::EmptyBatch.into());
        }
        if readings > BATCH_READINGS_MAX {
            return Err(InputError::BatchTooLarge { readings, readings_max: BATCH_READINGS_MAX }.into());
        }
        let metrics = self.config.metrics;
        let metrics_u64 = metrics as u64;
        let last_reading =
            first_reading.checked_add(readings as u64 - 1).ok_or(WorkloadError::TimestampOverflow)?;
        self.check_sample(last_reading / metrics_u64)?;

        let signal = BuoySignal::new(&self.config, buoy_index);
        let mut timestamps = Vec::with_capacity(readings);
        let mut metric_ids = Vec::with_capacity(readings);
        let mut values = Vec::with_capacity(readings);
        let mut out_of_range = OutOfRangeCursor::new(self.config.out_of_range_every, first_reading);
        let mut reading = first_reading;
        let mut sample = first_reading / metrics_u64;
        // Below `metrics`, so the cast cannot truncate.
        let mut metric = (first_reading % metrics_u64) as usize;
        // Checked above: the last sample's timestamp (with jitter) fits, so every earlier one does.
        let mut grid_ns = self.grid_ns_unchecked(sample);
        while values.len() < readings {
            let at = signal.sample(&self.config, sample, grid_ns);
            let end = metrics.min(metric + (readings - values.len()));
            for (m, &metric_id) in METRIC_IDS.iter().enumerate().take(end).skip(metric) {
                let value = match out_of_range.take(reading) {
                    Some(above) => self.out_of_range_values[m][usize::from(!above)],
                    None => signal.value(m, sample, &at),
                };
                timestamps.push(at.ts);
                metric_ids.push(metric_id);
                values.push(value);
                reading += 1;
            }
            metric = 0;
            sample += 1;
            grid_ns += self.config.sample_interval_ns;
        }
        debug_assert_eq!(reading, last_reading + 1);
        Ok(ReadingBatch::new(self.metric_names.to_vec(), timestamps, metric_ids, values)?)
    }

    /// The timestamp of sample `sample` of buoy `buoy_index` (the grid time plus its jitter).
    pub fn sample_timestamp(&self, buoy_index: usize, sample: u64) -> Result<TimestampNs, WorkloadError> {
        self.check_buoy(buoy_index)?;
        self.check_sample(sample)?;
        let signal = BuoySignal::new(&self.config, buoy_index);
        Ok(signal.sample(&self.config, sample, self.grid_ns_unchecked(sample)).ts)
    }

    /// The value of metric `metric_index` in sample `sample` of buoy `buoy_index`: exactly what
    /// the batches carry (including an injected out-of-range value), without building a batch.
    pub fn value(&self, buoy_index: usize, metric_index: usize, sample: u64) -> Result<f64, WorkloadError> {
        self.check_buoy(buoy_index)?;
        if metric_index >= self.config.metrics {
            return Err(WorkloadError::MetricIndex { metric_index, metrics: self.config.metrics });
        }
        self.check_sample(sample)?;
        let reading = sample
            .checked_mul(self.config.metrics as u64)
            .and_then(|r| r.checked_add(metric_index as u64))
            .ok_or(WorkloadError::TimestampOverflow)?;
        if let Some(above) = OutOfRangeCursor::new(self.config.out_of_range_every, reading).take(reading) {
            return Ok(self.out_of_range_values[metric_index][usize::from(!above)]);
        }
        let signal = BuoySignal::new(&self.config, buoy_index);
        let at = signal.sample(&self.config, sample, self.grid_ns_unchecked(sample));
        Ok(signal.value(metric_index, sample, &at))
    }

    /// Walks the fleet the way it sends: round `k` carries batch `k` of every buoy (buoy 0 first),
    /// so every buoy's batch `k` comes before any buoy's batch `k + 1`, and stops after exactly
    /// `total_readings` readings over the whole fleet. Each item is
    /// `(buoy_index, batch_seq, batch)`; `batch_seq` counts each buoy's batches from 0, and batch
    /// `k` of a buoy holds its readings `k * readings_per_batch ..` (so buoys end at most one
    /// batch apart, and only the very last batch may be short).
    ///
    /// With [`WorkloadConfig::late_fraction`] above zero, the chosen batches of round `k` come
    /// after round `k + 1`'s on-time batches instead; every `(buoy, batch_seq)` still comes
    /// exactly once.
    ///
    /// Fails if `readings_per_batch` is 0 or above [`BATCH_READINGS_MAX`], or the run's last
    /// timestamp would overflow.
    pub fn iter_batches(
        &self,
        readings_per_batch: usize,
        total_readings: u64,
    ) -> Result<FleetBatches, WorkloadError> {
        if readings_per_batch == 0 {
            return Err(InputError::EmptyBatch.into());
        }
        if readings_per_batch > BATCH_READINGS_MAX {
            return Err(InputError::BatchTooLarge {
                readings: readings_per_batch,
                readings_max: BATCH_READINGS_MAX,
            }
            .into());
        }
        let per_batch = readings_per_batch as u64;
        let batch_count = total_readings.div_ceil(per_batch);
        let round_count = batch_count.div_ceil(self.config.buoys as u64);
        if batch_count > 0 {
            // Every buoy's readings stay below `round_count * readings_per_batch`.
            let last_reading =
                round_count.checked_mul(per_batch).map(|r| r - 1).ok_or(WorkloadError::TimestampOverflow)?;
            self.check_sample(last_reading / self.config.metrics as u64)?;
        }
        Ok(FleetBatches {
            workload: self.clone(),
            readings_per_batch,
            total_readings,
            batch_count,
            round_count,
            round: 0,
            late_phase: false,
            buoy: 0,
            emitted: 0,
        })
    }

    fn check_buoy(&self, buoy_index: usize) -> Result<(), WorkloadError> {
        if buoy_index < self.config.buoys {
            Ok(())
        } else {
            Err(WorkloadError::BuoyIndex { buoy_index, buoys: self.config.buoys })
        }
    }

    /// Checks that sample `sample`'s timestamp, jitter included, fits an `i64`.
    fn check_sample(&self, sample: u64) -> Result<(), WorkloadError> {
        i64::try_from(sample)
            .ok()
            .and_then(|s| s.checked_mul(self.config.sample_interval_ns))
            .and_then(|offset| offset.checked_add(self.config.start_ts))
            .and_then(|grid| grid.checked_add(self.config.jitter_ns_max))
            .map(|_| ())
            .ok_or(WorkloadError::TimestampOverflow)
    }

    /// Grid time of `sample`; only after [`Self::check_sample`] accepted it (or a later sample).
    fn grid_ns_unchecked(&self, sample: u64) -> i64 {
        debug_assert!(self.check_sample(sample).is_ok());
        self.config.start_ts + sample as i64 * self.config.sample_interval_ns
    }

    /// Whether `iter_batches` delivers batch `batch_seq` of `buoy_index` one round late.
    fn is_late(&self, buoy_index: usize, batch_seq: u64) -> bool {
        self.config.late_fraction > 0.0
            && unit(key(self.config.seed, DOMAIN_LATE, buoy_index as u64, batch_seq))
                < self.config.late_fraction
    }
}

impl std::fmt::Debug for Workload {
    /// The configuration only: a million buoy ids are no help in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The iterator of [`Workload::iter_batches`]: `(buoy_index, batch_seq, batch)` in fleet order.
/// Owns a clone of the workload, so it can move into a task.
#[derive(Clone, Debug)]
pub struct FleetBatches {
    workload: Workload,
    readings_per_batch: usize,
    total_readings: u64,
    /// `ceil(total_readings / readings_per_batch)`; batch `g = seq * buoys + buoy` is the `g`-th
    /// on-time slot of the fleet.
    batch_count: u64,
    /// `ceil(batch_count / buoys)`.
    round_count: u64,
    /// Current round; in the late phase it delivers the late batches of `round - 1`.
    round: u64,
    late_phase: bool,
    /// Next buoy of the current round and phase.
    buoy: usize,
    emitted: u64,
}

impl Iterator for FleetBatches {
    type Item = (usize, u64, ReadingBatch);

    fn next(&mut self) -> Option<Self::Item> {
        let buoys = self.workload.config.buoys;
        let late_enabled = self.workload.config.late_fraction > 0.0;
        // Each round has at most two phases of `buoys` slots, and a late batch is delivered at
        // most one round after its own, so this ends by `round_count + 1`.
        while self.emitted < self.batch_count && self.round <= self.round_count {
            if self.buoy == buoys {
                self.buoy = 0;
                if late_enabled && !self.late_phase {
                    self.late_phase = true;
                } else {
                    self.late_phase = false;
                    self.round += 1;
                }
                continue;
            }
            let buoy = self.buoy;
            self.buoy += 1;
            let batch_seq = if self.late_phase {
                match self.round.checked_sub(1) {
                    Some(seq) => seq,
                    None => continue,
                }
            } else {
                self.round
            };
            let slot = batch_seq.saturating_mul(buoys as u64).saturating_add(buoy as u64);
            if slot >= self.batch_count || self.workload.is_late(buoy, batch_seq) != self.late_phase {
                continue;
            }
            let per_batch = self.readings_per_batch as u64;
            // `slot < batch_count`, so at least one reading remains; at most `readings_per_batch`.
            let readings = (self.total_readings - slot * per_batch).min(per_batch) as usize;
            match self.workload.batch_of_readings(buoy, batch_seq * per_batch, readings) {
                Ok(batch) => {
                    self.emitted += 1;
                    return Some((buoy, batch_seq, batch));
                }
                Err(error) => {
                    // Unreachable: `iter_batches` checked the batch size and the run's last
                    // timestamp. End the walk rather than skip a batch silently.
                    debug_assert!(false, "workload batch failed after validation: {error}");
                    tracing::error!(%error, buoy, batch_seq, "workload batch failed; ending the walk");
                    self.emitted = self.batch_count;
                    return None;
                }
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match usize::try_from(self.batch_count - self.emitted) {
            Ok(remaining) => (remaining, Some(remaining)),
            Err(_) => (usize::MAX, None),
        }
    }
}

impl FusedIterator for FleetBatches {}

/// Yields the injected out-of-range readings in order: reading `r` is one when
/// `(r + 1) % every == 0`; occurrence `k = (r + 1) / every` lies above the range when odd and
/// below when even. A countdown instead of a division per reading.
struct OutOfRangeCursor {
    every: u64,
    /// Next reading number to replace; `u64::MAX` when none.
    next: u64,
}

impl OutOfRangeCursor {
    fn new(every: Option<u64>, first_reading: u64) -> Self {
        match every {
            Some(every) if every > 0 => Self {
                every,
                next: first_reading.saturating_add(1).div_ceil(every).saturating_mul(every).saturating_sub(1),
            },
            _ => Self { every: 1, next: u64::MAX },
        }
    }

    /// For reading `reading` (called with consecutive numbers): `Some(above)` if it is replaced.
    #[inline]
    fn take(&mut self, reading: u64) -> Option<bool> {
        if reading != self.next {
            return None;
        }
        self.next = self.next.saturating_add(self.every);
        Some(((reading / self.every + 1) % 2) == 1)
    }
}

/// Per-buoy constants and the parameters of its series, derived afresh for each batch (a few
/// dozen hashes) so nothing per buoy is stored.
struct BuoySignal {
    /// Local solar time minus UTC (the buoy's longitude), `0..NANOS_PER_DAY`.
    day_offset_ns: i64,
    tide_phase_turns: f64,
    jitter_key: u64,
    /// The buoy's slow drift (weather, currents, season), unit amplitude: shared by its metrics,
    /// each of which responds with its own signed weights, so the metrics of a buoy move together
    /// the way real ones do (and the sines are computed once per sample, not per reading).
    drift: [Wave; 3],
    /// The buoy's fast wave (sea state), unit amplitude, shared the same way.
    wave: Wave,
    series: [SeriesParams; MARINE_METRIC_COUNT],
}

/// The state of one sample shared by all its metrics.
struct SampleAt {
    /// Timestamp with jitter.
    ts: TimestampNs,
    /// The buoy's drift sines at this sample, `-1..=1`.
    drift: [f64; 3],
    /// The buoy's fast wave at this sample, `-1..=1`.
    wave: f64,
    /// Sun elevation proxy, `-1..=1`, peaking at local noon.
    sun: f64,
    /// `-1..=1`, peaking at 15:00 local time.
    afternoon: f64,
    /// `-1..=1`, peaking at high tide.
    tide: f64,
}

/// One `(buoy, metric)` series.
#[derive(Clone, Copy, Debug)]
struct SeriesParams {
    base: f64,
    /// Signed response to each of the buoy's drift sines; `sum(|w|) <= drift amplitude`.
    drift_weights: [f64; 3],
    /// Signed response to the buoy's fast wave; `|w| <= wave_amplitude`.
    wave_weight: f64,
    diurnal: Diurnal,
    diurnal_amplitude: f64,
    noise_key: u64,
    noise_amplitude: f64,
    min: f64,
    max: f64,
    scale: f64,
}

/// `sin(2π (t / period + phase))`. `t` is the grid time as `f64` ns: one multiplication instead
/// of an integer remainder and a division. At today's epoch times the product keeps about 1e-9
/// turn of precision even for the fastest wave, and it is the same computation at every offset,
/// so the output stays position-independent and bit-exact.
#[derive(Clone, Copy, Debug)]
struct Wave {
    turns_per_ns: f64,
    phase_turns: f64,
}

impl Wave {
    fn new(period_s: f64, phase_turns: f64) -> Self {
        Self { turns_per_ns: 1.0 / (period_s * NANOS_PER_SECOND as f64), phase_turns }
    }

    #[inline]
    fn at(&self, t_ns: f64) -> f64 {
        sin_turns(t_ns * self.turns_per_ns + self.phase_turns)
    }
}

impl BuoySignal {
    fn new(config: &WorkloadConfig, buoy_index: usize) -> Self {
        let buoy = buoy_index as u64;
        let mut rng = SplitMix64::new(key(config.seed, DOMAIN_BUOY, buoy, 0));
        let day_offset_ns = (rng.unit() * NANOS_PER_DAY as f64) as i64;
        let tide_phase_turns = rng.unit();
        let drift = std::array::from_fn(|k| {
            let period_s = DRIFT_PERIODS_S[k] * (0.8 + 0.45 * rng.unit());
            Wave::new(period_s, rng.unit())
        });
        let wave_period_s = WAVE_PERIOD_MIN_S + (WAVE_PERIOD_MAX_S - WAVE_PERIOD_MIN_S) * rng.unit();
        let wave = Wave::new(wave_period_s, rng.unit());
        let jitter_key = key(config.seed, DOMAIN_JITTER, buoy, 0);
        let series = std::array::from_fn(|m| SeriesParams::new(config.seed, buoy, m));
        Self {
            day_offset_ns: day_offset_ns.clamp(0, NANOS_PER_DAY - 1),
            tide_phase_turns,
            jitter_key,
            drift,
            wave,
            series,
        }
    }

    /// The shared state of `sample`, whose grid time is `grid_ns`.
    #[inline]
    fn sample(&self, config: &WorkloadConfig, sample: u64, grid_ns: i64) -> SampleAt {
        let jitter = if config.jitter_ns_max > 0 {
            // Below `jitter_ns_max + 1 <= sample_interval_ns`, so the cast cannot truncate.
            (mix(self.jitter_key ^ sample) % (config.jitter_ns_max as u64 + 1)) as i64
        } else {
            0
        };
        // Both terms are below a day, so the sum cannot overflow.
        let local_day_ns = (grid_ns.rem_euclid(NANOS_PER_DAY) + self.day_offset_ns) % NANOS_PER_DAY;
        let day = turns(local_day_ns, NANOS_PER_DAY);
        let t_ns = grid_ns as f64;
        SampleAt {
            ts: grid_ns + jitter,
            drift: [self.drift[0].at(t_ns), self.drift[1].at(t_ns), self.drift[2].at(t_ns)],
            wave: self.wave.at(t_ns),
            sun: sin_turns(day - 0.25),
            afternoon: sin_turns(day - 0.375),
            tide: sin_turns(turns(grid_ns, TIDE_PERIOD_NS) + self.tide_phase_turns),
        }
    }

    /// The (quantized) value of metric `metric` at `sample`.
    #[inline]
    fn value(&self, metric: usize, sample: u64, at: &SampleAt) -> f64 {
        let s = &self.series[metric];
        let drift = s.drift_weights[0] * at.drift[0]
            + s.drift_weights[1] * at.drift[1]
            + s.drift_weights[2] * at.drift[2];
        let diurnal = s.diurnal_amplitude
            * match s.diurnal {
                Diurnal::None => 0.0,
                Diurnal::Afternoon => at.afternoon,
                Diurnal::Tide => at.tide,
                Diurnal::Solar => at.sun.max(0.0) - 0.3,
            };
        let noise = s.noise_amplitude * triangular(mix(s.noise_key ^ sample));
        let raw = s.base + drift + s.wave_weight * at.wave + diurnal + noise;
        quantize(raw.clamp(s.min, s.max), s.scale)
    }
}

impl SeriesParams {
    fn new(seed: u64, buoy: u64, metric: usize) -> Self {
        let model = &MODELS[metric];
        let sensor = &MARINE_METRICS[metric];
        let mut rng = SplitMix64::new(key(seed, DOMAIN_SERIES, buoy, metric as u64));
        let base = model.base_min + rng.unit() * (model.base_max - model.base_min);
        let drift_amplitude = model.drift_abs + model.drift_rel * base;
        let drift_weights =
            std::array::from_fn(|k| drift_amplitude * DRIFT_WEIGHTS[k] * signed_weight(&mut rng, 0.3));
        let wave_weight = model.wave_amplitude * signed_weight(&mut rng, 0.5);
        Self {
            base,
            drift_weights,
            wave_weight,
            diurnal: model.diurnal,
            diurnal_amplitude: model.diurnal_amplitude,
            noise_key: key(seed, DOMAIN_NOISE, buoy, metric as u64),
            noise_amplitude: model.noise_amplitude,
            min: sensor.typical_min,
            max: sensor.typical_max,
            scale: decimal_scale(sensor),
        }
    }
}

/// A random sign times a magnitude uniform in `[min_magnitude, 1)`.
fn signed_weight(rng: &mut SplitMix64, min_magnitude: f64) -> f64 {
    let magnitude = min_magnitude + (1.0 - min_magnitude) * rng.unit();
    if rng.next_u64() & 1 == 0 { magnitude } else { -magnitude }
}

/// The metric's entry in [`DEFAULT_METRIC_RANGES`] (its typical band if it had none; a test keeps
/// the two tables in step).
fn physical_range(metric: &MarineMetric) -> (f64, f64) {
    DEFAULT_METRIC_RANGES
        .iter()
        .find(|(name, _, _)| *name == metric.name)
        .map_or((metric.typical_min, metric.typical_max), |&(_, min, max)| (min, max))
}

fn decimal_scale(metric: &MarineMetric) -> f64 {
    DECIMAL_SCALES[(metric.decimal_digits as usize).min(DECIMAL_SCALES.len() - 1)]
}

/// The nearest `f64` of the decimal closest to `x` with `log10(scale)` digits: `n / scale` with
/// integer `n` is correctly rounded, and quantizing again returns the same value.
#[inline]
fn quantize(x: f64, scale: f64) -> f64 {
    round_ties_even(x * scale) / scale
}

/// `x` rounded to an integer, ties to even. `f64::round` is a libm call on baseline x86-64
/// (no SSE4.1) and cost 15% of generation; adding and subtracting `1.5 * 2^52` makes the FPU's
/// own round-to-nearest-even do it in two exact IEEE additions, which the compiler may not fold
/// away (no fast-math in Rust). Exact for `|x| < 2^51`; beyond that the library does it.
#[inline]
fn round_ties_even(x: f64) -> f64 {
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    const LIMIT: f64 = 2_251_799_813_685_248.0; // 2^51
    if x.abs() < LIMIT { (x + SHIFTER) - SHIFTER } else { x.round_ties_even() }
}

/// `t` as a fraction of `period`, `0.0..1.0`, exact in integers before the one division.
#[inline]
fn turns(t_ns: i64, period_ns: i64) -> f64 {
    t_ns.rem_euclid(period_ns) as f64 / period_ns as f64
}

/// Taylor coefficients of `sin(a) / a` in powers of `a^2`: `(-1)^k / (2k + 1)!`, up to `a^16`.
const SIN_COEFFICIENTS: [f64; 9] = [
    1.0,
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5_040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
    -1.0 / 1_307_674_368_000.0,
    1.0 / 355_687_428_096_000.0,
];

/// `sin(2π x)` for any finite `x`, from IEEE-754 arithmetic only (so the same bits everywhere):
/// reduce to `r` in `[-1/4, 1/4]` turn by periodicity and `sin(π - a) = sin(a)`, then the Taylor
/// series to `a^17` in Horner form. Absolute error below `1e-13` (the next term at `a = π/2`).
#[inline]
fn sin_turns(x: f64) -> f64 {
    let mut r = x - round_ties_even(x);
    if r > 0.25 {
        r = 0.5 - r;
    } else if r < -0.25 {
        r = -0.5 - r;
    }
    let a = r * std::f64::consts::TAU;
    let a2 = a * a;
    a * SIN_COEFFICIENTS.iter().rev().fold(0.0, |sum, &c| sum * a2 + c)
}

/// SplitMix64 (Steele, Lea, Flood 2014; constants from Vigna's `splitmix64.c`): a 64-bit counter
/// stepped by the golden-ratio increment and passed through [`mix`]. Tiny, fast, and every output
/// is a function of (seed, position), which is all this module needs.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        let out = mix(self.state);
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        out
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        unit(self.next_u64())
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function applied to `z + GOLDEN_GAMMA`: a bijection on `u64` with full
/// avalanche, used as a hash step.
#[inline]
fn mix(z: u64) -> u64 {
    let mut z = z.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of `(seed, domain, a, b)` by chained [`mix`] steps.
fn key(seed: u64, domain: u64, a: u64, b: u64) -> u64 {
    mix(mix(mix(mix(seed) ^ domain) ^ a) ^ b)
}

/// The top 53 bits as a uniform `f64` in `[0, 1)`.
#[inline]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Triangular on `(-1, 1)` from the two 32-bit halves (the sum of two uniforms): a cheap
/// bell-ish shape for sensor noise.
#[inline]
fn triangular(bits: u64) -> f64 {
    const TWO_TO_MINUS_32: f64 = 1.0 / 4_294_967_296.0;
    let hi = (bits >> 32) as f64 * TWO_TO_MINUS_32;
    let lo = (bits & 0xFFFF_FFFF) as f64 * TWO_TO_MINUS_32;
    hi + lo - 1.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn workload(config: WorkloadConfig) -> Workload {
        Workload::new(config).unwrap()
    }

    fn small(buoys: usize, metrics: usize) -> WorkloadConfig {
        WorkloadConfig { buoys, metrics, ..WorkloadConfig::default() }
    }

    /// Every column, values as bits, for bit-exact comparison.
    fn columns(batch: &ReadingBatch) -> (Vec<i64>, Vec<u16>, Vec<u64>) {
        (
            batch.timestamps().to_vec(),
            batch.metric_ids().to_vec(),
            batch.values().iter().map(|v| v.to_bits()).collect(),
        )
    }

    fn range_of(name: &str) -> (f64, f64) {
        let &(_, min, max) = DEFAULT_METRIC_RANGES.iter().find(|(n, _, _)| *n == name).unwrap();
        (min, max)
    }

    fn is_quantized(v: f64, digits: u32) -> bool {
        let scale = 10f64.powi(digits as i32);
        v == (v * scale).round() / scale
    }

    #[test]
    fn defaults_describe_a_thousand_buoys_with_eight_metrics_at_one_hertz() {
        let w = workload(WorkloadConfig::default());
        assert_eq!(w.buoy_ids().len(), 1_000);
        assert_eq!(w.metric_names().len(), 8);
        assert_eq!(w.config().sample_interval_ns, NANOS_PER_SECOND);
        assert_eq!(w.buoy_id(7).unwrap().as_str(), "buoy-0007");
        assert_eq!(w.buoy_id(999).unwrap().as_str(), "buoy-0999");
        assert!(w.buoy_id(1_000).is_none());
        let names: Vec<&str> = w.metric_names().iter().map(MetricName::as_str).collect();
        assert_eq!(names[..3], ["salinity_psu", "ph", "water_temp_c"]);
        // 2026-06-01T00:00:00Z.
        assert_eq!(DEFAULT_START_TS / NANOS_PER_SECOND % 86_400, 0);
        assert_eq!((DEFAULT_START_TS / NANOS_PER_SECOND - 1_767_225_600) / 86_400, 151);
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = [
            (WorkloadConfig { buoys: 0, ..Default::default() }, WorkloadError::BuoyCount { buoys: 0 }),
            (
                WorkloadConfig { buoys: BUOYS_MAX + 1, ..Default::default() },
                WorkloadError::BuoyCount { buoys: BUOYS_MAX + 1 },
            ),
            (WorkloadConfig { metrics: 0, ..Default::default() }, WorkloadError::MetricCount { metrics: 0 }),
            (WorkloadConfig { metrics: 9, ..Default::default() }, WorkloadError::MetricCount { metrics: 9 }),
            (
                WorkloadConfig { sample_interval_ns: 0, ..Default::default() },
                WorkloadError::SampleInterval { sample_interval_ns: 0 },
            ),
            (
                WorkloadConfig { out_of_range_every: Some(0), ..Default::default() },
                WorkloadError::OutOfRangeEveryZero,
            ),
            (
                WorkloadConfig { jitter_ns_max: NANOS_PER_SECOND, ..Default::default() },
                WorkloadError::Jitter {
                    jitter_ns_max: NANOS_PER_SECOND,
                    sample_interval_ns: NANOS_PER_SECOND,
                },
            ),
            (
                WorkloadConfig { jitter_ns_max: -1, ..Default::default() },
                WorkloadError::Jitter { jitter_ns_max: -1, sample_interval_ns: NANOS_PER_SECOND },
            ),
            (
                WorkloadConfig { late_fraction: 1.5, ..Default::default() },
                WorkloadError::LateFraction { late_fraction: 1.5 },
            ),
        ];
        for (config, expected) in bad {
            assert_eq!(Workload::new(config).unwrap_err(), expected, "{config:?}");
        }
        assert!(matches!(
            Workload::new(WorkloadConfig { late_fraction: f64::NAN, ..Default::default() }),
            Err(WorkloadError::LateFraction { .. })
        ));
    }

    #[test]
    fn same_config_gives_the_same_bits_in_any_call_order() {
        let config = WorkloadConfig { buoys: 16, ..Default::default() };
        let a = workload(config);
        let b = workload(config);
        let forward: Vec<_> = (0..16).map(|i| columns(&a.batch(i, 1_000, 125).unwrap())).collect();
        let mut backward: Vec<_> = (0..16).rev().map(|i| columns(&b.batch(i, 1_000, 125).unwrap())).collect();
        backward.reverse();
        assert_eq!(forward, backward);
        // A different seed changes the values.
        let other = workload(WorkloadConfig { seed: 7, ..config });
        assert_ne!(columns(&other.batch(3, 1_000, 125).unwrap()).2, forward[3].2);
    }

    #[test]
    fn known_values_do_not_change_across_platforms_or_releases() {
        // Pinned so that a change of the signal model, which changes every benchmark's data, is
        // deliberate; the arithmetic is portable, so these hold on every platform.
        let w = workload(WorkloadConfig::default());
        let batch = w.batch(7, 0, 2).unwrap();
        let expected = [
            32.883, 8.029, 20.46, 4.77, 0.598, 7.89, 12.703, 5.3, //
            32.882, 8.028, 20.45, 4.76, 0.598, 7.89, 12.699, 5.3,
        ];
        assert_eq!(batch.values(), expected);
        let config =
            WorkloadConfig { jitter_ns_max: 1_000, out_of_range_every: Some(97), ..Default::default() };
        let batch = workload(config).batch_of_readings(123, 86_400 * 80 + 5, 10_000).unwrap();
        let digest = batch
            .values()
            .iter()
            .zip(batch.timestamps())
            .fold(0u64, |h, (v, &t)| mix(mix(h ^ v.to_bits()) ^ t as u64));
        assert_eq!(digest, PINNED_DIGEST, "digest {digest:#x}");
    }

    const PINNED_DIGEST: u64 = 0xabf2_476c_7c04_f08d;

    #[test]
    fn a_batch_at_an_offset_is_the_tail_of_a_longer_batch() {
        let w = workload(small(4, 8));
        let long = columns(&w.batch(2, 500, 60).unwrap());
        let tail = columns(&w.batch(2, 510, 50).unwrap());
        let skip = 10 * 8;
        assert_eq!(tail.0, long.0[skip..]);
        assert_eq!(tail.1, long.1[skip..]);
        assert_eq!(tail.2, long.2[skip..]);
    }

    #[test]
    fn batches_by_samples_and_by_readings_agree() {
        let w = workload(small(3, 5));
        let by_samples = columns(&w.batch(1, 40, 20).unwrap());
        let by_readings = columns(&w.batch_of_readings(1, 40 * 5, 20 * 5).unwrap());
        assert_eq!(by_samples, by_readings);
    }

    #[test]
    fn batch_of_readings_cuts_exactly_and_mid_sample() {
        let w = workload(small(2, 8));
        for readings in [1, 7, 100, 1_000, 10_000, BATCH_READINGS_MAX] {
            assert_eq!(w.batch_of_readings(0, 0, readings).unwrap().len(), readings);
        }
        let batch = w.batch_of_readings(0, 13, 20).unwrap();
        // Reading 13 is metric 5 of sample 1; reading 32 is metric 0 of sample 4.
        assert_eq!(batch.metric_ids()[0], 5);
        assert_eq!(batch.metric_ids()[19], 0);
        let grid = |s: i64| DEFAULT_START_TS + s * NANOS_PER_SECOND;
        assert_eq!(batch.timestamps()[0], grid(1));
        assert_eq!(batch.timestamps()[2], grid(1));
        assert_eq!(batch.timestamps()[3], grid(2));
        assert_eq!(batch.timestamps()[19], grid(4));
        assert_eq!(batch.metric_names().len(), 8);
        // Consecutive cuts tile the stream.
        let whole = columns(&w.batch_of_readings(1, 0, 3_000).unwrap());
        let mut tiled = (Vec::new(), Vec::new(), Vec::new());
        for (first, len) in [(0, 999), (999, 1), (1_000, 1_001), (2_001, 999)] {
            let part = columns(&w.batch_of_readings(1, first, len).unwrap());
            tiled.0.extend(part.0);
            tiled.1.extend(part.1);
            tiled.2.extend(part.2);
        }
        assert_eq!(tiled, whole);
    }

    #[test]
    fn bad_batch_requests_are_refused() {
        let w = workload(small(2, 8));
        assert_eq!(w.batch_of_readings(0, 0, 0).unwrap_err(), WorkloadError::Batch(InputError::EmptyBatch));
        assert_eq!(
            w.batch_of_readings(0, 0, BATCH_READINGS_MAX + 1).unwrap_err(),
            WorkloadError::Batch(InputError::BatchTooLarge {
                readings: BATCH_READINGS_MAX + 1,
                readings_max: BATCH_READINGS_MAX
            })
        );
        assert!(matches!(w.batch(0, 0, usize::MAX).unwrap_err(), WorkloadError::Batch(_)));
        assert_eq!(
            w.batch_of_readings(2, 0, 1).unwrap_err(),
            WorkloadError::BuoyIndex { buoy_index: 2, buoys: 2 }
        );
        assert_eq!(w.batch_of_readings(0, u64::MAX, 1).unwrap_err(), WorkloadError::TimestampOverflow);
        assert_eq!(w.batch(0, u64::MAX / 4, 1).unwrap_err(), WorkloadError::TimestampOverflow);
        assert_eq!(w.value(0, 8, 0).unwrap_err(), WorkloadError::MetricIndex { metric_index: 8, metrics: 8 });
        assert_eq!(w.iter_batches(0, 10).unwrap_err(), WorkloadError::Batch(InputError::EmptyBatch));
        assert_eq!(w.iter_batches(10, u64::MAX).unwrap_err(), WorkloadError::TimestampOverflow);
    }

    #[test]
    fn values_stay_in_range_are_quantized_and_move_like_sensors() {
        let w = workload(WorkloadConfig { buoys: 40, ..Default::default() });
        // Samples spread over two months so every drift, tide and day phase is visited.
        for buoy in 0..40 {
            for hour in (0..24 * 60).step_by(37) {
                let first_sample = hour * 3_600 + buoy as u64 * 11;
                let batch = w.batch(buoy, first_sample, 125).unwrap();
                let mut per_metric: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
                for (&id, &v) in batch.metric_ids().iter().zip(batch.values()) {
                    let metric = &MARINE_METRICS[usize::from(id)];
                    let (min, max) = range_of(metric.name);
                    assert!(v >= min && v <= max, "{} = {v} outside {min}..={max}", metric.name);
                    assert!(
                        v >= metric.typical_min && v <= metric.typical_max,
                        "{} = {v} outside its typical band",
                        metric.name
                    );
                    assert!(is_quantized(v, metric.decimal_digits), "{} = {v} not quantized", metric.name);
                    per_metric.entry(id).or_default().push(v);
                }
                for (id, series) in per_metric {
                    let metric = &MARINE_METRICS[usize::from(id)];
                    let lsd = 10f64.powi(-(metric.decimal_digits as i32));
                    // Not flat: noise moves the last digit within two minutes.
                    let distinct: BTreeSet<u64> = series.iter().map(|v| v.to_bits()).collect();
                    assert!(distinct.len() >= 3, "{} flat: {series:?}", metric.name);
                    // Smooth: one second never jumps more than noise and a little signal.
                    let noise = MODELS[usize::from(id)].noise_amplitude;
                    for pair in series.windows(2) {
                        let step = (pair[1] - pair[0]).abs();
                        assert!(step <= 2.0 * noise + 3.0 * lsd, "{} jumped {step}", metric.name);
                    }
                }
            }
        }
    }

    #[test]
    fn models_never_need_the_clamp() {
        for (model, metric) in MODELS.iter().zip(&MARINE_METRICS) {
            let (diurnal_low, diurnal_high) = match model.diurnal {
                Diurnal::None => (0.0, 0.0),
                Diurnal::Afternoon | Diurnal::Tide => {
                    (-model.diurnal_amplitude.abs(), model.diurnal_amplitude.abs())
                }
                Diurnal::Solar => (-0.3 * model.diurnal_amplitude, 0.7 * model.diurnal_amplitude),
            };
            let swing = |base: f64| {
                model.drift_abs + model.drift_rel * base + model.wave_amplitude + model.noise_amplitude
            };
            let low = model.base_min - swing(model.base_min) + diurnal_low;
            let high = model.base_max + swing(model.base_max) + diurnal_high;
            assert!(
                low >= metric.typical_min && high <= metric.typical_max,
                "{}: {low}..{high}",
                metric.name
            );
            let (min, max) = range_of(metric.name);
            assert!(min <= metric.typical_min && metric.typical_max <= max, "{}", metric.name);
        }
        assert!((DRIFT_WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(MARINE_METRICS.len(), DEFAULT_METRIC_RANGES.len());
    }

    #[test]
    fn fewer_metrics_keep_the_same_series() {
        let all = workload(small(3, 8));
        let three = workload(small(3, 3));
        let wide = all.batch(2, 100, 10).unwrap();
        let narrow = three.batch(2, 100, 10).unwrap();
        let picked: Vec<u64> = wide
            .metric_ids()
            .iter()
            .zip(wide.values())
            .filter(|(id, _)| **id < 3)
            .map(|(_, v)| v.to_bits())
            .collect();
        assert_eq!(columns(&narrow).2, picked);
        assert_eq!(narrow.metric_names().len(), 3);
    }

    #[test]
    fn out_of_range_knob_flags_exactly_every_nth_reading() {
        let every = 7;
        let w = workload(WorkloadConfig { buoys: 3, out_of_range_every: Some(every), ..Default::default() });
        let out_of_range = |batch: &ReadingBatch| -> Vec<usize> {
            let names = batch.metric_names();
            (0..batch.len())
                .filter(|&i| {
                    let (min, max) = range_of(names[usize::from(batch.metric_ids()[i])].as_str());
                    let v = batch.values()[i];
                    !(v >= min && v <= max)
                })
                .collect()
        };
        let batch = w.batch_of_readings(1, 0, 1_000).unwrap();
        let hits = out_of_range(&batch);
        assert_eq!(hits.len(), 1_000 / 7);
        assert!(hits.iter().all(|&i| (i as u64 + 1).is_multiple_of(every)));
        // Both sides of the range, and still quantized.
        let above = hits
            .iter()
            .filter(|&&i| {
                let name = batch.metric_names()[usize::from(batch.metric_ids()[i])].as_str();
                batch.values()[i] > range_of(name).1
            })
            .count();
        assert!(above > 0 && above < hits.len());
        for &i in &hits {
            let metric = &MARINE_METRICS[usize::from(batch.metric_ids()[i])];
            assert!(is_quantized(batch.values()[i], metric.decimal_digits));
        }
        // At an offset: readings 500..800 hold 800/7 - 500/7 of them, at the same places.
        let offset = w.batch_of_readings(1, 500, 300).unwrap();
        assert_eq!(out_of_range(&offset).len(), (800 / 7 - 500 / 7) as usize);
        assert_eq!(columns(&offset).2, columns(&batch).2[500..800]);
        // `value` agrees with the batches.
        for reading in [6u64, 13, 14, 20] {
            let (sample, metric) = (reading / 8, (reading % 8) as usize);
            assert_eq!(
                w.value(1, metric, sample).unwrap().to_bits(),
                batch.values()[reading as usize].to_bits()
            );
        }
        // Off by default.
        let clean = workload(small(3, 8)).batch_of_readings(1, 0, 1_000).unwrap();
        assert!(out_of_range(&clean).is_empty());
    }

    #[test]
    fn value_and_sample_timestamp_match_the_batches() {
        let config = WorkloadConfig { buoys: 5, jitter_ns_max: 250_000_000, ..Default::default() };
        let w = workload(config);
        let batch = w.batch(4, 86_400 * 3, 50).unwrap();
        for i in 0..batch.len() {
            let sample = 86_400 * 3 + (i / 8) as u64;
            assert_eq!(w.value(4, i % 8, sample).unwrap().to_bits(), batch.values()[i].to_bits());
            assert_eq!(w.sample_timestamp(4, sample).unwrap(), batch.timestamps()[i]);
        }
    }

    #[test]
    fn jitter_stays_in_bounds_keeps_order_and_leaves_values_alone() {
        let jitter = 200_000_000;
        let jittery = workload(WorkloadConfig { buoys: 2, jitter_ns_max: jitter, ..Default::default() });
        let steady = workload(small(2, 8));
        let a = jittery.batch(1, 0, 500).unwrap();
        let b = steady.batch(1, 0, 500).unwrap();
        assert_eq!(columns(&a).2, columns(&b).2);
        let mut moved = 0;
        for (i, (&t, &grid)) in a.timestamps().iter().zip(b.timestamps()).enumerate() {
            assert!(t >= grid && t <= grid + jitter);
            moved += usize::from(t != grid);
            if i % 8 != 0 {
                assert_eq!(t, a.timestamps()[i - 1], "one timestamp per sample");
            } else if i > 0 {
                assert!(t > a.timestamps()[i - 1]);
            }
        }
        assert!(moved > 0);
        // Different buoys jitter differently.
        assert_ne!(jittery.batch(0, 0, 50).unwrap().timestamps(), &a.timestamps()[..400]);
    }

    /// Checks the walk: every `(buoy, seq)` exactly once, readings summing to the total, and each
    /// batch equal to the buoy's stream at `seq * readings_per_batch`.
    fn check_walk(w: &Workload, readings_per_batch: usize, total: u64) -> Vec<(usize, u64, usize)> {
        let walk: Vec<(usize, u64, usize)> = w
            .iter_batches(readings_per_batch, total)
            .unwrap()
            .map(|(buoy, seq, batch)| {
                let expected =
                    w.batch_of_readings(buoy, seq * readings_per_batch as u64, batch.len()).unwrap();
                assert_eq!(columns(&batch), columns(&expected));
                (buoy, seq, batch.len())
            })
            .collect();
        assert_eq!(walk.iter().map(|&(_, _, n)| n as u64).sum::<u64>(), total);
        let mut seqs: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
        for &(buoy, seq, _) in &walk {
            assert!(seqs.entry(buoy).or_default().insert(seq), "buoy {buoy} batch {seq} twice");
        }
        for (buoy, seqs) in &seqs {
            assert_eq!(*seqs, (0..seqs.len() as u64).collect(), "buoy {buoy}");
        }
        // Only the fleet's very last batch may be short.
        let short = walk.iter().filter(|&&(_, _, n)| n < readings_per_batch).count();
        assert!(short <= 1);
        walk
    }

    #[test]
    fn iter_batches_walks_the_fleet_round_robin_and_covers_the_total() {
        let w = workload(small(7, 3));
        let walk = check_walk(&w, 10, 1_234);
        assert_eq!(walk.len(), 124);
        // Round-robin in time order: batch k of every buoy before batch k + 1 of any.
        let order: Vec<(u64, usize)> = walk.iter().map(|&(buoy, seq, _)| (seq, buoy)).collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(walk.last(), Some(&(4, 17, 4)));
        // 124 batches over 7 buoys: the first five get one more.
        let per_buoy = |b: usize| walk.iter().filter(|&&(buoy, _, _)| buoy == b).count();
        assert_eq!((0..7).map(per_buoy).collect::<Vec<_>>(), [18, 18, 18, 18, 18, 17, 17]);
        // Exact multiples, a single batch, nothing.
        check_walk(&w, 10, 70);
        check_walk(&w, 1_000, 5);
        assert_eq!(w.iter_batches(10, 0).unwrap().count(), 0);
        let iter = w.iter_batches(10, 1_234).unwrap();
        assert_eq!(iter.size_hint(), (124, Some(124)));
    }

    #[test]
    fn late_batches_come_one_round_late_and_still_exactly_once() {
        let w = workload(WorkloadConfig { buoys: 9, metrics: 4, late_fraction: 0.3, ..Default::default() });
        let walk = check_walk(&w, 25, 9 * 25 * 20 + 13);
        let mut late = 0;
        let mut max_seq_seen = 0;
        for &(_, seq, _) in &walk {
            // A batch comes at most one round after the newest round already seen.
            assert!(seq + 1 >= max_seq_seen, "batch {seq} after round {max_seq_seen}");
            late += usize::from(seq < max_seq_seen);
            max_seq_seen = max_seq_seen.max(seq);
        }
        assert!(late > 10, "only {late} late batches");
        // Deterministic.
        let again: Vec<(usize, u64)> =
            w.iter_batches(25, 9 * 25 * 20 + 13).unwrap().map(|(b, s, _)| (b, s)).collect();
        assert_eq!(again, walk.iter().map(|&(b, s, _)| (b, s)).collect::<Vec<_>>());
        // Everything late is the same order shifted by one round.
        let all_late =
            workload(WorkloadConfig { buoys: 9, metrics: 4, late_fraction: 1.0, ..Default::default() });
        let order: Vec<(u64, usize)> =
            check_walk(&all_late, 25, 1_000).iter().map(|&(buoy, seq, _)| (seq, buoy)).collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn sin_turns_matches_the_library_sine() {
        let mut rng = SplitMix64::new(1);
        for i in 0..100_000 {
            let x = if i < 1_000 { f64::from(i) / 1_000.0 - 0.5 } else { rng.unit() * 4.0 - 2.0 };
            let error = (sin_turns(x) - (x * std::f64::consts::TAU).sin()).abs();
            assert!(error < 1e-13, "sin_turns({x}) off by {error}");
        }
        assert_eq!(sin_turns(0.0), 0.0);
        assert!((sin_turns(0.25) - 1.0).abs() < 1e-13);
    }

    #[test]
    fn round_ties_even_matches_the_library() {
        let mut rng = SplitMix64::new(9);
        let specials =
            [0.0, -0.0, 0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, 4_503_599_627_370_495.5, 1e300];
        let randoms = (0..100_000).map(|i| (rng.unit() - 0.5) * 10f64.powi(i % 18));
        for x in specials.into_iter().chain(randoms) {
            assert_eq!(round_ties_even(x), x.round_ties_even(), "{x}");
        }
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // Reference outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, [6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423]);
    }

    proptest! {
        #[test]
        fn any_cut_is_a_slice_of_one_long_batch(
            buoy in 0usize..4,
            metrics in 1usize..=8,
            start in 0u64..1_000_000_000,
            split in 1usize..500,
            rest in 1usize..500,
            every in proptest::option::of(1u64..50),
        ) {
            let w = workload(WorkloadConfig { buoys: 4, metrics, out_of_range_every: every, ..Default::default() });
            let long = columns(&w.batch_of_readings(buoy, start, split + rest).unwrap());
            let head = columns(&w.batch_of_readings(buoy, start, split).unwrap());
            let tail = columns(&w.batch_of_readings(buoy, start + split as u64, rest).unwrap());
            prop_assert_eq!(&head.2[..], &long.2[..split]);
            prop_assert_eq!(&tail.2[..], &long.2[split..]);
            prop_assert_eq!(&tail.0[..], &long.0[split..]);
            prop_assert_eq!(&tail.1[..], &long.1[split..]);
        }
    }
}
