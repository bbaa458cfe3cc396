//! Per-account sequence gaps (`reconciliation.md`): S = the `sequence`
//! values of the account's accepted events; a gap is a maximal run of
//! integers between min(S) and max(S) not in S. Kept incrementally: a new
//! value splits or shortens one gap, or opens one beyond the ends. Cost per
//! value: O(log gaps).

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::{Hashable, VecCollection};

use super::ordered::in_time_order;
use super::GapRow;
use crate::engine::{Diff, Time};

/// One account's sequence values and its gaps (first -> last missing).
#[derive(Default)]
struct AccountSequences {
    seen: std::collections::HashSet<u64>,
    min: u64,
    max: u64,
    gaps: BTreeMap<u64, u64>,
}

impl AccountSequences {
    /// Adds `s`; pushes the gaps closed (-1) and opened (+1).
    fn add(&mut self, s: u64, changes: &mut Vec<((u64, u64), Diff)>) {
        if !self.seen.insert(s) {
            return;
        }
        if self.seen.len() == 1 {
            (self.min, self.max) = (s, s);
            return;
        }
        fn open(
            gaps: &mut BTreeMap<u64, u64>,
            changes: &mut Vec<((u64, u64), Diff)>,
            first: u64,
            last: u64,
        ) {
            if first <= last {
                gaps.insert(first, last);
                changes.push(((first, last), 1));
            }
        }
        if s > self.max {
            open(&mut self.gaps, changes, self.max + 1, s - 1);
            self.max = s;
        } else if s < self.min {
            open(&mut self.gaps, changes, s + 1, self.min - 1);
            self.min = s;
        } else if let Some((&first, &last)) = self.gaps.range(..=s).next_back() {
            // s is missing (not seen) and between min and max: inside this gap.
            debug_assert!(first <= s && s <= last);
            self.gaps.remove(&first);
            changes.push(((first, last), -1));
            if first < s {
                open(&mut self.gaps, changes, first, s - 1);
            }
            if s < last {
                open(&mut self.gaps, changes, s + 1, last);
            }
        }
    }
}

/// `(account, sequence)` values in (accepted events only), gap rows out.
pub(super) fn sequence_gaps<'scope>(
    sequences: VecCollection<'scope, Time, (String, u64), Diff>,
) -> VecCollection<'scope, Time, GapRow, Diff> {
    in_time_order(
        sequences.inner,
        "Reconcile: sequence gaps",
        |(account, _): &(String, u64)| account.hashed(),
        HashMap::<String, AccountSequences>::new(),
        |accounts, time, updates, out| {
            for ((account, s), diff) in updates {
                if diff <= 0 {
                    continue;
                }
                let mut changes = Vec::new();
                accounts
                    .entry(account.clone())
                    .or_default()
                    .add(s, &mut changes);
                for ((first, last), d) in changes {
                    out.push((
                        GapRow {
                            account_id: account.clone(),
                            first_missing: first,
                            last_missing: last,
                        },
                        time,
                        d,
                    ));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps_after(values: &[u64]) -> Vec<(u64, u64)> {
        let mut account = AccountSequences::default();
        let mut changes = Vec::new();
        for &v in values {
            account.add(v, &mut changes);
        }
        account.gaps.into_iter().collect()
    }

    #[test]
    fn gaps_are_maximal_missing_runs_between_min_and_max() {
        assert_eq!(gaps_after(&[5]), vec![]);
        assert_eq!(gaps_after(&[1, 5]), vec![(2, 4)]);
        assert_eq!(gaps_after(&[1, 5, 3]), vec![(2, 2), (4, 4)]);
        assert_eq!(gaps_after(&[5, 1, 3, 3, 2, 4]), vec![]);
        assert_eq!(gaps_after(&[10, 2, 20]), vec![(3, 9), (11, 19)]);
        assert_eq!(
            gaps_after(&[0, u64::MAX >> 1]),
            vec![(1, (u64::MAX >> 1) - 1)]
        );
    }

    #[test]
    fn gap_changes_fold_to_the_final_gaps_in_any_order() {
        let values = [7u64, 3, 12, 4, 9, 3, 1, 12, 8];
        let mut orders = vec![values.to_vec()];
        let mut reversed = values.to_vec();
        reversed.reverse();
        orders.push(reversed);
        let expected = gaps_after(&values);
        for order in orders {
            let mut account = AccountSequences::default();
            let mut changes = Vec::new();
            for v in order {
                account.add(v, &mut changes);
            }
            let mut folded: BTreeMap<(u64, u64), Diff> = BTreeMap::new();
            for (gap, d) in changes {
                *folded.entry(gap).or_default() += d;
            }
            let live: Vec<(u64, u64)> = folded
                .into_iter()
                .filter(|(_, d)| *d != 0)
                .map(|(g, d)| {
                    assert_eq!(d, 1);
                    g
                })
                .collect();
            assert_eq!(live, expected);
        }
    }
}
