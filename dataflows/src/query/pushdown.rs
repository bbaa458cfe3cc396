//! GROUP BY before the joins ("eager aggregation"): when every aggregate
//! is SUM, COUNT or AVG of the first table's columns, that table's rows
//! are added up first, per the columns anything else reads of it (join
//! keys, the filter, the group keys), and the partial [`Totals`] join the
//! other tables as the updates' differences: a joined row counts its
//! partial totals times its own multiplicity. A change of a position's
//! summary then re-joins one partial row per position, not every lot.
//!
//! The answer is the same as joining first: the filter and the group keys
//! read only columns that are constant within a partial row, and an
//! argument that fails to evaluate is carried in the totals, so it is
//! reported only if its rows survive the joins and the filter.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

use super::expr::Expr;
use super::fold::Columns;
use super::plan::{Grouping, Plan};
use super::reader::Reader;
use super::tables::MissingTable;
use super::totals::{GroupTotals, Totals};
use super::value::{EvalError, Row, Value};
use crate::engine::{Diff, Time};

/// A collection whose differences are partial totals.
type Partial<'scope, D> = VecCollection<'scope, Time, D, Totals>;

/// The columns of the first table that anything but the aggregates reads.
fn residual_columns(plan: &Plan, width: usize) -> Vec<usize> {
    let mut read = Columns::NONE;
    for expr in plan.exprs_beside_aggregates() {
        expr.visit_columns(&mut |i| {
            if i < width {
                read = read.with(i);
            }
        });
    }
    (0..width).filter(|i| read.has(*i)).collect()
}

/// True when the plan can take its totals before its joins: it joins, and
/// every aggregate argument reads the first table only.
pub(super) fn applies(plan: &Plan, grouping: &Grouping) -> bool {
    let Some(width) = plan.sources.get(1).map(|s| s.offset) else {
        return false;
    };
    grouping
        .aggregates
        .iter()
        .filter_map(|a| a.arg.as_ref())
        .all(|arg| arg.reads_only(&(0..width)))
}

/// The rows a partial total stands for (an error on it counts as many).
fn partial_rows(totals: &Totals) -> Diff {
    totals.rows() as Diff
}

/// The group keys of the joined rows, with their partial totals as the
/// differences (to be summed by `accumulate_totals`).
pub(super) fn grouped_totals<'scope>(
    plan: &Plan,
    grouping: &Grouping,
    reader: &mut Reader<'_, 'scope>,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
) -> Result<Partial<'scope, Row>, MissingTable> {
    let columns = plan.columns_read();
    let (Some(first), Some(width)) = (plan.sources.first(), plan.sources.get(1).map(|s| s.offset))
    else {
        return Err(MissingTable("(none)"));
    };
    // 1. The first table added up per its residual columns.
    let residual = residual_columns(plan, width);
    let keys = residual.iter().map(|i| Expr::Column(*i)).collect();
    let fold = GroupTotals::new(None, keys, &grouping.aggregates).deferring_errors();
    let partial = reader.rows_fold(first.table, columns[0], fold)?;
    let partial = super::render::split(partial, errors);
    let mut rows: Partial<'scope, Row> = partial
        .inner
        .map(move |((values, totals), time, _)| {
            let mut row = vec![Value::Null; width];
            for (i, value) in residual.iter().zip(values) {
                row[*i] = value;
            }
            (row, time, totals)
        })
        .as_collection();
    // 2. Each join: partial totals times the joined rows' multiplicities.
    for ((join, source), columns) in plan.joins.iter().zip(&plan.sources[1..]).zip(&columns[1..]) {
        let right = reader.rows(source.table, *columns)?;
        rows = super::render::join_rows(rows, right, join, errors, partial_rows);
    }
    // 3. The filter and the group keys over the joined rows.
    let filter = plan.filter.clone();
    let group_keys = grouping.keys.clone();
    let keyed =
        rows.flat_map(
            move |row| match filter.as_ref().map(|f| super::render::passes(f, &row)) {
                Some(Ok(false)) => None,
                Some(Err(error)) => Some(Err(error)),
                None | Some(Ok(true)) => Some(super::render::eval_all(&group_keys, &row)),
            },
        );
    Ok(super::render::split_weighted(keyed, errors, partial_rows))
}
