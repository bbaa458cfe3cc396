//! Custodian breaks (`reconciliation.md`), owned per account: an account's
//! live statements decide which positions are compared and as of which date
//! (a position's own statement date, or for a position without one in a
//! covered account, the account's latest statement date), so the whole
//! account lives on one worker.
//!
//! The internal quantity as of D is kept by [`AsOfSums`]: per position, the
//! signed quantity of its live trades by `trade_date`, plus a cached running
//! sum at the date last asked for. A trade change adjusts the cached sum
//! when its date is on or before that date (O(log dates)); a move of the
//! date walks only the dates between the old and the new one. Nothing
//! re-reads a position's history per change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound::{Excluded, Included};

use differential_dataflow::{Hashable, VecCollection};
use serde::{Deserialize, Serialize};

use super::{account_of, BreakKind, BreakRow};
use crate::decimal::Dec8;
use crate::engine::{Diff, Time};
use crate::id::Id;
use crate::ordered::{in_time_order, Netting};
use crate::trade::Date;

/// One update into the breaks stage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) enum BreakInput {
    /// A live trade of `position`: its date and signed quantity (BUY +).
    Trade(Id, Date, Dec8),
    /// The live statement of `position`: its date and custodian quantity.
    Statement(Id, Date, Dec8),
}

impl BreakInput {
    fn position(&self) -> &str {
        match self {
            BreakInput::Trade(p, ..) | BreakInput::Statement(p, ..) => p,
        }
    }
}

/// Signed quantities of a position's live trades by date, with a running
/// sum cached at one date.
#[derive(Default)]
struct AsOfSums {
    by_date: BTreeMap<Date, (Dec8, i64)>,
    /// Live trades in all.
    trades: i64,
    /// (date, sum of quantities dated on or before it, trades dated so).
    cached: Option<(Date, Dec8, i64)>,
}

/// Sum of a position's quantities overflowed 128 bits (never for real data).
#[derive(Debug)]
struct Overflow;

impl AsOfSums {
    fn apply(&mut self, date: Date, quantity: Dec8, diff: Diff) -> Result<(), Overflow> {
        let count = diff as i64;
        let signed = match diff {
            1 => quantity,
            -1 => quantity.negated(),
            _ => {
                let mut total = Dec8::ZERO;
                for _ in 0..diff.unsigned_abs() {
                    total = total.checked_add(quantity).ok_or(Overflow)?;
                }
                if diff < 0 {
                    total.negated()
                } else {
                    total
                }
            }
        };
        let entry = self.by_date.entry(date).or_insert((Dec8::ZERO, 0));
        entry.0 = entry.0.checked_add(signed).ok_or(Overflow)?;
        entry.1 += count;
        if entry.1 == 0 {
            self.by_date.remove(&date);
        }
        self.trades += count;
        if let Some((at, sum, n)) = &mut self.cached {
            if date <= *at {
                *sum = sum.checked_add(signed).ok_or(Overflow)?;
                *n += count;
            }
        }
        Ok(())
    }

    /// (signed quantity, number of live trades) dated on or before `date`.
    fn as_of(&mut self, date: Date) -> Result<(Dec8, i64), Overflow> {
        let (mut sum, mut n) = (Dec8::ZERO, 0i64);
        match self.cached {
            Some((at, s, c)) if at == date => return Ok((s, c)),
            Some((at, s, c)) if at < date => {
                (sum, n) = (s, c);
                for (q, k) in self
                    .by_date
                    .range((Excluded(at), Included(date)))
                    .map(|(_, v)| v)
                {
                    sum = sum.checked_add(*q).ok_or(Overflow)?;
                    n += k;
                }
            }
            Some((at, s, c)) => {
                (sum, n) = (s, c);
                for (q, k) in self
                    .by_date
                    .range((Excluded(date), Included(at)))
                    .map(|(_, v)| v)
                {
                    sum = sum.checked_sub(*q).ok_or(Overflow)?;
                    n -= k;
                }
            }
            None => {
                for (q, k) in self.by_date.range(..=date).map(|(_, v)| v) {
                    sum = sum.checked_add(*q).ok_or(Overflow)?;
                    n += k;
                }
            }
        }
        self.cached = Some((date, sum, n));
        Ok((sum, n))
    }
}

/// Everything the breaks of one account depend on.
#[derive(Default)]
struct AccountBreaks {
    /// Live statement per position: (as_of_date, custodian quantity).
    statements: HashMap<Id, (Date, Dec8)>,
    /// The live statements' dates, counted (the last is the account's latest).
    statement_dates: BTreeMap<Date, usize>,
    positions: HashMap<Id, AsOfSums>,
    /// The break row currently asserted per position.
    emitted: HashMap<Id, BreakRow>,
}

impl AccountBreaks {
    fn latest_date(&self) -> Option<Date> {
        self.statement_dates.keys().next_back().copied()
    }

    fn break_of(&mut self, position: &str, tolerance: Dec8) -> Result<Option<BreakRow>, Overflow> {
        let latest = self.latest_date();
        let sums = self.positions.get_mut(position);
        let (date, custodian, internal, dated_trades) = match self.statements.get(position) {
            Some(&(date, custodian)) => {
                let (internal, n) = match sums {
                    Some(sums) => sums.as_of(date)?,
                    None => (Dec8::ZERO, 0),
                };
                (date, Some(custodian), internal, n)
            }
            None => match (latest, sums) {
                (Some(date), Some(sums)) if sums.trades > 0 => {
                    let (internal, n) = sums.as_of(date)?;
                    (date, None, internal, n)
                }
                _ => return Ok(None),
            },
        };
        let difference = internal
            .checked_sub(custodian.unwrap_or(Dec8::ZERO))
            .ok_or(Overflow)?;
        if difference.0.unsigned_abs() <= tolerance.0.unsigned_abs() {
            return Ok(None);
        }
        let kind = match (custodian, dated_trades) {
            (None, _) => BreakKind::MissingExternal,
            (Some(_), 0) => BreakKind::MissingInternal,
            (Some(_), _) => BreakKind::QuantityMismatch,
        };
        Ok(Some(BreakRow {
            position_key: Id::from(position),
            as_of_date: date,
            kind,
            internal_quantity: internal,
            custodian_quantity: custodian.unwrap_or(Dec8::ZERO),
            difference,
        }))
    }

    /// Applies one timestamp's updates; returns the positions whose break
    /// may have changed.
    fn apply(&mut self, updates: Vec<(BreakInput, Diff)>) -> Result<HashSet<Id>, Overflow> {
        let latest_before = self.latest_date();
        let mut touched = HashSet::new();
        for (input, diff) in updates {
            touched.insert(Id::from(input.position()));
            match input {
                BreakInput::Trade(position, date, quantity) => {
                    let sums = self.positions.entry(position.clone()).or_default();
                    sums.apply(date, quantity, diff)?;
                    if sums.trades == 0 {
                        self.positions.remove(&position);
                    }
                }
                BreakInput::Statement(position, date, quantity) => {
                    if diff > 0 {
                        self.statements.insert(position, (date, quantity));
                        *self.statement_dates.entry(date).or_insert(0) += 1;
                    } else {
                        if self.statements.get(&position) == Some(&(date, quantity)) {
                            self.statements.remove(&position);
                        }
                        if let Some(count) = self.statement_dates.get_mut(&date) {
                            *count -= 1;
                            if *count == 0 {
                                self.statement_dates.remove(&date);
                            }
                        }
                    }
                }
            }
        }
        if self.latest_date() != latest_before {
            // Coverage or the date of every unstated position moved.
            touched.extend(self.positions.keys().cloned());
            touched.extend(self.emitted.keys().cloned());
        }
        Ok(touched)
    }
}

/// Break rows from live trades and live statements, `tolerance` absolute.
/// A position whose sums overflow keeps no break row (impossible below
/// 10^15 trades of the largest quantity).
pub(super) fn breaks<'scope>(
    inputs: VecCollection<'scope, Time, BreakInput, Diff>,
    tolerance: Dec8,
) -> VecCollection<'scope, Time, BreakRow, Diff> {
    in_time_order(
        inputs.inner,
        "Reconcile: breaks",
        |input: &BreakInput| account_of(input.position()).hashed(),
        HashMap::<Id, AccountBreaks>::new(),
        move |accounts, time, updates, out| {
            let mut by_account: BTreeMap<Id, Vec<(BreakInput, Diff)>> = BTreeMap::new();
            for (input, diff) in updates {
                by_account
                    .entry(Id::from(account_of(input.position())))
                    .or_default()
                    .push((input, diff));
            }
            for (account, updates) in by_account {
                let state = accounts.entry(account).or_default();
                let touched = state.apply(updates).unwrap_or_default();
                for position in touched {
                    let new = state.break_of(&position, tolerance).unwrap_or(None);
                    let old = state.emitted.get(&position);
                    if old == new.as_ref() {
                        continue;
                    }
                    if let Some(old) = state.emitted.remove(&position) {
                        out.push((old, time, -1));
                    }
                    if let Some(new) = new {
                        out.push((new.clone(), time, 1));
                        state.emitted.insert(position, new);
                    }
                }
            }
        },
        Netting::Consolidate,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Dec8 {
        match text.strip_prefix('-') {
            Some(rest) => Dec8::parse(rest).expect("decimal").negated(),
            None => Dec8::parse(text).expect("decimal"),
        }
    }

    #[test]
    fn as_of_sums_follow_trades_and_date_moves() {
        let mut sums = AsOfSums::default();
        let day = |n: u32| Date::from_ymd(2026, 3, n);
        sums.apply(day(2), d("10"), 1).expect("ok");
        sums.apply(day(5), d("-4"), 1).expect("ok");
        assert_eq!(sums.as_of(day(1)).expect("ok"), (Dec8::ZERO, 0));
        assert_eq!(sums.as_of(day(4)).expect("ok"), (d("10"), 1));
        sums.apply(day(3), d("1.5"), 1).expect("ok");
        assert_eq!(sums.as_of(day(4)).expect("ok"), (d("11.5"), 2));
        assert_eq!(sums.as_of(day(9)).expect("ok"), (d("7.5"), 3));
        sums.apply(day(2), d("10"), -1).expect("ok");
        assert_eq!(sums.as_of(day(9)).expect("ok"), (d("-2.5"), 2));
        assert_eq!(sums.as_of(day(2)).expect("ok"), (Dec8::ZERO, 0));
        assert_eq!(sums.as_of(day(3)).expect("ok"), (d("1.5"), 1));
    }
}
