//! The fleet driver: N simulated buoys, one QUIC connection each through the buoy SDK
//! ([`bluewave_wire::Client`]), sending the deterministic marine workload
//! ([`bluewave_engine::workload`]) paced open-loop or at an open throttle, for a bounded time.
//!
//! Every buoy is two tasks: a sender (pace, generate the batch, `Client::send`) and a collector
//! that awaits the acks in send order. The latency of an ack is taken from the batch's due time
//! when paced (so a stalled server shows in the percentiles, see [`crate::pacer`]), and from the
//! moment it entered the SDK's buffer at an open throttle. Acks are counted in the measured
//! period when they arrive inside it (after the warm-up, before the sending deadline); the
//! [`AckLedger`] keeps every acknowledged batch for the durability check. Clients share UDP
//! endpoints, [`IngestConfig::clients_per_endpoint`] each, so 10,000 connections do not need
//! 10,000 sockets.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bluewave_engine::BATCH_READINGS_MAX;
use bluewave_engine::workload::{MARINE_METRIC_COUNT, Workload, WorkloadConfig};
use bluewave_wire::{AckFuture, AckOutcome, Client, ClientConfig, ClientError, ClientStats, Trust};

use crate::error::{Error, Result};
use crate::latency::LatencyRecorder;
use crate::ledger::AckLedger;
use crate::pacer::Pacer;
use crate::procstat::ProcessMonitor;
use crate::report::{IngestFigures, ServerFigures};
use crate::timeline::{Timeline, interval_for};

/// Most simulated buoys in one run.
pub const BUOYS_MAX: usize = 100_000;
/// Longest run (warm-up plus measured period), s.
pub const RUN_SECONDS_MAX: u64 = 24 * 3_600;
/// Default batches in flight per buoy.
pub const WINDOW_DEFAULT: usize = 8;
/// Default SDK clients per UDP endpoint.
pub const CLIENTS_PER_ENDPOINT_DEFAULT: usize = 64;
/// Most SDK clients per UDP endpoint (one endpoint task drives all of them).
pub const CLIENTS_PER_ENDPOINT_MAX: usize = 1_024;
/// Default time allowed for outstanding acks after the sending deadline, ms.
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default time allowed for the whole fleet to connect before the clock starts, ms.
pub const CONNECT_ALL_TIMEOUT_MS_DEFAULT: u64 = 120_000;
/// How often the server process is sampled, ms.
const SERVER_SAMPLE_INTERVAL_MS: u64 = 1_000;
/// Shortest SDK idle timeout, ms (the keep-alive is a quarter of it).
pub const IDLE_TIMEOUT_MS_MIN: u64 = 400;
/// Largest sample interval of the simulated sensors, ms (a day).
pub const SAMPLE_INTERVAL_MS_MAX: u64 = 86_400_000;

/// One device: the buoy id its token names and the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Buoy id.
    pub buoy_id: String,
    /// Device token (pre-shared or JWT).
    pub token: String,
}

/// Where the fleet sends.
#[derive(Clone, Debug)]
pub struct IngestTarget {
    /// QUIC address of the server.
    pub quic_addr: SocketAddr,
    /// Name in the server certificate.
    pub server_name: String,
    /// How its certificate is trusted.
    pub trust: Trust,
    /// One device per simulated buoy (at least [`IngestConfig::buoys`]).
    pub devices: Vec<Device>,
    /// The server's pid, when it runs on this machine: CPU and RSS are read from `/proc`.
    pub server_pid: Option<u32>,
}

/// The knobs of a fleet run.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestConfig {
    /// Simulated buoys (connections), `1..=BUOYS_MAX`.
    pub buoys: usize,
    /// Metrics per buoy, `1..=8` (the first of the eight marine sensors).
    pub metrics: usize,
    /// Time between two samples of a sensor in the generated data, ms (data time, not wall
    /// time: a fast run simply covers more data time).
    pub sample_interval_ms: u64,
    /// Readings per batch, `1..=BATCH_READINGS_MAX`.
    pub batch_readings: usize,
    /// Batches in flight per buoy.
    pub window: usize,
    /// Readings per second over the fleet; 0 = open throttle (each buoy as fast as its acks).
    pub rate_per_s: f64,
    /// Measured period.
    pub duration: Duration,
    /// Sending before the measured period (not counted).
    pub warmup: Duration,
    /// SDK clients per UDP endpoint.
    pub clients_per_endpoint: usize,
    /// First batch sequence of every buoy (above any the server saw from these devices, or
    /// the new batches are answered `duplicate`).
    pub first_batch_seq: u64,
    /// Reading number of each buoy's first batch (continue a series across runs).
    pub first_reading: u64,
    /// Keep the [`AckLedger`] (the durability check needs it).
    pub keep_ledger: bool,
    /// Largest reconnect backoff of the SDK, ms (short for the durability run).
    pub backoff_max_ms: u64,
    /// Time allowed for outstanding acks after the sending deadline.
    pub drain_timeout: Duration,
    /// Time allowed for the whole fleet to connect.
    pub connect_timeout: Duration,
    /// QUIC idle timeout of the SDK, ms: how soon a client notices a server that died without
    /// closing (SIGKILL) and reconnects. Short for the durability run.
    pub idle_timeout_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            buoys: 100,
            metrics: MARINE_METRIC_COUNT,
            sample_interval_ms: 1_000,
            batch_readings: 1_000,
            window: WINDOW_DEFAULT,
            rate_per_s: 0.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            clients_per_endpoint: CLIENTS_PER_ENDPOINT_DEFAULT,
            first_batch_seq: 1,
            first_reading: 0,
            keep_ledger: false,
            backoff_max_ms: bluewave_wire::BACKOFF_MAX_MS_DEFAULT,
            drain_timeout: Duration::from_millis(DRAIN_TIMEOUT_MS_DEFAULT),
            connect_timeout: Duration::from_millis(CONNECT_ALL_TIMEOUT_MS_DEFAULT),
            idle_timeout_ms: bluewave_wire::IDLE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl IngestConfig {
    /// Checks every knob against its bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(what));
        if self.buoys == 0 || self.buoys > BUOYS_MAX {
            return bad(format!("buoys must be 1..={BUOYS_MAX}"));
        }
        if self.metrics == 0 || self.metrics > MARINE_METRIC_COUNT {
            return bad(format!("metrics per buoy must be 1..={MARINE_METRIC_COUNT}"));
        }
        if self.sample_interval_ms == 0 || self.sample_interval_ms > SAMPLE_INTERVAL_MS_MAX {
            return bad(format!("sample interval must be 1..={SAMPLE_INTERVAL_MS_MAX} ms"));
        }
        if self.batch_readings == 0 || self.batch_readings > BATCH_READINGS_MAX {
            return bad(format!("batch readings must be 1..={BATCH_READINGS_MAX}"));
        }
        let window_max = bluewave_wire::BUFFER_BATCHES_MAX / 2;
        if self.window == 0 || self.window > window_max {
            return bad(format!("window must be 1..={window_max}"));
        }
        if !self.rate_per_s.is_finite() || self.rate_per_s < 0.0 {
            return bad("rate must be a finite number >= 0 (0 = open throttle)".into());
        }
        if self.duration.is_zero() || (self.duration + self.warmup).as_secs() > RUN_SECONDS_MAX {
            return bad(format!(
                "duration must be above 0 and warm-up + duration at most {RUN_SECONDS_MAX} s"
            ));
        }
        if self.clients_per_endpoint == 0 || self.clients_per_endpoint > CLIENTS_PER_ENDPOINT_MAX {
            return bad(format!("clients per endpoint must be 1..={CLIENTS_PER_ENDPOINT_MAX}"));
        }
        if self.idle_timeout_ms < IDLE_TIMEOUT_MS_MIN {
            return bad(format!("idle timeout must be at least {IDLE_TIMEOUT_MS_MIN} ms"));
        }
        if self.first_batch_seq == 0 {
            return bad("first batch seq starts at 1".into());
        }
        if self.backoff_max_ms < bluewave_wire::BACKOFF_INITIAL_MS_DEFAULT {
            return bad(format!(
                "backoff max must be at least {} ms",
                bluewave_wire::BACKOFF_INITIAL_MS_DEFAULT
            ));
        }
        Ok(())
    }

    /// The workload the fleet sends.
    pub fn workload(&self) -> Result<Workload> {
        let interval_ns = i64::try_from(self.sample_interval_ms)
            .ok()
            .and_then(|ms| ms.checked_mul(1_000_000))
            .ok_or_else(|| Error::Config("sample interval too large".into()))?;
        Workload::new(WorkloadConfig {
            buoys: self.buoys,
            metrics: self.metrics,
            sample_interval_ns: interval_ns,
            ..WorkloadConfig::default()
        })
        .map_err(|e| Error::Workload(e.to_string()))
    }
}

/// Counters the progress display reads while the run goes on.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Readings acknowledged (stored or duplicate) so far.
    pub readings_acked: Arc<AtomicU64>,
    /// Batches acknowledged so far.
    pub batches_acked: Arc<AtomicU64>,
    /// Failed or rejected batches so far.
    pub errors: Arc<AtomicU64>,
    /// Buoys connected.
    pub connected: Arc<AtomicU64>,
    /// Set to end the sending early (before the configured duration); the run then drains.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

/// What a fleet run measured.
#[derive(Debug)]
pub struct IngestRun {
    /// Figures of the measured period (rates filled in).
    pub figures: IngestFigures,
    /// Readings acknowledged over the whole run (warm-up and drain included).
    pub readings_acked_total: u64,
    /// Batches left unacknowledged when the run ended (drain deadline or a terminal error).
    pub unacked_batches: u64,
    /// Length of the measured period, s.
    pub measured_s: f64,
    /// Failures by kind (SDK counters included: `busy`, `resends`, `reconnects`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Throughput and latency over time, from the first send.
    pub timeline: Timeline,
    /// Every acknowledged batch, when [`IngestConfig::keep_ledger`] was set.
    pub ledger: AckLedger,
    /// The buoy id of each buoy index.
    pub buoy_ids: Vec<String>,
    /// The server process, when its pid was given.
    pub server: Option<ServerFigures>,
    /// This process's CPU use during the measured period, percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// Server RSS when the whole fleet was connected, before the first batch, bytes.
    pub server_rss_connected_bytes: Option<u64>,
    /// Server RSS at the last sample of the run, bytes.
    pub server_rss_end_bytes: Option<u64>,
    /// The highest next unsent reading number of any buoy (to continue a series).
    pub next_reading: u64,
    /// The lowest next unsent reading number: every buoy sent at least this many readings.
    pub next_reading_min: u64,
}

/// When things happen in a run, shared by every task.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    measure_start: Instant,
    send_deadline: Instant,
}

/// What one buoy's collector measured.
struct BuoyOutcome {
    latency: LatencyRecorder,
    timeline: Timeline,
    ledger: AckLedger,
    readings_measured: u64,
    batches_measured: u64,
    duplicates: u64,
    rejected: u64,
    readings_total: u64,
    unacked: u64,
    errors: BTreeMap<String, u64>,
    stats: ClientStats,
}

impl BuoyOutcome {
    /// Nothing measured yet, over `timeline`.
    fn empty(timeline: Timeline) -> Self {
        Self {
            latency: LatencyRecorder::new(),
            timeline,
            ledger: AckLedger::new(),
            readings_measured: 0,
            batches_measured: 0,
            duplicates: 0,
            rejected: 0,
            readings_total: 0,
            unacked: 0,
            errors: BTreeMap::new(),
            stats: ClientStats::default(),
        }
    }
}

/// A batch on its way: what the collector needs when its ack comes.
struct Pending {
    ack: AckFuture,
    due: Option<Instant>,
    sent_at: Instant,
    first_reading: u64,
    readings: u64,
}

/// A short, stable name for an SDK error (the report's error kind).
pub fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Config(_) => "config",
        ClientError::BufferFull { .. } => "buffer_full",
        ClientError::BatchTooLarge { .. } => "batch_too_large",
        ClientError::Encode(_) => "encode",
        ClientError::SeqInUse(_) => "seq_in_use",
        ClientError::Spool(_) => "spool",
        ClientError::Endpoint(_) => "endpoint",
        ClientError::Refused { .. } => "refused",
        ClientError::Tls(_) => "tls",
        ClientError::ServerClosed { .. } => "server_closed",
        ClientError::StreamReset { .. } => "stream_reset",
        ClientError::ServerProtocol(_) => "server_protocol",
        ClientError::Closed => "closed",
    }
    .to_owned()
}

/// Runs the fleet against `target`; `live` is updated as acks arrive.
pub async fn run_ingest(
    config: &IngestConfig,
    target: &IngestTarget,
    live: Arc<LiveCounters>,
) -> Result<IngestRun> {
    config.validate()?;
    if target.devices.len() < config.buoys {
        return Err(Error::Config(format!(
            "{} buoys asked but only {} device tokens available",
            config.buoys,
            target.devices.len()
        )));
    }
    let workload = config.workload()?;
    let endpoints = config.buoys.div_ceil(config.clients_per_endpoint);
    let mut endpoint_list = Vec::with_capacity(endpoints);
    for _ in 0..endpoints {
        let bind: SocketAddr = if target.quic_addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        // Acks of `clients_per_endpoint` buoys arrive on one socket: the server's buffer size.
        let requested = bluewave_wire::UDP_BUFFER_BYTES_DEFAULT;
        let (endpoint, buffers) = bluewave_wire::udp_endpoint(bind, requested, None)
            .map_err(|source| Error::Io { what: "open a UDP endpoint", source })?;
        if buffers.below(requested) && endpoint_list.is_empty() {
            eprintln!(
                "warning: the kernel granted smaller UDP buffers ({buffers:?}) than {requested} bytes: \
                 dropped acks would add to the measured latency (Linux: raise net.core.rmem_max)"
            );
        }
        endpoint_list.push(endpoint);
    }
    // Connect the whole fleet first: the clock starts once every buoy is accepted.
    let mut clients = Vec::with_capacity(config.buoys);
    for (index, device) in target.devices.iter().take(config.buoys).enumerate() {
        let mut client_config = ClientConfig::new(
            target.quic_addr,
            &target.server_name,
            target.trust.clone(),
            device.token.clone(),
            workload.metric_names().to_vec(),
        );
        client_config.window = config.window;
        // Room for one window in flight and one waiting: `send` then paces the buoy by its acks.
        client_config.buffer_batches_max = config.window * 2;
        client_config.first_batch_seq = config.first_batch_seq;
        client_config.backoff_max_ms = config.backoff_max_ms;
        client_config.close_timeout_ms = 2_000;
        client_config.idle_timeout_ms = config.idle_timeout_ms;
        client_config.keep_alive_interval_ms =
            (config.idle_timeout_ms / 4).min(bluewave_wire::KEEP_ALIVE_INTERVAL_MS_DEFAULT);
        let endpoint = endpoint_list[index / config.clients_per_endpoint].clone();
        clients.push(Client::connect_on(endpoint, client_config).await?);
    }
    let connect_deadline = tokio::time::Instant::now() + config.connect_timeout;
    for (client, device) in clients.iter().zip(&target.devices) {
        match tokio::time::timeout_at(connect_deadline, client.wait_connected()).await {
            Ok(Ok(_)) => {
                live.connected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => return Err(Error::Config(format!("buoy {} cannot connect: {e}", device.buoy_id))),
            Err(_) => {
                return Err(Error::Config(format!(
                    "the fleet did not connect within {} ms ({} of {} connected)",
                    config.connect_timeout.as_millis(),
                    live.connected.load(Ordering::Relaxed),
                    config.buoys
                )));
            }
        }
    }
    let mut monitor = target.server_pid.map(ProcessMonitor::new);
    let rss_connected = monitor.as_mut().and_then(|m| m.sample().ok()).map(|s| s.rss_bytes);

    let start = Instant::now();
    let clock = Clock {
        start,
        measure_start: start + config.warmup,
        send_deadline: start + config.warmup + config.duration,
    };
    let timeline_interval = interval_for(config.warmup + config.duration);
    // Batches per second per buoy (None: open throttle).
    let batches_per_s_per_buoy = (config.rate_per_s > 0.0)
        .then(|| config.rate_per_s / config.batch_readings as f64 / config.buoys as f64);
    let mut tasks = Vec::with_capacity(config.buoys);
    for (index, client) in clients.into_iter().enumerate() {
        let buoy = BuoyPlan {
            index,
            workload: workload.clone(),
            batch_readings: config.batch_readings,
            first_reading: config.first_reading,
            batches_per_s: batches_per_s_per_buoy,
            stagger: index as f64 / config.buoys as f64,
            window: config.window,
            keep_ledger: config.keep_ledger,
            drain_timeout: config.drain_timeout,
            timeline_interval,
        };
        tasks.push(tokio::spawn(run_buoy(client, buoy, clock, Arc::clone(&live))));
    }

    // Sample the server while the fleet runs: first at the start of the measured period.
    let server_task = monitor.map(|mut monitor| {
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.measure_start.into()).await;
            let _ = monitor.sample();
            let mut last = None;
            let mut ticker = tokio::time::interval(Duration::from_millis(SERVER_SAMPLE_INTERVAL_MS));
            while Instant::now() < clock.send_deadline {
                ticker.tick().await;
                if let Ok(sample) = monitor.sample() {
                    last = Some((monitor.cpu_percent_since_start(&sample), sample));
                }
            }
            last
        })
    });

    // And this process over the same period (up to the send deadline, or the fleet's end if
    // that comes first, as in a durability run): the client's side of the CPU split.
    let (fleet_done_tx, mut fleet_done) = tokio::sync::oneshot::channel::<()>();
    let client_task = tokio::spawn(async move {
        let mut monitor = ProcessMonitor::new(std::process::id());
        tokio::select! {
            _ = tokio::time::sleep_until(clock.measure_start.into()) => {}
            _ = &mut fleet_done => return None,
        }
        monitor.sample().ok()?;
        tokio::select! {
            _ = tokio::time::sleep_until(clock.send_deadline.into()) => {}
            _ = fleet_done => {}
        }
        // One decimal, as the table shows it.
        monitor.sample().ok().map(|sample| (monitor.cpu_percent_since_start(&sample) * 10.0).round() / 10.0)
    });

    let mut run = IngestRun {
        figures: IngestFigures {
            buoys: config.buoys as u64,
            batch_readings: config.batch_readings as u64,
            ..IngestFigures::default()
        },
        readings_acked_total: 0,
        unacked_batches: 0,
        measured_s: config.duration.as_secs_f64(),
        errors: BTreeMap::new(),
        timeline: Timeline::new(start, timeline_interval),
        ledger: AckLedger::new(),
        buoy_ids: target.devices.iter().take(config.buoys).map(|d| d.buoy_id.clone()).collect(),
        server: None,
        client_cpu_percent: None,
        server_rss_connected_bytes: rss_connected,
        server_rss_end_bytes: None,
        next_reading: config.first_reading,
        next_reading_min: u64::MAX,
    };
    let mut latency = LatencyRecorder::new();
    let mut stats_sum = ClientStats::default();
    let mut finished_clients = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (outcome, next_reading, client) =
            task.await.map_err(|e| Error::Internal(format!("buoy task failed: {e}")))?;
        finished_clients.push(client);
        run.next_reading = run.next_reading.max(next_reading);
        run.next_reading_min = run.next_reading_min.min(next_reading);
        latency.merge(&outcome.latency);
        run.timeline.merge(&outcome.timeline);
        run.ledger.merge(&outcome.ledger);
        run.figures.readings_acked += outcome.readings_measured;
        run.figures.batches_acked += outcome.batches_measured;
        run.figures.duplicates += outcome.duplicates;
        run.figures.rejected += outcome.rejected;
        run.readings_acked_total += outcome.readings_total;
        run.unacked_batches += outcome.unacked;
        for (kind, n) in outcome.errors {
            *run.errors.entry(kind).or_default() += n;
        }
        let s = outcome.stats;
        stats_sum.busy_answers += s.busy_answers;
        stats_sum.resends += s.resends;
        stats_sum.reconnects += s.reconnects;
        stats_sum.stream_resets += s.stream_resets;
    }
    for (kind, n) in [
        ("busy", stats_sum.busy_answers),
        ("resends", stats_sum.resends),
        ("reconnects", stats_sum.reconnects),
        ("stream_resets", stats_sum.stream_resets),
        ("unacked_at_end", run.unacked_batches),
    ] {
        if n > 0 {
            run.errors.insert(kind.to_owned(), n);
        }
    }
    run.figures.ack_latency = latency.summary();
    run.figures = std::mem::take(&mut run.figures).with_rates(run.measured_s);
    if let Some(task) = server_task
        && let Ok(Some((cpu_percent, sample))) = task.await
    {
        run.server_rss_end_bytes = Some(sample.rss_bytes);
        run.server = Some(ServerFigures {
            cpu_percent,
            peak_rss_bytes: sample.peak_rss_bytes,
            ..ServerFigures::default()
        });
    }
    let _ = fleet_done_tx.send(());
    run.client_cpu_percent = client_task.await.ok().flatten();
    // Every buoy is done: close the clients together (each close also closes its endpoint).
    let mut closing = tokio::task::JoinSet::new();
    for client in finished_clients {
        closing.spawn(client.close());
    }
    while closing.join_next().await.is_some() {}
    for endpoint in endpoint_list {
        // Closing connections linger a few round trips; do not wait long for that.
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    }
    Ok(run)
}

/// One buoy's part of the plan.
struct BuoyPlan {
    index: usize,
    workload: Workload,
    batch_readings: usize,
    first_reading: u64,
    batches_per_s: Option<f64>,
    /// Fraction of one batch period this buoy's schedule is shifted by (spreads the fleet).
    stagger: f64,
    window: usize,
    keep_ledger: bool,
    drain_timeout: Duration,
    timeline_interval: Duration,
}

/// Runs one buoy until its sending ends and its acks are in (or the drain deadline passed).
/// Returns the client still open: `Client::close` closes the UDP endpoint it was given, which
/// other buoys share, so clients are closed only when every buoy is done.
async fn run_buoy(
    client: Client,
    plan: BuoyPlan,
    clock: Clock,
    live: Arc<LiveCounters>,
) -> (BuoyOutcome, u64, Client) {
    let client = Arc::new(client);
    let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(plan.window * 2);
    // When the sender stopped (ms after the start, 0 = still sending): the drain deadline
    // counts from there, also when sending ended early.
    let sending_ended_ms = Arc::new(AtomicU64::new(0));
    let collector = tokio::spawn(collect(
        rx,
        plan.index,
        plan.keep_ledger,
        clock,
        DrainDeadline { ended_ms: Arc::clone(&sending_ended_ms), drain: plan.drain_timeout },
        Timeline::new(clock.start, plan.timeline_interval),
        Arc::clone(&live),
    ));
    let mut pacer = plan.batches_per_s.map(|rate| {
        let offset = Duration::from_secs_f64(plan.stagger / rate);
        Pacer::new(clock.start + offset, rate)
    });
    let mut next_reading = plan.first_reading;
    let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let due = match pacer.as_mut() {
            Some(p) => {
                let due = p.next_due();
                if due >= clock.send_deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                Some(due)
            }
            None => None,
        };
        if Instant::now() >= clock.send_deadline || live.stop.load(Ordering::Relaxed) {
            break;
        }
        let batch = match plan.workload.batch_of_readings(plan.index, next_reading, plan.batch_readings) {
            Ok(batch) => batch,
            Err(e) => {
                *send_errors.entry(format!("workload: {e}")).or_default() += 1;
                break;
            }
        };
        match client.send(&batch).await {
            Ok(ack) => {
                let pending = Pending {
                    ack,
                    due,
                    sent_at: Instant::now(),
                    first_reading: next_reading,
                    readings: plan.batch_readings as u64,
                };
                next_reading += plan.batch_readings as u64;
                if tx.send(pending).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                *send_errors.entry(format!("send {}", error_kind(&e))).or_default() += 1;
                break;
            }
        }
    }
    let ended_ms = u64::try_from(clock.start.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
    sending_ended_ms.store(ended_ms, Ordering::Relaxed);
    drop(tx);
    let mut outcome = match collector.await {
        Ok(outcome) => outcome,
        Err(e) => BuoyOutcome {
            errors: BTreeMap::from([(format!("collector: {e}"), 1)]),
            ..BuoyOutcome::empty(Timeline::new(clock.start, plan.timeline_interval))
        },
    };
    for (kind, n) in send_errors {
        *outcome.errors.entry(kind).or_default() += n;
    }
    outcome.stats = client.stats();
    match Arc::try_unwrap(client) {
        Ok(client) => (outcome, next_reading, client),
        // The collector task (the only other holder) has ended: unreachable.
        Err(_) => unreachable!("the buoy client is held only by its own task"),
    }
}

/// The collector's deadline for outstanding acks: `drain` after the sender stopped.
struct DrainDeadline {
    ended_ms: Arc<AtomicU64>,
    drain: Duration,
}

impl DrainDeadline {
    /// The deadline, once the sender has stopped.
    fn at(&self, clock: &Clock) -> Option<Instant> {
        match self.ended_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(clock.start + Duration::from_millis(ms) + self.drain),
        }
    }
}

/// How often a collector waiting for an ack checks whether the drain deadline passed, ms.
const DRAIN_CHECK_MS: u64 = 250;

/// Waits for `ack` until the drain deadline (`None` when it passed first).
async fn ack_within(
    mut ack: AckFuture,
    deadline: &DrainDeadline,
    clock: &Clock,
) -> Option<Result<bluewave_wire::AckReport, ClientError>> {
    loop {
        if let Some(at) = deadline.at(clock)
            && Instant::now() >= at
        {
            return None;
        }
        tokio::select! {
            answer = &mut ack => return Some(answer),
            () = tokio::time::sleep(Duration::from_millis(DRAIN_CHECK_MS)) => {}
        }
    }
}

async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
    buoy_index: usize,
    keep_ledger: bool,
    clock: Clock,
    drain_deadline: DrainDeadline,
    timeline: Timeline,
    live: Arc<LiveCounters>,
) -> BuoyOutcome {
    let mut out = BuoyOutcome::empty(timeline);
    while let Some(pending) = rx.recv().await {
        let answer = ack_within(pending.ack, &drain_deadline, &clock).await;
        let report = match answer {
            None => {
                out.unacked += 1;
                continue;
            }
            Some(Err(e)) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                out.unacked += 1;
                *out.errors.entry(error_kind(&e)).or_default() += 1;
                out.timeline.record_error(Instant::now());
                continue;
            }
            Some(Ok(report)) => report,
        };
        // The ack arrived `latency` after the batch entered the buffer, which was just before
        // `send` returned.
        let arrived = pending.sent_at + report.latency;
        let latency = match pending.due {
            Some(due) => arrived.saturating_duration_since(due),
            None => report.latency,
        };
        match report.outcome {
            AckOutcome::Stored | AckOutcome::Duplicate => {
                if report.outcome == AckOutcome::Duplicate {
                    out.duplicates += 1;
                }
                out.readings_total += pending.readings;
                live.readings_acked.fetch_add(pending.readings, Ordering::Relaxed);
                live.batches_acked.fetch_add(1, Ordering::Relaxed);
                out.timeline.record_ack(arrived, pending.readings, latency);
                if keep_ledger {
                    out.ledger.record(buoy_index, pending.first_reading, pending.readings);
                }
                if arrived >= clock.measure_start && arrived <= clock.send_deadline {
                    out.readings_measured += pending.readings;
                    out.batches_measured += 1;
                    out.latency.record(latency);
                }
            }
            AckOutcome::Rejected(reason) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                out.rejected += 1;
                *out.errors.entry(format!("rejected {reason:?}")).or_default() += 1;
                out.timeline.record_error(arrived);
            }
        }
    }
    out
}
