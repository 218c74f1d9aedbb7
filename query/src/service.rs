//! [`QueryService`]: one per process. Plans and runs SQL and typed reads on its own bounded
//! runtime, under each caller's [`AccessPolicy`], and streams results as Arrow batches.

use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_TS};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bluewave_engine::Engine;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::filter::{Cursor, TelemetryFilter};
use crate::metrics::{Counters, QueryMetrics};
use crate::newest::{BlueWavePlanner, NewestFirstRule};
use crate::policy::{AccessPolicy, QueryConfig};
use crate::rollups::{BlueWaveOptions, RollupAggregateRule};
use crate::runaway::{CappedSeries, YieldAboveJoins};
use crate::stats::CatalogAggregateRule;
use crate::table::{BUOYS, COL_BUOY, COL_METRIC, COL_TS, READINGS, ReadingsTable, ScanOptions, buoys_table};

/// Runs queries over one engine. Cheap to share behind an `Arc`.
///
/// It owns a multi-threaded tokio runtime of [`QueryConfig::worker_threads`] threads named
/// `bw-query`: planning, execution and merging all happen there (gathering buffered rows on
/// that runtime's blocking pool), so a heavy query competes for CPU but never for ingest's
/// threads, and at most [`QueryConfig::queries_max`] queries run at once.
pub struct QueryService {
    engine: Arc<Engine>,
    config: QueryConfig,
    scan: ScanOptions,
    runtime: Option<tokio::runtime::Runtime>,
    running: Arc<Semaphore>,
    watchdog: Watchdog,
    /// Parquet footers and page indexes, shared by every query (partition files never change
    /// once written, and a replaced file is never read again), bounded by
    /// [`FILE_METADATA_CACHE_BYTES`].
    metadata_cache: Arc<FileMetadataCache>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for QueryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryService").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Blocking threads of the query runtime (gathering and sorting the buffered rows of merges).
pub const BLOCKING_THREADS_MAX: usize = 4;

/// Memory for cached Parquet footers and page indexes, shared by all queries. A footer with
/// its page index is tens of kilobytes for an hourly partition file of the marine fleet, so
/// this holds thousands of files; least recently used entries leave first.
pub const FILE_METADATA_CACHE_BYTES: usize = 64 << 20;

impl QueryService {
    /// Starts the query runtime for `engine`.
    pub fn new(engine: Arc<Engine>, config: QueryConfig) -> Result<Self> {
        config.validate()?;
        let data_dir = std::fs::canonicalize(&engine.config().data_dir)
            .map_err(|e| Error::Internal(format!("data dir {}: {e}", engine.config().data_dir.display())))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .max_blocking_threads(BLOCKING_THREADS_MAX)
            .thread_name("bw-query")
            .enable_time()
            .build()
            .map_err(|e| Error::Internal(format!("query runtime: {e}")))?;
        Ok(Self {
            scan: ScanOptions {
                data_dir,
                batch_rows: config.batch_rows,
                target_partitions: config.target_partitions,
            },
            metadata_cache: Arc::new(
                DefaultCache::new(FILE_METADATA_CACHE_BYTES).with_name("BlueWaveFileMetadataCache"),
            ),
            running: Arc::new(Semaphore::new(config.queries_max)),
            watchdog: Watchdog::start(config.queries_max)?,
            counters: Arc::new(Counters::default()),
            engine,
            config,
            runtime: Some(runtime),
        })
    }

    /// The service settings.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// The service's counters since start (for `/metrics`).
    pub fn metrics(&self) -> QueryMetrics {
        self.counters.snapshot()
    }

    /// `admitted`'s permit, or its error counted as a refusal.
    fn count_refusal<T>(&self, admitted: Result<T>) -> Result<T> {
        if let Err(error) = &admitted {
            self.counters.refused(error);
        }
        admitted
    }

    /// Runs `future` to completion on the calling thread (for synchronous callers such as the
    /// CLI and tests; never call it from inside an async task).
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output> {
        match &self.runtime {
            Some(rt) => Ok(rt.block_on(future)),
            None => Err(Error::Internal("query runtime stopped".into())),
        }
    }

    fn handle(&self) -> Result<tokio::runtime::Handle> {
        self.runtime
            .as_ref()
            .map(|r| r.handle().clone())
            .ok_or_else(|| Error::Internal("query runtime stopped".into()))
    }

    /// A fresh session for one query: only our two tables, policy-bound; no information
    /// schema, no URL tables, a memory pool of the policy's size and no spilling to disk; the
    /// series table functions capped at the policy's `table_function_rows_max`, and a yield
    /// point above every join (`runaway`).
    fn session(&self, policy: &Arc<AccessPolicy>) -> Result<SessionContext> {
        let internal = |e: datafusion::error::DataFusionError| Error::Internal(e.to_string());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(policy.memory_max_bytes)))
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(self.metadata_cache.clone()))
                    .with_metadata_cache_limit(FILE_METADATA_CACHE_BYTES),
            )
            .build_arc()
            .map_err(internal)?;
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_target_partitions(self.config.target_partitions)
            .with_batch_size(self.config.batch_rows)
            // Late materialisation: decode the filter columns first and the others only for
            // rows that pass (a `metric = …` filter keeps one row in eight of a fleet scan).
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            // Partition files carry no bloom filters (PARTITION.md): do not look for them.
            .set_bool("datafusion.execution.parquet.bloom_filter_on_read", false)
            .with_default_catalog_and_schema("bluewave", "public")
            .with_option_extension(BlueWaveOptions {
                rollups: self.config.rollups,
                ..BlueWaveOptions::default()
            });
        // DataFusion's defaults, plus latest-row aggregates planned newest data first,
        // aggregates answered from the catalog's statistics where they suffice, and time-bucket
        // aggregates answered from minute rollups where they suffice.
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rule(Arc::new(NewestFirstRule))
            .with_optimizer_rule(Arc::new(CatalogAggregateRule))
            .with_optimizer_rule(Arc::new(RollupAggregateRule))
            .with_query_planner(Arc::new(BlueWavePlanner))
            .with_physical_optimizer_rule(Arc::new(YieldAboveJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for (name, function) in CappedSeries::both(policy.table_function_rows_max) {
            ctx.register_udtf(name, function);
        }
        let readings = ReadingsTable::new(self.engine.clone(), policy.clone(), self.scan.clone());
        ctx.register_table(READINGS, Arc::new(readings)).map_err(internal)?;
        let buoys = buoys_table(&self.engine.buoys(), policy).map_err(internal)?;
        ctx.register_table(BUOYS, Arc::new(buoys)).map_err(internal)?;
        let date_bin = datafusion::functions::datetime::date_bin();
        ctx.register_udf(date_bin.as_ref().clone().with_aliases(["time_bucket"]));
        Ok(ctx)
    }

    fn admit(&self, policy: &AccessPolicy) -> Result<tokio::sync::OwnedSemaphorePermit> {
        policy.validate()?;
        self.running
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy { queries_max: self.config.queries_max })
    }

    /// Runs one read-only SQL statement under `policy`.
    ///
    /// Refused with [`Error::Refused`]: several statements, DDL, DML, `COPY`, `SET`, `CREATE
    /// EXTERNAL TABLE`, and anything but `SELECT`/`WITH`/`VALUES` and `EXPLAIN [ANALYZE]` of
    /// one. The returned stream ends with an error if a limit is hit midway.
    pub async fn sql(&self, text: &str, policy: &AccessPolicy) -> Result<ResultStream> {
        self.sql_with_params(text, Vec::new(), policy).await
    }

    /// [`QueryService::sql`] with values for the statement's positional placeholders (`$1`,
    /// `$2`, …), bound into the plan as typed values (never spliced into the SQL text). The
    /// Postgres front's extended query protocol runs its portals through this.
    pub async fn sql_with_params(
        &self,
        text: &str,
        params: Vec<ScalarValue>,
        policy: &AccessPolicy,
    ) -> Result<ResultStream> {
        let admitted = if text.len() > self.config.sql_bytes_max {
            Err(Error::Refused(format!(
                "the SQL text is {} bytes, more than the {} allowed",
                text.len(),
                self.config.sql_bytes_max
            )))
        } else {
            check_read_only(text).and_then(|()| self.admit(policy))
        };
        let permit = self.count_refusal(admitted)?;
        let policy = Arc::new(policy.clone());
        let ctx = self.session(&policy)?;
        let text = text.to_owned();
        let memory = policy.memory_max_bytes;
        self.start(policy, permit, None, async move {
            let options = datafusion::execution::context::SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let mut frame =
                ctx.sql_with_options(&text, options).await.map_err(|e| Error::from_planning(e, memory))?;
            if !params.is_empty() {
                frame = frame.with_param_values(params).map_err(|e| Error::from_planning(e, memory))?;
            }
            frame.execute_stream().await.map_err(|e| Error::from_planning(e, memory))
        })
        .await
    }

    /// Plans one read-only statement under `policy` without running it: the types of its
    /// placeholders (`$1` first; `None` where the plan does not fix one) and the schema of its
    /// rows. The same refusals as [`QueryService::sql`]; the plan runs on the query runtime
    /// within the policy's time budget, and takes no query slot (nothing executes).
    pub async fn describe_sql(&self, text: &str, policy: &AccessPolicy) -> Result<DescribedSql> {
        if text.len() > self.config.sql_bytes_max {
            return Err(Error::Refused(format!(
                "the SQL text is {} bytes, more than the {} allowed",
                text.len(),
                self.config.sql_bytes_max
            )));
        }
        check_read_only(text)?;
        policy.validate()?;
        let policy = Arc::new(policy.clone());
        let ctx = self.session(&policy)?;
        let text = text.to_owned();
        let memory = policy.memory_max_bytes;
        let timeout = policy.timeout;
        let timeout_ms = policy.timeout_ms();
        let planned = self.handle()?.spawn(async move {
            let options = datafusion::execution::context::SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let frame =
                ctx.sql_with_options(&text, options).await.map_err(|e| Error::from_planning(e, memory))?;
            let types =
                frame.logical_plan().get_parameter_types().map_err(|e| Error::from_planning(e, memory))?;
            let mut params = vec![None; types.len()];
            for (name, data_type) in types {
                // Positional placeholders only (`$1`…); a named one is refused by the binder.
                let index = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                match index.and_then(|i| i.checked_sub(1)).and_then(|i| params.get_mut(i)) {
                    Some(slot) => *slot = data_type,
                    None => {
                        return Err(Error::InvalidSql(format!(
                            "placeholder {name} is not $1..${}",
                            params.len()
                        )));
                    }
                }
            }
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            Ok(DescribedSql { params, schema })
        });
        match tokio::time::timeout(timeout, planned).await {
            Err(_) => Err(Error::Timeout { timeout_ms }),
            Ok(Err(join)) => Err(Error::Internal(format!("planning task: {join}"))),
            Ok(Ok(described)) => described,
        }
    }

    /// A typed, paged read under `policy`: rows of `readings` in `(buoy_id, metric, ts)` order,
    /// at most the filter's limit (default [`QueryConfig::read_limit_default`]). After the
    /// stream ends, [`ResultStream::next_cursor`] gives the token of the next page, if any.
    pub async fn read(&self, filter: &TelemetryFilter, policy: &AccessPolicy) -> Result<ResultStream> {
        let admitted = filter.page_limit(&self.config).and_then(|limit| {
            let predicate = filter.to_expr(policy)?;
            Ok((limit, predicate, self.admit(policy)?))
        });
        let (limit, predicate, permit) = self.count_refusal(admitted)?;
        let policy = Arc::new(policy.clone());
        let ctx = self.session(&policy)?;
        let memory = policy.memory_max_bytes;
        self.start(policy, permit, Some(limit), async move {
            let map = |e| Error::from_planning(e, memory);
            let mut frame = ctx.table(READINGS).await.map_err(map)?;
            if let Some(p) = predicate {
                frame = frame.filter(p).map_err(map)?;
            }
            use datafusion::prelude::col;
            let frame = frame
                .sort(vec![
                    col(COLUMN_BUOY_ID).sort(true, false),
                    col(COLUMN_METRIC).sort(true, false),
                    col(COLUMN_TS).sort(true, false),
                ])
                .map_err(map)?
                .limit(0, Some(limit))
                .map_err(map)?;
            frame.execute_stream().await.map_err(map)
        })
        .await
    }

    /// Plans on the query runtime, then pumps batches into a bounded queue under the limits.
    async fn start<F>(
        &self,
        policy: Arc<AccessPolicy>,
        permit: tokio::sync::OwnedSemaphorePermit,
        page_limit: Option<usize>,
        plan: F,
    ) -> Result<ResultStream>
    where
        F: Future<Output = Result<SendableRecordBatchStream>> + Send + 'static,
    {
        let deadline = Instant::now() + policy.timeout;
        let policy_timeout_ms = policy.timeout_ms();
        let (schema_tx, schema_rx) = oneshot::channel::<Result<SchemaRef>>();
        let (batch_tx, batch_rx) = mpsc::channel(self.config.result_queue_batches);
        let (done_tx, done_rx) = oneshot::channel::<Result<()>>();
        let handle = self.handle()?;
        // The watchdog thread fires at the deadline even when every query worker is busy in
        // a plan that does not yield (nested-loop joins): the caller gets `Timeout` on time and
        // the plan stops at its next yield point.
        let (expired_tx, expired_rx) = oneshot::channel::<()>();
        self.watchdog.arm(deadline.into_std(), expired_tx);
        let counters = Arc::clone(&self.counters);
        counters.started();
        let started = Instant::now();
        handle.spawn(async move {
            // The slot is given back before the caller can see the query's end (its error, or
            // the closed batch queue), so a caller that starts its next query at once is never
            // refused `Busy` by its own finished query.
            let permit = permit;
            let planned = tokio::time::timeout_at(deadline, plan).await;
            let mut stream = match planned {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    drop(permit);
                    counters.ended(Err(&e), 0, started.elapsed());
                    let _ = schema_tx.send(Err(e));
                    return;
                }
                Err(_) => {
                    drop(permit);
                    let e = Error::Timeout { timeout_ms: policy.timeout_ms() };
                    counters.ended(Err(&e), 0, started.elapsed());
                    let _ = schema_tx.send(Err(e));
                    return;
                }
            };
            if schema_tx.send(Ok(stream.schema())).is_err() {
                // The caller is gone before the first row: counted as complete (nothing owed).
                counters.ended(Ok(()), 0, started.elapsed());
                return;
            }
            let mut rows_sent = 0;
            let outcome = pump(&mut stream, &batch_tx, deadline, started, &policy, &mut rows_sent).await;
            drop(stream); // cancels the rest of the plan
            drop(permit);
            counters.ended(outcome.as_ref().map(|_| ()), rows_sent, started.elapsed());
            drop(batch_tx);
            let _ = done_tx.send(outcome);
        });
        let mut expired_rx = expired_rx;
        let schema = match futures::future::select(schema_rx, &mut expired_rx).await {
            futures::future::Either::Left((Ok(result), _)) => result?,
            futures::future::Either::Left((Err(_), _)) => {
                return Err(Error::Internal("query task ended before planning finished".into()));
            }
            futures::future::Either::Right(_) => {
                return Err(Error::Timeout { timeout_ms: policy_timeout_ms });
            }
        };
        Ok(ResultStream {
            schema,
            batches: batch_rx,
            done: Some(done_rx),
            expired: Some(expired_rx),
            timeout_ms: policy_timeout_ms,
            page_limit,
            rows: 0,
            last_key: None,
        })
    }
}

impl Drop for QueryService {
    fn drop(&mut self) {
        // Dropping a runtime inside another runtime's task panics; let it wind down aside.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Longest sleep of the watchdog thread between checks for abandoned deadlines.
pub const WATCHDOG_TICK: std::time::Duration = std::time::Duration::from_millis(100);

type Deadline = (std::time::Instant, oneshot::Sender<()>);

/// One thread that fires query deadlines, independent of the query runtime's workers. It holds
/// at most one entry per running query (admission caps them at `queries_max`).
struct Watchdog {
    deadlines: std::sync::mpsc::SyncSender<Deadline>,
}

impl Watchdog {
    fn start(queries_max: usize) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Deadline>(queries_max);
        std::thread::Builder::new()
            .name("bw-query-watchdog".into())
            .spawn(move || Self::run(&rx))
            .map_err(|e| Error::Internal(format!("query watchdog thread: {e}")))?;
        Ok(Self { deadlines: tx })
    }

    /// Fires `expired` at `deadline` (dropped quietly if the queue is full: the query task's
    /// own timeout still applies).
    fn arm(&self, deadline: std::time::Instant, expired: oneshot::Sender<()>) {
        let _ = self.deadlines.try_send((deadline, expired));
    }

    fn run(rx: &std::sync::mpsc::Receiver<Deadline>) {
        let mut pending: Vec<Deadline> = Vec::new();
        loop {
            let now = std::time::Instant::now();
            // Drop finished queries (their stream was dropped), fire the due ones.
            pending.retain(|(_, s)| !s.is_closed());
            let (due, waiting): (Vec<Deadline>, Vec<Deadline>) =
                pending.drain(..).partition(|(d, _)| *d <= now);
            pending = waiting;
            for (_, sender) in due {
                let _ = sender.send(());
            }
            let wait =
                pending.iter().map(|(d, _)| d.saturating_duration_since(now)).min().unwrap_or(WATCHDOG_TICK);
            match rx.recv_timeout(wait.min(WATCHDOG_TICK)) {
                Ok(entry) => pending.push(entry),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Moves batches from the plan to the consumer, enforcing the deadline, the stall limit (from
/// `started`, then from each batch handed over) and the row cap.
async fn pump(
    stream: &mut SendableRecordBatchStream,
    out: &mpsc::Sender<RecordBatch>,
    deadline: Instant,
    started: Instant,
    policy: &AccessPolicy,
    rows_sent: &mut u64,
) -> Result<()> {
    let timeout = || Error::Timeout { timeout_ms: policy.timeout_ms() };
    let stall_ms = policy.stall_timeout_ms();
    let mut last_progress = started;
    let mut rows: u64 = 0;
    loop {
        // The earlier of the deadline and the stall limit ends the wait for the next batch.
        let stall_at = policy.stall_timeout.map(|stall| last_progress + stall).filter(|at| *at < deadline);
        let next = match tokio::time::timeout_at(stall_at.unwrap_or(deadline), stream.next()).await {
            Ok(next) => next,
            Err(_) => {
                return Err(match stall_ms.filter(|_| stall_at.is_some()) {
                    Some(stall_ms) => Error::Stalled { stall_ms },
                    None => timeout(),
                });
            }
        };
        let batch = match next {
            None => return Ok(()),
            Some(Ok(batch)) => batch,
            Some(Err(e)) => return Err(Error::from_execution(e, policy.memory_max_bytes)),
        };
        rows = rows.saturating_add(batch.num_rows() as u64);
        if rows > policy.rows_max {
            return Err(Error::RowLimit { rows_max: policy.rows_max });
        }
        if batch.num_rows() == 0 {
            continue;
        }
        let batch_rows = batch.num_rows() as u64;
        match tokio::time::timeout_at(deadline, out.send(batch)).await {
            Ok(Ok(())) => {
                *rows_sent += batch_rows;
                last_progress = Instant::now();
            }
            Ok(Err(_)) => return Ok(()), // the consumer went away: stop quietly
            Err(_) => return Err(timeout()),
        }
    }
}

/// Refuses everything but one read-only query (or EXPLAIN of one).
pub(crate) fn check_read_only(text: &str) -> Result<()> {
    let statements = DFParser::parse_sql(text).map_err(|e| Error::InvalidSql(e.to_string()))?;
    match statements.len() {
        0 => return Err(Error::InvalidSql("no statement".into())),
        1 => {}
        n => return Err(Error::Refused(format!("{n} statements given; send one at a time"))),
    }
    let Some(statement) = statements.front() else {
        return Err(Error::InvalidSql("no statement".into()));
    };
    check_statement(statement)
}

fn check_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            SqlStatement::Query(_) => Ok(()),
            SqlStatement::Explain { statement, .. } => match statement.as_ref() {
                SqlStatement::Query(_) => Ok(()),
                other => Err(Error::Refused(statement_kind(&other.to_string()))),
            },
            other => Err(Error::Refused(statement_kind(&other.to_string()))),
        },
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => Err(Error::Refused("CREATE EXTERNAL TABLE".into())),
        DfStatement::CopyTo(_) => Err(Error::Refused("COPY".into())),
        DfStatement::Reset(_) => Err(Error::Refused("RESET".into())),
    }
}

/// The leading keywords of a statement, for refusal messages (never echoes data).
fn statement_kind(text: &str) -> String {
    let words: Vec<&str> =
        text.split_whitespace().take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic())).take(2).collect();
    if words.is_empty() { "this statement".into() } else { words.join(" ").to_uppercase() }
}

/// What [`QueryService::describe_sql`] learns from planning a statement.
#[derive(Debug, Clone)]
pub struct DescribedSql {
    /// The type of each placeholder, `$1` first; `None` where the plan leaves it open.
    pub params: Vec<Option<DataType>>,
    /// The columns of the rows the statement returns.
    pub schema: SchemaRef,
}

/// A running query's result: Arrow batches, pulled by the caller (back-pressure: at most
/// [`QueryConfig::result_queue_batches`] wait in between). Ends with `Some(Err)` when a limit
/// is hit or execution fails midway, so a truncated result is never mistaken for a whole one.
/// Dropping it cancels the query.
pub struct ResultStream {
    schema: SchemaRef,
    batches: mpsc::Receiver<RecordBatch>,
    done: Option<oneshot::Receiver<Result<()>>>,
    /// Fires at the deadline (see the watchdog in `QueryService::start`).
    expired: Option<oneshot::Receiver<()>>,
    timeout_ms: u64,
    page_limit: Option<usize>,
    rows: usize,
    last_key: Option<(String, String, i64)>,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream").field("schema", &self.schema).field("rows", &self.rows).finish()
    }
}

impl ResultStream {
    /// Schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Rows delivered so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// For a typed read whose stream has ended: the cursor of the next page when this page was
    /// full (there may be more rows), `None` when the range is exhausted.
    pub fn next_cursor(&self) -> Option<Cursor> {
        let limit = self.page_limit?;
        if self.done.is_some() || self.rows < limit {
            return None;
        }
        self.last_key.as_ref().map(|(b, m, t)| Cursor::new(b, m, *t))
    }

    /// Collects every batch (for small results and tests).
    pub async fn collect_batches(mut self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        while let Some(batch) = self.next().await {
            out.push(batch?);
        }
        Ok(out)
    }

    fn remember_last_key(&mut self, batch: &RecordBatch) {
        if self.page_limit.is_none() || batch.num_rows() == 0 || batch.num_columns() <= COL_TS {
            return;
        }
        let last = batch.num_rows() - 1;
        let (buoy, metric, ts) = (batch.column(COL_BUOY), batch.column(COL_METRIC), batch.column(COL_TS));
        let (Some(buoy), Some(metric), Some(ts)) = (
            buoy.as_string_opt::<i32>(),
            metric.as_string_opt::<i32>(),
            ts.as_primitive_opt::<TimestampNanosecondType>(),
        ) else {
            return;
        };
        if buoy.is_valid(last) && metric.is_valid(last) && ts.is_valid(last) {
            self.last_key =
                Some((buoy.value(last).to_owned(), metric.value(last).to_owned(), ts.value(last)));
        }
    }
}

impl ResultStream {
    /// `Timeout` once the watchdog fired; the stream ends after it.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        let Some(expired) = self.expired.as_mut() else {
            return Poll::Pending;
        };
        match Pin::new(expired).poll(cx) {
            Poll::Ready(Ok(())) => {
                self.expired = None;
                self.done = None;
                self.page_limit = None;
                Poll::Ready(Some(Err(Error::Timeout { timeout_ms: self.timeout_ms })))
            }
            // The watchdog is gone (runtime shutting down): rely on the query task alone.
            Poll::Ready(Err(_)) => {
                self.expired = None;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Stream for ResultStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done.is_none() {
            return Poll::Ready(None);
        }
        match self.batches.poll_recv(cx) {
            Poll::Pending => return self.poll_expired(cx),
            Poll::Ready(Some(batch)) => {
                self.rows += batch.num_rows();
                self.remember_last_key(&batch);
                return Poll::Ready(Some(Ok(batch)));
            }
            Poll::Ready(None) => {}
        }
        let Some(done) = self.done.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = match Pin::new(done).poll(cx) {
            Poll::Pending => return self.poll_expired(cx),
            Poll::Ready(Ok(outcome)) => outcome,
            Poll::Ready(Err(_)) => Err(Error::Internal("query task ended without an outcome".into())),
        };
        self.done = None;
        match outcome {
            Ok(()) => Poll::Ready(None),
            Err(e) => {
                // A truncated page has no next cursor.
                self.page_limit = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}
