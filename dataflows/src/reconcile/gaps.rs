//! Per-account sequence gaps (`reconciliation.md`): S = the `sequence`
//! values of the account's accepted events; a gap is a maximal run of
//! integers between min(S) and max(S) not in S. Kept incrementally as
//! (min, max, gaps): a value is in S exactly when it lies in [min, max]
//! outside every gap, so nothing else is stored. A new value splits or
//! shortens one gap, or opens one beyond the ends. Cost per value:
//! O(log gaps). The same three things are what a restart restores.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use differential_dataflow::{Hashable, VecCollection};
use serde::{Deserialize, Serialize};

use super::GapRow;
use crate::engine::{Diff, Time};
use crate::id::Id;
use crate::ordered::{in_time_order, Netting};

/// An account's sequence state: min(S), max(S) and the gaps between.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SequenceState {
    /// The account.
    pub account_id: Id,
    /// min(S).
    pub min: u64,
    /// max(S).
    pub max: u64,
    /// The gaps, (first, last) missing, ascending.
    pub gaps: Vec<(u64, u64)>,
}

/// One update into the gaps stage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum SequenceInput {
    /// An accepted event's sequence value.
    Value(Id, u64),
    /// A restart's state of one account.
    Restore(SequenceState),
}

impl SequenceInput {
    fn account(&self) -> &str {
        match self {
            SequenceInput::Value(account, _) => account,
            SequenceInput::Restore(state) => &state.account_id,
        }
    }
}

/// One row out of the gaps stage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum SequenceRow {
    /// A row of `gaps.csv`.
    Gap(GapRow),
    /// An account's (min, max): with the gaps, its whole state.
    Range(Id, u64, u64),
}

/// One account's (min, max) and gaps (first -> last missing).
#[derive(Default)]
struct AccountSequences {
    range: Option<(u64, u64)>,
    gaps: BTreeMap<u64, u64>,
}

impl AccountSequences {
    fn open(&mut self, first: u64, last: u64, changes: &mut Vec<((u64, u64), Diff)>) {
        if first <= last {
            self.gaps.insert(first, last);
            changes.push(((first, last), 1));
        }
    }

    /// Adds `s`; pushes the gaps closed (-1) and opened (+1).
    fn add(&mut self, s: u64, changes: &mut Vec<((u64, u64), Diff)>) {
        let Some((min, max)) = self.range else {
            self.range = Some((s, s));
            return;
        };
        if s > max {
            self.open(max + 1, s - 1, changes);
            self.range = Some((min, s));
        } else if s < min {
            self.open(s + 1, min - 1, changes);
            self.range = Some((s, max));
        } else if let Some((&first, &last)) = self.gaps.range(..=s).next_back() {
            if s > last {
                return; // Between min and max and outside every gap: seen.
            }
            self.gaps.remove(&first);
            changes.push(((first, last), -1));
            if first < s {
                self.open(first, s - 1, changes);
            }
            if s < last {
                self.open(s + 1, last, changes);
            }
        }
    }
}

/// Sequence values (and restored states) in; gap rows and per-account
/// ranges out.
///
/// Per timestamp, restored states go first (a restart feeds them alone, at
/// its start time), then each account's new values in ascending order, so
/// a run of in-order values only extends the range: no gap opens and
/// closes again within the timestamp. Each account's gap changes are
/// netted before they leave (and, in a timestamp with restored states,
/// where an account's changes are netted twice, consolidated once more),
/// so the operator need not sort them (`Netting::ByLogic`); the result
/// does not depend on arrival order.
pub(super) fn sequence_gaps<'scope>(
    inputs: VecCollection<'scope, Time, SequenceInput, Diff>,
) -> VecCollection<'scope, Time, SequenceRow, Diff> {
    in_time_order(
        inputs.inner,
        "Reconcile: sequence gaps",
        |input: &SequenceInput| input.account().hashed(),
        HashMap::<Id, AccountSequences>::default(),
        |accounts, time, updates, out| {
            let mut restores = Vec::new();
            let mut values: HashMap<Id, Vec<u64>> = HashMap::default();
            for (input, diff) in updates {
                if diff <= 0 {
                    continue;
                }
                match input {
                    SequenceInput::Value(account, s) => values.entry(account).or_default().push(s),
                    SequenceInput::Restore(restored) => restores.push(restored),
                }
            }
            let restored_any = !restores.is_empty();
            let mut ranges_before: HashMap<Id, Option<(u64, u64)>> = HashMap::default();
            let mut changes = Vec::new();
            for restored in restores {
                let account = restored.account_id;
                let state = accounts.entry(account.clone()).or_default();
                ranges_before.entry(account.clone()).or_insert(state.range);
                state.range = Some((restored.min, restored.max));
                for (first, last) in restored.gaps {
                    state.open(first, last, &mut changes);
                }
                emit_gap_changes(&account, &mut changes, time, out);
            }
            for (account, mut seen) in values {
                seen.sort_unstable();
                let state = accounts.entry(account.clone()).or_default();
                ranges_before.entry(account.clone()).or_insert(state.range);
                for s in seen {
                    state.add(s, &mut changes);
                }
                emit_gap_changes(&account, &mut changes, time, out);
            }
            for (account, before) in ranges_before {
                let after = accounts.get(&account).and_then(|a| a.range);
                if before == after {
                    continue;
                }
                if let Some((min, max)) = before {
                    out.push((SequenceRow::Range(account.clone(), min, max), time, -1));
                }
                if let Some((min, max)) = after {
                    out.push((SequenceRow::Range(account, min, max), time, 1));
                }
            }
            if restored_any {
                differential_dataflow::consolidation::consolidate_updates(out);
            }
        },
        Netting::ByLogic,
    )
}

/// Nets one account's gap `changes` (closed -1, opened +1) and pushes what
/// is left as gap rows at `time`; leaves `changes` empty.
fn emit_gap_changes(
    account: &Id,
    changes: &mut Vec<((u64, u64), Diff)>,
    time: Time,
    out: &mut Vec<(SequenceRow, Time, Diff)>,
) {
    differential_dataflow::consolidation::consolidate(changes);
    for ((first, last), d) in changes.drain(..) {
        let row = GapRow {
            account_id: account.clone(),
            first_missing: first,
            last_missing: last,
        };
        out.push((SequenceRow::Gap(row), time, d));
    }
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
            gaps_after(&[10, 2, 20, 10, 2, 20, 15]),
            vec![(3, 9), (11, 14), (16, 19)]
        );
        assert_eq!(
            gaps_after(&[0, u64::MAX >> 1]),
            vec![(1, (u64::MAX >> 1) - 1)]
        );
    }

    #[test]
    fn gap_changes_fold_to_the_final_gaps_in_any_order() {
        let values = [7u64, 3, 12, 4, 9, 3, 1, 12, 8];
        let mut reversed = values.to_vec();
        reversed.reverse();
        let expected = gaps_after(&values);
        for order in [values.to_vec(), reversed] {
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
