//! A [`Plan`] as differential operators over imported tables: equi-joins
//! with `join_map`, WHERE with `flat_map`, GROUP BY with running totals
//! (SUM / COUNT / AVG, [`accumulate_totals`]) or `reduce` (MIN / MAX),
//! ORDER BY ... LIMIT with [`top_k_live`]. A row an expression cannot
//! evaluate on becomes an error record instead.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::ToStream;
use timely::dataflow::Scope;

use super::accumulate::accumulate_totals;
use super::expr::{Accumulator, AggFunc, Expr};
use super::fixed_totals::{FixedTotals, FixedTotalsSpec, GroupTotalsCollection};
use super::fold::{fold_rows, MapRows, RowFold};
use super::live_top_k::top_k_live;
use super::plan::{Grouping, Join, OrderItem, Plan};
use super::pushdown;
use super::reader::{Reader, RenderError};
use super::tables::{ImportButton, MissingTable, Tables};
use super::totals::{GroupTotals, Totals};
use super::value::{EvalError, Row, Value};
use crate::engine::{Diff, Time};

/// A query's answer as collections: its rows, and the evaluation errors
/// met on the way (each with its multiplicity).
pub struct Rendered<'scope> {
    /// The answer (the select list's values per row).
    pub rows: VecCollection<'scope, Time, Row, Diff>,
    /// Errors (an answer with errors is not an answer).
    pub errors: VecCollection<'scope, Time, EvalError, Diff>,
    /// The imports' shutdown buttons: pressed on every worker, the query's
    /// dataflow finishes and is removed.
    pub shutdown: Vec<ImportButton>,
}

type Evaluated<T> = Result<T, EvalError>;

/// Splits a collection of results into values and errors, moving each
/// update to one of two outputs (no copy of the stream).
pub(super) fn split<'scope, T: differential_dataflow::Data>(
    results: VecCollection<'scope, Time, Evaluated<T>, Diff>,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
) -> VecCollection<'scope, Time, T, Diff> {
    split_weighted(results, errors, |diff| *diff)
}

/// [`split`] for any difference type: an error counts `rows(difference)`.
pub(super) fn split_weighted<'scope, T, R>(
    results: VecCollection<'scope, Time, Evaluated<T>, R>,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
    rows: fn(&R) -> Diff,
) -> VecCollection<'scope, Time, T, R>
where
    T: differential_dataflow::Data,
    R: differential_dataflow::difference::Semigroup + 'static,
{
    let mut parts = results
        .inner
        .partition(2, |(result, time, diff)| {
            (u64::from(result.is_err()), (result, time, diff))
        })
        .into_iter();
    let (Some(ok), Some(err)) = (parts.next(), parts.next()) else {
        unreachable!("partition(2) gives two streams")
    };
    errors.push(
        err.flat_map(move |(r, t, d)| r.err().map(|e| (e, t, rows(&d))))
            .as_collection(),
    );
    ok.flat_map(|(r, t, d)| r.ok().map(|v| (v, t, d)))
        .as_collection()
}

pub(super) fn eval_all(exprs: &[Expr], row: &[Value]) -> Evaluated<Row> {
    exprs.iter().map(|e| e.eval(row)).collect()
}

/// True when `filter` is TRUE on `row` (NULL and FALSE drop it).
pub(super) fn passes(filter: &Expr, row: &[Value]) -> Evaluated<bool> {
    Ok(*filter.eval_ref(row)? == Value::Bool(true))
}

/// Whether a row passes `filter`: `None` drops it (FALSE or NULL).
fn kept(filter: Option<&Expr>, row: &[Value]) -> Option<Evaluated<()>> {
    match filter.map(|f| passes(f, row)) {
        None | Some(Ok(true)) => Some(Ok(())),
        Some(Ok(false)) => None,
        Some(Err(e)) => Some(Err(e)),
    }
}

/// The sources joined, the combined rows read by `fold`. A single-table
/// plan folds inside the import itself, so no collection of whole rows is
/// ever built; every table's rows hold only the columns the plan reads.
fn folded<'scope, F: RowFold>(
    plan: &Plan,
    reader: &mut Reader<'_, 'scope>,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
    fold: F,
) -> Result<VecCollection<'scope, Time, F::Out, Diff>, MissingTable> {
    let columns = plan.columns_read();
    let Some((first, others)) = plan.sources.split_first() else {
        return Err(MissingTable("(none)"));
    };
    if others.is_empty() {
        return reader.rows_fold(first.table, columns[0], fold);
    }
    let mut rows = reader.rows(first.table, columns[0])?;
    for ((join, source), columns) in plan.joins.iter().zip(others).zip(&columns[1..]) {
        let right = reader.rows(source.table, *columns)?;
        rows = join_rows(rows, right, join, errors, |diff| *diff);
    }
    Ok(fold_rows(rows, fold))
}

/// One equi-join step: `left`'s rows (weighted by any difference `R`)
/// joined with `right`'s on `join`'s keys, each joined row `left ++ right`
/// weighted by `R` times the right row's multiplicity. A key that fails
/// to evaluate is an error (counting `rows(R)` rows); a NULL key joins
/// nothing, as SQL's equality.
pub(super) fn join_rows<'scope, R>(
    left: VecCollection<'scope, Time, Row, R>,
    right: VecCollection<'scope, Time, Row, Diff>,
    join: &Join,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
    rows: fn(&R) -> Diff,
) -> VecCollection<'scope, Time, Row, R>
where
    R: differential_dataflow::ExchangeData
        + differential_dataflow::difference::Semigroup
        + differential_dataflow::difference::Multiply<Diff, Output = R>,
{
    let left_key = join.left_key.clone();
    let right_key = join.right_key.clone();
    let left = split_weighted(
        left.map(move |row| eval_all(&left_key, &row).map(|k| (k, row))),
        errors,
        rows,
    );
    let right = split(
        right.map(move |row| eval_all(&right_key, &row).map(|k| (k, row))),
        errors,
    );
    let left = left.filter(|(k, _)| !k.contains(&Value::Null));
    left.join_map(right, |_key, l: &Row, r: &Row| {
        let mut row = l.clone();
        row.extend(r.iter().cloned());
        row
    })
}

/// Each group's totals moved from the data into the difference, where
/// `accumulate_totals` adds them up.
fn as_differences<'scope>(
    totals: VecCollection<'scope, Time, (Row, Totals), Diff>,
) -> VecCollection<'scope, Time, Row, Totals> {
    totals.explode(|(key, totals)| std::iter::once((key, totals)))
}

/// One collection holding a single marker update (on worker 0) at time 0.
fn marker<'scope, D: differential_dataflow::Data>(
    scope: Scope<'scope, Time>,
    marker: D,
) -> VecCollection<'scope, Time, D, Diff> {
    let updates = if scope.index() == 0 {
        vec![(marker, 0 as Time, 1 as Diff)]
    } else {
        Vec::new()
    };
    updates.to_stream(scope).as_collection()
}

/// The GROUP BY totals of a single-table plan by the typed lane
/// ([`FixedTotalsSpec`]), or `None` when the plan needs the row path.
fn typed_lane<'scope>(
    plan: &Plan,
    grouping: &Grouping,
    reader: &mut Reader<'_, 'scope>,
) -> Result<Option<GroupTotalsCollection<'scope>>, MissingTable> {
    let [source] = plan.sources.as_slice() else {
        return Ok(None);
    };
    let spec = FixedTotalsSpec::for_query(
        source.table,
        plan.filter.as_ref(),
        &grouping.keys,
        &grouping.aggregates,
    );
    match spec {
        Some(spec) => reader.fixed_totals(source.table, FixedTotals::new(spec)),
        None => Ok(None),
    }
}

/// Builds `plan` in `scope`, importing the tables it reads from `tables`.
/// Its snapshot of the present is at `since` (the engine's completed
/// frontier: updates before it are read as at it); `AS KNOWN AT t` reads
/// every update kept up to `t` instead, and its dataflow completes once
/// the engine passes `t`.
pub fn render<'scope>(
    plan: &Plan,
    tables: &mut Tables,
    scope: Scope<'scope, Time>,
    since: Time,
) -> Result<Rendered<'scope>, RenderError> {
    let mut errors = Vec::new();
    let mut reader = Reader::new(tables, scope, plan.as_of, since)?;
    let reader = &mut reader;
    let filter = plan.filter.clone();
    let mut rows = match plan.grouping.clone() {
        None => {
            let select = plan.select.clone();
            let fold = MapRows::new(move |row: &[Value]| match kept(filter.as_ref(), row)? {
                Ok(()) => Some(eval_all(&select, row)),
                Err(e) => Some(Err(e)),
            });
            split(folded(plan, reader, &mut errors, fold)?, &mut errors)
        }
        Some(grouping) => {
            let keys = grouping.keys.clone();
            let args: Vec<Option<Expr>> =
                grouping.aggregates.iter().map(|a| a.arg.clone()).collect();
            let funcs: Vec<_> = grouping.aggregates.iter().map(|a| a.func).collect();
            let abelian = funcs
                .iter()
                .all(|f| matches!(f, AggFunc::Sum | AggFunc::Count | AggFunc::Avg));
            let global = grouping.keys.is_empty();
            let grouped = if abelian {
                // SUM, COUNT and AVG as differences: a change costs O(1) per
                // group (accumulate_totals), not a re-read of the group; each
                // batch is added up per group where it is read.
                let mut totals = if pushdown::applies(plan, &grouping) {
                    pushdown::grouped_totals(plan, &grouping, reader, &mut errors)?
                } else if let Some(totals) = typed_lane(plan, &grouping, reader)? {
                    as_differences(totals)
                } else {
                    let fold = GroupTotals::new(filter, keys, &grouping.aggregates);
                    as_differences(split(folded(plan, reader, &mut errors, fold)?, &mut errors))
                };
                // Without GROUP BY there is one group even over no rows
                // (COUNT = 0): a marker keeps it present.
                if global {
                    totals = totals.concat(as_differences(marker(
                        scope,
                        (Row::new(), Totals::marker()),
                    )));
                }
                accumulate_totals(totals).map(move |(key, totals)| {
                    totals
                        .finish(&funcs)
                        .map(|aggs| key.iter().cloned().chain(aggs).collect::<Row>())
                })
            } else {
                let fold = MapRows::new(move |row: &[Value]| {
                    Some(kept(filter.as_ref(), row)?.and_then(|()| {
                        let key = eval_all(&keys, row)?;
                        let values = args
                            .iter()
                            .map(|a| a.as_ref().map_or(Ok(Value::Bool(true)), |e| e.eval(row)))
                            .collect::<Evaluated<Row>>()?;
                        Ok((key, Some(values)))
                    }))
                });
                let mut keyed = split(folded(plan, reader, &mut errors, fold)?, &mut errors);
                if global {
                    keyed = keyed.concat(marker(scope, (Row::new(), None::<Row>)));
                }
                keyed
                    .reduce(move |key: &Row, input, output| {
                        let result = aggregate(&funcs, input);
                        output.push((
                            result.map(|aggs| key.iter().cloned().chain(aggs).collect::<Row>()),
                            1,
                        ));
                    })
                    .map(|(_, r)| r)
            };
            let mut rows = split(grouped, &mut errors);
            if let Some(having) = grouping.having {
                let checked = rows.map(move |row| passes(&having, &row).map(|keep| (keep, row)));
                rows = split(checked, &mut errors).flat_map(|(keep, row)| keep.then_some(row));
            }
            let select = plan.select.clone();
            split(rows.map(move |row| eval_all(&select, &row)), &mut errors)
        }
    };
    if let Some(limit) = plan.limit {
        let limit = isize::try_from(limit).unwrap_or(isize::MAX);
        rows = top_k_live(rows, plan.order.clone(), limit);
    }
    let errors = match errors.split_first() {
        Some((first, rest)) => first.clone().concatenate(rest.iter().cloned()),
        None => Vec::<(EvalError, Time, Diff)>::new()
            .to_stream(scope)
            .as_collection(),
    };
    Ok(Rendered {
        rows,
        errors,
        shutdown: std::mem::take(&mut reader.shutdown),
    })
}

/// The aggregates of one group; the marker row (no values) counts nothing.
fn aggregate(funcs: &[super::expr::AggFunc], input: &[(&Option<Row>, Diff)]) -> Evaluated<Row> {
    let mut accs: Vec<Accumulator> = funcs.iter().map(|f| Accumulator::new(*f)).collect();
    for (values, count) in input {
        let Some(values) = values else { continue };
        for (acc, value) in accs.iter_mut().zip(values) {
            acc.add(value, *count as i128)?;
        }
    }
    accs.iter().map(Accumulator::finish).collect()
}

/// The first `limit` rows of `input` (counting multiplicities) in
/// [`compare_rows`] order. The written rows, which break ties, are made
/// only for rows that tie on the ORDER BY values. The reference that
/// [`top_k_live`] is tested against (as a `reduce` on one key).
#[cfg(test)]
pub(super) fn top_k(
    order: &[OrderItem],
    limit: isize,
    input: &[(&Row, Diff)],
    output: &mut Vec<(Row, Diff)>,
) {
    let mut sorted: Vec<(&Row, Diff)> = input.to_vec();
    sorted.sort_by(|a, b| compare_by_order(order, a.0, b.0));
    let mut left = limit;
    let mut start = 0;
    while start < sorted.len() && left > 0 {
        let tied = sorted[start..]
            .iter()
            .take_while(|(row, _)| compare_by_order(order, sorted[start].0, row).is_eq())
            .count();
        let run = &mut sorted[start..start + tied];
        if tied > 1 {
            run.sort_by_cached_key(|(row, _)| csv_line(row));
        }
        for (row, count) in run.iter() {
            if left <= 0 {
                break;
            }
            let take = (*count).min(left);
            output.push(((*row).clone(), take));
            left -= take;
        }
        start += tied;
    }
}

/// ORDER BY's order, then byte-wise order of the written row, so the
/// order of every row is decided.
pub fn compare_rows(order: &[OrderItem], a: &Row, b: &Row) -> std::cmp::Ordering {
    compare_by_order(order, a, b).then_with(|| csv_line(a).cmp(&csv_line(b)))
}

/// ORDER BY's order alone (rows may tie).
pub(super) fn compare_by_order(order: &[OrderItem], a: &Row, b: &Row) -> std::cmp::Ordering {
    for item in order {
        let (x, y) = (&a[item.column], &b[item.column]);
        let ordering = match (x == &Value::Null, y == &Value::Null) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => {
                if item.nulls_first {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            }
            (false, true) => {
                if item.nulls_first {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Less
                }
            }
            (false, false) => {
                let o = x.sort_cmp(y);
                if item.descending {
                    o.reverse()
                } else {
                    o
                }
            }
        };
        if ordering != std::cmp::Ordering::Equal {
            return ordering;
        }
    }
    std::cmp::Ordering::Equal
}

/// One row as a CSV line (no newline): values in the spec's normal form,
/// quoted when they hold a comma, quote or line break.
pub fn csv_line(row: &Row) -> String {
    let mut line = String::new();
    for (i, value) in row.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        line.push_str(&csv_field(&value.to_string()));
    }
    line
}

/// A CSV field, quoted when needed.
pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::value::Number;
    use proptest::prelude::*;

    fn row(score: i64, name: u8) -> Row {
        vec![
            Value::Number(Number::from_i128(i128::from(score))),
            Value::Text(format!("n{name}").into()),
        ]
    }

    proptest! {
        /// The top k, tie-broken by the written row, counted with
        /// multiplicities, equals sorting everything by `compare_rows`.
        #[test]
        fn top_k_is_the_first_k_of_the_full_order(
            rows in proptest::collection::vec((0i64..4, 0u8..6, 1isize..3), 0..40),
            limit in 1isize..10,
            descending in any::<bool>(),
        ) {
            let order = [OrderItem { column: 0, descending, nulls_first: false }];
            let mut merged: std::collections::BTreeMap<Row, Diff> = Default::default();
            for (score, name, count) in &rows {
                *merged.entry(row(*score, *name)).or_default() += count;
            }
            let input: Vec<(&Row, Diff)> = merged.iter().map(|(r, c)| (r, *c)).collect();
            let mut expected: Vec<(&Row, Diff)> = input.clone();
            expected.sort_by(|a, b| compare_rows(&order, a.0, b.0));
            let mut want = Vec::new();
            let mut left = limit;
            for (r, c) in expected {
                if left <= 0 { break; }
                want.push((r.clone(), c.min(left)));
                left -= c.min(left);
            }
            let mut got = Vec::new();
            top_k(&order, limit, &input, &mut got);
            prop_assert_eq!(got, want);
        }
    }
}
