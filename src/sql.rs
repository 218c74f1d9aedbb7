//! `bluewave sql`: one read-only query against a data dir, offline, with an unrestricted
//! policy (operators and analysts on the box). Composition only: the work is in
//! `bluewave-query`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use bluewave_engine::{Engine, EngineConfig};
use bluewave_query::datafusion::arrow::util::pretty::pretty_format_batches;
use bluewave_query::{AccessPolicy, Format, QueryConfig, QueryService, encode};
use clap::ValueEnum;
use futures::StreamExt;

/// Rows a pretty table may hold; larger results should use `--format csv|json|parquet`.
pub const TABLE_ROWS_MAX: u64 = 100_000;

/// Output formats of `bluewave sql`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SqlFormat {
    /// An aligned text table (at most `TABLE_ROWS_MAX` rows).
    Table,
    /// CSV with a header.
    Csv,
    /// A JSON array of rows.
    Json,
    /// Arrow IPC stream.
    Arrow,
    /// Parquet.
    Parquet,
}

/// Flags of `bluewave sql`.
#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The query (one SELECT / WITH / VALUES / EXPLAIN statement).
    pub query: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = SqlFormat::Table)]
    pub format: SqlFormat,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs the command; prints its own error.
pub fn run(data_dir: &Path, args: &SqlArgs) -> ExitCode {
    match execute(data_dir, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bluewave sql: {e}");
            ExitCode::FAILURE
        }
    }
}

fn execute(data_dir: &Path, args: &SqlArgs) -> Result<(), String> {
    let engine = Arc::new(Engine::open(EngineConfig::new(data_dir)).map_err(|e| e.to_string())?);
    let result = query(&engine, args);
    let closed = engine.shutdown().map_err(|e| e.to_string());
    result.and(closed)
}

fn query(engine: &Arc<Engine>, args: &SqlArgs) -> Result<(), String> {
    let service = QueryService::new(engine.clone(), QueryConfig::default()).map_err(|e| e.to_string())?;
    let mut policy = AccessPolicy::unrestricted();
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let format = match args.format {
        SqlFormat::Table => {
            policy.rows_max = TABLE_ROWS_MAX;
            None
        }
        SqlFormat::Csv => Some(Format::Csv),
        SqlFormat::Json => Some(Format::Json),
        SqlFormat::Arrow => Some(Format::ArrowIpc),
        SqlFormat::Parquet => Some(Format::Parquet),
    };
    service
        .block_on(async {
            let rows = service.sql(&args.query, &policy).await.map_err(|e| e.to_string())?;
            match format {
                None => {
                    let batches = rows.collect_batches().await.map_err(|e| e.to_string())?;
                    let table = pretty_format_batches(&batches).map_err(|e| e.to_string())?;
                    writeln!(out, "{table}").map_err(|e| e.to_string())?;
                }
                Some(format) => {
                    let mut chunks = encode(rows, format);
                    while let Some(chunk) = chunks.next().await {
                        out.write_all(&chunk.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
                    }
                }
            }
            out.flush().map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?
}
