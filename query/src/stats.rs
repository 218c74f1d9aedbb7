//! Aggregates answered from the catalog's per-file statistics.
//!
//! Every partition file's catalog entry carries, per metric and per series (one buoy's one
//! metric), the count, sum, smallest and largest value of its rows
//! ([`bluewave_engine::MetricStats`], [`bluewave_engine::SeriesStats`], taken as the file is
//! written). `SELECT metric, count(*), avg(value) FROM readings GROUP BY metric`, the same
//! grouped by `buoy_id` or by both (fleet-wide top-N and per-buoy extremes: `SELECT buoy_id,
//! max(value) … WHERE metric = 'nitrate_mg_l' GROUP BY buoy_id ORDER BY 2 DESC LIMIT 10`), or
//! with no `GROUP BY`, needs nothing else from a file whose rows within the caller's buoys the
//! filters and the policy take whole in time, and that no last-write-wins merge or tombstone
//! touches. The buoys the policy and filters leave out are left out of the sums by the series
//! statistics: a caller sees the statistics of its own buoys only. Such an aggregate runs in
//! two parts over the query's one snapshot:
//!
//! 1. the files taken whole contribute their statistics, without being opened;
//! 2. the rest (files a filter cuts, files that need merging, the live buffer) is scanned by
//!    the caller's own aggregate, split into count, sum, min and max, with those files left
//!    out of its `readings` scan (the same table, policy and snapshot otherwise).
//!
//! The rewrite applies only where it cannot change an answer: group columns among `buoy_id`
//! and `metric` (each at most once); every aggregate `count` of a column or literal (no column of `readings` is ever
//! null) or `sum`/`avg`/`min`/`max` of `value`, with no `DISTINCT`, `FILTER` or `ORDER BY`;
//! between the aggregate and the scan only filters, aliases and bare-column projections; and
//! every filter of the forms whose rows the catalog can tell exactly (`buoy_id`/`metric`
//! equal to or in a list of literals, `ts` compared with or between timestamp literals, joined
//! by `AND`; `OR` only among equalities of one name column). Anything else is scanned as
//! DataFusion plans it. Sums are added in a different order than a scan's (as between two
//! scans split differently), so they carry order-dependent rounding (a few ulps for
//! same-signed values, more where large values cancel); counts, minimums and maximums are
//! exact.

use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_TS, COLUMN_VALUE};
use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bluewave_engine::{FileMeta, MetricStats, ReadFilter, SelectedFile};
use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, Extension, LogicalPlan, Operator, TableScan, UserDefinedLogicalNode,
    UserDefinedLogicalNodeCore, lit,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use crate::newest::row_local;
use crate::table::{READINGS, ReadingsTable, column_name, string_literal, timestamp_literal};

/// What one aggregate of the caller's computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Hash)]
enum Kind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// A group column statistics can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Hash)]
enum GroupColumn {
    Buoy,
    Metric,
}

/// The logical node: the caller's aggregate, answered from statistics where they suffice. A
/// leaf for the optimizer (the aggregate inside is already optimized).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Hash)]
pub(crate) struct CatalogAggregateNode {
    aggregate: LogicalPlan,
    /// The group columns, in output order (none: one group).
    group: Vec<GroupColumn>,
    /// The aggregates, in output order (after the group column).
    kinds: Vec<Kind>,
}

impl UserDefinedLogicalNodeCore for CatalogAggregateNode {
    crate::scan::aggregate_leaf_node_methods!(
        "CatalogAggregate",
        "CatalogAggregate: metric statistics of files taken whole, the rest scanned; {}"
    );
}

/// The optimizer rule that finds aggregates the catalog's statistics can answer.
#[derive(Debug, Default)]
pub(crate) struct CatalogAggregateRule;

impl OptimizerRule for CatalogAggregateRule {
    fn name(&self) -> &str {
        "bluewave_catalog_aggregate"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        plan.transform_down_with_subqueries(|node| {
            if let LogicalPlan::Extension(e) = &node
                && e.node.as_any().downcast_ref::<CatalogAggregateNode>().is_some()
            {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            let LogicalPlan::Aggregate(aggregate) = &node else { return Ok(Transformed::no(node)) };
            let Some((group, kinds)) = statistics_shape(aggregate) else {
                return Ok(Transformed::no(node));
            };
            let rewritten = LogicalPlan::Extension(Extension {
                node: Arc::new(CatalogAggregateNode { aggregate: node.clone(), group, kinds }),
            });
            Ok(Transformed::new(rewritten, true, TreeNodeRecursion::Jump))
        })
    }
}

/// The aggregate kind of `e` when statistics can answer it.
fn kind_of(e: &Expr) -> Option<Kind> {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = e else { return None };
    let p = &f.params;
    if p.distinct || p.filter.is_some() || !p.order_by.is_empty() {
        return None;
    }
    let on_value = matches!(p.args.as_slice(), [a] if column_name(a) == Some(COLUMN_VALUE));
    // Our sessions register no user aggregates, so these names are DataFusion's own.
    match f.func.name() {
        // No column of `readings` is ever null: a count of any column (or of a non-null
        // literal, as `count(*)` is planned) counts rows.
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

/// The output type each kind produces over `readings.value` (`Float64`).
fn output_type(kind: Kind) -> DataType {
    match kind {
        Kind::Count => DataType::Int64,
        _ => DataType::Float64,
    }
}

/// True when the rows `e` keeps are exactly those of its catalog narrowing.
pub(crate) fn exact_filter(e: &Expr) -> bool {
    exact_at(e, 0)
}

/// Deepest filter term looked at; anything deeper is not rewritten.
const EXACT_DEPTH_MAX: usize = 32;

fn exact_at(e: &Expr, depth: usize) -> bool {
    if depth >= EXACT_DEPTH_MAX {
        return false;
    }
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            exact_at(left, depth + 1) && exact_at(right, depth + 1)
        }
        Expr::BinaryExpr(BinaryExpr { op: Operator::Or, .. }) => {
            let mut columns = HashSet::new();
            name_equalities(e, &mut columns, depth) && columns.len() == 1
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, op, value) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, *op, right.as_ref()),
                (None, Some(c)) => match op.swap() {
                    Some(swapped) => (c, swapped, left.as_ref()),
                    None => return false,
                },
                _ => return false,
            };
            match column {
                COLUMN_BUOY_ID | COLUMN_METRIC => op == Operator::Eq && string_value(value),
                COLUMN_TS => {
                    matches!(op, Operator::Eq | Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq)
                        && timestamp_value(value)
                }
                _ => false,
            }
        }
        // What `WHERE true AND …` leaves when not simplified away.
        Expr::Literal(ScalarValue::Boolean(Some(true)), _) => true,
        Expr::InList(list) => {
            !list.negated
                && matches!(column_name(&list.expr), Some(COLUMN_BUOY_ID | COLUMN_METRIC))
                && list.list.iter().all(string_value)
        }
        Expr::Between(b) => {
            !b.negated
                && column_name(&b.expr) == Some(COLUMN_TS)
                && timestamp_value(&b.low)
                && timestamp_value(&b.high)
        }
        _ => false,
    }
}

/// True when `e` is `OR`s of `name column = string literal` terms; records the columns.
fn name_equalities<'a>(e: &'a Expr, columns: &mut HashSet<&'a str>, depth: usize) -> bool {
    if depth >= EXACT_DEPTH_MAX {
        return false;
    }
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
            name_equalities(left, columns, depth + 1) && name_equalities(right, columns, depth + 1)
        }
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
            let (column, value) = match (column_name(left), column_name(right)) {
                (Some(c), None) => (c, right.as_ref()),
                (None, Some(c)) => (c, left.as_ref()),
                _ => return false,
            };
            let known = matches!(column, COLUMN_BUOY_ID | COLUMN_METRIC) && string_value(value);
            columns.insert(column);
            known
        }
        _ => false,
    }
}

/// A string literal the catalog narrowing reads (the same function, so the two cannot differ).
fn string_value(e: &Expr) -> bool {
    string_literal(e).is_some()
}

/// A timestamp literal the catalog narrowing reads, in range as nanoseconds (the same
/// function: a literal it ignores is never taken for exact).
fn timestamp_value(e: &Expr) -> bool {
    timestamp_literal(e).is_some()
}

/// The `readings` scan under `plan` through exact filters, aliases and bare-column
/// projections, with every filter met on the way (the scan's own included).
pub(crate) fn exact_scan(plan: &LogicalPlan, filters: &mut Vec<Expr>) -> Option<TableScan> {
    match plan {
        LogicalPlan::Filter(f) if row_local(&f.predicate) => {
            filters.push(f.predicate.clone());
            exact_scan(&f.input, filters)
        }
        LogicalPlan::SubqueryAlias(a) => exact_scan(&a.input, filters),
        LogicalPlan::Projection(p)
            if p.expr.iter().all(|e| column_name(e).is_some())
                && p.expr.iter().zip(p.schema.fields()).all(|(e, f)| column_name(e) == Some(f.name())) =>
        {
            exact_scan(&p.input, filters)
        }
        LogicalPlan::TableScan(scan) if scan.fetch.is_none() && scan.table_name.table() == READINGS => {
            let provider = source_as_provider(&scan.source).ok()?;
            (provider.as_ref() as &dyn Any).downcast_ref::<ReadingsTable>()?;
            filters.extend(scan.filters.iter().cloned());
            Some(scan.clone())
        }
        _ => None,
    }
}

/// `(group columns, kinds)` when statistics can answer `aggregate`.
fn statistics_shape(aggregate: &Aggregate) -> Option<(Vec<GroupColumn>, Vec<Kind>)> {
    let mut group = Vec::new();
    for g in &aggregate.group_expr {
        let column = match column_name(g) {
            Some(COLUMN_BUOY_ID) => GroupColumn::Buoy,
            Some(COLUMN_METRIC) => GroupColumn::Metric,
            _ => return None,
        };
        if group.contains(&column) {
            return None;
        }
        group.push(column);
    }
    if aggregate.aggr_expr.is_empty() {
        return None;
    }
    let kinds: Vec<Kind> = aggregate.aggr_expr.iter().map(kind_of).collect::<Option<_>>()?;
    let mut filters = Vec::new();
    exact_scan(&aggregate.input, &mut filters)?;
    if !filters.iter().all(exact_filter) {
        return None;
    }
    // The output is built here: its types must be the ones DataFusion planned.
    let fields = aggregate.schema.fields();
    let groups = group.len();
    let types_match = fields.len() == groups + kinds.len()
        && fields[..groups].iter().all(|f| f.data_type() == &DataType::Utf8)
        && kinds.iter().zip(&fields[groups..]).all(|(k, f)| f.data_type() == &output_type(*k));
    types_match.then_some((group, kinds))
}

/// Plans [`CatalogAggregateNode`]s.
#[derive(Debug, Default)]
pub(crate) struct CatalogAggregatePlanner;

#[async_trait]
impl ExtensionPlanner for CatalogAggregatePlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<CatalogAggregateNode>() else { return Ok(None) };
        let state = crate::scan::session_state(session, "CatalogAggregate")?;
        Ok(Some(Arc::new(CatalogAggregateExec::new(node.clone(), state.clone()))))
    }
}

/// Runs a [`CatalogAggregateNode`]: one partition.
pub(crate) struct CatalogAggregateExec {
    node: CatalogAggregateNode,
    state: SessionState,
    properties: Arc<PlanProperties>,
    /// `files_from_statistics` and `rows_from_statistics` (answered from the catalog),
    /// `files_scanned` and `rows_scanned` (the rest's scan), for `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for CatalogAggregateExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogAggregateExec").field("kinds", &self.node.kinds).finish_non_exhaustive()
    }
}

impl CatalogAggregateExec {
    fn new(node: CatalogAggregateNode, state: SessionState) -> Self {
        let properties =
            crate::scan::final_single_partition(Arc::new(node.aggregate.schema().as_arrow().clone()));
        Self { node, state, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for CatalogAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CatalogAggregateExec: group_by=[{}], files taken whole answered from catalog statistics",
            self.node
                .group
                .iter()
                .map(|g| match g {
                    GroupColumn::Buoy => COLUMN_BUOY_ID,
                    GroupColumn::Metric => COLUMN_METRIC,
                })
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl ExecutionPlan for CatalogAggregateExec {
    crate::scan::leaf_plan_methods!("CatalogAggregateExec");

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "CatalogAggregateExec has one partition, not {partition}"
            )));
        }
        let run = Run {
            node: self.node.clone(),
            state: self.state.clone(),
            context,
            files: MetricBuilder::new(&self.metrics).counter("files_from_statistics", partition),
            rows: MetricBuilder::new(&self.metrics).counter("rows_from_statistics", partition),
            files_scanned: MetricBuilder::new(&self.metrics).counter("files_scanned", partition),
            rows_scanned: MetricBuilder::new(&self.metrics).counter("rows_scanned", partition),
        };
        let schema = self.properties.eq_properties.schema().clone();
        Ok(crate::scan::stream_of_answer(schema, run.run()))
    }
}

/// Which statistics of a file answer for it.
enum Source {
    /// Per metric: every row of the file is wanted and the aggregate is not grouped by buoy.
    Metrics,
    /// Per series, of the wanted buoys only.
    Series,
}

/// How `file` is answered from its statistics, when it can be: every row of the wanted buoys
/// lies within `filter`'s time window (metrics are picked from the statistics) and the entry
/// carries the statistics needed. `buoys` is the filter's buoy set (the policy's included).
fn taken_whole(
    file: &SelectedFile,
    filter: &ReadFilter,
    buoys: Option<&HashSet<&str>>,
    by_buoy: bool,
) -> Option<Source> {
    let meta: &FileMeta = &file.meta;
    let in_window =
        filter.start.is_none_or(|s| meta.ts_min >= s) && filter.end.is_none_or(|e| meta.ts_max < e);
    if !in_window {
        return None;
    }
    let all_buoys = buoys.is_none_or(|want| meta.buoys.iter().all(|b| want.contains(&**b)));
    if all_buoys && !by_buoy && !meta.metric_stats.is_empty() && meta.metric_stats.len() == meta.metrics.len()
    {
        return Some(Source::Metrics);
    }
    meta.has_series_stats().then_some(Source::Series)
}

struct Run {
    node: CatalogAggregateNode,
    state: SessionState,
    context: Arc<TaskContext>,
    files: Count,
    rows: Count,
    files_scanned: Count,
    rows_scanned: Count,
}

impl Run {
    async fn run(self) -> DfResult<Vec<RecordBatch>> {
        let LogicalPlan::Aggregate(aggregate) = &self.node.aggregate else {
            return Err(DataFusionError::Internal("CatalogAggregate lost its aggregate".into()));
        };
        let mut filters = Vec::new();
        let scan = exact_scan(&aggregate.input, &mut filters)
            .ok_or_else(|| DataFusionError::Internal("CatalogAggregate lost its readings scan".into()))?;
        let provider = source_as_provider(&scan.source)?;
        let table = (provider.as_ref() as &dyn Any)
            .downcast_ref::<ReadingsTable>()
            .ok_or_else(|| DataFusionError::Internal("CatalogAggregate scan is not readings".into()))?;
        let snapshot = table.snapshot();

        // Files taken whole: no merge touches them (their buoys need no last-write-wins and no
        // tombstone hides their rows) and the filters and policy keep every row.
        let mut groups: BTreeMap<Vec<String>, MetricStats> = BTreeMap::new();
        let mut whole: HashSet<u64> = HashSet::new();
        if let Some(read_filter) = table.read_filter(&filters)? {
            let selected = snapshot.select_files(&read_filter);
            let merge_buoys: HashSet<&str> =
                selected.iter().flat_map(|f| f.merge_buoys.iter().map(|b| &**b)).collect();
            let wanted_metric =
                |m: &str| read_filter.metrics.as_ref().is_none_or(|w| w.iter().any(|x| x == m));
            let buoys = read_filter.buoy_set();
            let by_buoy = self.node.group.contains(&GroupColumn::Buoy);
            for file in &selected {
                if !file.merge_buoys.is_empty() || merge_buoys.iter().any(|b| file.meta.has_buoy(b)) {
                    continue;
                }
                let Some(source) = taken_whole(file, &read_filter, buoys.as_ref(), by_buoy) else { continue };
                whole.insert(file.meta.id);
                self.files.add(1);
                let meta = &file.meta;
                let mut add = |buoy: &str, metric: &str, stats: &MetricStats| {
                    if wanted_metric(metric) {
                        groups.entry(self.group_key(buoy, metric)).or_insert(MetricStats::EMPTY).merge(stats);
                        self.rows.add(stats.rows as usize);
                    }
                };
                match source {
                    Source::Metrics => {
                        for (metric, stats) in meta.metrics.iter().zip(&meta.metric_stats) {
                            add("", metric, stats);
                        }
                    }
                    Source::Series => {
                        for series in &meta.series_stats {
                            let (Some(buoy), Some(metric)) = (
                                meta.buoys.get(series.buoy as usize),
                                meta.metrics.get(series.metric as usize),
                            ) else {
                                return Err(DataFusionError::Internal(format!(
                                    "catalog entry of file {} names a series outside its lists",
                                    meta.id
                                )));
                            };
                            if buoys.as_ref().is_none_or(|want| want.contains(&**buoy)) {
                                add(buoy, metric, &series.stats);
                            }
                        }
                    }
                }
            }
            self.files_scanned.add(selected.len() - whole.len());
        }
        // The rest, through the same table without those files (all of them when none was
        // taken whole): count, and sum, min and max of `value` when an aggregate needs them.
        let rest_table = Arc::new(table.excluding(whole));
        let input = aggregate
            .input
            .as_ref()
            .clone()
            .transform_down(|p| match p {
                LogicalPlan::TableScan(mut scan) if scan.table_name.table() == READINGS => {
                    scan.source = provider_as_source(rest_table.clone());
                    Ok(Transformed::new(LogicalPlan::TableScan(scan), true, TreeNodeRecursion::Jump))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        let value = aggregate.aggr_expr.iter().find_map(|e| {
            let e = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            match e {
                Expr::AggregateFunction(f) if f.func.name() != "count" => f.params.args.first().cloned(),
                _ => None,
            }
        });
        let mut partials = vec![count(lit(1i64))];
        if let Some(v) = &value {
            partials.extend([sum(v.clone()), datafusion::functions_aggregate::expr_fn::min(v.clone())]);
            partials.push(datafusion::functions_aggregate::expr_fn::max(v.clone()));
        }
        let rest = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::new(input),
            aggregate.group_expr.clone(),
            partials,
        )?);
        // Planned without the logical optimizer: its input is optimized already, and the rules
        // must not rewrite this aggregate again.
        let physical = self.state.query_planner().create_physical_plan(&rest, &self.state).await?;
        let groups_offset = self.node.group.len();
        for batch in collect(physical, self.context.clone()).await? {
            let keys: Vec<ArrayRef> = (0..groups_offset)
                .map(|i| cast(batch.column(i), &DataType::Utf8))
                .collect::<Result<_, _>>()?;
            let rows = batch.column(groups_offset).as_primitive::<Int64Type>();
            let float = |i: usize| -> Option<&Float64Array> {
                value.as_ref().map(|_| batch.column(groups_offset + i).as_primitive::<Float64Type>())
            };
            let (sums, mins, maxs) = (float(1), float(2), float(3));
            for row in 0..batch.num_rows() {
                let n = rows.value(row);
                if n <= 0 {
                    continue;
                }
                let key: Vec<String> =
                    keys.iter().map(|k| k.as_string::<i32>().value(row).to_owned()).collect();
                let part = MetricStats {
                    rows: n as u64,
                    sum: sums.map_or(0.0, |a| a.value(row)),
                    min: mins.map_or(0.0, |a| a.value(row)),
                    max: maxs.map_or(0.0, |a| a.value(row)),
                };
                groups.entry(key).or_insert(MetricStats::EMPTY).merge(&part);
                self.rows_scanned.add(n as usize);
            }
        }
        Ok(vec![self.output(groups)?])
    }

    /// The group of a row of `buoy` and `metric`: their names in the group columns' order.
    fn group_key(&self, buoy: &str, metric: &str) -> Vec<String> {
        self.node
            .group
            .iter()
            .map(|g| match g {
                GroupColumn::Buoy => buoy.to_owned(),
                GroupColumn::Metric => metric.to_owned(),
            })
            .collect()
    }

    /// The caller's aggregate output from the groups' combined statistics.
    fn output(&self, mut groups: BTreeMap<Vec<String>, MetricStats>) -> DfResult<RecordBatch> {
        let grouped = !self.node.group.is_empty();
        if !grouped && groups.is_empty() {
            // An aggregate with no GROUP BY answers one row even over no rows.
            groups.insert(Vec::new(), MetricStats::EMPTY);
        }
        let groups: Vec<(Vec<String>, MetricStats)> =
            groups.into_iter().filter(|(_, s)| s.rows > 0 || !grouped).collect();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for i in 0..self.node.group.len() {
            columns.push(Arc::new(StringArray::from_iter_values(
                groups.iter().map(|(k, _)| k.get(i).map_or("", String::as_str)),
            )));
        }
        for kind in &self.node.kinds {
            let some = |f: fn(&MetricStats) -> f64| -> ArrayRef {
                Arc::new(groups.iter().map(|(_, s)| (s.rows > 0).then(|| f(s))).collect::<Float64Array>())
            };
            columns.push(match kind {
                Kind::Count => {
                    Arc::new(groups.iter().map(|(_, s)| s.rows as i64).collect::<Int64Array>()) as ArrayRef
                }
                Kind::Sum => some(|s| s.sum),
                Kind::Avg => some(|s| s.sum / s.rows as f64),
                Kind::Min => some(|s| s.min),
                Kind::Max => some(|s| s.max),
            });
        }
        let schema = Arc::new(self.node.aggregate.schema().as_arrow().clone());
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}
