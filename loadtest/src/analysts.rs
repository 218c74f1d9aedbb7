//! The query driver: K concurrent analysts, each with its own HTTPS connection and its own
//! access token, running a weighted [`QueryMix`] of the benchmark queries against the data a
//! fleet run wrote. Closed loop by default (each analyst sends its next query when the last
//! answer is in); with a rate, open loop from due times like the ingest side.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluewave_engine::workload::Workload;

use crate::error::{Error, Result};
use crate::https::ApiClient;
use crate::latency::LatencyRecorder;
use crate::mix::{QueryKind, QueryMix};
use crate::pacer::Pacer;
use crate::report::QueryFigures;
use crate::rng::SeededRng;
use crate::target::ApiAccess;

/// Most concurrent analysts.
pub const ANALYSTS_MAX: usize = 1_000;
/// Nanoseconds in a minute.
const MINUTE_NS: i64 = 60_000_000_000;
/// Length of the raw-range query's window, ns (10 minutes).
const RAW_RANGE_NS: i64 = 10 * MINUTE_NS;
/// Length of the hourly-means query's window, ns (a day).
const HOURLY_MEANS_NS: i64 = 1_440 * MINUTE_NS;
/// Length of the fleet aggregate's window, ns (an hour).
const FLEET_WINDOW_NS: i64 = 60 * MINUTE_NS;

/// The analysts' knobs.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryConfig {
    /// Concurrent analysts, `1..=ANALYSTS_MAX`.
    pub analysts: usize,
    /// Queries per second over all analysts; 0 = closed loop.
    pub rate_per_s: f64,
    /// The weighted mix.
    pub mix: QueryMix,
    /// Measured period.
    pub duration: Duration,
    /// Querying before the measured period (not counted).
    pub warmup: Duration,
    /// Seed of the query and buoy choices.
    pub seed: u64,
}

impl QueryConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.analysts == 0 || self.analysts > ANALYSTS_MAX {
            return Err(Error::Config(format!("analysts must be 1..={ANALYSTS_MAX}")));
        }
        if !self.rate_per_s.is_finite() || self.rate_per_s < 0.0 {
            return Err(Error::Config("query rate must be a finite number >= 0".into()));
        }
        if self.duration.is_zero() {
            return Err(Error::Config("query duration must be above 0".into()));
        }
        Ok(())
    }
}

/// What the analysts may ask about: the buoys and the data time the fleet covered.
#[derive(Clone, Debug)]
pub struct QueryData {
    /// Buoy ids, by workload index.
    pub buoy_ids: Vec<String>,
    /// The workload the fleet sent.
    pub workload: Workload,
    /// Samples every buoy has sent (data time covered from the workload's start).
    pub samples: u64,
}

impl QueryData {
    fn window(&self, rng: &mut SeededRng, length_ns: i64) -> (i64, i64) {
        let config = self.workload.config();
        let covered =
            i64::try_from(self.samples).unwrap_or(i64::MAX).saturating_mul(config.sample_interval_ns);
        let slack = covered.saturating_sub(length_ns).max(0);
        let start =
            config.start_ts + i64::try_from(rng.below(u64::try_from(slack).unwrap_or(0) + 1)).unwrap_or(0);
        (start, start + length_ns)
    }

    /// The request of one query: `(path, Some(sql))` for SQL, `(path, None)` for a GET.
    pub fn request(&self, kind: QueryKind, rng: &mut SeededRng) -> (String, Option<String>) {
        let buoy =
            &self.buoy_ids[rng.below(self.buoy_ids.len() as u64) as usize % self.buoy_ids.len().max(1)];
        let metrics = self.workload.metric_names();
        // `ph` when the fleet sends it, else its first metric.
        let metric = metrics.get(1).or(metrics.first()).map_or("ph", |m| m.as_str());
        let first_metric = metrics.first().map_or("salinity_psu", |m| m.as_str());
        match kind {
            QueryKind::LastValue => (
                "/api/query".into(),
                Some(format!(
                    "SELECT metric, last_value(value ORDER BY ts) FROM readings WHERE buoy_id = '{buoy}' \
                     GROUP BY metric"
                )),
            ),
            QueryKind::RawRange => {
                let (start, end) = self.window(rng, RAW_RANGE_NS);
                (format!("/api/telemetry?buoy_id={buoy}&metric={metric}&start={start}&end={end}"), None)
            }
            QueryKind::HourlyMeans => {
                let (start, end) = self.window(rng, HOURLY_MEANS_NS);
                (
                    "/api/query".into(),
                    Some(format!(
                        "SELECT date_bin(INTERVAL '1 hour', ts) AS h, metric, avg(value) FROM readings \
                         WHERE buoy_id = '{buoy}' AND ts >= to_timestamp_nanos({start}) \
                         AND ts < to_timestamp_nanos({end}) GROUP BY 1, 2"
                    )),
                )
            }
            QueryKind::FleetAggregate => {
                let (start, end) = self.window(rng, FLEET_WINDOW_NS);
                (
                    "/api/query".into(),
                    Some(format!(
                        "SELECT count(*), avg(value) FROM readings WHERE metric = '{first_metric}' \
                         AND ts >= to_timestamp_nanos({start}) AND ts < to_timestamp_nanos({end})"
                    )),
                )
            }
        }
    }
}

/// Per-kind results of the analysts.
#[derive(Debug, Default)]
pub struct QueryRun {
    /// Per kind, in [`QueryKind::ALL`] order (kinds with a weight only).
    pub figures: Vec<QueryFigures>,
    /// Failures by kind of error.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Default)]
struct KindTally {
    latency: LatencyRecorder,
    completed: u64,
    failed: u64,
}

/// A distinct loopback source address per analyst (127.0.0.2, ...), so each has its own
/// per-IP login allowance; `None` when the server is not on IPv4 loopback.
fn source_ip(api: &ApiAccess, analyst: usize) -> Option<IpAddr> {
    match api.target.addr().ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let n = 2 + analyst % 250;
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, (analyst / 250) as u8, n as u8)))
        }
        _ => None,
    }
}

/// Runs the analysts; `done` counts answered queries, `errors` failed ones, live.
pub async fn run_queries(
    config: &QueryConfig,
    api: &ApiAccess,
    data: Arc<QueryData>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
) -> Result<QueryRun> {
    config.validate()?;
    if data.buoy_ids.is_empty() || data.samples == 0 {
        return Err(Error::Config("the analysts need data: no buoy has sent a whole sample".into()));
    }
    let mut clients = Vec::with_capacity(config.analysts);
    for analyst in 0..config.analysts {
        clients.push(api.client(source_ip(api, analyst)).await?);
    }
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    let per_analyst_rate = config.rate_per_s / config.analysts as f64;
    let mut tasks = Vec::with_capacity(config.analysts);
    for (analyst, client) in clients.into_iter().enumerate() {
        let mix = config.mix.clone();
        let data = Arc::clone(&data);
        let (done, errors) = (Arc::clone(&done), Arc::clone(&errors));
        let mut rng = SeededRng::new(config.seed ^ (analyst as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let offset = if per_analyst_rate > 0.0 {
            Duration::from_secs_f64(analyst as f64 / config.analysts as f64 / per_analyst_rate)
        } else {
            Duration::ZERO
        };
        let mut pacer = (per_analyst_rate > 0.0).then(|| Pacer::new(start + offset, per_analyst_rate));
        tasks.push(tokio::spawn(async move {
            let mut client: ApiClient = client;
            let mut tallies: BTreeMap<QueryKind, KindTally> = BTreeMap::new();
            let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let due = match pacer.as_mut() {
                    Some(p) => {
                        let due = p.next_due();
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                if Instant::now() >= deadline {
                    break;
                }
                let kind = mix.pick(&mut rng);
                let (path, sql) = data.request(kind, &mut rng);
                let result = match &sql {
                    Some(sql) => client.sql(sql).await.map(drop),
                    None => client.get(&path).await.map(drop),
                };
                let finished = Instant::now();
                let tally = tallies.entry(kind).or_default();
                match result {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        if finished >= measure_start && finished <= deadline {
                            tally.completed += 1;
                            tally.latency.record(finished.saturating_duration_since(due));
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tally.failed += 1;
                        let text = e.to_string();
                        let short: String = text.chars().take(80).collect();
                        *errors_by_kind.entry(format!("{}: {short}", kind.name())).or_default() += 1;
                    }
                }
            }
            (tallies, errors_by_kind)
        }));
    }
    let mut merged: BTreeMap<QueryKind, KindTally> = BTreeMap::new();
    let mut run = QueryRun::default();
    for task in tasks {
        let (tallies, errors) = task.await.map_err(|e| Error::Internal(format!("analyst task: {e}")))?;
        for (kind, tally) in tallies {
            let m = merged.entry(kind).or_default();
            m.latency.merge(&tally.latency);
            m.completed += tally.completed;
            m.failed += tally.failed;
        }
        for (kind, n) in errors {
            *run.errors.entry(kind).or_default() += n;
        }
    }
    let seconds = config.duration.as_secs_f64();
    for kind in config.mix.kinds() {
        let tally = merged.remove(&kind).unwrap_or_default();
        run.figures.push(QueryFigures {
            name: kind.name().to_owned(),
            completed: tally.completed,
            failed: tally.failed,
            queries_per_s: tally.completed as f64 / seconds,
            latency: tally.latency.summary(),
        });
    }
    Ok(run)
}
