//! [`top_k_live`]: ORDER BY ... LIMIT over a live collection, kept as an
//! ordered map instead of a `reduce`.
//!
//! A `reduce` on one key re-reads the whole group (every row of the input)
//! from its arrangement at each time the input changes, and sorts it. Engine
//! time is totally ordered, so this operator keeps the rows in a `BTreeMap`
//! in answer order instead: a change costs O(log rows), and a time costs the
//! first `limit` rows read twice (before and after), whatever the table's
//! size.

use std::cell::OnceCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::VecCollection;

use super::plan::OrderItem;
use super::render::{compare_by_order, csv_line};
use super::value::Row;
use crate::engine::{Diff, Time};
use crate::ordered::{in_time_order, Netting};

/// A row's place in the answer: its ORDER BY values, then its written
/// form (ties), then the row itself (rows written alike). This is the
/// order `compare_rows` gives, with the row order last, as the `reduce`
/// sorted (its input came in row order, and its sorts were stable). The
/// written form is made only when two rows tie on the ORDER BY values,
/// and then once per row.
#[derive(Debug)]
struct Ranked {
    order: Arc<[OrderItem]>,
    row: Row,
    line: OnceCell<String>,
}

impl Ranked {
    fn line(&self) -> &str {
        self.line.get_or_init(|| csv_line(&self.row))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        compare_by_order(&self.order, &self.row, &other.row)
            .then_with(|| {
                if self.row == other.row {
                    Ordering::Equal
                } else {
                    self.line().cmp(other.line())
                }
            })
            .then_with(|| self.row.cmp(&other.row))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The first `limit` rows (with multiplicity) of `rows`, in answer order.
#[allow(clippy::mutable_key_type)] // see `TopK::held`
fn first(rows: &BTreeMap<Ranked, Diff>, limit: Diff) -> Vec<(Row, Diff)> {
    let mut answer = Vec::new();
    let mut left = limit;
    for (ranked, count) in rows {
        if left <= 0 {
            break;
        }
        let take = (*count).min(left);
        answer.push((ranked.row.clone(), take));
        left -= take;
    }
    answer
}

/// The first `limit` rows of `rows` (counting multiplicities) in `order`,
/// ties broken by the written row, as a live collection: at each time the
/// answer changes, the rows that left it are retracted and the rows that
/// entered it asserted.
///
/// Guarantees the same collection at every time as a `reduce` of all rows
/// on one key by [`compare_rows`](super::render::compare_rows), provided
/// each ORDER BY column holds values of one type (or NULL), so that the
/// order is total. Every row goes to worker 0 ([`in_time_order`]), which
/// holds one map entry per distinct row.
pub(super) fn top_k_live<'scope>(
    rows: VecCollection<'scope, Time, Row, Diff>,
    order: Vec<OrderItem>,
    limit: Diff,
) -> VecCollection<'scope, Time, Row, Diff> {
    let state = TopK {
        order: order.into(),
        limit,
        held: BTreeMap::new(),
        answer: Vec::new(),
    };
    in_time_order(
        rows.inner,
        "TopK",
        |_: &Row| 0,
        state,
        TopK::apply,
        Netting::Consolidate,
    )
}

/// Every row held, in answer order, and the answer last emitted.
struct TopK {
    order: Arc<[OrderItem]>,
    limit: Diff,
    /// The written form inside a key is a cache of its row: it never
    /// changes the key's place.
    #[allow(clippy::mutable_key_type)]
    held: BTreeMap<Ranked, Diff>,
    answer: Vec<(Row, Diff)>,
}

impl TopK {
    /// Applies one time's changes and emits the rows that left the answer
    /// (-) and entered it (+).
    fn apply(
        &mut self,
        time: Time,
        mut changes: Vec<(Row, Diff)>,
        out: &mut Vec<(Row, Time, Diff)>,
    ) {
        consolidate(&mut changes);
        if changes.is_empty() {
            return;
        }
        for (row, diff) in changes {
            let key = Ranked {
                order: Arc::clone(&self.order),
                row,
                line: OnceCell::new(),
            };
            match self.held.get_mut(&key) {
                Some(count) => {
                    *count += diff;
                    if *count == 0 {
                        self.held.remove(&key);
                    }
                }
                None => {
                    self.held.insert(key, diff);
                }
            }
        }
        let fresh = first(&self.held, self.limit);
        let old = std::mem::replace(&mut self.answer, fresh);
        out.extend(old.into_iter().map(|(row, count)| (row, time, -count)));
        out.extend(
            self.answer
                .iter()
                .map(|(row, count)| (row.clone(), time, *count)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::test_support::captured_updates;
    use crate::query::value::{Number, Value};
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::capture::Capture;

    type Update = (Row, Time, Diff);

    /// `top_k_live` and the reference `reduce` over the same changes.
    fn both(
        changes: Vec<(Option<i64>, u8, Time, Diff)>,
        order: Vec<OrderItem>,
        limit: Diff,
    ) -> (Vec<Update>, Vec<Update>) {
        let (ours, theirs) = timely::execute_directly(move |worker| {
            let (mut input, ours, theirs) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, rows) = scope.new_collection::<Row, Diff>();
                let ours = top_k_live(rows.clone(), order.clone(), limit)
                    .inner
                    .capture();
                let theirs = rows
                    .map(|row| ((), row))
                    .reduce(move |_, input: &[(&Row, Diff)], output| {
                        super::super::render::top_k(&order, limit, input, output)
                    })
                    .map(|((), row)| row)
                    .inner
                    .capture();
                (input, ours, theirs)
            });
            let mut sorted = changes.clone();
            sorted.sort_by_key(|c| c.2);
            for (score, name, time, diff) in sorted {
                input.advance_to(time);
                let score = score.map_or(Value::Null, |s| {
                    Value::Number(Number::from_i128(i128::from(s)))
                });
                // The second column breaks ties by its written form: 10
                // is written before 9, though it is the larger number.
                let name = Value::Number(Number::from_i128(i128::from(name)));
                input.update(vec![score, name], diff);
            }
            input.close();
            while worker.step() {}
            (ours, theirs)
        });
        (captured_updates(ours), captured_updates(theirs))
    }

    proptest::proptest! {
        /// The same updates as the `reduce` it replaces, for random rows
        /// (NULLs, ties on the ORDER BY value, repeated rows) arriving,
        /// leaving and coming back over several times.
        #[test]
        fn the_same_updates_as_reduce_by_compare_rows(
            changes in proptest::collection::vec(
                (proptest::option::of(0i64..4), 0u8..12, 0u64..5, 1isize..3),
                0..40,
            ),
            leaving in proptest::collection::vec(0usize..40, 0..20),
            limit in 1isize..6,
            descending in proptest::bool::ANY,
            nulls_first in proptest::bool::ANY,
        ) {
            // Some rows leave at a later time (never below zero).
            let mut all = changes.clone();
            let leaving: std::collections::BTreeSet<usize> = leaving.into_iter().collect();
            for i in leaving {
                if let Some((score, name, time, count)) = changes.get(i).copied() {
                    all.push((score, name, time + 1, -count));
                }
            }
            let order = vec![OrderItem { column: 0, descending, nulls_first }];
            let (ours, theirs) = both(all, order, limit);
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_row_that_drops_out_is_replaced_by_the_next() {
        let order = vec![OrderItem {
            column: 0,
            descending: true,
            nulls_first: false,
        }];
        let changes = vec![
            (Some(3), 0, 0, 1),
            (Some(2), 1, 0, 1),
            (Some(1), 2, 0, 1),
            (Some(3), 0, 1, -1),
        ];
        let (ours, theirs) = both(changes, order, 2);
        assert_eq!(ours, theirs);
        let at_one: Vec<_> = ours.iter().filter(|u| u.1 == 1).collect();
        assert_eq!(at_one.len(), 2, "{at_one:?}");
    }
}
