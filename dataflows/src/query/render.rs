//! A [`Plan`] as differential operators over imported tables: equi-joins
//! with `join_map`, WHERE with `flat_map`, GROUP BY with `reduce`, ORDER
//! BY ... LIMIT as a top-k `reduce`. A row an expression cannot evaluate on
//! becomes an error record instead.

use differential_dataflow::VecCollection;
use timely::dataflow::operators::ToStream;
use timely::dataflow::Scope;

use super::expr::{Accumulator, Expr};
use super::plan::{OrderItem, Plan};
use super::tables::{ImportButton, MissingTable, Tables};
use super::value::{EvalError, Row, Value};
use crate::engine::{Diff, Time};
use differential_dataflow::AsCollection;

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

/// Splits a collection of results into values and errors.
fn split<'scope, T: differential_dataflow::Data>(
    results: VecCollection<'scope, Time, Evaluated<T>, Diff>,
    errors: &mut Vec<VecCollection<'scope, Time, EvalError, Diff>>,
) -> VecCollection<'scope, Time, T, Diff> {
    errors.push(results.clone().flat_map(|r| r.err()));
    results.flat_map(|r| r.ok())
}

fn eval_all(exprs: &[Expr], row: &[Value]) -> Evaluated<Row> {
    exprs.iter().map(|e| e.eval(row)).collect()
}

/// True when `filter` is TRUE on `row` (NULL and FALSE drop it).
fn passes(filter: &Expr, row: &[Value]) -> Evaluated<bool> {
    Ok(filter.eval(row)? == Value::Bool(true))
}

/// Builds `plan` in `scope`, importing the tables it reads from `tables`.
pub fn render<'scope>(
    plan: &Plan,
    tables: &mut Tables,
    scope: Scope<'scope, Time>,
) -> Result<Rendered<'scope>, MissingTable> {
    let mut errors = Vec::new();
    let mut inputs = Vec::new();
    let mut shutdown = Vec::new();
    for source in &plan.sources {
        let (rows, button) = tables.import(source.table, scope)?;
        inputs.push(rows);
        shutdown.push(button);
    }
    let mut inputs = inputs.into_iter();
    let Some(mut rows) = inputs.next() else {
        return Err(MissingTable("(none)"));
    };
    for (join, right) in plan.joins.iter().zip(inputs) {
        let left_key = join.left_key.clone();
        let right_key = join.right_key.clone();
        let left = split(
            rows.map(move |row| eval_all(&left_key, &row).map(|k| (k, row))),
            &mut errors,
        );
        let right = split(
            right.map(move |row| eval_all(&right_key, &row).map(|k| (k, row))),
            &mut errors,
        );
        // SQL equality: a NULL key joins nothing.
        let left = left.filter(|(k, _)| !k.contains(&Value::Null));
        rows = left.join_map(right, |_key, l: &Row, r: &Row| {
            let mut row = l.clone();
            row.extend(r.iter().cloned());
            row
        });
    }
    if let Some(filter) = plan.filter.clone() {
        let checked = rows.map(move |row| passes(&filter, &row).map(|keep| (keep, row)));
        rows = split(checked, &mut errors).flat_map(|(keep, row)| keep.then_some(row));
    }
    if let Some(grouping) = plan.grouping.clone() {
        let keys = grouping.keys.clone();
        let args: Vec<Option<Expr>> = grouping.aggregates.iter().map(|a| a.arg.clone()).collect();
        let keyed = split(
            rows.map(move |row| {
                let key = eval_all(&keys, &row)?;
                let values = args
                    .iter()
                    .map(|a| a.as_ref().map_or(Ok(Value::Bool(true)), |e| e.eval(&row)))
                    .collect::<Evaluated<Row>>()?;
                Ok((key, Some(values)))
            }),
            &mut errors,
        );
        // Without GROUP BY there is one group even over no rows (COUNT = 0):
        // a marker row keeps it present.
        let keyed = if grouping.keys.is_empty() {
            let marker = if scope.index() == 0 {
                vec![((Row::new(), None::<Row>), 0 as Time, 1 as Diff)]
            } else {
                Vec::new()
            };
            let marker = marker.to_stream(scope).as_collection();
            keyed.concat(marker)
        } else {
            keyed
        };
        let funcs: Vec<_> = grouping.aggregates.iter().map(|a| a.func).collect();
        let grouped = keyed.reduce(move |key: &Row, input, output| {
            let result = aggregate(&funcs, input);
            output.push((
                result.map(|aggs| key.iter().cloned().chain(aggs).collect::<Row>()),
                1,
            ));
        });
        rows = split(grouped.map(|(_, r)| r), &mut errors);
        if let Some(having) = grouping.having {
            let checked = rows.map(move |row| passes(&having, &row).map(|keep| (keep, row)));
            rows = split(checked, &mut errors).flat_map(|(keep, row)| keep.then_some(row));
        }
    }
    let select = plan.select.clone();
    rows = split(rows.map(move |row| eval_all(&select, &row)), &mut errors);
    if let Some(limit) = plan.limit {
        let order = plan.order.clone();
        rows = rows
            .map(|row| ((), row))
            .reduce(move |_, input: &[(&Row, Diff)], output| {
                let mut sorted: Vec<(&Row, Diff)> = input.to_vec();
                sorted.sort_by(|a, b| compare_rows(&order, a.0, b.0));
                let mut left = i64::try_from(limit).unwrap_or(i64::MAX) as isize;
                for (row, count) in sorted {
                    if left <= 0 {
                        break;
                    }
                    let take = count.min(left);
                    output.push((row.clone(), take));
                    left -= take;
                }
            })
            .map(|((), row)| row);
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
        shutdown,
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

/// ORDER BY's order, then byte-wise order of the written row, so the
/// order of every row is decided.
pub fn compare_rows(order: &[OrderItem], a: &Row, b: &Row) -> std::cmp::Ordering {
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
    csv_line(a).cmp(&csv_line(b))
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
