//! Latest-row aggregates read the newest data first.
//!
//! `SELECT buoy_id, last_value(value ORDER BY ts) FROM readings … GROUP BY buoy_id` (and the
//! same grouped by `metric`, or by both) needs, for every group, only its row with the largest
//! `ts`. The catalog knows where each buoy's newest data lies (per-buoy time ranges of every
//! file and buffered chunk, [`bluewave_engine::Snapshot::newest_window`]), so such an
//! aggregate runs in widening rounds, newest first:
//!
//! 1. round 0 covers the last slice of the buoys' newest sources (an eighth of their median
//!    span, at least a minute, ending where nine buoys in ten have data): every group with a
//!    row there has its final answer, since its newest row is in that window;
//! 2. while the catalog shows older sources that may hold a group no round found (a buoy that
//!    went silent, a sparse metric, a filter only older rows pass, deleted newest rows), the
//!    next round covers the time just before the previous window, eight times wider, for
//!    just those groups' buoys (or metrics), keeping only rows of groups not yet found;
//!    the last of [`ROUNDS_MAX`] rounds has no lower bound.
//!
//! A group's rows above a round's window were all read by earlier rounds (the groups a round
//! looks for only ever shrink), so the first round that shows a group shows its newest row.
//! Each round is the caller's own aggregate with a time filter added to its `readings` scan,
//! so the policy, last-write-wins and tombstones apply exactly as in any scan; rows can only
//! come from those scans. Both rounds read one snapshot (the query's, see `ReadingsTable`).
//!
//! The rewrite applies only where it cannot change an answer: grouping by bare `buoy_id` /
//! `metric` columns; every aggregate `last_value(e ORDER BY ts)`, `first_value(e ORDER BY ts
//! DESC)` or `max(ts)` with no `DISTINCT`, `FILTER` or `IGNORE NULLS`; and between the
//! aggregate and the scan only filters, aliases and projections of bare columns (no limit,
//! join or window). Anything else runs as DataFusion plans it.

use bluewave_engine::columns::{COLUMN_BUOY_ID, COLUMN_METRIC, COLUMN_TS};
use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bluewave_engine::ReadFilter;
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    Aggregate, Expr, Extension, LogicalPlan, TableScan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
    col, lit,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, collect};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};

use crate::table::{READINGS, ReadingsTable, TS_TZ, column_name};

/// A grouping column of a rewritten aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum GroupColumn {
    Buoy,
    Metric,
}

/// The logical node: the caller's aggregate, run newest data first. A leaf for the optimizer
/// (the aggregate inside is already optimized and is planned round by round at run time).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Hash)]
pub(crate) struct NewestFirstNode {
    aggregate: LogicalPlan,
    /// The aggregate's group columns, in output order (its first columns).
    groups: Vec<GroupColumn>,
}

impl UserDefinedLogicalNodeCore for NewestFirstNode {
    crate::scan::aggregate_leaf_node_methods!(
        "NewestFirst",
        "NewestFirst: newest data first, older rows only for groups not found; {}"
    );
}

/// The optimizer rule that finds latest-row aggregates over `readings`.
#[derive(Debug, Default)]
pub(crate) struct NewestFirstRule;

impl OptimizerRule for NewestFirstRule {
    fn name(&self) -> &str {
        "bluewave_newest_first"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        plan.transform_down_with_subqueries(|node| {
            if let LogicalPlan::Extension(e) = &node
                && e.node.as_any().downcast_ref::<NewestFirstNode>().is_some()
            {
                return Ok(Transformed::new(node, false, TreeNodeRecursion::Jump));
            }
            let LogicalPlan::Aggregate(aggregate) = &node else { return Ok(Transformed::no(node)) };
            let Some(groups) = latest_row_groups(aggregate) else { return Ok(Transformed::no(node)) };
            let rewritten = LogicalPlan::Extension(Extension {
                node: Arc::new(NewestFirstNode { aggregate: node.clone(), groups }),
            });
            Ok(Transformed::new(rewritten, true, TreeNodeRecursion::Jump))
        })
    }
}

/// True when `e` only reads the row it is given: no subquery, nothing volatile.
pub(crate) fn row_local(e: &Expr) -> bool {
    !e.is_volatile()
        && !e
            .exists(|x| {
                Ok(matches!(
                    x,
                    Expr::ScalarSubquery(_)
                        | Expr::Exists(_)
                        | Expr::InSubquery(_)
                        | Expr::OuterReferenceColumn(..)
                ))
            })
            .unwrap_or(true)
}

/// True for an aggregate whose answer for a group is decided by the group's newest row alone.
fn latest_row_aggregate(e: &Expr) -> bool {
    let e = match e {
        Expr::Alias(a) => a.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(f) = e else { return false };
    let p = &f.params;
    if p.distinct
        || p.filter.is_some()
        || matches!(p.null_treatment, Some(datafusion::logical_expr::expr::NullTreatment::IgnoreNulls))
        || !p.args.iter().all(row_local)
    {
        return false;
    }
    // Our sessions register no user functions, so these names are DataFusion's own.
    let by_ts = |asc: bool| matches!(p.order_by.as_slice(), [s] if s.asc == asc && column_name(&s.expr) == Some(COLUMN_TS));
    match f.func.name() {
        "last_value" => p.args.len() == 1 && by_ts(true),
        "first_value" => p.args.len() == 1 && by_ts(false),
        "max" => {
            p.order_by.is_empty() && matches!(p.args.as_slice(), [a] if column_name(a) == Some(COLUMN_TS))
        }
        _ => false,
    }
}

/// The `readings` scan under `plan` through filters, aliases and bare-column projections.
fn readings_scan(plan: &LogicalPlan) -> Option<&TableScan> {
    match plan {
        LogicalPlan::Filter(f) if row_local(&f.predicate) => readings_scan(&f.input),
        LogicalPlan::SubqueryAlias(a) => readings_scan(&a.input),
        LogicalPlan::Projection(p)
            if p.expr.iter().all(|e| column_name(e).is_some())
                && p.expr.iter().zip(p.schema.fields()).all(|(e, f)| column_name(e) == Some(f.name())) =>
        {
            readings_scan(&p.input)
        }
        LogicalPlan::TableScan(scan) if scan.fetch.is_none() && scan.table_name.table() == READINGS => {
            let provider = source_as_provider(&scan.source).ok()?;
            (provider.as_ref() as &dyn Any).downcast_ref::<ReadingsTable>().map(|_| scan)
        }
        _ => None,
    }
}

/// The group columns when `aggregate` can run newest data first.
fn latest_row_groups(aggregate: &Aggregate) -> Option<Vec<GroupColumn>> {
    if aggregate.group_expr.is_empty() || !aggregate.aggr_expr.iter().all(latest_row_aggregate) {
        return None;
    }
    readings_scan(&aggregate.input)?;
    let groups: Option<Vec<GroupColumn>> = aggregate
        .group_expr
        .iter()
        .map(|g| match column_name(g) {
            Some(COLUMN_BUOY_ID) => Some(GroupColumn::Buoy),
            Some(COLUMN_METRIC) => Some(GroupColumn::Metric),
            _ => None,
        })
        .collect();
    let groups = groups?;
    // Each column once: the key sets below index by column kind.
    let distinct: BTreeSet<GroupColumn> = groups.iter().copied().collect();
    (distinct.len() == groups.len()).then_some(groups)
}

/// Plans [`NewestFirstNode`]s; everything else is DataFusion's.
#[derive(Debug, Default)]
pub(crate) struct NewestFirstPlanner;

#[async_trait]
impl ExtensionPlanner for NewestFirstPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        _planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<NewestFirstNode>() else { return Ok(None) };
        let state = crate::scan::session_state(session, "NewestFirst")?;
        Ok(Some(Arc::new(NewestFirstExec::new(node.clone(), state.clone()))))
    }
}

/// The session's query planner: DataFusion's, with [`NewestFirstPlanner`] and
/// [`crate::stats::CatalogAggregatePlanner`].
#[derive(Debug, Default)]
pub(crate) struct BlueWavePlanner;

#[async_trait]
impl QueryPlanner for BlueWavePlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![
            Arc::new(NewestFirstPlanner),
            Arc::new(crate::stats::CatalogAggregatePlanner),
            Arc::new(crate::rollups::RollupAggregatePlanner),
        ])
        .create_physical_plan(logical_plan, session)
        .await
    }
}

/// Runs a [`NewestFirstNode`]: one partition, the rounds one after the other.
pub(crate) struct NewestFirstExec {
    node: NewestFirstNode,
    state: SessionState,
    properties: Arc<PlanProperties>,
    /// `rounds` run (1 or 2) and `older_buoys` (buoys read again in round 2), for
    /// `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for NewestFirstExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewestFirstExec").field("groups", &self.node.groups).finish_non_exhaustive()
    }
}

impl NewestFirstExec {
    fn new(node: NewestFirstNode, state: SessionState) -> Self {
        let properties =
            crate::scan::final_single_partition(Arc::new(node.aggregate.schema().as_arrow().clone()));
        Self { node, state, properties, metrics: ExecutionPlanMetricsSet::new() }
    }
}

impl DisplayAs for NewestFirstExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<&str> = self
            .node
            .groups
            .iter()
            .map(|g| match g {
                GroupColumn::Buoy => COLUMN_BUOY_ID,
                GroupColumn::Metric => COLUMN_METRIC,
            })
            .collect();
        write!(
            f,
            "NewestFirstExec: groups=[{}], rounds planned at run time from the catalog",
            groups.join(", ")
        )
    }
}

impl ExecutionPlan for NewestFirstExec {
    crate::scan::leaf_plan_methods!("NewestFirstExec");

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "NewestFirstExec has one partition, not {partition}"
            )));
        }
        let rounds = Rounds {
            node: self.node.clone(),
            state: self.state.clone(),
            context,
            rounds: MetricBuilder::new(&self.metrics).counter("rounds", partition),
            older_buoys: MetricBuilder::new(&self.metrics).counter("older_buoys", partition),
        };
        let schema = self.properties.eq_properties.schema().clone();
        Ok(crate::scan::stream_of_answer(schema, rounds.run()))
    }
}

/// Round 0 covers this fraction of the median time span of the buoys' newest sources (a
/// flush's worth of data), ending where nine buoys in ten have data.
const FIRST_WINDOW_DIVISOR: i64 = 8;
/// Round 0 covers at least this much time: 1 minute.
const FIRST_WINDOW_MIN_NS: i64 = 60_000_000_000;
/// Each later round's window is this many times wider than the one before.
const WIDENING_FACTOR: i64 = 8;
/// Most rounds; the last one reads everything older that is still needed.
const ROUNDS_MAX: usize = 6;

/// Group keys found so far: buoy (or "" when not grouped by buoy) -> metrics (or "").
type Found = HashMap<String, HashSet<String>>;

struct Rounds {
    node: NewestFirstNode,
    state: SessionState,
    context: Arc<TaskContext>,
    rounds: Count,
    older_buoys: Count,
}

impl Rounds {
    fn groups_by(&self, column: GroupColumn) -> bool {
        self.node.groups.contains(&column)
    }

    async fn run(self) -> DfResult<Vec<RecordBatch>> {
        let scan = match &self.node.aggregate {
            LogicalPlan::Aggregate(a) => readings_scan(&a.input),
            _ => None,
        }
        .ok_or_else(|| DataFusionError::Internal("NewestFirst lost its readings scan".into()))?;
        let provider = source_as_provider(&scan.source)?;
        let table = (provider.as_ref() as &dyn Any)
            .downcast_ref::<ReadingsTable>()
            .ok_or_else(|| DataFusionError::Internal("NewestFirst scan is not readings".into()))?;
        let snapshot = table.snapshot();
        let read_filter = table.read_filter(&scan.filters)?;
        let window = read_filter.as_ref().and_then(|f| snapshot.newest_window(f).map(|w| (f, w)));
        let Some((read_filter, window)) = window else {
            // Nothing within the filter and policy: the aggregate as planned (no rows).
            return self.round(Vec::new()).await;
        };
        let at = |t: i64| lit(ScalarValue::TimestampNanosecond(Some(t), Some(TS_TZ.into())));
        let (by_buoy, by_metric) = (self.groups_by(GroupColumn::Buoy), self.groups_by(GroupColumn::Metric));
        let wanted_metric = |m: &str| read_filter.metrics.as_ref().is_none_or(|w| w.iter().any(|x| x == m));

        // Round 0 covers the last slice of the buoys' newest sources; each later round covers
        // the [lo, hi) before the previous one, WIDENING_FACTOR times wider, for the groups
        // still missing only; the last round has no lower bound.
        let mut width = (window.span / FIRST_WINDOW_DIVISOR).max(FIRST_WINDOW_MIN_NS);
        let mut lo = Some(window.end.saturating_sub(width)).filter(|&t| t > window.earliest);
        let mut hi: Option<i64> = None;
        let mut found = Found::new();
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut restrict: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
        for round in 0..ROUNDS_MAX {
            if round + 1 == ROUNDS_MAX {
                lo = None;
            }
            let mut filters = Vec::new();
            if let Some(t) = lo {
                filters.push(col(COLUMN_TS).gt_eq(at(t)));
            }
            if let Some(t) = hi {
                filters.push(col(COLUMN_TS).lt(at(t)));
            }
            if let Some((buoys, metrics)) = &restrict {
                if by_buoy {
                    filters.push(
                        col(COLUMN_BUOY_ID).in_list(buoys.iter().map(|b| lit(b.as_str())).collect(), false),
                    );
                }
                if by_metric {
                    filters.push(
                        col(COLUMN_METRIC).in_list(metrics.iter().map(|m| lit(m.as_str())).collect(), false),
                    );
                }
            }
            for batch in self.round(filters).await? {
                // Rows of groups an earlier (newer) round answered are older: dropped.
                let kept = if found.is_empty() {
                    batch
                } else {
                    filter_record_batch(&batch, &self.not_found(&batch, &found)?)?
                };
                if kept.num_rows() > 0 {
                    self.add_keys(&kept, &mut found)?;
                    out.push(kept);
                }
            }
            let Some(below) = lo else { break };
            // Groups that sources before this round's window may hold and no round found.
            let older = ReadFilter {
                end: Some(read_filter.end.map_or(below, |e| e.min(below))),
                ..read_filter.clone()
            };
            let (mut buoys, mut metrics) = (BTreeSet::<String>::new(), BTreeSet::<String>::new());
            snapshot.for_each_buoy_source(&older, |buoy, _, _, source_metrics| {
                let known = found.get(if by_buoy { &**buoy } else { "" });
                if !by_metric {
                    if known.is_none() {
                        buoys.insert(buoy.to_string());
                    }
                    return;
                }
                for m in source_metrics.iter().filter(|m| wanted_metric(m)) {
                    if !known.is_some_and(|set| set.contains(&**m)) {
                        buoys.insert(buoy.to_string());
                        metrics.insert(m.to_string());
                    }
                }
            });
            if buoys.is_empty() {
                break;
            }
            self.older_buoys.add(buoys.len());
            width = width.saturating_mul(WIDENING_FACTOR);
            hi = Some(below);
            lo = Some(below.saturating_sub(width)).filter(|&t| t > window.earliest);
            restrict = Some((buoys, metrics));
        }
        Ok(out)
    }

    /// The aggregate with `filters` added to its `readings` scan, planned and run to the end.
    async fn round(&self, filters: Vec<Expr>) -> DfResult<Vec<RecordBatch>> {
        self.rounds.add(1);
        let mut extra = Some(filters);
        let plan = self
            .node
            .aggregate
            .clone()
            .transform_down(|p| match p {
                LogicalPlan::TableScan(mut scan) if scan.table_name.table() == READINGS => {
                    // Straight into the scan's filters: `ReadingsTable` applies every pushed
                    // filter exactly, so nothing above needs to re-check these.
                    scan.filters.extend(extra.take().unwrap_or_default());
                    Ok(Transformed::new(LogicalPlan::TableScan(scan), true, TreeNodeRecursion::Jump))
                }
                other => Ok(Transformed::no(other)),
            })?
            .data;
        // Planned without the logical optimizer: the aggregate is optimized already, and this
        // rule must not rewrite its own rounds.
        let physical = self.state.query_planner().create_physical_plan(&plan, &self.state).await?;
        collect(physical, self.context.clone()).await
    }

    /// The group columns of a batch as text, one array per group column.
    fn key_columns(&self, batch: &RecordBatch) -> DfResult<Vec<Arc<dyn Array>>> {
        (0..self.node.groups.len()).map(|i| Ok(cast(batch.column(i), &DataType::Utf8)?)).collect()
    }

    /// The `(buoy, metric)` key of row `row` ("" for a column not grouped by).
    fn key<'a>(&self, columns: &'a [Arc<dyn Array>], row: usize) -> (&'a str, &'a str) {
        let (mut buoy, mut metric) = ("", "");
        for (column, group) in columns.iter().zip(&self.node.groups) {
            let text = column.as_string::<i32>();
            let value = if text.is_null(row) { "" } else { text.value(row) };
            match group {
                GroupColumn::Buoy => buoy = value,
                GroupColumn::Metric => metric = value,
            }
        }
        (buoy, metric)
    }

    fn add_keys(&self, batch: &RecordBatch, found: &mut Found) -> DfResult<()> {
        let columns = self.key_columns(batch)?;
        for row in 0..batch.num_rows() {
            let (buoy, metric) = self.key(&columns, row);
            found.entry(buoy.to_owned()).or_default().insert(metric.to_owned());
        }
        Ok(())
    }

    fn not_found(&self, batch: &RecordBatch, found: &Found) -> DfResult<BooleanArray> {
        let columns = self.key_columns(batch)?;
        Ok((0..batch.num_rows())
            .map(|row| {
                let (buoy, metric) = self.key(&columns, row);
                Some(!found.get(buoy).is_some_and(|set| set.contains(metric)))
            })
            .collect())
    }
}
