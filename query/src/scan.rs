//! Execution plans of the `readings` scan.
//!
//! - [`ReadingsScanExec`]: the leaf DataFusion sees. It owns the engine snapshot for as long as
//!   any of its streams runs (files replaced by compaction are deleted only after the last
//!   snapshot drops) and hides its inner plan from the optimizer, so the policy filter inside
//!   can never be moved or removed.
//!
//! Files that need merging (time overlap, pending tombstones) and the live buffer go through
//! `crate::merge::MergeExec`; everything else is read by DataFusion's Parquet scan as is.

use std::fmt;
use std::sync::Arc;

use bluewave_engine::Snapshot;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, SchedulingType};
use datafusion::physical_plan::metrics::MetricsSet;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::policy::{AccessPolicy, BuoyScope};

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
