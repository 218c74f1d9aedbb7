//! Execution plans of the `readings` scan.
//!
//! - [`ReadingsScanExec`]: the leaf DataFusion sees. It owns the engine snapshot for as long as
//!   any of its streams runs (files replaced by compaction are deleted only after the last
//!   snapshot drops) and hides its inner plan from the optimizer, so the policy filter inside
//!   can never be moved or removed.
//! - [`MergeExec`]: files that need merging (time overlap, pending tombstones) and the live
//!   buffer, merged by last-write-wins with tombstones applied; everything else is read by
//!   DataFusion's Parquet scan as is.

use std::fmt;
use std::sync::Arc;

use bluewave_engine::{Chunk, Precedence, ReadFilter, SelectedFile, Snapshot, Storage, decode_partition};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringBuilder, TimestampNanosecondArray, UInt8Array,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::policy::{AccessPolicy, BuoyScope};
use crate::table::{COL_BUOY, COL_METRIC, COL_QUALITY, COL_TS, COL_VALUE, TS_TZ};

/// Plan properties of a leaf that answers in one partition, all at the end (an aggregate this
/// crate runs itself).
pub(crate) fn final_single_partition(schema: SchemaRef) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The batches `run` returns, or its error, as a stream: for a leaf that computes its whole
/// answer before emitting it.
pub(crate) fn stream_of_answer(
    schema: SchemaRef,
    run: impl std::future::Future<Output = DfResult<Vec<RecordBatch>>> + Send + 'static,
) -> SendableRecordBatchStream {
    let batches = futures::stream::once(run)
        .map(|r| match r {
            Ok(batches) => futures::stream::iter(batches.into_iter().map(Ok)).left_stream(),
            Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// The `SessionState` behind an extension planner's session (`node` names the plan for the
/// error).
pub(crate) fn session_state<'a>(
    session: &'a dyn datafusion::catalog::Session,
    node: &str,
) -> DfResult<&'a datafusion::execution::context::SessionState> {
    session
        .as_any()
        .downcast_ref::<datafusion::execution::context::SessionState>()
        .ok_or_else(|| DataFusionError::Internal(format!("{node} needs a SessionState")))
}

/// The `ExecutionPlan` methods every leaf plan of this crate shares (name, properties in a
/// `properties` field, no children, no expressions to rewrite).
macro_rules! leaf_plan_methods {
    ($name:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            Vec::new()
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            )
                -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion>,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            if children.is_empty() {
                Ok(self)
            } else {
                Err(datafusion::error::DataFusionError::Internal(concat!($name, " is a leaf").into()))
            }
        }
    };
}
pub(crate) use leaf_plan_methods;

/// The `UserDefinedLogicalNodeCore` methods of this crate's logical nodes that wrap an already
/// optimized aggregate (field `aggregate`) and are leaves to the optimizer: named `$name`, no
/// inputs or expressions, the aggregate's schema, and `$explain` (a format string given the
/// aggregate's display) in `EXPLAIN`.
macro_rules! aggregate_leaf_node_methods {
    ($name:literal, $explain:literal) => {
        fn name(&self) -> &str {
            $name
        }

        fn inputs(&self) -> Vec<&datafusion::logical_expr::LogicalPlan> {
            Vec::new()
        }

        fn schema(&self) -> &datafusion::common::DFSchemaRef {
            self.aggregate.schema()
        }

        fn expressions(&self) -> Vec<datafusion::logical_expr::Expr> {
            Vec::new()
        }

        fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, $explain, self.aggregate.display())
        }

        fn with_exprs_and_inputs(
            &self,
            exprs: Vec<datafusion::logical_expr::Expr>,
            inputs: Vec<datafusion::logical_expr::LogicalPlan>,
        ) -> datafusion::error::Result<Self> {
            if exprs.is_empty() && inputs.is_empty() {
                Ok(self.clone())
            } else {
                Err(datafusion::error::DataFusionError::Internal(
                    concat!($name, " takes no expressions or inputs").into(),
                ))
            }
        }
    };
}
pub(crate) use aggregate_leaf_node_methods;

/// What a scan chose, shown by `EXPLAIN`. Counts are within the caller's policy only.
#[derive(Clone, Debug)]
pub(crate) struct ScanSummary {
    /// Files the catalog selected for the query.
    pub files_selected: usize,
    /// Files the policy allows that the query's filters pruned.
    pub files_pruned: usize,
    /// Selected files some of whose rows are merged (overlap or pending tombstones) rather
    /// than scanned as is.
    pub files_merged: usize,
    /// Buoys whose rows are merged.
    pub buoys_merged: usize,
    /// Buffered chunks merged in.
    pub buffer_chunks: usize,
    /// The policy, summarised.
    pub policy: String,
}

impl ScanSummary {
    pub(crate) fn nothing_visible(policy: &AccessPolicy) -> Self {
        Self {
            files_selected: 0,
            files_pruned: 0,
            files_merged: 0,
            buoys_merged: 0,
            buffer_chunks: 0,
            policy: Self::describe_policy(policy),
        }
    }

    pub(crate) fn describe_policy(policy: &AccessPolicy) -> String {
        let buoys = match &policy.buoys {
            BuoyScope::All => "all".to_owned(),
            BuoyScope::Only(set) => format!("{} granted", set.len()),
        };
        match policy.earliest_ts {
            Some(t) => format!("buoys={buoys} earliest_ts={t}"),
            None => format!("buoys={buoys}"),
        }
    }
}

/// The leaf of every `readings` scan.
#[derive(Debug)]
pub(crate) struct ReadingsScanExec {
    inner: Arc<dyn ExecutionPlan>,
    snapshot: Arc<Snapshot>,
    summary: ScanSummary,
    properties: Arc<PlanProperties>,
}

impl ReadingsScanExec {
    pub(crate) fn new(inner: Arc<dyn ExecutionPlan>, snapshot: Arc<Snapshot>, summary: ScanSummary) -> Self {
        let partitions = inner.properties().output_partitioning().partition_count();
        let properties = Arc::new(
            PlanProperties::new(
                EquivalenceProperties::new(inner.schema()),
                Partitioning::UnknownPartitioning(partitions),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )
            .with_scheduling_type(SchedulingType::Cooperative),
        );
        Self { inner, snapshot, summary, properties }
    }
}

impl DisplayAs for ReadingsScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "ReadingsScanExec: policy=[{}], files_selected={}, files_pruned={}, files_merged={}, buoys_merged={}, buffer_chunks={}, partitions={}",
            s.policy,
            s.files_selected,
            s.files_pruned,
            s.files_merged,
            s.buoys_merged,
            s.buffer_chunks,
            self.properties.output_partitioning().partition_count()
        )
    }
}

impl ExecutionPlan for ReadingsScanExec {
    crate::scan::leaf_plan_methods!("ReadingsScanExec");

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let stream = self.inner.execute(partition, context)?;
        let snapshot = self.snapshot.clone();
        let schema = stream.schema();
        // The snapshot lives as long as the stream: its files stay on disk until then.
        let held = stream.map(move |batch| {
            let _ = &snapshot;
            batch
        });
        // Cooperative: the stream spends tokio's task budget, so CPU-bound plans above it still
        // yield and a query's timeout fires promptly.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(schema, held))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        self.inner.metrics()
    }
}

/// Merges the files that need it with the buffer: one partition.
#[derive(Debug)]
pub(crate) struct MergeExec {
    storage: Arc<dyn Storage>,
    snapshot: Arc<Snapshot>,
    files: Vec<SelectedFile>,
    file_buoys: Arc<[Arc<str>]>,
    chunks: Vec<Arc<Chunk>>,
    filter: ReadFilter,
    schema: SchemaRef,
    columns: Vec<usize>,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl MergeExec {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        snapshot: Arc<Snapshot>,
        files: Vec<SelectedFile>,
        file_buoys: Vec<Arc<str>>,
        chunks: Vec<Arc<Chunk>>,
        filter: ReadFilter,
        schema: SchemaRef,
        columns: Vec<usize>,
        batch_rows: usize,
    ) -> Self {
        let file_buoys = file_buoys.into();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self { storage, snapshot, files, file_buoys, chunks, filter, schema, columns, batch_rows, properties }
    }
}

impl DisplayAs for MergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MergeExec: files={}, file_buoys={}, buffer_chunks={}",
            self.files.len(),
            self.file_buoys.len(),
            self.chunks.len()
        )
    }
}

impl ExecutionPlan for MergeExec {
    crate::scan::leaf_plan_methods!("MergeExec");

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("MergeExec has one partition, not {partition}")));
        }
        let reservation = MemoryConsumer::new("ReadingsMerge").register(context.memory_pool());
        let job = MergeJob {
            storage: self.storage.clone(),
            snapshot: self.snapshot.clone(),
            files: self.files.clone(),
            file_buoys: self.file_buoys.clone(),
            chunks: self.chunks.clone(),
            filter: self.filter.clone(),
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            batch_rows: self.batch_rows,
        };
        let schema = self.schema.clone();
        let batches = futures::stream::once(async move {
            // Decoding files is blocking work: keep it off the async workers.
            let merged = tokio::task::spawn_blocking(move || job.run(reservation))
                .await
                .map_err(|e| DataFusionError::Internal(format!("merge task failed: {e}")))??;
            Ok::<_, DataFusionError>(futures::stream::iter(merged.into_iter().map(Ok)))
        })
        .map(|r| match r {
            Ok(s) => s.left_stream(),
            Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// Approximate bytes one merged candidate row holds (key pointers, ts, precedence, value…).
const MERGE_ROW_BYTES: usize = 64;

/// One candidate row of the merge.
struct Candidate {
    buoy: Arc<str>,
    metric: Arc<str>,
    ts: i64,
    /// Last-write-wins precedence (the engine's one rule).
    precedence: Precedence,
    /// Arrival order, for rows of one batch naming a key twice (the later wins).
    order: u64,
    value: f64,
    quality: u8,
}

struct MergeJob {
    storage: Arc<dyn Storage>,
    snapshot: Arc<Snapshot>,
    files: Vec<SelectedFile>,
    /// Sorted: the buoys whose file rows are merged (the plain scan reads the others).
    file_buoys: Arc<[Arc<str>]>,
    chunks: Vec<Arc<Chunk>>,
    filter: ReadFilter,
    schema: SchemaRef,
    columns: Vec<usize>,
    batch_rows: usize,
}

impl MergeJob {
    fn keeps(&self, buoy: &str, metric: &str, ts: i64) -> bool {
        self.keeps_range(ts, ts) && self.keeps_buoy(buoy) && self.keeps_metric(metric)
    }

    /// True when rows from `lo` to `hi` (inclusive) may lie within the filter's time window.
    fn keeps_range(&self, lo: i64, hi: i64) -> bool {
        let f = &self.filter;
        f.start.is_none_or(|s| hi >= s) && f.end.is_none_or(|e| lo < e)
    }

    fn keeps_buoy(&self, buoy: &str) -> bool {
        self.filter.buoys.as_ref().is_none_or(|b| b.iter().any(|x| x == buoy))
    }

    fn keeps_metric(&self, metric: &str) -> bool {
        self.filter.metrics.as_ref().is_none_or(|m| m.iter().any(|x| x == metric))
    }

    fn grow(reservation: &mut MemoryReservation, rows: usize) -> DfResult<()> {
        reservation.try_grow(rows.saturating_mul(MERGE_ROW_BYTES))
    }

    fn run(self, mut reservation: MemoryReservation) -> DfResult<Vec<RecordBatch>> {
        let mut rows: Vec<Candidate> = Vec::new();
        let mut order = 0u64;
        for selected in &self.files {
            let path = self.snapshot.file_path(&selected.meta);
            let bytes = self.storage.read(&path).map_err(|e| DataFusionError::External(Box::new(e)))?;
            Self::grow(&mut reservation, usize::try_from(selected.meta.rows).unwrap_or(usize::MAX))?;
            let file = decode_partition(bytes.into()).map_err(|e| DataFusionError::External(Box::new(e)))?;
            for i in 0..file.len() {
                let (Some(buoy), Some(metric)) = (
                    file.buoy_names.get(file.buoy_keys[i] as usize),
                    file.metric_names.get(file.metric_keys[i] as usize),
                ) else {
                    return Err(DataFusionError::Internal("partition row outside its dictionary".into()));
                };
                let ts = file.timestamps[i];
                if !self.keeps(buoy, metric, ts)
                    || self.file_buoys.binary_search(buoy).is_err()
                    || selected.tombstones.iter().any(|t| t.covers(buoy, metric, ts))
                {
                    continue;
                }
                order += 1;
                rows.push(Candidate {
                    buoy: buoy.clone(),
                    metric: metric.clone(),
                    ts,
                    precedence: Precedence::file(selected.meta.generation),
                    order,
                    value: file.values[i],
                    quality: file.quality[i],
                });
            }
        }
        let tombstones = &self.snapshot.view.tombstones;
        for chunk in &self.chunks {
            // Decided once per dictionary entry, not per row: a one-buoy query over a large
            // buffer skips every other buoy's rows by one array lookup each.
            let buoy_kept: Vec<bool> = chunk
                .buoy_names
                .iter()
                .enumerate()
                .map(|(k, b)| {
                    let (lo, hi) = chunk.buoy_ranges.get(k).copied().unwrap_or((chunk.ts_min, chunk.ts_max));
                    self.keeps_buoy(b) && self.keeps_range(lo, hi)
                })
                .collect();
            if !buoy_kept.iter().any(|&k| k) {
                continue;
            }
            let metric_kept: Vec<bool> = chunk.metric_names.iter().map(|m| self.keeps_metric(m)).collect();
            let before = rows.len();
            for i in 0..chunk.len() {
                let (buoy_key, metric_key) = (chunk.buoy_keys[i] as usize, chunk.metric_keys[i] as usize);
                if !buoy_kept.get(buoy_key).copied().unwrap_or(false)
                    || !metric_kept.get(metric_key).copied().unwrap_or(false)
                {
                    continue;
                }
                let (Some(buoy), Some(metric)) =
                    (chunk.buoy_names.get(buoy_key), chunk.metric_names.get(metric_key))
                else {
                    return Err(DataFusionError::Internal("buffered row outside its dictionary".into()));
                };
                let ts = chunk.timestamps[i];
                if !self.keeps_range(ts, ts) {
                    continue;
                }
                let seq = chunk.seqs[i];
                if tombstones.iter().any(|t| t.seq > seq && t.covers(buoy, metric, ts)) {
                    continue;
                }
                order += 1;
                rows.push(Candidate {
                    buoy: buoy.clone(),
                    metric: metric.clone(),
                    ts,
                    precedence: Precedence::buffered(seq),
                    order,
                    value: chunk.values[i],
                    quality: chunk.quality[i],
                });
            }
            // Only what this chunk added is held: the buffer's other rows cost the query nothing.
            Self::grow(&mut reservation, rows.len() - before)?;
        }
        // Last write wins: sort by key, precedence and arrival; within a key each candidate then
        // `replaces` the one before it (ties in precedence go to the later arrival).
        rows.sort_unstable_by(|a, b| {
            (&a.buoy, &a.metric, a.ts, a.precedence, a.order).cmp(&(
                &b.buoy,
                &b.metric,
                b.ts,
                b.precedence,
                b.order,
            ))
        });
        let mut winners: Vec<Candidate> = Vec::with_capacity(rows.len());
        for row in rows {
            match winners.last_mut() {
                Some(last) if last.buoy == row.buoy && last.metric == row.metric && last.ts == row.ts => {
                    if row.precedence.replaces(last.precedence) {
                        *last = row
                    }
                }
                _ => winners.push(row),
            }
        }
        let mut batches = Vec::with_capacity(winners.len().div_ceil(self.batch_rows.max(1)));
        for part in winners.chunks(self.batch_rows.max(1)) {
            batches.push(self.batch(part)?);
        }
        // The reservation is released here; the batches are accounted by their consumers.
        drop(reservation);
        Ok(batches)
    }

    fn batch(&self, rows: &[Candidate]) -> DfResult<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for &c in &self.columns {
            let array: ArrayRef = match c {
                COL_BUOY | COL_METRIC => {
                    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 12);
                    for r in rows {
                        b.append_value(if c == COL_BUOY { &*r.buoy } else { &*r.metric });
                    }
                    Arc::new(b.finish())
                }
                COL_TS => Arc::new(
                    TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.ts))
                        .with_timezone(TS_TZ),
                ),
                COL_VALUE => Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.value))),
                COL_QUALITY => Arc::new(UInt8Array::from_iter_values(rows.iter().map(|r| r.quality))),
                other => return Err(DataFusionError::Internal(format!("no readings column {other}"))),
            };
            arrays.push(array);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}
