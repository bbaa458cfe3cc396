//! Retractions against assertions, without consolidating: between two
//! states ([`diff_sorted`]: each side sorted, then one merge that drops
//! what both hold), and within one list of updates
//! ([`cancel_retractions`]: cancelled in place).

use std::cmp::Ordering;

/// Splits `old` and `new` into (only in `old`, only in `new`): an element
/// present in both (as many times as it is in both) is dropped from both.
/// Both outputs come sorted. This is `new - old` as a differential
/// collection, consolidated (a property test checks it against
/// differential's `consolidate`).
pub fn diff_sorted<T: Ord>(mut old: Vec<T>, mut new: Vec<T>) -> (Vec<T>, Vec<T>) {
    // Elements that compare equal are interchangeable here (the outputs
    // hold one of them either way), so an unstable sort is enough; it
    // finds a side already sorted in one pass.
    old.sort_unstable();
    new.sort_unstable();
    // Nothing can cancel when one side is empty: the other, sorted, is the
    // answer (the booking's common case: a buy only opens).
    if old.is_empty() || new.is_empty() {
        return (old, new);
    }
    let (mut only_old, mut only_new) =
        (Vec::with_capacity(old.len()), Vec::with_capacity(new.len()));
    let mut old = old.into_iter().peekable();
    let mut new = new.into_iter().peekable();
    while let (Some(a), Some(b)) = (old.peek(), new.peek()) {
        match a.cmp(b) {
            Ordering::Less => only_old.extend(old.next()),
            Ordering::Greater => only_new.extend(new.next()),
            Ordering::Equal => {
                old.next();
                new.next();
            }
        }
    }
    // What is left of either side has nothing to cancel against.
    only_old.extend(old);
    only_new.extend(new);
    (only_old, only_new)
}

/// Cancels retractions (diff < 0) in `updates` against assertions
/// (diff > 0) of an equal element, so that, read as a multiset, `updates`
/// is what consolidating it gives, with every element left where it was
/// (cancelled ones at diff 0). For a booking step's few retractions among
/// many assertions: only the retractions are sorted (by index), and each
/// assertion looks for its equal among them, O(n log r) comparisons
/// instead of consolidation's O(n log n) and its moves of whole elements.
/// `retracted` is scratch space (cleared first).
pub fn cancel_retractions<T: Ord>(updates: &mut [(T, isize)], retracted: &mut Vec<usize>) {
    retracted.clear();
    retracted.extend((0..updates.len()).filter(|&i| updates[i].1 < 0));
    if retracted.is_empty() {
        return;
    }
    retracted.sort_unstable_by(|&a, &b| updates[a].0.cmp(&updates[b].0));
    for j in 0..updates.len() {
        if updates[j].1 <= 0 {
            continue;
        }
        // The retractions of an equal element are adjacent: the first one
        // from the search, then on while they are equal and this assertion
        // is not used up.
        let first = retracted.partition_point(|&i| updates[i].0 < updates[j].0);
        for &i in &retracted[first..] {
            if updates[i].0 != updates[j].0 {
                break;
            }
            let cancelled = updates[j].1.min(-updates[i].1);
            updates[i].1 += cancelled;
            updates[j].1 -= cancelled;
            if updates[j].1 == 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cancel_retractions, diff_sorted};
    use differential_dataflow::consolidation::consolidate;
    use proptest::prelude::*;

    #[test]
    fn common_elements_cancel_with_multiplicity() {
        assert_eq!(
            diff_sorted(vec![1, 2, 2, 4], vec![2, 3, 4, 5]),
            (vec![1, 2], vec![3, 5])
        );
        assert_eq!(diff_sorted(Vec::<u8>::new(), vec![1]), (vec![], vec![1]));
        assert_eq!(diff_sorted(vec![3, 1], vec![]), (vec![1, 3], vec![]));
        assert_eq!(diff_sorted(vec![], vec![2, 1, 2]), (vec![], vec![1, 2, 2]));
        assert_eq!(diff_sorted(vec![5, 1, 5], vec![5, 1]), (vec![5], vec![]));
    }

    proptest! {
        /// The merge gives what consolidating `new - old` gives.
        #[test]
        fn agrees_with_consolidation(
            old in proptest::collection::vec(0u8..12, 0..24),
            new in proptest::collection::vec(0u8..12, 0..24),
        ) {
            let mut updates: Vec<(u8, isize)> = old
                .iter()
                .map(|&x| (x, -1))
                .chain(new.iter().map(|&x| (x, 1)))
                .collect();
            consolidate(&mut updates);
            let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
            for (x, diff) in updates {
                let side = if diff < 0 { &mut only_old } else { &mut only_new };
                side.extend(std::iter::repeat_n(x, diff.unsigned_abs()));
            }
            prop_assert_eq!(diff_sorted(old, new), (only_old, only_new));
        }

        /// After cancelling, the updates sum to what consolidation gives,
        /// and no element is both retracted and asserted.
        #[test]
        fn cancelling_agrees_with_consolidation(
            updates in proptest::collection::vec((0u8..6, -2isize..=2), 0..16),
        ) {
            let mut expected = updates.clone();
            consolidate(&mut expected);
            let mut cancelled = updates;
            cancel_retractions(&mut cancelled, &mut Vec::new());
            for (x, diff) in &cancelled {
                prop_assert!(
                    *diff >= 0 || cancelled.iter().all(|(y, d)| y != x || *d <= 0),
                    "{x} is still both retracted and asserted"
                );
            }
            consolidate(&mut cancelled);
            prop_assert_eq!(cancelled, expected);
        }
    }
}
