//! Small helpers over sorted sequences.

/// Splits two sorted sequences into (only in `old`, only in `new`): an
/// element present in both (as many times as it is in both) is dropped from
/// both. Both outputs stay sorted.
pub fn diff_sorted<T: Ord>(old: Vec<T>, new: Vec<T>) -> (Vec<T>, Vec<T>) {
    let (mut only_old, mut only_new) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x == y => {
                a.next();
                b.next();
            }
            (Some(x), Some(y)) if x < y => only_old.extend(a.next()),
            (Some(_), Some(_)) => only_new.extend(b.next()),
            (Some(_), None) => only_old.extend(a.next()),
            (None, Some(_)) => only_new.extend(b.next()),
            (None, None) => break,
        }
    }
    (only_old, only_new)
}

#[cfg(test)]
mod tests {
    use super::diff_sorted;

    #[test]
    fn keeps_only_what_differs() {
        assert_eq!(
            diff_sorted(vec![1, 2, 2, 4], vec![2, 3, 4, 5]),
            (vec![1, 2], vec![3, 5])
        );
        assert_eq!(diff_sorted(Vec::<u8>::new(), vec![1]), (vec![], vec![1]));
    }
}
