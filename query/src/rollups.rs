//! Time-bucket aggregates answered from the engine's minute rollups (`engine/ROLLUPS.md`).
//!
//! Every readings file may carry a rollup: per `(buoy, metric, minute)` the count, sum, min,
//! max, first and last reading of its rows. `SELECT date_bin(INTERVAL '5 minutes', ts) AS t,
//! avg(value) FROM readings WHERE metric = 'ph' GROUP BY t` (or `time_bucket`, its alias) needs
//! nothing else from a file whose rows no other file, buffered chunk or tombstone touches (no
//! last-write-wins merge or delete changes them). Such an aggregate runs in three parts over the
//! query's one snapshot:
//!
//! 1. those files contribute their rollup buckets of the caller's buoys and the filters'
//!    metrics that lie within the window's whole minutes (the window is the filters' time range
//!    and the caller's earliest timestamp), binned to the query's width, without decoding their
//!    readings;
//! 2. the rest (files that overlap another generation or the live buffer, files a tombstone
//!    reaches, files without a rollup, and the buffer) is scanned by the caller's own
//!    aggregate, split into count, sum, min, max and first/last by `ts`, with those files left
//!    out of its `readings` scan (same table, policy and snapshot);
//! 3. the edge minutes (a window bound inside a minute) of the files of part 1 are scanned the
//!    same way from those files alone, without the buffer, and combined.
//!
//! The rewrite applies only where it cannot change an answer:
//! - one group term is `date_bin(<interval>, ts [, <origin>])` with an interval of whole
//!   minutes (no months) and an origin on a minute boundary (the default, the epoch, is one):
//!   then every minute bucket lies in exactly one output bucket; other group terms among
//!   `buoy_id` and `metric`, each at most once;
//! - every aggregate is `count` (of a column or a non-null literal), or `sum`/`avg`/`min`/`max`
//!   of `value`, with no `DISTINCT` or `FILTER`; or `first_value(value ORDER BY ts)` /
//!   `last_value(value ORDER BY ts)` when the groups include both `buoy_id` and `metric` (then
//!   no two rows of a group share a timestamp, so the answer is unique);
//! - between the aggregate and the scan only filters, aliases and bare-column projections, and
//!   every filter of the forms whose rows the catalog tells exactly (as for `crate::stats`).
//!
//! Sums and averages add per-minute sums, so they round differently from a scan (a few ulps
//! for same-signed values); counts, minimums, maximums, first and last values are exact. The
//! session option `bluewave.rollups` (from [`crate::QueryConfig::rollups`]) turns the rewrite
//! off; `EXPLAIN` names `RollupAggregate` when it applies, and `EXPLAIN ANALYZE` counts the
//! files and buckets taken from rollups and the rows scanned.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bluewave_engine::ReadFilter;
use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_TS, COLUMN_VALUE};
use bluewave_engine::rollup::{
    ROLLUP_BYTES_PER_BUCKET, ROLLUP_WIDTH_NS, RollupRows, decode_rollup, minute_of,
};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::expr_fn::{count, first_value, last_value, max, min, sum};
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, Filter, LogicalPlan, SortExpr, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore, col, lit,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use crate::stats::{exact_filter, exact_scan};
use crate::table::{READINGS, ReadingsTable, TS_TZ, column_name, timestamp_literal};

extensions_options! {
    /// BlueWave's own session options, under the `bluewave.` prefix.
    pub struct BlueWaveOptions {
        /// Answer time-bucket aggregates from minute rollups where they suffice
        /// (`bluewave.rollups`; default on). Off, every such aggregate scans readings.
        pub rollups: bool, default = true
    }
}

impl ConfigExtension for BlueWaveOptions {
    const PREFIX: &'static str = "bluewave";
}

/// What one aggregate of the caller's computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Hash)]
enum Kind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
}

/// A group term the rollups can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Hash)]
enum GroupColumn {
    /// The `date_bin` term.
    Bucket,
    Buoy,
    Metric,
}

/// `date_bin(stride, ts, origin)`, both in ns, each a whole number of minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Hash)]
struct Bucketing {
    stride: i64,
    origin: i64,
}

impl Bucketing {
    /// The output bucket of a minute (or of a timestamp).
    fn bin(&self, ts: i64) -> i64 {
        let diff = ts.saturating_sub(self.origin);
        self.origin.saturating_add(diff - diff.rem_euclid(self.stride))
    }
}

/// The logical node: the caller's aggregate, answered from rollups where they suffice. A leaf
/// for the optimizer (the aggregate inside is already optimized).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Hash)]
pub(crate) struct RollupAggregateNode {
    aggregate: LogicalPlan,
    group: Vec<GroupColumn>,
    kinds: Vec<Kind>,
    bucketing: Bucketing,
}

impl UserDefinedLogicalNodeCore for RollupAggregateNode {
    crate::scan::aggregate_leaf_node_methods!(
        "RollupAggregate",
        "RollupAggregate: minute rollups of files no merge touches, the rest scanned; {}"
    );
}

/// The optimizer rule that finds time-bucket aggregates the minute rollups can answer.
#[derive(Debug, Default)]
pub(crate) struct RollupAggregateRule;

impl OptimizerRule for RollupAggregateRule {
    fn name(&self) -> &str {
        "bluewave_rollup_aggregate"
    }

    fn rewrite(&self, plan: LogicalPlan, config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let on = config.options().extensions.get::<BlueWaveOptions>().is_none_or(|o| o.rollups);
        if !on {
            return Ok(Transformed::no(plan));
        }
        plan.transform_down_with_subqueries(|node| {
            if let LogicalPlan::Extension(e) = &node
                && e.node.as_any().downcast_ref::<RollupAggregateNode>().is_some()
            {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            let LogicalPlan::Aggregate(aggregate) = &node else { return Ok(Transformed::no(node)) };
            let Some((group, kinds, bucketing)) = rollup_shape(aggregate) else {
                return Ok(Transformed::no(node));
            };
            let rewritten = LogicalPlan::Extension(Extension {
                node: Arc::new(RollupAggregateNode { aggregate: node.clone(), group, kinds, bucketing }),
            });
            Ok(Transformed::new(rewritten, true, TreeNodeRecursion::Jump))
        })
    }
}

/// The `date_bin` parameters of a group term, when rollups can serve it.
fn bucketing_of(e: &Expr) -> Option<Bucketing> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::ScalarFunction(f) = e else { return None };
    // Our sessions register `date_bin` (and `time_bucket` as its alias) from DataFusion only.
    if f.func.name() != "date_bin" {
        return None;
    }
    let (stride, source, origin) = match f.args.as_slice() {
        [stride, source] => (stride, source, None),
        [stride, source, origin] => (stride, source, Some(origin)),
        _ => return None,
    };
    if column_name(source) != Some(COLUMN_TS) {
        return None;
    }
    let stride = match stride {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            i64::from(v.days).checked_mul(86_400_000_000_000)?.checked_add(v.nanoseconds)?
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => i64::from(v.days)
            .checked_mul(86_400_000_000_000)?
            .checked_add(i64::from(v.milliseconds) * 1_000_000)?,
        _ => return None,
    };
    let origin = match origin {
        None => 0,
        Some(o) => timestamp_literal(o)?,
    };
    (stride > 0 && stride % ROLLUP_WIDTH_NS == 0 && origin.rem_euclid(ROLLUP_WIDTH_NS) == 0)
        .then_some(Bucketing { stride, origin })
}

/// The aggregate kind of `e` when rollups can answer it.
fn kind_of(e: &Expr) -> Option<Kind> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = e else { return None };
    let p = &f.params;
    if p.distinct || p.filter.is_some() {
        return None;
    }
    let on_value = matches!(p.args.as_slice(), [a] if column_name(a) == Some(COLUMN_VALUE));
    let by_ts = |ascending: bool| matches!(p.order_by.as_slice(), [SortExpr { expr, asc, .. }] if column_name(expr) == Some(COLUMN_TS) && *asc == ascending);
    match f.func.name() {
        "first_value" if on_value && by_ts(true) => return Some(Kind::First),
        "first_value" if on_value && by_ts(false) => return Some(Kind::Last),
        "last_value" if on_value && by_ts(true) => return Some(Kind::Last),
        "last_value" if on_value && by_ts(false) => return Some(Kind::First),
        _ => {}
    }
    if !p.order_by.is_empty() {
        return None;
    }
    match f.func.name() {
        // No column of `readings` is ever null: a count of any column counts rows.
        "count" => match p.args.as_slice() {
            [Expr::Column(_)] => Some(Kind::Count),
            [Expr::Literal(v, _)] if !v.is_null() => Some(Kind::Count),
            _ => None,
        },
        "sum" if on_value => Some(Kind::Sum),
        "avg" if on_value => Some(Kind::Avg),
        "min" if on_value => Some(Kind::Min),
        "max" if on_value => Some(Kind::Max),
        _ => None,
    }
}

fn output_type(kind: Kind) -> DataType {
    match kind {
        Kind::Count => DataType::Int64,
        _ => DataType::Float64,
    }
}

/// `(group terms, kinds, bucketing)` when rollups can answer `aggregate`.
fn rollup_shape(aggregate: &Aggregate) -> Option<(Vec<GroupColumn>, Vec<Kind>, Bucketing)> {
    let mut group = Vec::new();
    let mut bucketing = None;
    for g in &aggregate.group_expr {
        let column = match column_name(g) {
            Some(COLUMN_BUOY_ID) => GroupColumn::Buoy,
            Some(COLUMN_METRIC) => GroupColumn::Metric,
            Some(_) => return None,
            None => {
                bucketing = Some(bucketing_of(g)?);
                GroupColumn::Bucket
            }
        };
        if group.contains(&column) {
            return None;
        }
        group.push(column);
    }
    let bucketing = bucketing?;
    if aggregate.aggr_expr.is_empty() {
        return None;
    }
    let kinds: Vec<Kind> = aggregate.aggr_expr.iter().map(kind_of).collect::<Option<_>>()?;
    let unique_ts = group.contains(&GroupColumn::Buoy) && group.contains(&GroupColumn::Metric);
    if kinds.iter().any(|k| matches!(k, Kind::First | Kind::Last)) && !unique_ts {
        return None;
    }
    let mut filters = Vec::new();
    exact_scan(&aggregate.input, &mut filters)?;
    if !filters.iter().all(exact_filter) {
        return None;
    }
    // The output is built here: its types must be the ones DataFusion planned.
    let fields = aggregate.schema.fields();
    let groups = group.len();
    let types_match = fields.len() == groups + kinds.len()
        && group.iter().zip(fields.iter()).all(|(g, f)| match g {
            GroupColumn::Bucket => matches!(f.data_type(), DataType::Timestamp(TimeUnit::Nanosecond, _)),
            _ => f.data_type() == &DataType::Utf8,
        })
        && kinds.iter().zip(&fields[groups..]).all(|(k, f)| f.data_type() == &output_type(*k));
    types_match.then_some((group, kinds, bucketing))
}

/// Plans [`RollupAggregateNode`]s.
#[derive(Debug, Default)]
pub(crate) struct RollupAggregatePlanner;

#[async_trait]
impl ExtensionPlanner for RollupAggregatePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<RollupAggregateNode>() else { return Ok(None) };
        let state = crate::scan::session_state(session, "RollupAggregate")?;
        Ok(Some(Arc::new(RollupAggregateExec::new(node.clone(), state.clone()))))
    }
}

/// Runs a [`RollupAggregateNode`]: one partition.
pub(crate) struct RollupAggregateExec {
    node: RollupAggregateNode,
    state: SessionState,
    properties: Arc<PlanProperties>,
    /// `files_from_rollups`, `buckets_from_rollups`, `files_scanned` and `rows_scanned`, for
    /// `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for RollupAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollupAggregateExec").field("kinds", &self.node.kinds).finish_non_exhaustive()
    }
}

impl RollupAggregateExec {
    fn new(node: RollupAggregateNode, state: SessionState) -> Self {
        let properties =
            crate::scan::final_single_partition(Arc::new(node.aggregate.schema().as_arrow().clone()));
        Self { node, state, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for RollupAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group: Vec<&str> = self
            .node
            .group
            .iter()
            .map(|g| match g {
                GroupColumn::Bucket => "bucket",
                GroupColumn::Buoy => COLUMN_BUOY_ID,
                GroupColumn::Metric => COLUMN_METRIC,
            })
            .collect();
        write!(
            f,
            "RollupAggregateExec: bucket={}s origin={}, group_by=[{}], minute rollups of files no merge touches, the rest scanned",
            self.node.bucketing.stride / 1_000_000_000,
            self.node.bucketing.origin,
            group.join(", ")
        )
    }
}

impl ExecutionPlan for RollupAggregateExec {
    crate::scan::leaf_plan_methods!("RollupAggregateExec");

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RollupAggregateExec has one partition, not {partition}"
            )));
        }
        let run = Run {
            node: self.node.clone(),
            state: self.state.clone(),
            context,
            files: MetricBuilder::new(&self.metrics).counter("files_from_rollups", partition),
            buckets: MetricBuilder::new(&self.metrics).counter("buckets_from_rollups", partition),
            files_scanned: MetricBuilder::new(&self.metrics).counter("files_scanned", partition),
            rows_scanned: MetricBuilder::new(&self.metrics).counter("rows_scanned", partition),
        };
        let schema = self.properties.eq_properties.schema().clone();
        Ok(crate::scan::stream_of_answer(schema, run.run()))
    }
}

/// One output group's partial aggregate.
#[derive(Clone, Copy, Debug)]
struct Partial {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// `(ts, value)` of the earliest reading.
    first: (i64, f64),
    /// `(ts, value)` of the latest reading.
    last: (i64, f64),
}

impl Partial {
    fn merge(&mut self, other: &Partial) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 > self.last.0 {
            self.last = other.last;
        }
    }
}

/// An output group: bucket start, then the buoy and metric when grouped by them (else empty).
type GroupKey = (i64, Arc<str>, Arc<str>);

/// Bytes one output group is counted for in the query's memory pool: its key (8 and two
/// shared names, 16 each, plus their text when new), its partial (56) and its share of the
/// map's nodes. Rounded up; not measured per allocation.
const GROUP_BYTES: usize = 192;

/// The output groups so far, their memory held in the query's pool (the policy's
/// `memory_max_bytes`): too many groups end the query with a memory-limit error, as
/// DataFusion's own aggregate would.
struct Groups {
    map: BTreeMap<GroupKey, Partial>,
    memory: MemoryReservation,
}

impl Groups {
    fn add(&mut self, key: GroupKey, part: Partial) -> DfResult<()> {
        match self.map.get_mut(&key) {
            Some(g) => g.merge(&part),
            None => {
                self.memory.try_grow(GROUP_BYTES)?;
                self.map.insert(key, part);
            }
        }
        Ok(())
    }
}

/// First minute boundary at or after `t`.
fn ceil_minute(t: i64) -> i64 {
    let floor = minute_of(t);
    if floor == t { t } else { floor.saturating_add(ROLLUP_WIDTH_NS) }
}

/// The whole minutes of a window `[start, end)`: `[ceil(start), floor(end))`. Rollup buckets
/// within it are taken whole; rows of taken files outside it (the edge minutes) are scanned.
fn whole_minutes(filter: &ReadFilter) -> (Option<i64>, Option<i64>) {
    (filter.start.map(ceil_minute), filter.end.map(minute_of))
}

struct Run {
    node: RollupAggregateNode,
    state: SessionState,
    context: Arc<TaskContext>,
    files: Count,
    buckets: Count,
    files_scanned: Count,
    rows_scanned: Count,
}

impl Run {
    async fn run(self) -> DfResult<Vec<RecordBatch>> {
        let LogicalPlan::Aggregate(aggregate) = &self.node.aggregate else {
            return Err(DataFusionError::Internal("RollupAggregate lost its aggregate".into()));
        };
        let mut filters = Vec::new();
        let scan = exact_scan(&aggregate.input, &mut filters)
            .ok_or_else(|| DataFusionError::Internal("RollupAggregate lost its readings scan".into()))?;
        let provider = source_as_provider(&scan.source)?;
        let table = (provider.as_ref() as &dyn Any)
            .downcast_ref::<ReadingsTable>()
            .ok_or_else(|| DataFusionError::Internal("RollupAggregate scan is not readings".into()))?;
        let snapshot = table.snapshot();

        let mut groups = Groups {
            map: BTreeMap::new(),
            memory: MemoryConsumer::new("RollupAggregate").register(self.context.memory_pool()),
        };
        let mut taken: HashSet<u64> = HashSet::new();
        // Rows of taken files in the window but outside its whole minutes: scanned.
        let mut edges: Vec<Expr> = Vec::new();
        if let Some(read_filter) = table.read_filter(&filters)? {
            let selected = snapshot.select_files(&read_filter);
            let merge_buoys: HashSet<&str> =
                selected.iter().flat_map(|f| f.merge_buoys.iter().map(|b| &**b)).collect();
            let mut rollups = Vec::new();
            for file in &selected {
                let Some(rollup) = &file.meta.rollup else { continue };
                if !file.merge_buoys.is_empty() || merge_buoys.iter().any(|b| file.meta.has_buoy(b)) {
                    continue;
                }
                taken.insert(file.meta.id);
                rollups.push((snapshot.rollup_path(rollup), rollup.buckets, rollup.bytes));
            }
            self.files_scanned.add(selected.len() - taken.len());
            let whole = whole_minutes(&read_filter);
            let ts_literal = |t: i64| lit(ScalarValue::TimestampNanosecond(Some(t), Some(TS_TZ.into())));
            if let (Some(start), Some(inner)) = (read_filter.start, whole.0)
                && inner > start
            {
                edges.push(col(COLUMN_TS).lt(ts_literal(inner)));
            }
            if let (Some(end), Some(inner)) = (read_filter.end, whole.1)
                && inner < end
            {
                edges.push(col(COLUMN_TS).gt_eq(ts_literal(inner)));
            }
            // Rollup files are small (a few percent of their readings): read whole, off the
            // async threads, one after the other so at most one is held at a time.
            for (path, buckets, bytes) in rollups {
                // Held in the query's memory pool while decoded (checked before reading).
                let held =
                    (buckets as usize).saturating_mul(ROLLUP_BYTES_PER_BUCKET).saturating_add(bytes as usize);
                groups.memory.try_grow(held)?;
                let rows = tokio::task::spawn_blocking(move || -> DfResult<RollupRows> {
                    let bytes = std::fs::read(&path).map_err(|e| {
                        DataFusionError::Execution(format!("rollup file {}: {e}", path.display()))
                    })?;
                    decode_rollup(bytes.into()).map_err(|e| {
                        DataFusionError::Execution(format!("rollup file {}: {e}", path.display()))
                    })
                })
                .await
                .map_err(|e| DataFusionError::Execution(format!("rollup reader: {e}")))??;
                self.files.add(1);
                self.add_rollup(&rows, &read_filter, whole, &mut groups)?;
                drop(rows);
                groups.memory.shrink(held);
            }
        }
        // The rest, through the same table without the taken files (all of them when none
        // was), buffer included.
        let rest = Arc::new(table.excluding(taken.clone()));
        self.scan_into(aggregate, rest, None, &mut groups).await?;
        // The edge minutes of the taken files: those files alone (no merge touches them), no
        // buffer, only rows outside the window's whole minutes.
        if !taken.is_empty()
            && let Some(edge) = edges.into_iter().reduce(Expr::or)
        {
            let only = Arc::new(table.only_files(taken));
            self.scan_into(aggregate, only, Some(edge), &mut groups).await?;
        }
        Ok(vec![self.output(groups.map)?])
    }

    /// Runs the caller's aggregate over `table` (in place of `readings`, rows also filtered
    /// by `extra`) split into partials, and merges them into `groups`.
    async fn scan_into(
        &self,
        aggregate: &Aggregate,
        table: Arc<ReadingsTable>,
        extra: Option<Expr>,
        groups: &mut Groups,
    ) -> DfResult<()> {
        let mut input = aggregate
            .input
            .as_ref()
            .clone()
            .transform_down(|p| match p {
                LogicalPlan::TableScan(mut scan) if scan.table_name.table() == READINGS => {
                    scan.source = provider_as_source(table.clone());
                    Ok(Transformed::new(LogicalPlan::TableScan(scan), true, TreeNodeRecursion::Jump))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        if let Some(predicate) = extra {
            input = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?);
        }
        // A `count(*)`-only aggregate may have had `value` projected away: its value partials
        // are then constants nobody reads; so are the first/last partials (ordered aggregates
        // cost a scan more) when no first/last is asked for.
        let schema = input.schema();
        let has = |name: &str| schema.has_column_with_unqualified_name(name);
        let value = if has(COLUMN_VALUE) { col(COLUMN_VALUE) } else { lit(0f64) };
        let ordered = self.node.kinds.iter().any(|k| matches!(k, Kind::First | Kind::Last));
        let no_ts = || lit(ScalarValue::TimestampNanosecond(Some(0), None));
        let (ts_first, first, ts_last, last) = if ordered && has(COLUMN_TS) && has(COLUMN_VALUE) {
            let by_ts = || vec![col(COLUMN_TS).sort(true, false)];
            (
                min(col(COLUMN_TS)),
                first_value(value.clone(), by_ts()),
                max(col(COLUMN_TS)),
                last_value(value.clone(), by_ts()),
            )
        } else {
            (min(no_ts()), min(lit(0f64)), max(no_ts()), max(lit(0f64)))
        };
        // Named apart: the constants above would otherwise give two columns one name.
        let partials = [
            count(lit(1i64)),
            sum(value.clone()),
            min(value.clone()),
            max(value),
            ts_first,
            first,
            ts_last,
            last,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("bluewave_partial_{i}")))
        .collect::<Vec<_>>();
        let rest = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(input),
            aggregate.group_expr.clone(),
            partials,
        )?);
        // Planned without the logical optimizer: its input is optimized already, and the rules
        // must not rewrite this aggregate again.
        let physical = self.state.query_planner().create_physical_plan(&rest, &self.state).await?;
        let n = self.node.group.len();
        for batch in collect(physical, self.context.clone()).await? {
            let bucket_column = self.node.group.iter().position(|g| *g == GroupColumn::Bucket).unwrap_or(0);
            let buckets =
                cast(batch.column(bucket_column), &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
            let buckets = buckets.as_primitive::<TimestampNanosecondType>();
            let names = |g: GroupColumn| -> DfResult<Option<ArrayRef>> {
                match self.node.group.iter().position(|x| *x == g) {
                    Some(i) => Ok(Some(cast(batch.column(i), &DataType::Utf8)?)),
                    None => Ok(None),
                }
            };
            let (buoys, metrics) = (names(GroupColumn::Buoy)?, names(GroupColumn::Metric)?);
            let counts = batch.column(n).as_primitive::<Int64Type>();
            let float = |i: usize| batch.column(n + i).as_primitive::<Float64Type>();
            let (sums, mins, maxs) = (float(1), float(2), float(3));
            let time = |i: usize| -> DfResult<ArrayRef> {
                Ok(cast(batch.column(n + i), &DataType::Timestamp(TimeUnit::Nanosecond, None))?)
            };
            let (first_ts, last_ts) = (time(4)?, time(6)?);
            let (first_ts, last_ts) = (
                first_ts.as_primitive::<TimestampNanosecondType>(),
                last_ts.as_primitive::<TimestampNanosecondType>(),
            );
            let (firsts, lasts) = (float(5), float(7));
            for row in 0..batch.num_rows() {
                let rows = counts.value(row);
                if rows <= 0 || buckets.is_null(row) {
                    continue;
                }
                let name = |a: &Option<ArrayRef>| -> Arc<str> {
                    a.as_ref().map_or_else(|| Arc::from(""), |a| Arc::from(a.as_string::<i32>().value(row)))
                };
                let key = (buckets.value(row), name(&buoys), name(&metrics));
                let part = Partial {
                    count: rows as u64,
                    sum: sums.value(row),
                    min: mins.value(row),
                    max: maxs.value(row),
                    first: (first_ts.value(row), firsts.value(row)),
                    last: (last_ts.value(row), lasts.value(row)),
                };
                groups.add(key, part)?;
                self.rows_scanned.add(rows as usize);
            }
        }
        Ok(())
    }

    /// Adds the buckets of a taken file's rollup that `filter` (the query's filters and the
    /// caller's policy) keeps: its buoys and metrics, and minutes within `whole`, the window's
    /// whole minutes.
    fn add_rollup(
        &self,
        rows: &RollupRows,
        filter: &ReadFilter,
        whole: (Option<i64>, Option<i64>),
        groups: &mut Groups,
    ) -> DfResult<()> {
        let buoys = filter.buoy_set();
        let wanted = |names: &[Arc<str>], set: Option<&HashSet<&str>>| -> Vec<bool> {
            names.iter().map(|n| set.is_none_or(|s| s.contains(&**n))).collect()
        };
        let buoy_ok = wanted(&rows.buoy_names, buoys.as_ref());
        let metric_set: Option<HashSet<&str>> =
            filter.metrics.as_ref().map(|m| m.iter().map(String::as_str).collect());
        let metric_ok = wanted(&rows.metric_names, metric_set.as_ref());
        let by_buoy = self.node.group.contains(&GroupColumn::Buoy);
        let by_metric = self.node.group.contains(&GroupColumn::Metric);
        let empty: Arc<str> = Arc::from("");
        for i in 0..rows.len() {
            let (b, m) = (rows.buoy_keys[i] as usize, rows.metric_keys[i] as usize);
            if !buoy_ok.get(b).copied().unwrap_or(false) || !metric_ok.get(m).copied().unwrap_or(false) {
                continue;
            }
            let minute = rows.minutes[i];
            if whole.0.is_some_and(|s| minute < s) || whole.1.is_some_and(|e| minute >= e) {
                continue;
            }
            let key = (
                self.node.bucketing.bin(rows.minutes[i]),
                if by_buoy { rows.buoy_names[b].clone() } else { empty.clone() },
                if by_metric { rows.metric_names[m].clone() } else { empty.clone() },
            );
            let part = Partial {
                count: rows.counts[i],
                sum: rows.sums[i],
                min: rows.mins[i],
                max: rows.maxs[i],
                first: (rows.first_ts[i], rows.first_values[i]),
                last: (rows.last_ts[i], rows.last_values[i]),
            };
            groups.add(key, part)?;
            self.buckets.add(1);
        }
        Ok(())
    }

    /// The caller's aggregate output from the groups' combined partials.
    fn output(&self, groups: BTreeMap<GroupKey, Partial>) -> DfResult<RecordBatch> {
        let schema = Arc::new(self.node.aggregate.schema().as_arrow().clone());
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (g, field) in self.node.group.iter().zip(schema.fields()) {
            columns.push(match g {
                GroupColumn::Bucket => {
                    let DataType::Timestamp(_, tz) = field.data_type() else {
                        return Err(DataFusionError::Internal("bucket column is not a timestamp".into()));
                    };
                    let values = TimestampNanosecondArray::from_iter_values(groups.keys().map(|k| k.0));
                    Arc::new(values.with_timezone_opt(tz.clone())) as ArrayRef
                }
                GroupColumn::Buoy => Arc::new(StringArray::from_iter_values(groups.keys().map(|k| &*k.1))),
                GroupColumn::Metric => Arc::new(StringArray::from_iter_values(groups.keys().map(|k| &*k.2))),
            });
        }
        for kind in &self.node.kinds {
            let float = |f: fn(&Partial) -> f64| -> ArrayRef {
                Arc::new(groups.values().map(|p| Some(f(p))).collect::<Float64Array>())
            };
            columns.push(match kind {
                Kind::Count => {
                    Arc::new(groups.values().map(|p| p.count as i64).collect::<Int64Array>()) as ArrayRef
                }
                Kind::Sum => float(|p| p.sum),
                Kind::Avg => float(|p| p.sum / p.count as f64),
                Kind::Min => float(|p| p.min),
                Kind::Max => float(|p| p.max),
                Kind::First => float(|p| p.first.1),
                Kind::Last => float(|p| p.last.1),
            });
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bin_like_date_bin_before_and_after_the_origin() {
        let minute = ROLLUP_WIDTH_NS;
        let b = Bucketing { stride: 5 * minute, origin: 2 * minute };
        assert_eq!(b.bin(2 * minute), 2 * minute);
        assert_eq!(b.bin(6 * minute), 2 * minute);
        assert_eq!(b.bin(7 * minute), 7 * minute);
        assert_eq!(b.bin(minute), -3 * minute);
        assert_eq!(b.bin(-3 * minute), -3 * minute);
    }
}
