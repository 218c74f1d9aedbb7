//! `bluewave`: the command line. Composition only: every subcommand parses its flags, builds the
//! parts from the library crates and reports; no storage logic lives here.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bluewave_engine::workload::{Workload, WorkloadConfig};
use bluewave_engine::{BuoyInfo, Durability, Engine, EngineConfig, Error, IngestOutcome, IngestTicket};
use clap::{Parser, Subcommand, ValueEnum};

mod audit_cmd;
mod buoy;
mod config_file;
mod device_auth;
mod devices;
mod keys_cmd;
mod metrics;
mod serve;
mod shop_cmd;
mod sql;
mod users_cmd;

/// mimalloc instead of glibc malloc: fewer page faults in the flusher's large sort and encode
/// buffers and no arena lock contention between threads (BENCHMARKS.md, "allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its place in the `mi_option_t` enum of mimalloc.h (v3),
/// which libmimalloc-sys does not name. `purge_delay_option_is_the_one_we_set` checks it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's purge delay for this process: `-1`, memory the process frees is never returned
/// to the OS (mimalloc's default returns it after 1 s). A flush frees hundreds of MiB of sort
/// and encode buffers that the next flush, a few seconds later under load, allocates again;
/// returned in between, every page comes back as a fault that zeroes it (2 MiB huge pages
/// here), a fifth of the server's CPU at 2 M readings/s, and a 10 s delay still purges most of
/// it (mimalloc purges an arena's free ranges together, when the first one expires; BENCHMARKS.md,
/// "Ack latency: allocator purge and 96 MiB flushes"). So the resident size stays at its
/// high-water mark, which the engine's limits bound (`buffer_bytes_max`, `compaction_rows_max`,
/// query memory).
const ALLOCATOR_PURGE_DELAY_MS: std::ffi::c_long = -1;

/// Sets [`ALLOCATOR_PURGE_DELAY_MS`] as the default: mimalloc keeps a value the environment gave
/// it at start (`MIMALLOC_PURGE_DELAY` in any case, or the legacy `MIMALLOC_RESET_DELAY`), so an
/// operator's setting wins. Called first thing in `main`, before any other thread exists.
#[allow(unsafe_code)]
fn keep_freed_memory_mapped() {
    // SAFETY: `mi_option_set_default` takes two integers, checks the option's range and stores
    // one value (a plain word the purge path reads); mimalloc documents the option setters as
    // not thread safe, and `main` calls this before it starts any thread (the unit test calls
    // it beside other tests, where a torn read is impossible for a word-sized store).
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, ALLOCATOR_PURGE_DELAY_MS) };
}

/// BlueWave: a time-series engine for ocean buoy fleets.
#[derive(Parser, Debug)]
#[command(name = "bluewave", version, about)]
struct Cli {
    /// Data directory (WAL, Parquet partitions, catalog).
    #[arg(long, global = true, default_value = "./bluewave-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest a generated marine fleet (deterministic) through the durable path, flush it to
    /// Parquet and print a summary.
    IngestDemo(DemoArgs),
    /// List partitions, files, tombstones, what recovery found, and the retention settings
    /// and what retention last removed.
    Inspect(InspectArgs),
    /// Run QUIC ingest and the HTTPS API until SIGINT/SIGTERM, then stop gracefully.
    Serve(serve::ServeArgs),
    /// Manage buoys and their device tokens.
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// Buoy tools: `buoy simulate` drives a simulated fleet through the QUIC client SDK.
    Buoy(buoy::BuoyArgs),
    /// Audit log tools (`verify` walks its hash chain).
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Accounts (`reset-mfa EMAIL`; run with the server stopped).
    #[command(subcommand)]
    Users(users_cmd::UsersCommand),
    /// Signing keys of the auth tokens (`rotate`; run with the server stopped).
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// Run one read-only SQL query against the data dir (offline, unrestricted).
    Sql(sql::SqlArgs),
    /// The shop (`seed-demo` loads an example catalogue and plans; run with the server stopped).
    #[command(subcommand)]
    Shop(shop_cmd::ShopCommand),
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Buoys in the fleet.
    #[arg(long, default_value_t = 100)]
    buoys: usize,
    /// Metrics per buoy (1-8).
    #[arg(long, default_value_t = 8)]
    metrics: usize,
    /// Hours of 1 Hz data to generate.
    #[arg(long, default_value_t = 1.0)]
    hours: f64,
    /// Readings per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_readings: usize,
    /// Batches in flight before waiting for acks.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// fsync policy; `relaxed` is for benchmarks only.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Strict)]
    durability: DurabilityArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Strict,
    Relaxed,
}

fn main() -> ExitCode {
    keep_freed_memory_mapped();
    // Colour codes only for a person at a terminal: a log file or a journal gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::IngestDemo(args) => ingest_demo(cli.data_dir, &args),
        Command::Inspect(args) => inspect(cli.data_dir, &args),
        Command::Serve(args) => return exit_code(serve::run(&cli.data_dir, &args)),
        Command::Devices(command) => return exit_code(devices::run(&cli.data_dir, &command)),
        Command::Buoy(args) => return buoy::run(args),
        Command::Audit(command) => return audit_cmd::run(&cli.data_dir, &command),
        Command::Sql(args) => return sql::run(&cli.data_dir, &args),
        Command::Keys(command) => return exit_code(keys_cmd::run(&cli.data_dir, &command)),
        Command::Users(command) => return exit_code(users_cmd::run(&cli.data_dir, &command)),
        Command::Shop(command) => return exit_code(shop_cmd::run(&cli.data_dir, &command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bluewave: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a command's error and turns its outcome into the exit code.
fn exit_code<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bluewave: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ingest_demo(data_dir: PathBuf, args: &DemoArgs) -> Result<(), Error> {
    let mut config = EngineConfig::new(&data_dir);
    config.durability = match args.durability {
        DurabilityArg::Strict => Durability::Strict,
        DurabilityArg::Relaxed => Durability::Relaxed,
    };
    let workload = Workload::new(WorkloadConfig {
        buoys: args.buoys,
        metrics: args.metrics,
        ..WorkloadConfig::default()
    })?;
    let samples = (args.hours * 3_600.0).max(1.0) as u64;
    let total = samples * args.buoys as u64 * args.metrics as u64;
    let engine = Engine::open(config)?;
    for id in workload.buoy_ids() {
        engine.register_buoy(BuoyInfo::new(id))?;
    }
    // A rerun on the same data dir sends the same (buoy, batch_seq) pairs again: they are
    // acknowledged as duplicates and stored once.
    println!(
        "ingesting {total} readings: {} buoys x {} metrics x {samples} s, batches of {}",
        args.buoys, args.metrics, args.batch_readings
    );
    let started = Instant::now();
    let mut in_flight: VecDeque<IngestTicket> = VecDeque::with_capacity(args.in_flight);
    let (mut stored, mut duplicates) = (0u64, 0u64);
    let mut settle = |ticket: IngestTicket| -> Result<(), Error> {
        match ticket.wait()? {
            IngestOutcome::Stored { .. } => stored += 1,
            IngestOutcome::Duplicate => duplicates += 1,
        }
        Ok(())
    };
    for (buoy_index, batch_seq, batch) in workload.iter_batches(args.batch_readings, total)? {
        let buoy = &workload.buoy_ids()[buoy_index];
        loop {
            match engine.ingest(buoy, batch_seq, batch.clone()) {
                Ok(ticket) => {
                    in_flight.push_back(ticket);
                    break;
                }
                Err(Error::Busy { retry_after_ms, .. }) => match in_flight.pop_front() {
                    Some(t) => settle(t)?,
                    None => std::thread::sleep(Duration::from_millis(retry_after_ms)),
                },
                Err(e) => return Err(e),
            }
        }
        if in_flight.len() >= args.in_flight
            && let Some(t) = in_flight.pop_front()
        {
            settle(t)?;
        }
    }
    while let Some(t) = in_flight.pop_front() {
        settle(t)?;
    }
    let acked = started.elapsed();
    let flush = engine.flush()?;
    let total_elapsed = started.elapsed();
    let files = engine.files();
    let file_bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let file_rows: u64 = files.iter().map(|f| f.rows).sum();
    println!(
        "acked {stored} batches ({duplicates} duplicates) in {:.2} s: {:.0} readings/s durable",
        acked.as_secs_f64(),
        total as f64 / acked.as_secs_f64()
    );
    println!(
        "flushed {} files, {} rows in {:.2} s total; catalog holds {} files, {file_rows} rows, {file_bytes} bytes ({:.3} bytes/reading)",
        flush.files,
        flush.rows,
        total_elapsed.as_secs_f64(),
        files.len(),
        file_bytes as f64 / file_rows.max(1) as f64
    );
    println!("data dir: {}", data_dir.display());
    engine.shutdown()
}

/// `bluewave inspect` options.
#[derive(clap::Args, Debug)]
struct InspectArgs {
    /// The server's config file, to show the retention it sets (`[engine.retention]`).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn inspect(data_dir: PathBuf, args: &InspectArgs) -> Result<(), Error> {
    // Read first, so a bad file is refused before the engine opens.
    let retention = match &args.config {
        Some(path) => Some(
            config_file::ConfigFile::load(path)
                .map_err(|e| Error::Config(e.to_string()))?
                .retention
                .unwrap_or_default(),
        ),
        None => None,
    };
    let engine = Engine::open(EngineConfig::new(&data_dir))?;
    match retention {
        Some(r) if r.keeps_everything() => println!("retention: keep everything ({r})"),
        Some(r) => println!("retention: {r}"),
        None => println!("retention: pass --config FILE to show the server's retention settings"),
    }
    match engine.last_retention()? {
        None => println!("last retention pass: none has removed anything"),
        Some(last) => println!(
            "last retention pass: {} ({}): {} files dropped, {} rewritten, {} rows and {} bytes removed, \
             partitions {} .. {}, metrics {}",
            bluewave_engine::utc_text(last.applied_at),
            last.settings,
            last.files_dropped,
            last.files_rewritten,
            last.rows_removed,
            last.bytes_released,
            bluewave_engine::utc_text(last.partition_first),
            bluewave_engine::utc_text(last.partition_last_end),
            last.metrics.join(", ")
        ),
    }
    let report = engine.recovery_report();
    println!(
        "recovery: {} WAL entries replayed, {} torn tails cut, {} temp and {} orphan files removed, {} missing files",
        report.entries_replayed,
        report.torn_tails.len(),
        report.temp_files_removed,
        report.orphan_files_removed,
        report.missing_files.len()
    );
    for missing in &report.missing_files {
        println!("  MISSING {missing}");
    }
    let snapshot = engine.snapshot();
    println!("buoys registered: {}", engine.buoys().len());
    println!("{:<58} {:>10} {:>12} {:>8} {:>6} {:>5}", "file", "rows", "bytes", "B/row", "buoys", "gen");
    let (mut rows, mut bytes) = (0u64, 0u64);
    for f in snapshot.view.files() {
        rows += f.rows;
        bytes += f.bytes;
        println!(
            "{:<58} {:>10} {:>12} {:>8.3} {:>6} {:>5}",
            f.path,
            f.rows,
            f.bytes,
            f.bytes as f64 / f.rows.max(1) as f64,
            f.buoys.len(),
            f.generation
        );
    }
    println!(
        "{} files, {} partitions, {rows} rows, {bytes} bytes; {} tombstones; {} buffered chunks",
        snapshot.view.file_count(),
        snapshot.view.partitions.len(),
        snapshot.view.tombstones.len(),
        snapshot.chunks.len()
    );
    drop(snapshot);
    engine.shutdown()
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn purge_delay_option_is_the_one_we_set() {
        if std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy().to_ascii_uppercase();
            k == "MIMALLOC_PURGE_DELAY" || k == "MIMALLOC_RESET_DELAY"
        }) {
            return;
        }
        // SAFETY: reads one option value.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        // 1,000 ms is mimalloc v3's default purge delay and no other option's default, so a
        // shifted enum (another mimalloc version) fails here.
        assert_eq!(get(), 1_000);
        super::keep_freed_memory_mapped();
        assert_eq!(get(), super::ALLOCATOR_PURGE_DELAY_MS);
    }
}
