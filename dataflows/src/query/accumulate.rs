//! [`accumulate_totals`]: the running total of each group of a GROUP BY
//! whose aggregates are all SUM, COUNT or AVG, as `count_total` computes
//! it, kept in a hash map instead of an arrangement.
//!
//! `count_total` arranges its input (a batcher sort, then spine merges of
//! every batch) and, for each group in a new batch, reads the group's
//! history back from that trace. A live query only needs the current total
//! of each group, and engine time is totally ordered, so this operator
//! keeps exactly that: one `Totals` per group. At each completed time it
//! adds that time's changes to their groups in time order and emits, per
//! group whose total moved, the old total retracted and the new one
//! asserted (a zero total is no row): the collection `count_total` gives.

use differential_dataflow::difference::{IsZero, Semigroup};
use differential_dataflow::{Hashable, VecCollection};
use rustc_hash::FxHashMap;

use super::totals::Totals;
use super::value::Row;
use crate::engine::{Diff, Time};
use crate::ordered::{in_time_order, Netting};

/// The current total of each group of `changes` (a collection whose
/// differences are the groups' totals), as `(group, total)` rows: at every
/// time a group's total changes, its old row is retracted and its new one
/// asserted; a group whose total is zero has no row.
///
/// Guarantees the same collection at every time as differential's
/// `count_total` on the same input. Groups are routed to workers by their
/// hash ([`in_time_order`]); each worker holds one `Totals` per group.
pub(super) fn accumulate_totals<'scope>(
    changes: VecCollection<'scope, Time, Row, Totals>,
) -> VecCollection<'scope, Time, (Row, Totals), Diff> {
    in_time_order(
        changes.inner,
        "AccumulateTotals",
        |group: &Row| group.hashed(),
        CurrentTotals::default(),
        CurrentTotals::apply,
        Netting::Consolidate,
    )
}

/// Each group's current total (never zero: a group at zero is removed),
/// and one time's changes summed per group (reused).
#[derive(Default)]
struct CurrentTotals {
    totals: FxHashMap<Row, Totals>,
    summed: FxHashMap<Row, Totals>,
}

impl CurrentTotals {
    /// Adds one time's changes and emits each moved group's old row (-1)
    /// and new row (+1).
    fn apply(
        &mut self,
        time: Time,
        changes: Vec<(Row, Totals)>,
        out: &mut Vec<((Row, Totals), Time, Diff)>,
    ) {
        for (group, change) in changes {
            match self.summed.get_mut(&group) {
                Some(sum) => sum.plus_equals(&change),
                None => {
                    self.summed.insert(group, change);
                }
            }
        }
        for (group, change) in self.summed.drain() {
            if change.is_zero() {
                continue;
            }
            match self.totals.get_mut(&group) {
                Some(total) => {
                    out.push(((group.clone(), total.clone()), time, -1));
                    total.plus_equals(&change);
                    if total.is_zero() {
                        self.totals.remove(&group);
                    } else {
                        out.push(((group, total.clone()), time, 1));
                    }
                }
                None => {
                    out.push(((group.clone(), change.clone()), time, 1));
                    self.totals.insert(group, change);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::test_support::captured_updates;
    use crate::query::value::{Number, Value};
    use differential_dataflow::input::Input;
    use differential_dataflow::operators::CountTotal;
    use timely::dataflow::operators::capture::Capture;

    type Update = ((Row, Totals), Time, Diff);

    /// Runs `accumulate_totals` and `count_total` over the same changes.
    fn both(changes: Vec<(u8, Time, i64, i64)>) -> (Vec<Update>, Vec<Update>) {
        let (ours, theirs) = timely::execute_directly(move |worker| {
            let (mut input, ours, theirs) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, rows) = scope.new_collection::<(Row, Totals), Diff>();
                let changes = rows.explode(|(group, totals)| std::iter::once((group, totals)));
                let ours = accumulate_totals(changes.clone()).inner.capture();
                let theirs = changes.count_total().inner.capture();
                (input, ours, theirs)
            });
            let mut sorted = changes.clone();
            sorted.sort_by_key(|c| c.1);
            for (group, time, rows, sum) in sorted {
                input.advance_to(time);
                let key = vec![Value::Number(Number::from_i128(i128::from(group)))];
                let totals = Totals::from_sums(
                    rows,
                    vec![(rows, Number::from_i128(i128::from(sum)))],
                    false,
                );
                input.update((key, totals), 1);
            }
            input.close();
            while worker.step() {}
            (ours, theirs)
        });
        (captured_updates(ours), captured_updates(theirs))
    }

    proptest::proptest! {
        /// Same updates as `count_total` for random changes (groups that
        /// come and go, several changes per group and time, totals that
        /// return to zero).
        #[test]
        fn the_same_updates_as_count_total(
            changes in proptest::collection::vec((0u8..6, 0u64..6, -2i64..3, -50i64..50), 0..60)
        ) {
            let (ours, theirs) = both(changes);
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn a_group_leaves_when_its_total_returns_to_zero() {
        let (ours, theirs) = both(vec![(1, 0, 2, 10), (1, 1, -2, -10), (2, 1, 1, 5)]);
        assert_eq!(ours, theirs);
        // At time 1 group 1 is retracted and not asserted again.
        let group = |g: i128| vec![Value::Number(Number::from_i128(g))];
        let at_one: Vec<_> = ours.iter().filter(|u| u.1 == 1).collect();
        assert_eq!(at_one.len(), 2, "{at_one:?}");
        assert!(at_one.iter().any(|u| u.0 .0 == group(1) && u.2 == -1));
        assert!(at_one.iter().any(|u| u.0 .0 == group(2) && u.2 == 1));
    }
}
