//! `bluewave-loadtest`: fleet simulator, query load generator and kill -9 durability checker.
//! Command line only; the drivers live in the library (`src/lib.rs`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bluewave_loadtest::analysts::QueryConfig;
use bluewave_loadtest::ingest::{
    CLIENTS_PER_ENDPOINT_DEFAULT, DRAIN_TIMEOUT_MS_DEFAULT, IngestConfig, WINDOW_DEFAULT,
};
use bluewave_loadtest::lines::LineConfig;
use bluewave_loadtest::mix::{QUERY_MIX_DEFAULT, QueryMix};
use bluewave_loadtest::modes::{self, KILLS_DEFAULT, RunInfo};
use bluewave_loadtest::report::Report;
use bluewave_loadtest::shop::{SHOP_MIX_DEFAULT, ShopConfig, ShopMix};
use bluewave_loadtest::target::TargetOptions;
use bluewave_loadtest::{Error, chart};

/// mimalloc, as the server: the fleet's many small per-batch allocations across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed memory stays mapped, as in the server (`ALLOCATOR_PURGE_DELAY_MS` in the root crate's
/// `src/main.rs`): otherwise the fleet's buffers come back as page faults that zero 2 MiB pages
/// on the threads that time the acks. Only a default: an operator's `MIMALLOC_PURGE_DELAY` wins.
#[allow(unsafe_code)]
fn keep_freed_memory_mapped() {
    /// `mi_option_purge_delay` in mimalloc.h (v3); the server's test checks the number.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: two integers into one global option, before `main` starts any thread.
    unsafe { libmimalloc_sys::mi_option_set_default(PURGE_DELAY, -1) };
}

#[derive(clap::Parser, Debug)]
#[command(name = "bluewave-loadtest", version, about = "Load generator and durability checker for BlueWave")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// A fleet of buoys over QUIC: throughput, ack latency, server CPU/RSS, disk per reading.
    Ingest(IngestCmd),
    /// Ingest while SIGKILLing the spawned server K times; every acked reading must be stored
    /// exactly once (exit code 1 otherwise).
    Durability(DurabilityCmd),
    /// Hold C idle-but-alive buoy connections; server RSS per connection.
    Connections(ConnectionsCmd),
    /// K concurrent analysts over HTTPS running a weighted query mix (after seeding data).
    Query(QueryCmd),
    /// Ingest alone, then ingest + analysts: what queries cost ingest.
    Mixed(MixedCmd),
    /// People in browsers: sign-ins with and without MFA per second, then signed-in sessions
    /// browsing the shop, account and dashboard and checking out (after seeding data).
    Shop(ShopCmd),
    /// InfluxDB-style writers: S keep-alive HTTPS connections posting line-protocol bodies of
    /// the fleet workload to `POST /api/v2/write`; readings/s, answer latency, server CPU/RSS.
    LineProtocol(LineProtocolCmd),
}

/// Where the report goes.
#[derive(clap::Args, Debug)]
struct Output {
    /// JSON report file (default `loadtest-<mode>.json`; `-` for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// SVG chart of throughput and latency over time (default `loadtest-<mode>.svg`).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Commit measured, for the report (default: `git rev-parse --short HEAD` if it works).
    #[arg(long)]
    commit: Option<String>,
}

/// Fleet knobs shared by the ingest-like runs.
#[derive(clap::Args, Debug, Clone)]
struct Fleet {
    /// Simulated buoys (one QUIC connection each).
    #[arg(long, default_value_t = 100)]
    buoys: usize,
    /// Metrics per buoy (1-8 marine sensors).
    #[arg(long, default_value_t = 8)]
    metrics: usize,
    /// Sample interval of the simulated sensors, ms of data time.
    #[arg(long, default_value_t = 1_000)]
    sample_interval_ms: u64,
    /// Readings per batch.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Batches in flight per buoy.
    #[arg(long, default_value_t = WINDOW_DEFAULT)]
    window: usize,
    /// Readings per second over the fleet; 0 = open throttle.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Warm-up seconds before the measured period.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// SDK clients per UDP socket.
    #[arg(long, default_value_t = CLIENTS_PER_ENDPOINT_DEFAULT)]
    clients_per_endpoint: usize,
    /// Seconds allowed for outstanding acks after sending stops.
    #[arg(long, default_value_t = DRAIN_TIMEOUT_MS_DEFAULT / 1_000)]
    drain_s: u64,
}

impl Fleet {
    fn config(&self) -> IngestConfig {
        IngestConfig {
            buoys: self.buoys,
            metrics: self.metrics,
            sample_interval_ms: self.sample_interval_ms,
            batch_readings: self.batch,
            window: self.window,
            rate_per_s: self.rate,
            duration: Duration::from_secs(self.duration_s),
            warmup: Duration::from_secs(self.warmup_s),
            clients_per_endpoint: self.clients_per_endpoint,
            drain_timeout: Duration::from_secs(self.drain_s),
            ..IngestConfig::default()
        }
    }
}

#[derive(clap::Args, Debug)]
struct IngestCmd {
    #[command(flatten)]
    target: TargetOptions,
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct DurabilityCmd {
    #[command(flatten)]
    target: TargetOptions,
    /// Simulated buoys.
    #[arg(long, default_value_t = 8)]
    buoys: usize,
    /// Readings per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Batches in flight per buoy.
    #[arg(long, default_value_t = 4)]
    window: usize,
    /// Readings per second over the fleet (0 = open throttle).
    #[arg(long, default_value_t = 50_000.0)]
    rate: f64,
    /// SIGKILLs (the last one after every ack is in).
    #[arg(long, default_value_t = KILLS_DEFAULT)]
    kills: u32,
    /// Seed of the kill moments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shortest time between a restart and the next kill, ms.
    #[arg(long, default_value_t = 300)]
    kill_gap_min_ms: u64,
    /// Longest time between a restart and the next kill, ms.
    #[arg(long, default_value_t = 2_000)]
    kill_gap_max_ms: u64,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct ConnectionsCmd {
    #[command(flatten)]
    target: TargetOptions,
    /// Connections to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Readings in each trickle batch.
    #[arg(long, default_value_t = 8)]
    trickle_readings: usize,
    /// Seconds between two trickle batches of one connection.
    #[arg(long, default_value_t = 10)]
    trickle_interval_s: u64,
    /// Seconds to hold the connections (measured).
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// SDK clients per UDP socket.
    #[arg(long, default_value_t = 128)]
    clients_per_endpoint: usize,
    /// Seconds allowed for the whole fleet to connect.
    #[arg(long, default_value_t = 300)]
    connect_s: u64,
    #[command(flatten)]
    output: Output,
}

/// Analyst knobs.
#[derive(clap::Args, Debug, Clone)]
struct Analysts {
    /// Concurrent analysts (each its own connection and token).
    #[arg(long, default_value_t = 16)]
    analysts: usize,
    /// Queries per second over all analysts; 0 = closed loop.
    #[arg(long, default_value_t = 0.0)]
    query_rate: f64,
    /// Weighted mix: `last_value=4,raw_range=4,hourly_means=1,fleet_aggregate=1`.
    #[arg(long, default_value = QUERY_MIX_DEFAULT)]
    mix: String,
    /// Seed of the query choices.
    #[arg(long, default_value_t = 1)]
    query_seed: u64,
}

impl Analysts {
    fn config(&self, duration: Duration, warmup: Duration) -> Result<QueryConfig, Error> {
        Ok(QueryConfig {
            analysts: self.analysts,
            rate_per_s: self.query_rate,
            mix: QueryMix::parse(&self.mix)?,
            duration,
            warmup,
            seed: self.query_seed,
        })
    }
}

/// The data seeded before queries.
#[derive(clap::Args, Debug, Clone)]
struct Seed {
    /// Buoys seeded (and queried).
    #[arg(long, default_value_t = 100)]
    seed_buoys: usize,
    /// Seconds of open-throttle ingest that seed the data.
    #[arg(long, default_value_t = 10)]
    seed_s: u64,
    /// Readings per seeding batch.
    #[arg(long, default_value_t = 1_000)]
    seed_batch: usize,
}

impl Seed {
    fn config(&self) -> IngestConfig {
        IngestConfig {
            buoys: self.seed_buoys,
            batch_readings: self.seed_batch,
            duration: Duration::from_secs(self.seed_s),
            warmup: Duration::ZERO,
            ..IngestConfig::default()
        }
    }
}

#[derive(clap::Args, Debug)]
struct QueryCmd {
    #[command(flatten)]
    target: TargetOptions,
    #[command(flatten)]
    analysts: Analysts,
    #[command(flatten)]
    seed: Seed,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct MixedCmd {
    #[command(flatten)]
    target: TargetOptions,
    #[command(flatten)]
    fleet: Fleet,
    #[command(flatten)]
    analysts: Analysts,
    #[command(flatten)]
    seed: Seed,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct ShopCmd {
    #[command(flatten)]
    target: TargetOptions,
    #[command(flatten)]
    seed: Seed,
    /// Signed-in browsers of the sessions phase.
    #[arg(long, default_value_t = 200)]
    sessions: usize,
    /// Mean think time between a session's answer and its next request, ms (0 = none).
    #[arg(long, default_value_t = 500)]
    think_ms: u64,
    /// Closed-loop workers of the sign-in phases.
    #[arg(long, default_value_t = 8)]
    login_workers: usize,
    /// Seconds of each sign-in phase.
    #[arg(long, default_value_t = 10)]
    login_s: u64,
    /// Accounts with TOTP for the MFA sign-in phase (0 skips it).
    #[arg(long, default_value_t = 300)]
    mfa_users: usize,
    /// Weighted mix of the sessions phase.
    #[arg(long, default_value = SHOP_MIX_DEFAULT)]
    shop_mix: String,
    /// Measured seconds of the sessions phase.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Warm-up seconds of the sessions phase.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Seed of the choices and think times.
    #[arg(long, default_value_t = 1)]
    shop_seed: u64,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args, Debug)]
struct LineProtocolCmd {
    #[command(flatten)]
    target: TargetOptions,
    /// Buoys written (registered like the fleet's); split evenly over the senders.
    #[arg(long, default_value_t = 1_000)]
    buoys: usize,
    /// Metrics per line (fields; 1-8 marine sensors).
    #[arg(long, default_value_t = 8)]
    metrics: usize,
    /// Sample interval of the generated data, ms of data time.
    #[arg(long, default_value_t = 1_000)]
    sample_interval_ms: u64,
    /// Keep-alive connections posting bodies.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Lines per body.
    #[arg(long, default_value_t = 10_000)]
    lines_per_body: usize,
    /// Readings (fields) per second over all senders; 0 = open throttle.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    #[command(flatten)]
    output: Output,
}

/// Raises the soft open-files limit to the hard one: every SDK endpoint is a socket, and a
/// spawned server inherits the limit.
fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    setrlimit(Resource::Nofile, raised).ok()?;
    limit.maximum
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn write_outputs(mode: &str, report: &Report, output: &Output) -> Result<(), Error> {
    let json =
        serde_json::to_string_pretty(report).map_err(|e| Error::Internal(format!("report JSON: {e}")))?;
    let json_path = output.json.clone().unwrap_or_else(|| PathBuf::from(format!("loadtest-{mode}.json")));
    if json_path.as_os_str() == "-" {
        println!("{json}");
    } else {
        std::fs::write(&json_path, json).map_err(|source| Error::File { path: json_path.clone(), source })?;
        println!("report      {}", json_path.display());
    }
    let chart_path = output.chart.clone().unwrap_or_else(|| PathBuf::from(format!("loadtest-{mode}.svg")));
    if !report.timeline.is_empty() {
        let svg = chart::render_svg(
            &format!("bluewave-loadtest {mode}"),
            &report.timeline,
            &report.compaction_debt,
        );
        std::fs::write(&chart_path, svg)
            .map_err(|source| Error::File { path: chart_path.clone(), source })?;
        println!("chart       {}", chart_path.display());
    }
    Ok(())
}

async fn run(command: Command, info: RunInfo) -> Result<(&'static str, Report, Output), Error> {
    Ok(match command {
        Command::Ingest(cmd) => {
            ("ingest", modes::ingest(&cmd.target, cmd.fleet.config(), &info).await?, cmd.output)
        }
        Command::Durability(cmd) => {
            let config = IngestConfig {
                buoys: cmd.buoys,
                batch_readings: cmd.batch,
                window: cmd.window,
                rate_per_s: cmd.rate,
                backoff_max_ms: 1_000,
                idle_timeout_ms: 1_500,
                ..IngestConfig::default()
            };
            let report = modes::durability(
                &cmd.target,
                config,
                cmd.kills,
                cmd.seed,
                (cmd.kill_gap_min_ms, cmd.kill_gap_max_ms),
                &info,
            )
            .await?;
            ("durability", report, cmd.output)
        }
        Command::Connections(cmd) => {
            let trickle_s = cmd.trickle_interval_s.max(1) as f64;
            let config = IngestConfig {
                buoys: cmd.connections,
                batch_readings: cmd.trickle_readings,
                window: 1,
                rate_per_s: cmd.connections as f64 * cmd.trickle_readings as f64 / trickle_s,
                duration: Duration::from_secs(cmd.duration_s),
                warmup: Duration::ZERO,
                clients_per_endpoint: cmd.clients_per_endpoint,
                connect_timeout: Duration::from_secs(cmd.connect_s),
                ..IngestConfig::default()
            };
            ("connections", modes::connections(&cmd.target, config, &info).await?, cmd.output)
        }
        Command::Query(cmd) => {
            let analysts = cmd
                .analysts
                .config(Duration::from_secs(cmd.duration_s), Duration::from_secs(cmd.warmup_s))?;
            ("query", modes::query(&cmd.target, cmd.seed.config(), analysts, &info).await?, cmd.output)
        }
        Command::Mixed(cmd) => {
            let fleet = cmd.fleet.config();
            let analysts = cmd.analysts.config(fleet.duration, fleet.warmup)?;
            let report = modes::mixed(&cmd.target, cmd.seed.config(), fleet, analysts, &info).await?;
            ("mixed", report, cmd.output)
        }
        Command::Shop(cmd) => {
            let config = ShopConfig {
                sessions: cmd.sessions,
                think_ms: cmd.think_ms,
                login_workers: cmd.login_workers,
                login_duration: Duration::from_secs(cmd.login_s),
                mfa_users: cmd.mfa_users,
                duration: Duration::from_secs(cmd.duration_s),
                warmup: Duration::from_secs(cmd.warmup_s),
                mix: ShopMix::parse(&cmd.shop_mix)?,
                seed: cmd.shop_seed,
            };
            ("shop", modes::shop(&cmd.target, cmd.seed.config(), config, &info).await?, cmd.output)
        }
        Command::LineProtocol(cmd) => {
            let fleet = IngestConfig {
                buoys: cmd.buoys,
                metrics: cmd.metrics,
                sample_interval_ms: cmd.sample_interval_ms,
                ..IngestConfig::default()
            };
            let config = LineConfig {
                senders: cmd.senders,
                lines_per_body: cmd.lines_per_body,
                rate_per_s: cmd.rate,
                duration: Duration::from_secs(cmd.duration_s),
                warmup: Duration::from_secs(cmd.warmup_s),
            };
            let report = modes::line_protocol(&cmd.target, fleet, config, &info).await?;
            ("line-protocol", report, cmd.output)
        }
    })
}

fn main() -> ExitCode {
    keep_freed_memory_mapped();
    let cli: Cli = clap::Parser::parse();
    raise_nofile_limit();
    let commit = match &cli.command {
        Command::Ingest(c) => c.output.commit.clone(),
        Command::Durability(c) => c.output.commit.clone(),
        Command::Connections(c) => c.output.commit.clone(),
        Command::Query(c) => c.output.commit.clone(),
        Command::Mixed(c) => c.output.commit.clone(),
        Command::Shop(c) => c.output.commit.clone(),
        Command::LineProtocol(c) => c.output.commit.clone(),
    }
    .or_else(git_commit);
    let info = RunInfo { command: std::env::args().collect::<Vec<_>>().join(" "), commit };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bluewave-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, info)) {
        Ok((mode, report, output)) => {
            print!("{}", report.table());
            if let Err(e) = write_outputs(mode, &report, &output) {
                eprintln!("bluewave-loadtest: {e}");
                return ExitCode::FAILURE;
            }
            match &report.durability {
                Some(d) if !d.check.passed() => {
                    eprintln!("bluewave-loadtest: DURABILITY CHECK FAILED: {}", d.check.summary());
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("bluewave-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}
