//! Guards against runaway queries, beside the time budget, the stall limit and the memory pool
//! of [`AccessPolicy`](crate::AccessPolicy):
//!
//! - [`CappedSeries`] wraps DataFusion's `generate_series` and `range`: a call whose literal
//!   arguments ask for more rows than the policy's `table_function_rows_max` is refused at
//!   planning, before a row is made.
//! - [`YieldAboveJoins`] puts a yield point (DataFusion's `CooperativeExec`, which spends tokio's
//!   task budget per batch) above every join. A cross or nested-loop join emits many batches per
//!   input batch, and its inputs' yield points are not reached while it does; without this a
//!   runaway join holds a query worker until it ends, so neither its deadline nor other users'
//!   queries get the thread.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;

use crate::error::Error;

/// Nanoseconds in a day.
const DAY_NS: i128 = 86_400 * 1_000_000_000;
/// The shortest a calendar month can be, in days (for an upper bound on a series' rows).
const MONTH_DAYS_MIN: i128 = 28;

/// `generate_series` / `range` with a row cap checked from the arguments.
#[derive(Debug)]
pub(crate) struct CappedSeries {
    /// `generate_series` or `range`.
    name: &'static str,
    /// DataFusion's own implementation, called once the check passes.
    inner: Arc<dyn TableFunctionImpl>,
    rows_max: u64,
}

impl CappedSeries {
    /// Both series functions, capped at `rows_max` rows per call.
    pub(crate) fn both(rows_max: u64) -> [(&'static str, Arc<dyn TableFunctionImpl>); 2] {
        use datafusion::functions_table::generate_series::{GenerateSeriesFunc, RangeFunc};
        let capped = |name: &'static str, inner: Arc<dyn TableFunctionImpl>| {
            (name, Arc::new(Self { name, inner, rows_max }) as Arc<dyn TableFunctionImpl>)
        };
        [capped("generate_series", Arc::new(GenerateSeriesFunc {})), capped("range", Arc::new(RangeFunc {}))]
    }
}

impl TableFunctionImpl for CappedSeries {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        if series_rows_bound(args.exprs()).is_some_and(|rows| rows > u128::from(self.rows_max)) {
            let refused = Error::TableFunctionLimit { function: self.name, rows_max: self.rows_max };
            return Err(DataFusionError::External(Box::new(refused)));
        }
        self.inner.call_with_args(args)
    }
}

/// An upper bound on the rows of `generate_series(args)` (inclusive end; `range` makes at most
/// as many), or `None` when the arguments are not literals this check reads (DataFusion then
/// refuses them itself) or the series is empty. Integers: `(end)`, `(start, end)`,
/// `(start, end, step)`; timestamps and dates: `(start, end, interval)`, where a month counts as
/// its shortest (28 days), so the bound is never below the real count.
pub(crate) fn series_rows_bound(args: &[Expr]) -> Option<u128> {
    let literal = |i: usize| match args.get(i) {
        Some(Expr::Literal(value, _)) => Some(value),
        _ => None,
    };
    let (start, end, step) = match (literal(0)?, args.len()) {
        (ScalarValue::Int64(Some(end)), 1) => (0, i128::from(*end), 1),
        (ScalarValue::Int64(Some(start)), 2 | 3) => {
            let ScalarValue::Int64(Some(end)) = literal(1)? else { return None };
            let step = match literal(2) {
                None if args.len() == 2 => 1,
                Some(ScalarValue::Int64(Some(step))) => i128::from(*step),
                _ => return None,
            };
            (i128::from(*start), i128::from(*end), step)
        }
        (ScalarValue::TimestampNanosecond(Some(start), _), 3) => {
            let ScalarValue::TimestampNanosecond(Some(end), _) = literal(1)? else { return None };
            (i128::from(*start), i128::from(*end), interval_ns_min(literal(2)?)?)
        }
        (ScalarValue::Date32(Some(start)), 3) => {
            let ScalarValue::Date32(Some(end)) = literal(1)? else { return None };
            (i128::from(*start) * DAY_NS, i128::from(*end) * DAY_NS, interval_ns_min(literal(2)?)?)
        }
        _ => return None,
    };
    if step == 0 || (end - start).signum() * step.signum() < 0 {
        return None;
    }
    u128::try_from((end - start) / step + 1).ok()
}

/// The shortest span of an interval step, ns (negative for a descending series); `None` for
/// mixed signs, which this check does not bound.
fn interval_ns_min(value: &ScalarValue) -> Option<i128> {
    let ScalarValue::IntervalMonthDayNano(Some(interval)) = value else { return None };
    let parts = [i128::from(interval.months), i128::from(interval.days), i128::from(interval.nanoseconds)];
    if parts.iter().any(|p| *p > 0) && parts.iter().any(|p| *p < 0) {
        return None;
    }
    Some(parts[0] * MONTH_DAYS_MIN * DAY_NS + parts[1] * DAY_NS + parts[2])
}

/// Physical optimizer rule: a [`CooperativeExec`] above every join (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct YieldAboveJoins;

/// Operators that can emit many batches per batch they read.
const JOINS: [&str; 5] =
    ["CrossJoinExec", "NestedLoopJoinExec", "HashJoinExec", "SortMergeJoinExec", "SymmetricHashJoinExec"];

impl PhysicalOptimizerRule for YieldAboveJoins {
    fn name(&self) -> &str {
        "YieldAboveJoins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if JOINS.contains(&node.name()) {
                Ok(Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::lit;

    use super::*;

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(Some(ns), Some("UTC".into())))
    }

    fn interval(months: i32, days: i32, ns: i64) -> Expr {
        lit(ScalarValue::new_interval_mdn(months, days, ns))
    }

    #[test]
    fn integer_series_bounds_are_exact() {
        assert_eq!(series_rows_bound(&[lit(10i64)]), Some(11));
        assert_eq!(series_rows_bound(&[lit(1i64), lit(1_000_000_000_000i64)]), Some(1_000_000_000_000));
        assert_eq!(series_rows_bound(&[lit(1i64), lit(10i64), lit(3i64)]), Some(4));
        assert_eq!(series_rows_bound(&[lit(10i64), lit(1i64), lit(-1i64)]), Some(10));
        assert_eq!(series_rows_bound(&[lit(i64::MIN), lit(i64::MAX)]), Some(1 << 64));
        // Empty or invalid series are left to DataFusion.
        assert_eq!(series_rows_bound(&[lit(10i64), lit(1i64)]), None);
        assert_eq!(series_rows_bound(&[lit(1i64), lit(10i64), lit(0i64)]), None);
        assert_eq!(series_rows_bound(&[lit(1.5f64)]), None);
    }

    #[test]
    fn time_series_bounds_count_a_month_as_28_days() {
        let day = 86_400_000_000_000i64;
        assert_eq!(series_rows_bound(&[ts(0), ts(day), interval(0, 0, 1_000_000_000)]), Some(86_401));
        assert_eq!(series_rows_bound(&[ts(0), ts(10 * day), interval(0, 1, 0)]), Some(11));
        assert_eq!(series_rows_bound(&[ts(0), ts(56 * day), interval(1, 0, 0)]), Some(3));
        assert_eq!(series_rows_bound(&[ts(day), ts(0), interval(0, -1, 0)]), Some(2));
        assert_eq!(series_rows_bound(&[ts(0), ts(day), interval(1, -1, 0)]), None);
        let date = |d: i32| lit(ScalarValue::Date32(Some(d)));
        assert_eq!(series_rows_bound(&[date(0), date(365), interval(0, 7, 0)]), Some(53));
    }
}
