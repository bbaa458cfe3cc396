//! What two lists hold in common, dropped from both without
//! consolidating: between two states ([`diff_sorted`]: each side sorted,
//! then one merge that drops what both hold), and between the trades a
//! booking step removes and inserts ([`cancel_common`]: each list keeps
//! its order, only the few removed are ordered, by index); and rows
//! keyed by an id sorted with the keys' prefixes computed once
//! ([`sort_keyed_rows`]).

use std::cmp::Ordering;

use crate::id::{order_prefix, Id};

/// Splits `old` and `new` into (only in `old`, only in `new`): an element
/// present in both (as many times as it is in both) is dropped from both.
/// Both outputs come sorted, each in a list of exactly its length (one
/// allocation, none when empty: the outputs live until the correction
/// they go in is written). This is `new - old` as a differential
/// collection, consolidated (a property test checks it against
/// differential's `consolidate`). `old` and `new` are working lists: they
/// are left empty, keeping their capacity for the next call.
pub fn diff_sorted<T: Ord>(old: &mut Vec<T>, new: &mut Vec<T>) -> (Vec<T>, Vec<T>) {
    // Elements that compare equal are interchangeable here (the outputs
    // hold one of them either way), so an unstable sort is enough; it
    // finds a side already sorted in one pass.
    old.sort_unstable();
    new.sort_unstable();
    // One merge, each side compacted in place (what it keeps swapped to
    // its front, in order; what cancelled left behind it), so no list is
    // allocated but the outputs: each side's write index never passes its
    // read index. Nothing cancels when one side is empty (the booking's
    // common case: a buy only opens), and then the merge does nothing.
    let (mut read_old, mut read_new) = (0, 0);
    let (mut kept_old, mut kept_new) = (0, 0);
    while read_old < old.len() && read_new < new.len() {
        match old[read_old].cmp(&new[read_new]) {
            Ordering::Less => {
                old.swap(kept_old, read_old);
                kept_old += 1;
                read_old += 1;
            }
            Ordering::Greater => {
                new.swap(kept_new, read_new);
                kept_new += 1;
                read_new += 1;
            }
            Ordering::Equal => {
                read_old += 1;
                read_new += 1;
            }
        }
    }
    // What is left of either side has nothing to cancel against: it is
    // kept, after the kept front.
    (
        kept_list(old, kept_old, read_old),
        kept_list(new, kept_new, read_new),
    )
}

/// `list` without its elements `kept..read` (those that cancelled), moved
/// into a list of exactly that length; `list` is left empty with its
/// capacity.
fn kept_list<T>(list: &mut Vec<T>, kept: usize, read: usize) -> Vec<T> {
    list.drain(kept..read);
    let mut output = Vec::with_capacity(list.len());
    output.append(list);
    output
}

/// Removes from `old` and `new` what they have in common as multisets (an
/// element k times in one and m times in the other loses min(k, m) from
/// each), every other element keeping its place in its list: the net
/// change of a booking step whose trades left (`old`) and entered (`new`).
/// For a step's few leaving trades among many entering ones: only `old` is
/// ordered (by index) and each element of `new` looks for an unused equal
/// there, O(|new| log |old|) comparisons and no element moved unless one
/// cancels. `order` and `used` are scratch space.
pub fn cancel_common<T: Ord>(
    old: &mut Vec<T>,
    new: &mut Vec<T>,
    order: &mut Vec<usize>,
    used: &mut Vec<bool>,
) {
    if old.is_empty() || new.is_empty() {
        return;
    }
    order.clear();
    order.extend(0..old.len());
    order.sort_unstable_by(|&a, &b| old[a].cmp(&old[b]));
    used.clear();
    used.resize(old.len(), false);
    let mut cancelled = false;
    new.retain(|x| {
        // Equal elements of `old` are adjacent in `order`: the first from
        // the search, then on while equal, taking the first unused one.
        let first = order.partition_point(|&i| old[i] < *x);
        for &i in &order[first..] {
            if old[i] != *x {
                break;
            }
            if !used[i] {
                used[i] = true;
                cancelled = true;
                return false;
            }
        }
        true
    });
    if cancelled {
        let mut i = 0;
        old.retain(|_| {
            let keep = !used[i];
            i += 1;
            keep
        });
    }
}

/// Sorts `rows` into the order `rows.sort_unstable()` gives (by key, then
/// by the rest of the row), comparing each key's [`order_prefix`],
/// computed once per row, before the rows themselves: on the final
/// tables of a run (100k position keys, some 200k lots), whose keys mostly
/// differ in their first 16 bytes, most comparisons are of two numbers
/// instead of two strings (each a `memcmp` call). Rows that compare equal
/// are equal, so the result is the same bytes. Costs a list of 32 bytes a
/// row while it sorts, then one of 8 while the rows move.
pub fn sort_keyed_rows<T: Ord>(rows: &mut [(Id, T)]) {
    let mut order: Vec<(u128, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (order_prefix(key), i))
        .collect();
    // Where prefixes differ they order as the keys do; on a tie the rows decide.
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| rows[a.1].cmp(&rows[b.1])));
    // `source[j]`: the row that goes to place j. Each cycle of the
    // permutation is walked once, the row carried along it swapped into
    // each place in turn; a place done points at itself.
    let mut source: Vec<usize> = order.into_iter().map(|(_, i)| i).collect();
    for start in 0..rows.len() {
        let mut place = start;
        while source[place] != start {
            let from = source[place];
            rows.swap(place, from);
            source[place] = place;
            place = from;
        }
        source[place] = place;
    }
}

#[cfg(test)]
mod tests {
    use super::{cancel_common, diff_sorted, sort_keyed_rows};
    use crate::id::Id;
    use differential_dataflow::consolidation::consolidate;
    use proptest::prelude::*;

    #[test]
    fn common_elements_cancel_with_multiplicity() {
        assert_eq!(
            diffed(vec![1, 2, 2, 4], vec![2, 3, 4, 5]),
            (vec![1, 2], vec![3, 5])
        );
        assert_eq!(diffed(Vec::<u8>::new(), vec![1]), (vec![], vec![1]));
        assert_eq!(diffed(vec![3, 1], vec![]), (vec![1, 3], vec![]));
        assert_eq!(diffed(vec![], vec![2, 1, 2]), (vec![], vec![1, 2, 2]));
        assert_eq!(diffed(vec![5, 1, 5], vec![5, 1]), (vec![5], vec![]));
    }

    /// [`diff_sorted`] of two fresh lists, checking what it promises of
    /// its lists: the working lists left empty with their capacity, each
    /// output exactly its length.
    fn diffed(mut old: Vec<u8>, mut new: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let capacities = (old.capacity(), new.capacity());
        let (only_old, only_new) = diff_sorted(&mut old, &mut new);
        assert!(old.is_empty() && new.is_empty(), "working lists emptied");
        assert_eq!(
            (old.capacity(), new.capacity()),
            capacities,
            "capacity kept"
        );
        assert_eq!(only_old.capacity(), only_old.len(), "exact output");
        assert_eq!(only_new.capacity(), only_new.len(), "exact output");
        (only_old, only_new)
    }

    /// `part` is `whole` with some elements left out.
    fn is_subsequence(part: &[u8], whole: &[u8]) -> bool {
        let mut rest = whole.iter();
        part.iter().all(|x| rest.any(|y| y == x))
    }

    /// `old` as retractions and `new` as assertions, consolidated.
    fn consolidated(old: &[u8], new: &[u8]) -> Vec<(u8, isize)> {
        let mut updates: Vec<(u8, isize)> = old
            .iter()
            .map(|&x| (x, -1))
            .chain(new.iter().map(|&x| (x, 1)))
            .collect();
        consolidate(&mut updates);
        updates
    }

    proptest! {
        /// Rows sorted with prefixes come out as `sort_unstable` puts
        /// them: keys of 0-30 bytes (inline and on the heap) over a small
        /// alphabet, so many share their first 16 bytes or begin others,
        /// and repeated keys whose rows differ.
        #[test]
        fn keyed_rows_sort_as_rows_do(
            rows in proptest::collection::vec(("[ab_]{0,30}", 0u8..4), 0..200),
        ) {
            let mut rows: Vec<(Id, u8)> =
                rows.into_iter().map(|(k, v)| (Id::from(k), v)).collect();
            let mut expected = rows.clone();
            expected.sort_unstable();
            sort_keyed_rows(&mut rows);
            prop_assert_eq!(rows, expected);
        }

        /// The merge gives what consolidating `new - old` gives.
        #[test]
        fn agrees_with_consolidation(
            old in proptest::collection::vec(0u8..12, 0..24),
            new in proptest::collection::vec(0u8..12, 0..24),
        ) {
            let updates = consolidated(&old, &new);
            let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
            for (x, diff) in updates {
                let side = if diff < 0 { &mut only_old } else { &mut only_new };
                side.extend(std::iter::repeat_n(x, diff.unsigned_abs()));
            }
            prop_assert_eq!(diffed(old, new), (only_old, only_new));
        }

        /// What is left of both lists is what consolidating `new - old`
        /// gives, and each list keeps the order of its elements.
        #[test]
        fn cancelling_agrees_with_consolidation(
            old in proptest::collection::vec(0u8..6, 0..12),
            new in proptest::collection::vec(0u8..6, 0..12),
        ) {
            let expected = consolidated(&old, &new);
            let (mut left_old, mut left_new) = (old.clone(), new.clone());
            cancel_common(&mut left_old, &mut left_new, &mut Vec::new(), &mut Vec::new());
            prop_assert!(is_subsequence(&left_old, &old), "old's order kept");
            prop_assert!(is_subsequence(&left_new, &new), "new's order kept");
            for x in &left_old {
                prop_assert!(!left_new.contains(x), "{x} both left and entered");
            }
            prop_assert_eq!(consolidated(&left_old, &left_new), expected);
        }
    }
}
