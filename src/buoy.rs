//! `bluewave buoy simulate`: a simulated fleet pushing the shared marine workload through the
//! buoy SDK (`bluewave_wire::Client`), one QUIC connection per buoy on a multi-thread runtime.
//! Prints throughput, ack latency percentiles and errors. Composition only: the protocol lives in
//! the wire crate, the data in `bluewave_engine::workload`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_wire::{AckOutcome, Client, ClientConfig, ClientError, ClientStats, Trust, parse_pin};
use hdrhistogram::Histogram;

/// Largest tokens file read, bytes (the same bound the server applies to its own file).
const TOKENS_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Highest ack latency the histogram records, µs (an hour); longer ones are clamped.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Metrics per simulated buoy (all eight marine sensors).
const METRICS_PER_BUOY: usize = 8;

/// `bluewave buoy ...`
#[derive(clap::Args, Debug)]
pub struct BuoyArgs {
    #[command(subcommand)]
    command: BuoyCommand,
}

#[derive(clap::Subcommand, Debug)]
enum BuoyCommand {
    /// Simulate a fleet of buoys sending the marine workload to a server.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// Server UDP address (host:port).
    #[arg(long)]
    server: String,
    /// Name in the server certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// SHA-256 pin of the server certificate (64 hex digits); repeat for a rotation.
    #[arg(long, conflicts_with = "ca")]
    pin: Vec<String>,
    /// PEM file of the CA(s) that signed the server certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Device tokens file: lines `<buoy_id> <token>`, `#` comments.
    #[arg(long)]
    tokens: PathBuf,
    /// Simulated buoys: the first N of the tokens file.
    #[arg(long, default_value_t = 1)]
    buoys: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_readings: usize,
    /// Batches in flight per buoy.
    #[arg(long, default_value_t = bluewave_wire::WINDOW_DEFAULT)]
    window: usize,
    /// Total readings per second over the fleet; 0 = as fast as acks allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to send, seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
}

/// Runs a `buoy` subcommand; prints its own errors.
pub fn run(args: BuoyArgs) -> ExitCode {
    let BuoyCommand::Simulate(args) = args.command;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bluewave buoy simulate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(simulate(args)) {
        Ok(report) => {
            println!("{report}");
            if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("bluewave buoy simulate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `<buoy_id> <token>` lines (`#` comments, blank lines skipped).
fn read_tokens(path: &Path, wanted: usize) -> Result<Vec<(String, String)>, String> {
    let size = std::fs::metadata(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?.len();
    if size > TOKENS_FILE_BYTES_MAX {
        return Err(format!("tokens file {} is larger than {TOKENS_FILE_BYTES_MAX} bytes", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
    let mut devices = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match (fields.next(), fields.next(), fields.next()) {
            (Some(buoy), Some(token), None) => devices.push((buoy.to_owned(), token.to_owned())),
            _ => return Err(format!("tokens file line {}: expected `<buoy_id> <token>`", number + 1)),
        }
        if devices.len() == wanted {
            break;
        }
    }
    if devices.len() < wanted {
        return Err(format!("tokens file holds {} devices, {wanted} requested", devices.len()));
    }
    Ok(devices)
}

/// What one buoy task measured.
struct BuoyResult {
    latency_us: Histogram<u64>,
    readings_stored: u64,
    batches_acked: u64,
    errors: BTreeMap<String, u64>,
    stats: ClientStats,
}

/// The run's summary.
struct Report {
    buoys: usize,
    elapsed: Duration,
    readings: u64,
    batches: u64,
    latency_us: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    resends: u64,
    reconnects: u64,
    busy: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1_000.0;
        writeln!(f, "buoys            {}", self.buoys)?;
        writeln!(f, "elapsed          {seconds:.2} s")?;
        writeln!(f, "readings acked   {} ({:.0} readings/s)", self.readings, self.readings as f64 / seconds)?;
        writeln!(f, "batches acked    {} ({:.0} batches/s)", self.batches, self.batches as f64 / seconds)?;
        writeln!(
            f,
            "ack latency ms   p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(0.50),
            ms(0.90),
            ms(0.99),
            self.latency_us.max() as f64 / 1_000.0
        )?;
        writeln!(f, "resends {}  reconnects {}  busy answers {}", self.resends, self.reconnects, self.busy)?;
        if self.errors.is_empty() {
            write!(f, "errors           none")
        } else {
            write!(f, "errors           {:?}", self.errors)
        }
    }
}

async fn simulate(args: SimulateArgs) -> Result<Report, String> {
    if args.buoys == 0 {
        return Err("--buoys must be at least 1".into());
    }
    let server: SocketAddr = args
        .server
        .to_socket_addrs()
        .map_err(|e| format!("--server {}: {e}", args.server))?
        .next()
        .ok_or_else(|| format!("--server {} resolves to no address", args.server))?;
    let trust = match (&args.ca, args.pin.is_empty()) {
        (Some(ca), true) => Trust::CaFile(ca.clone()),
        (None, false) => Trust::Pinned(
            args.pin.iter().map(|p| parse_pin(p)).collect::<Result<_, _>>().map_err(|e| e.to_string())?,
        ),
        _ => return Err("give exactly one of --pin or --ca".into()),
    };
    let devices = read_tokens(&args.tokens, args.buoys)?;
    let workload = Workload::new(WorkloadConfig {
        buoys: args.buoys,
        metrics: METRICS_PER_BUOY,
        ..WorkloadConfig::default()
    })
    .map_err(|e| e.to_string())?;
    // Sequences above every earlier run's, so a rerun against the same data dir is stored,
    // not answered `duplicate`: microseconds since the epoch at start.
    let first_batch_seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1).max(1));
    // Each buoy sends one batch every `interval`; open throttle when rate is 0.
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.batch_readings as f64 * args.buoys as f64 / args.rate as f64));
    let duration = Duration::from_secs(args.duration_s);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(devices.len());
    for (index, (_buoy, token)) in devices.into_iter().enumerate() {
        let mut config = ClientConfig::new(
            server,
            &args.server_name,
            trust.clone(),
            token,
            workload.metric_names().to_vec(),
        );
        config.window = args.window.max(1);
        config.window = config.window.min(bluewave_wire::BUFFER_BATCHES_MAX);
        // Room for one window in flight and one waiting: `send` then paces the buoy by its acks.
        config.buffer_batches_max = (config.window * 2).min(bluewave_wire::BUFFER_BATCHES_MAX);
        config.first_batch_seq = first_batch_seq;
        let workload = workload.clone();
        let batch_readings = args.batch_readings;
        tasks.push(tokio::spawn(run_buoy(
            config,
            workload,
            index,
            batch_readings,
            interval,
            started + duration,
        )));
    }
    let mut report = Report {
        buoys: args.buoys,
        elapsed: Duration::ZERO,
        readings: 0,
        batches: 0,
        latency_us: new_histogram()?,
        errors: BTreeMap::new(),
        resends: 0,
        reconnects: 0,
        busy: 0,
    };
    for task in tasks {
        let result = task.await.map_err(|e| format!("buoy task failed: {e}"))?;
        match result {
            Ok(r) => {
                report.latency_us.add(&r.latency_us).map_err(|e| e.to_string())?;
                report.readings += r.readings_stored;
                report.batches += r.batches_acked;
                report.resends += r.stats.resends;
                report.reconnects += r.stats.reconnects;
                report.busy += r.stats.busy_answers;
                for (k, v) in r.errors {
                    *report.errors.entry(k).or_default() += v;
                }
            }
            Err(e) => *report.errors.entry(e).or_default() += 1,
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).map_err(|e| e.to_string())
}

fn error_kind(e: &ClientError) -> String {
    let text = e.to_string();
    text.split(':').next().unwrap_or("error").to_owned()
}

/// One buoy: connect, send batches (paced or open throttle) until `deadline`, wait for every
/// ack, close.
async fn run_buoy(
    config: ClientConfig,
    workload: Workload,
    buoy_index: usize,
    batch_readings: usize,
    interval: Option<Duration>,
    deadline: Instant,
) -> Result<BuoyResult, String> {
    let window = config.window;
    let client = Client::connect(config).await.map_err(|e| e.to_string())?;
    client.wait_connected().await.map_err(|e| e.to_string())?;
    // Acks are awaited in send order by a second task; the latency in each report was taken
    // when the ack arrived, so awaiting in order does not distort it.
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel(window * 2);
    let collector = tokio::spawn(async move {
        let mut result = BuoyResult {
            latency_us: new_histogram()?,
            readings_stored: 0,
            batches_acked: 0,
            errors: BTreeMap::new(),
            stats: ClientStats::default(),
        };
        while let Some((ack, readings)) = ack_rx.recv().await {
            let ack: bluewave_wire::AckFuture = ack;
            match ack.await {
                Ok(report) => {
                    let us = u64::try_from(report.latency.as_micros())
                        .unwrap_or(u64::MAX)
                        .clamp(1, LATENCY_US_MAX);
                    result.latency_us.record(us).map_err(|e| e.to_string())?;
                    result.batches_acked += 1;
                    match report.outcome {
                        AckOutcome::Stored | AckOutcome::Duplicate => result.readings_stored += readings,
                        AckOutcome::Rejected(reason) => {
                            *result.errors.entry(format!("rejected {reason:?}")).or_default() += 1;
                        }
                    }
                }
                Err(e) => *result.errors.entry(error_kind(&e)).or_default() += 1,
            }
        }
        Ok::<_, String>(result)
    });
    let mut ticker = interval.map(|every| {
        // Spread the fleet's first sends over one interval so the buoys do not send in lockstep.
        let offset = every.mul_f64(buoy_index as f64 / workload.config().buoys as f64);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut first_reading = 0u64;
    let mut send_error = None;
    while Instant::now() < deadline {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let batch = workload
            .batch_of_readings(buoy_index, first_reading, batch_readings)
            .map_err(|e| e.to_string())?;
        first_reading += batch_readings as u64;
        match client.send(&batch).await {
            Ok(ack) => {
                if ack_tx.send((ack, batch_readings as u64)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                send_error = Some(error_kind(&e));
                break;
            }
        }
    }
    drop(ack_tx);
    let mut result = collector.await.map_err(|e| e.to_string())??;
    if let Some(kind) = send_error {
        *result.errors.entry(kind).or_default() += 1;
    }
    result.stats = client.stats();
    client.close().await;
    Ok(result)
}
