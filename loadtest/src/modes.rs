//! The seven runs (`ingest`, `durability`, `connections`, `query`, `mixed`, `shop`,
//! `line-protocol`): each prepares its
//! server ([`crate::target`]), drives it, and returns its [`Report`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::analysts::{QueryConfig, QueryData, run_queries};
use crate::debt::{self, DebtFigures};
use crate::error::{Error, Result};
use crate::ingest::{IngestConfig, IngestRun, LiveCounters, run_ingest};
use crate::ledger::{DurabilityCheck, check_buoy};
use crate::machine::Machine;
use crate::procstat::ProcessMonitor;
use crate::progress::{Progress, Shown};
use crate::report::{DurabilityFigures, Report, ServerFigures};
use crate::rng::SeededRng;
use crate::target::{Prepared, Spawned, TargetOptions, dir_bytes, prepare};

/// Default kills of a durability run.
pub const KILLS_DEFAULT: u32 = 20;
/// Most kills of a durability run.
pub const KILLS_MAX: u32 = 1_000;
/// Sending goes on this long after the last kill during ingest, ms (the restarted server
/// takes batches again before the run drains).
const AFTER_LAST_KILL_MS: u64 = 2_000;
/// Upper bound of a durability run's sending time per kill, s (a safety net: sending normally
/// ends when the killer is done).
const SECONDS_PER_KILL_MAX: u64 = 300;

/// Where the report came from: the command line and the commit.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// The command line.
    pub command: String,
    /// The commit measured.
    pub commit: Option<String>,
}

fn unix_now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Batch sequences above every earlier run's on the same server: microseconds since the
/// epoch (a buoy would need to send a million batches a second to catch up with the next run).
pub fn fresh_batch_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1).max(1))
}

fn base_report(mode: &str, info: &RunInfo) -> Report {
    Report {
        mode: mode.to_owned(),
        command: info.command.clone(),
        commit: info.commit.clone(),
        machine: Machine::current(),
        started_unix_s: unix_now_s(),
        ..Report::default()
    }
}

fn ingest_progress(title: &str, config: &IngestConfig, live: &LiveCounters) -> Progress {
    Progress::start(
        title,
        config.warmup + config.duration,
        vec![Shown { label: "readings", counter: Arc::clone(&live.readings_acked) }],
        Arc::clone(&live.errors),
    )
}

/// Stops a spawned server (SIGTERM: it flushes) off the async threads; returns the bytes of
/// its data dir after the stop (before a temporary one is removed).
async fn stop_spawned(spawned: &mut Option<Spawned>) -> Result<Option<u64>> {
    let Some(mut s) = spawned.take() else { return Ok(None) };
    tokio::task::spawn_blocking(move || {
        let stopped = s.server.stop();
        let bytes = dir_bytes(&s.server.config().data_dir);
        drop(s);
        stopped.map(|_| Some(bytes))
    })
    .await
    .map_err(|e| Error::Internal(format!("stop task: {e}")))?
}

/// CPU since the monitor's first sample and peak RSS of the server, when it is watched.
fn server_figures(monitor: Option<&mut ProcessMonitor>) -> Option<ServerFigures> {
    let m = monitor?;
    let s = m.sample().ok()?;
    Some(ServerFigures {
        cpu_percent: m.cpu_percent_since_start(&s),
        peak_rss_bytes: s.peak_rss_bytes,
        ..ServerFigures::default()
    })
}

fn fill_ingest(report: &mut Report, run: IngestRun) {
    report.measured_s = run.measured_s;
    report.timeline = run.timeline.points();
    report.errors = run.errors;
    report.server = run.server;
    report.client_cpu_percent = run.client_cpu_percent;
    report.ingest = Some(run.figures);
}

/// `ingest`: the fleet for warm-up + duration; with `--spawn`, disk bytes per reading of the
/// data dir after a clean stop.
pub async fn ingest(options: &TargetOptions, mut config: IngestConfig, info: &RunInfo) -> Result<Report> {
    config.validate()?;
    let mut prepared = prepare(options, config.buoys).await?;
    if !options.spawn && config.first_batch_seq == 1 {
        config.first_batch_seq = fresh_batch_seq();
    }
    let live = Arc::new(LiveCounters::default());
    // The server's compaction debt while the fleet sends (`/metrics` needs no login).
    let (stop_debt, debt_stopped) = tokio::sync::oneshot::channel();
    let debt_task =
        prepared.api.as_ref().map(|api| tokio::spawn(debt::sample(api.target.clone(), debt_stopped)));
    let progress = ingest_progress("ingest", &config, &live);
    let run = run_ingest(&config, &prepared.ingest, Arc::clone(&live)).await;
    progress.finish().await;
    let _ = stop_debt.send(());
    let debt_samples = match debt_task {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let run = run?;
    let total = run.readings_acked_total;
    let debt_points = debt::since(run.timeline.start(), debt_samples);
    let disk_bytes = stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("ingest", info);
    fill_ingest(&mut report, run);
    report.compaction_debt_figures = DebtFigures::of(&debt_points);
    report.compaction_debt = debt_points;
    if let (Some(bytes), Some(figures)) = (disk_bytes, report.ingest.as_mut()) {
        figures.disk_bytes = Some(bytes);
        figures.disk_bytes_per_reading = (total > 0).then(|| bytes as f64 / total as f64);
    }
    Ok(report)
}

/// `durability`: the fleet sends while the spawned server is SIGKILLed `kills - 1` times at
/// random moments (seeded) and restarted on the same data dir; the SDK reconnects and resends
/// unacked batches under their seq. Once every ack is in, the server is killed a last time and
/// restarted, so every acked reading must come back from recovery; then each buoy's readings
/// are read through `GET /api/telemetry` and compared with the acked batches.
pub async fn durability(
    options: &TargetOptions,
    mut config: IngestConfig,
    kills: u32,
    seed: u64,
    kill_gap_ms: (u64, u64),
    info: &RunInfo,
) -> Result<Report> {
    if !options.spawn {
        return Err(Error::Config("durability needs --spawn (it kills and restarts the server)".into()));
    }
    if kills == 0 || kills > KILLS_MAX {
        return Err(Error::Config(format!("kills must be 1..={KILLS_MAX}")));
    }
    if kill_gap_ms.0 == 0 || kill_gap_ms.1 < kill_gap_ms.0 {
        return Err(Error::Config("kill gap: 0 < min <= max".into()));
    }
    config.keep_ledger = true;
    config.warmup = Duration::ZERO;
    config.duration = Duration::from_secs(SECONDS_PER_KILL_MAX * u64::from(kills));
    config.validate()?;
    let mut prepared = prepare(options, config.buoys).await?;
    // The pid changes with every restart: no /proc figures for this run.
    prepared.ingest.server_pid = None;
    let spawned = prepared.spawned.take().ok_or_else(|| Error::Internal("no spawned server".into()))?;
    let live = Arc::new(LiveCounters::default());
    let progress = ingest_progress("durability", &config, &live);

    // The killer runs on a blocking thread: it owns the child while the fleet sends.
    let killer_live = Arc::clone(&live);
    let buoys = config.buoys as u64;
    let killer = tokio::task::spawn_blocking(move || {
        let mut spawned = spawned;
        let mut rng = SeededRng::new(seed);
        let mut kill_at_ms = Vec::new();
        let result = (|| {
            while killer_live.connected.load(Ordering::Relaxed) < buoys
                && !killer_live.stop.load(Ordering::Relaxed)
            {
                if !spawned.server.is_running() {
                    return Err(Error::Spawn("server exited before the fleet connected".into()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let start = Instant::now();
            for _ in 1..kills {
                if killer_live.stop.load(Ordering::Relaxed) {
                    return Err(Error::Spawn("the fleet stopped before every kill was made".into()));
                }
                std::thread::sleep(Duration::from_millis(rng.between(kill_gap_ms.0, kill_gap_ms.1)));
                kill_at_ms.push(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));
                spawned.server.restart()?;
            }
            std::thread::sleep(Duration::from_millis(AFTER_LAST_KILL_MS));
            Ok(())
        })();
        killer_live.stop.store(true, Ordering::Relaxed);
        (spawned, kill_at_ms, result)
    });
    let run = run_ingest(&config, &prepared.ingest, Arc::clone(&live)).await;
    // The fleet is done (or failed): the killer stops at its next step.
    live.stop.store(true, Ordering::Relaxed);
    let (mut spawned, kill_at_ms, killed) =
        killer.await.map_err(|e| Error::Internal(format!("killer task: {e}")))?;
    progress.finish().await;
    let run = run?;
    killed?;
    // The last kill: after every ack, so the check reads what recovery brought back.
    let mut spawned = tokio::task::spawn_blocking(move || {
        let restarted = spawned.server.restart();
        (spawned, restarted)
    })
    .await
    .map_err(|e| Error::Internal(format!("restart task: {e}")))
    .and_then(|(s, r)| r.map(|()| s))?;

    let api = prepared.api.clone().ok_or_else(|| Error::Internal("no API access".into()))?;
    let workload = config.workload()?;
    let mut client = api.client(None).await?;
    let mut check = DurabilityCheck::default();
    for (index, buoy_id) in run.buoy_ids.iter().enumerate() {
        let rows = client.telemetry_rows(buoy_id).await?;
        check.merge(check_buoy(&workload, index, buoy_id, &run.ledger.ranges(index), &rows));
    }
    drop(client);
    let stop = tokio::task::spawn_blocking(move || {
        let stopped = spawned.server.stop();
        drop(spawned);
        stopped
    })
    .await
    .map_err(|e| Error::Internal(format!("stop task: {e}")))?;
    stop?;

    let mut report = base_report("durability", info);
    let measured_s = run.timeline.points().last().map_or(0.0, |p| p.t_s);
    fill_ingest(&mut report, run);
    report.measured_s = measured_s;
    if let Some(figures) = report.ingest.take() {
        report.ingest = Some(figures.with_rates(measured_s));
    }
    report.durability = Some(DurabilityFigures { kills, seed, kill_at_ms, check });
    Ok(report)
}

/// `connections`: holds `config.buoys` connections sending a trickle and reports the server's
/// RSS per connection (RSS with the fleet connected minus RSS before, over connections).
pub async fn connections(
    options: &TargetOptions,
    mut config: IngestConfig,
    info: &RunInfo,
) -> Result<Report> {
    config.validate()?;
    let mut prepared = prepare(options, config.buoys).await?;
    if !options.spawn && config.first_batch_seq == 1 {
        config.first_batch_seq = fresh_batch_seq();
    }
    let rss_before = prepared
        .ingest
        .server_pid
        .and_then(|pid| ProcessMonitor::new(pid).sample().ok())
        .map(|s| s.rss_bytes);
    let live = Arc::new(LiveCounters::default());
    let progress = Progress::start(
        "connections",
        config.warmup + config.duration,
        vec![
            Shown { label: "connected", counter: Arc::clone(&live.connected) },
            Shown { label: "readings", counter: Arc::clone(&live.readings_acked) },
        ],
        Arc::clone(&live.errors),
    );
    let run = run_ingest(&config, &prepared.ingest, Arc::clone(&live)).await;
    progress.finish().await;
    let run = run?;
    let connected = live.connected.load(Ordering::Relaxed);
    let rss_connected = run.server_rss_connected_bytes;
    let rss_end = run.server_rss_end_bytes;
    stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("connections", info);
    fill_ingest(&mut report, run);
    let server = report.server.get_or_insert_with(ServerFigures::default);
    server.connections = Some(connected);
    if let (Some(before), Some(after)) = (rss_before, rss_end.or(rss_connected))
        && connected > 0
    {
        server.rss_bytes_per_connection = Some(after.saturating_sub(before) as f64 / connected as f64);
    }
    server.rss_connected_bytes = rss_connected;
    Ok(report)
}

/// Seeds a spawned server with `seed_config` (open throttle) so analysts have data; returns the
/// data they may ask about and the run (to continue the series).
pub(crate) async fn seed(
    prepared: &Prepared,
    seed_config: &IngestConfig,
) -> Result<(Arc<QueryData>, IngestRun)> {
    let live = Arc::new(LiveCounters::default());
    let progress = ingest_progress("seeding", seed_config, &live);
    let run = run_ingest(seed_config, &prepared.ingest, Arc::clone(&live)).await;
    progress.finish().await;
    let run = run?;
    let workload = seed_config.workload()?;
    let samples = run.next_reading_min.min(run.next_reading) / seed_config.metrics as u64;
    let data = Arc::new(QueryData { buoy_ids: run.buoy_ids.clone(), workload, samples });
    Ok((data, run))
}

/// `query`: seeds the server with `seed_config`, then runs the analysts alone.
pub async fn query(
    options: &TargetOptions,
    seed_config: IngestConfig,
    query_config: QueryConfig,
    info: &RunInfo,
) -> Result<Report> {
    query_config.validate()?;
    let mut seed_config = seed_config;
    if !options.spawn && seed_config.first_batch_seq == 1 {
        seed_config.first_batch_seq = fresh_batch_seq();
    }
    let mut prepared = prepare(options, seed_config.buoys).await?;
    let api = prepared
        .api
        .clone()
        .ok_or_else(|| Error::Config("queries need --spawn or --operator-email".into()))?;
    let (data, _) = seed(&prepared, &seed_config).await?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        "query",
        query_config.warmup + query_config.duration,
        vec![Shown { label: "queries", counter: Arc::clone(&done) }],
        Arc::clone(&errors),
    );
    let mut monitor = prepared.ingest.server_pid.map(ProcessMonitor::new);
    if let Some(m) = monitor.as_mut() {
        let _ = m.sample();
    }
    let run = run_queries(&query_config, &api, data, done, errors).await;
    progress.finish().await;
    let run = run?;
    let server = server_figures(monitor.as_mut());
    stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("query", info);
    report.measured_s = query_config.duration.as_secs_f64();
    report.queries = run.figures;
    report.errors = run.errors;
    report.server = server;
    Ok(report)
}

/// `mixed`: seeds, runs the ingest alone (the baseline), then ingest and analysts together
/// for the same time: the report's ingest figures are those with queries running, its
/// `baseline_ingest` those without.
pub async fn mixed(
    options: &TargetOptions,
    seed_config: IngestConfig,
    ingest_config: IngestConfig,
    query_config: QueryConfig,
    info: &RunInfo,
) -> Result<Report> {
    query_config.validate()?;
    ingest_config.validate()?;
    let mut seed_config = seed_config;
    if !options.spawn && seed_config.first_batch_seq == 1 {
        seed_config.first_batch_seq = fresh_batch_seq();
    }
    let mut prepared = prepare(options, seed_config.buoys.max(ingest_config.buoys)).await?;
    let api = prepared
        .api
        .clone()
        .ok_or_else(|| Error::Config("queries need --spawn or --operator-email".into()))?;
    let (data, seeded) = seed(&prepared, &seed_config).await?;
    // The baseline continues every series after the seed, with fresh batch sequences.
    let mut baseline_config = ingest_config.clone();
    baseline_config.first_reading = seeded.next_reading;
    baseline_config.first_batch_seq = fresh_batch_seq();
    let live = Arc::new(LiveCounters::default());
    let progress = ingest_progress("ingest alone", &baseline_config, &live);
    let baseline = run_ingest(&baseline_config, &prepared.ingest, Arc::clone(&live)).await;
    progress.finish().await;
    let baseline = baseline?;

    let mut with_queries = ingest_config.clone();
    with_queries.first_reading = baseline.next_reading;
    with_queries.first_batch_seq = fresh_batch_seq();
    // The analysts start with the ingest's warm-up and stop with it.
    let mut query_config = query_config;
    query_config.warmup = with_queries.warmup;
    query_config.duration = with_queries.duration;
    let live = Arc::new(LiveCounters::default());
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        "ingest + queries",
        with_queries.warmup + with_queries.duration,
        vec![
            Shown { label: "readings", counter: Arc::clone(&live.readings_acked) },
            Shown { label: "queries", counter: Arc::clone(&done) },
        ],
        Arc::clone(&live.errors),
    );
    let (ingest_run, query_run) = tokio::join!(
        run_ingest(&with_queries, &prepared.ingest, Arc::clone(&live)),
        run_queries(&query_config, &api, data, Arc::clone(&done), Arc::clone(&live.errors)),
    );
    progress.finish().await;
    let (ingest_run, query_run) = (ingest_run?, query_run?);
    stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("mixed", info);
    fill_ingest(&mut report, ingest_run);
    report.baseline_ingest = Some(baseline.figures);
    report.queries = query_run.figures;
    for (kind, n) in query_run.errors {
        *report.errors.entry(kind).or_default() += n;
    }
    Ok(report)
}

/// `shop`: seeds the spawned server's shop with the demo catalogue and its buoys with data,
/// then runs [`crate::shop::run_shop`] (sign-ins with and without MFA, then signed-in sessions).
pub async fn shop(
    options: &TargetOptions,
    seed_config: IngestConfig,
    shop_config: crate::shop::ShopConfig,
    info: &RunInfo,
) -> Result<Report> {
    shop_config.validate()?;
    let mut seed_config = seed_config;
    if !options.spawn && seed_config.first_batch_seq == 1 {
        seed_config.first_batch_seq = fresh_batch_seq();
    }
    let mut prepared = crate::target::prepare_with(options, seed_config.buoys, true).await?;
    let api = prepared
        .api
        .clone()
        .ok_or_else(|| Error::Config("the shop run needs --spawn or --operator-email (an admin)".into()))?;
    let (data, _) = seed(&prepared, &seed_config).await?;
    let mut monitor = prepared.ingest.server_pid.map(ProcessMonitor::new);
    if let Some(m) = monitor.as_mut() {
        let _ = m.sample();
    }
    let run = crate::shop::run_shop(&shop_config, &api, data).await?;
    let server = server_figures(monitor.as_mut());
    stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("shop", info);
    report.measured_s = shop_config.duration.as_secs_f64();
    report.queries = run.figures;
    report.errors = run.errors;
    report.server = server;
    report.shop = Some(run.shop);
    Ok(report)
}

/// `line-protocol`: InfluxDB-style writers post line-protocol bodies of the fleet workload to
/// `POST /api/v2/write` (see [`crate::lines`]); with `--spawn`, disk bytes per reading after a
/// clean stop, and the compaction debt over the run from `/metrics`.
pub async fn line_protocol(
    options: &TargetOptions,
    fleet: IngestConfig,
    config: crate::lines::LineConfig,
    info: &RunInfo,
) -> Result<Report> {
    config.validate()?;
    let mut prepared = prepare(options, fleet.buoys).await?;
    let api = prepared
        .api
        .clone()
        .ok_or_else(|| Error::Config("line protocol needs --spawn or --operator-email".into()))?;
    let workload = fleet.workload()?;
    let buoy_ids: Vec<String> = prepared.ingest.devices.iter().map(|d| d.buoy_id.clone()).collect();
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(
        "line-protocol",
        config.warmup + config.duration,
        vec![Shown { label: "readings", counter: Arc::clone(&acked) }],
        errors,
    );
    let (stop_debt, debt_stopped) = tokio::sync::oneshot::channel();
    let debt_task = tokio::spawn(debt::sample(api.target.clone(), debt_stopped));
    let mut monitor = prepared.ingest.server_pid.map(ProcessMonitor::new);
    let started = Instant::now();
    let measure_start = started + config.warmup;
    let run = crate::lines::run_lines(&config, &api, workload, buoy_ids, acked);
    let sampler = async {
        if let Some(m) = monitor.as_mut() {
            tokio::time::sleep_until(measure_start.into()).await;
            let _ = m.sample();
        }
    };
    let (run, ()) = tokio::join!(run, sampler);
    let server = server_figures(monitor.as_mut());
    progress.finish().await;
    let _ = stop_debt.send(());
    let debt_samples = debt_task.await.unwrap_or_default();
    let run = run?;
    let disk_bytes = stop_spawned(&mut prepared.spawned).await?;
    let mut report = base_report("line-protocol", info);
    report.measured_s = config.duration.as_secs_f64();
    let debt_points = debt::since(started, debt_samples);
    report.compaction_debt_figures = DebtFigures::of(&debt_points);
    report.compaction_debt = debt_points;
    report.timeline = run.timeline;
    report.errors = run.errors;
    report.server = server;
    report.client_cpu_percent = run.client_cpu_percent;
    let mut figures = run.figures;
    if let Some(bytes) = disk_bytes {
        figures.disk_bytes = Some(bytes);
        figures = figures.with_rates(config.duration.as_secs_f64());
    }
    report.ingest = Some(figures);
    Ok(report)
}
