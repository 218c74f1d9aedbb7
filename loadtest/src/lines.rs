//! The `line-protocol` run: InfluxDB-style writers. [`LineConfig::senders`] keep-alive HTTPS
//! connections post bodies of [`LineConfig::lines_per_body`] lines to `POST /api/v2/write`
//! (precision ns, `Authorization: Token` with an access token allowed to write telemetry), as
//! Telegraf or an InfluxDB client with batching would. A line carries one sample of every
//! metric of one buoy (`marine,buoy_id=<id> salinity_psu=35.1,ph=8.05,... <ts>`), so a reading
//! is a field; the values and timestamps are the fleet workload's (the same data the QUIC
//! fleet sends), each sender writing its own share of the buoys.
//!
//! Bodies are built by a generator thread per sender ahead of the sender (a bounded channel of
//! [`BODIES_AHEAD`] bodies), so a sender's loop only posts; the generators' CPU is the client's
//! and is reported with it. A `204` acknowledges every line as durable (the server's WAL
//! fsync); latency is from the due time (paced) or the send (open throttle) to that answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluewave_engine::workload::Workload;
use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::https::{ApiClient, header_value, status_text};
use crate::latency::LatencyRecorder;
use crate::pacer::Pacer;
use crate::procstat::ProcessMonitor;
use crate::report::IngestFigures;
use crate::target::ApiAccess;
use crate::timeline::{Timeline, TimelinePoint, interval_for};

/// Most senders.
pub const SENDERS_MAX: usize = 256;
/// Most lines per body (the server's `LINES_PER_BODY_MAX`).
pub const LINES_PER_BODY_MAX: usize = 100_000;
/// Bodies a generator keeps ready ahead of its sender.
pub const BODIES_AHEAD: usize = 4;
/// The write path: API v2, nanosecond timestamps.
const WRITE_PATH: &str = "/api/v2/write?bucket=fleet&precision=ns";
/// Measurement name of the generated lines (not stored: the `buoy_id` tag names the buoy).
const MEASUREMENT: &str = "marine";

/// The knobs of a `line-protocol` run.
#[derive(Clone, Debug, PartialEq)]
pub struct LineConfig {
    /// Concurrent keep-alive connections, `1..=SENDERS_MAX`.
    pub senders: usize,
    /// Lines per body, `1..=LINES_PER_BODY_MAX`.
    pub lines_per_body: usize,
    /// Readings (fields) per second over all senders; 0 = open throttle.
    pub rate_per_s: f64,
    /// Measured period.
    pub duration: Duration,
    /// Sending before the measured period (not counted).
    pub warmup: Duration,
}

impl LineConfig {
    /// Checks the knobs.
    pub fn validate(&self) -> Result<()> {
        if self.senders == 0 || self.senders > SENDERS_MAX {
            return Err(Error::Config(format!("senders must be 1..={SENDERS_MAX}")));
        }
        if self.lines_per_body == 0 || self.lines_per_body > LINES_PER_BODY_MAX {
            return Err(Error::Config(format!("lines per body must be 1..={LINES_PER_BODY_MAX}")));
        }
        if !self.rate_per_s.is_finite() || self.rate_per_s < 0.0 {
            return Err(Error::Config("rate must be a finite number >= 0".into()));
        }
        if self.duration.is_zero() {
            return Err(Error::Config("duration must be above 0".into()));
        }
        Ok(())
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct LineRun {
    /// Readings, bodies (as batches) and latency in the measured period.
    pub figures: IngestFigures,
    /// Failures by reason.
    pub errors: BTreeMap<String, u64>,
    /// Per-second throughput and latency.
    pub timeline: Vec<TimelinePoint>,
    /// CPU of this process (senders and generators) over the measured period, % of one core.
    pub client_cpu_percent: Option<f64>,
}

/// One body: its bytes and the readings (fields) in it.
struct Body {
    bytes: Bytes,
    readings: u64,
}

/// Builds the bodies of one sender: its buoys (`buoy_ids[i]` is workload buoy `first + i`),
/// round robin, one line per buoy sample, the samples advancing together.
struct BodyMaker {
    workload: Arc<Workload>,
    buoy_ids: Vec<String>,
    first: usize,
    lines_per_body: usize,
    next_line: u64,
}

impl BodyMaker {
    fn next(&mut self) -> Result<Body> {
        let metrics = self.workload.metric_names();
        let mut text = String::with_capacity(self.lines_per_body * (32 + 24 * metrics.len()));
        let buoys = self.buoy_ids.len() as u64;
        for _ in 0..self.lines_per_body {
            let buoy = (self.next_line % buoys) as usize;
            let sample = self.next_line / buoys;
            self.next_line += 1;
            let index = self.first + buoy;
            let id = self.buoy_ids.get(buoy).map_or("", String::as_str);
            let ts =
                self.workload.sample_timestamp(index, sample).map_err(|e| Error::Workload(e.to_string()))?;
            let _ = write!(text, "{MEASUREMENT},buoy_id={id} ");
            for (m, name) in metrics.iter().enumerate() {
                let value =
                    self.workload.value(index, m, sample).map_err(|e| Error::Workload(e.to_string()))?;
                let sep = if m == 0 { "" } else { "," };
                let _ = write!(text, "{sep}{}={value}", name.as_str());
            }
            let _ = writeln!(text, " {ts}");
        }
        Ok(Body { bytes: Bytes::from(text), readings: (self.lines_per_body * metrics.len()) as u64 })
    }
}

/// Posts bodies from `senders` connections for warm-up + duration; `buoy_ids` are registered
/// buoys (the workload's buoy `i` is written as `buoy_ids[i]`); `acked` counts the readings
/// acknowledged so far (for a progress bar).
pub async fn run_lines(
    config: &LineConfig,
    api: &ApiAccess,
    workload: Workload,
    buoy_ids: Vec<String>,
    acked: Arc<AtomicU64>,
) -> Result<LineRun> {
    config.validate()?;
    if buoy_ids.len() < config.senders {
        return Err(Error::Config(format!(
            "{} buoys for {} senders: at least one each",
            buoy_ids.len(),
            config.senders
        )));
    }
    let workload = Arc::new(workload);
    // The token of the run's login, sent as `Token` (the InfluxDB 2.x form).
    let login = api.client(None).await?;
    let token = login.access_token().ok_or_else(|| Error::api("login", "no access token"))?.to_owned();
    let authorization = header_value(&format!("Token {token}"))?;
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let deadline = measure_start + config.duration;
    let per_sender_rate = config.rate_per_s / config.senders as f64;
    let share = buoy_ids.len() / config.senders;
    let interval = interval_for(config.warmup + config.duration);
    let mut tasks = Vec::with_capacity(config.senders);
    for sender in 0..config.senders {
        let first = sender * share;
        let ids = buoy_ids.get(first..first + share).unwrap_or_default().to_vec();
        let mut maker = BodyMaker {
            workload: Arc::clone(&workload),
            buoy_ids: ids,
            first,
            lines_per_body: config.lines_per_body,
            next_line: 0,
        };
        let (body_tx, mut body_rx) = tokio::sync::mpsc::channel::<Result<Body>>(BODIES_AHEAD);
        std::thread::Builder::new()
            .name(format!("lines-gen-{sender}"))
            .spawn(move || {
                while !body_tx.is_closed() {
                    let body = maker.next();
                    let failed = body.is_err();
                    if body_tx.blocking_send(body).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|source| Error::Io { what: "start a body generator", source })?;
        let mut client = ApiClient::new(api.target.clone(), None);
        let authorization = authorization.clone();
        let acked = Arc::clone(&acked);
        let mut pacer = None;
        tasks.push(tokio::spawn(async move {
            let mut latency = LatencyRecorder::new();
            let mut timeline = Timeline::new(start, interval);
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let (mut readings, mut bodies) = (0u64, 0u64);
            let headers = [
                (hyper::header::AUTHORIZATION, authorization),
                (hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
            ];
            while let Some(body) = body_rx.recv().await {
                let body = body?;
                let due = if per_sender_rate > 0.0 {
                    let pacer = pacer.get_or_insert_with(|| {
                        Pacer::new(start, per_sender_rate / body.readings.max(1) as f64)
                    });
                    let due = pacer.next_due();
                    tokio::time::sleep_until(due.into()).await;
                    due
                } else {
                    Instant::now()
                };
                if due >= deadline {
                    break;
                }
                match client.send(Method::POST, WRITE_PATH, body.bytes, &headers).await {
                    Ok(answer) if answer.status == StatusCode::NO_CONTENT => {
                        let done = Instant::now();
                        acked.fetch_add(body.readings, Ordering::Relaxed);
                        let took = done.saturating_duration_since(due);
                        timeline.record_ack(done, body.readings, took);
                        if due >= measure_start && done <= deadline {
                            readings += body.readings;
                            bodies += 1;
                            latency.record(took);
                        }
                    }
                    Ok(answer) => {
                        let text: String = status_text(&answer).chars().take(160).collect();
                        *errors.entry(text).or_default() += 1;
                        timeline.record_error(Instant::now());
                        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
                            let wait = answer.retry_after_s.unwrap_or(1).min(5);
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                    }
                    Err(e) => {
                        let text: String = e.to_string().chars().take(160).collect();
                        *errors.entry(text).or_default() += 1;
                    }
                }
            }
            Ok::<_, Error>((latency, timeline, errors, readings, bodies))
        }));
    }
    let client_cpu = tokio::spawn(async move {
        let mut monitor = ProcessMonitor::new(std::process::id());
        tokio::time::sleep_until(measure_start.into()).await;
        monitor.sample().ok()?;
        tokio::time::sleep_until(deadline.into()).await;
        monitor.sample().ok().map(|sample| (monitor.cpu_percent_since_start(&sample) * 10.0).round() / 10.0)
    });
    let mut run = LineRun::default();
    let mut latency = LatencyRecorder::new();
    let mut timeline = Timeline::new(start, interval);
    for task in tasks {
        let (l, t, errors, readings, bodies) =
            task.await.map_err(|e| Error::Internal(format!("sender task: {e}")))??;
        latency.merge(&l);
        timeline.merge(&t);
        for (k, v) in errors {
            *run.errors.entry(k).or_default() += v;
        }
        run.figures.readings_acked += readings;
        run.figures.batches_acked += bodies;
    }
    run.client_cpu_percent = client_cpu.await.ok().flatten();
    run.figures.buoys = (share * config.senders) as u64;
    run.figures.batch_readings = (config.lines_per_body * workload.metric_names().len()) as u64;
    run.figures.ack_latency = latency.summary();
    run.figures = std::mem::take(&mut run.figures).with_rates(config.duration.as_secs_f64());
    run.timeline = timeline.points();
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bluewave_engine::workload::WorkloadConfig;

    #[test]
    fn a_body_holds_one_line_per_buoy_sample_with_every_metric() {
        let workload = Workload::new(WorkloadConfig { buoys: 2, metrics: 3, ..WorkloadConfig::default() })
            .unwrap_or_else(|e| panic!("{e}"));
        let ids = vec!["lt-000000".to_owned(), "lt-000001".to_owned()];
        let mut maker = BodyMaker {
            workload: Arc::new(workload),
            buoy_ids: ids,
            first: 0,
            lines_per_body: 3,
            next_line: 0,
        };
        let body = maker.next().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body.readings, 9);
        let text = String::from_utf8(body.bytes.to_vec()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("marine,buoy_id=lt-000000 salinity_psu="), "{}", lines[0]);
        assert!(lines[1].starts_with("marine,buoy_id=lt-000001 "), "{}", lines[1]);
        assert!(lines[2].starts_with("marine,buoy_id=lt-000000 "), "{}", lines[2]);
        assert_eq!(lines[0].split(' ').nth(1).map(|f| f.split(',').count()), Some(3));
        // The third line is the first buoy's second sample: a later timestamp.
        let ts = |line: &str| line.rsplit(' ').next().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0);
        assert!(ts(lines[2]) > ts(lines[0]));
        assert_eq!(maker.next().map(|b| b.readings).unwrap_or(0), 9);
    }
}
