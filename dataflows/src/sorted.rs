//! Retractions and assertions between two states, by differential's own
//! consolidation.

use differential_dataflow::consolidation::consolidate;

/// Splits `old` and `new` into (only in `old`, only in `new`): an element
/// present in both (as many times as it is in both) is dropped from both.
/// Both outputs come sorted. This is `new - old` as a differential
/// collection, consolidated.
pub fn diff_sorted<T: Ord + Clone>(mut old: Vec<T>, mut new: Vec<T>) -> (Vec<T>, Vec<T>) {
    // Nothing can cancel when one side is empty: the other, sorted, is the
    // answer (the booking's common case: a buy only opens, so no buffer
    // of updates is built and split again).
    if old.is_empty() || new.is_empty() {
        for side in [&mut old, &mut new] {
            if !side.is_sorted() {
                side.sort();
            }
        }
        return (old, new);
    }
    let mut updates: Vec<(T, isize)> = old
        .into_iter()
        .map(|t| (t, -1))
        .chain(new.into_iter().map(|t| (t, 1)))
        .collect();
    consolidate(&mut updates);
    let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
    for (item, diff) in updates {
        let side = if diff < 0 {
            &mut only_old
        } else {
            &mut only_new
        };
        side.extend(std::iter::repeat_n(item, diff.unsigned_abs()));
    }
    (only_old, only_new)
}

#[cfg(test)]
mod tests {
    use super::diff_sorted;

    #[test]
    fn common_elements_cancel_with_multiplicity() {
        assert_eq!(
            diff_sorted(vec![1, 2, 2, 4], vec![2, 3, 4, 5]),
            (vec![1, 2], vec![3, 5])
        );
        assert_eq!(diff_sorted(Vec::<u8>::new(), vec![1]), (vec![], vec![1]));
        assert_eq!(diff_sorted(vec![3, 1], vec![]), (vec![1, 3], vec![]));
        assert_eq!(diff_sorted(vec![], vec![2, 1, 2]), (vec![], vec![1, 2, 2]));
    }
}
