//! Live SQL queries over the engine's shared arrangements.
//!
//! A query is parsed with `sqlparser` and compiled ([`Plan::compile`]) to
//! a plan over the named tables ([`Table`]); [`render`] builds it as
//! differential operators in a dataflow of its own, importing the tables'
//! traces ([`Tables`]), so it reads the engine's arrangements without
//! copying them or re-reading a source.
//!
//! The subset: `SELECT` expressions (`+ - * /`, comparisons, `AND OR
//! NOT`, `IS [NOT] NULL`, `ABS`, literals including `DATE 'YYYY-MM-DD'`)
//! `FROM` one table or inner equi-`JOIN ... ON`s, `WHERE`, `GROUP BY` with
//! `SUM COUNT MIN MAX AVG`, `HAVING`, `ORDER BY` (output columns) and
//! `LIMIT` (top-k), and the bitemporal clauses `AS OF DATE 'YYYY-MM-DD'`
//! and `AS KNOWN AT t` at the end ([`as_of`], [`reader`]). Numbers are exact decimals; only a quotient is
//! rounded (to 32 places, half to even). Anything else is refused with a
//! [`QueryError`] naming the construct and its line and column.

mod accumulate;
pub mod as_of;
pub mod expr;
mod fixed_totals;
pub mod fold;
mod live_top_k;
pub mod plan;
mod pushdown;
pub mod reader;
pub mod render;
pub mod tables;
mod totals;
pub mod value;

pub use as_of::AsOf;
pub use plan::{Plan, QueryError};
pub use reader::RenderError;
pub use render::{compare_rows, csv_field, csv_line, render, Rendered};
pub use tables::{ImportButton, Interval, MissingTable, Table, TableSet, Tables};
pub use value::{EvalError, Number, Row, Value};

/// Test support for the query operators.
#[cfg(test)]
mod test_support {
    use crate::engine::{Diff, Time};
    use timely::dataflow::operators::capture::{Event, Extract};

    /// What `capture` of a stream of updates hands back.
    pub(super) type Captured<D> = std::sync::mpsc::Receiver<Event<Time, Vec<(D, Time, Diff)>>>;

    /// The updates a captured stream of updates carried, consolidated.
    pub(super) fn captured_updates<D: Ord + 'static>(
        captured: Captured<D>,
    ) -> Vec<(D, Time, Diff)> {
        let mut updates: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, u)| u)
            .collect();
        differential_dataflow::consolidation::consolidate_updates(&mut updates);
        updates
    }
}
