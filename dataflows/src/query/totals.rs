//! SUM, COUNT and AVG as differential differences: each group's running
//! [`Totals`], and [`GroupTotals`], the fold that adds up a batch's rows
//! per group and time where they are read, so a million rows of a
//! thousand groups leave their table as a thousand updates per batch.

use differential_dataflow::difference::{IsZero, Monoid, Multiply, Semigroup};
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

use super::expr::{AggFunc, Aggregate, Expr};
use super::fold::RowFold;
use super::value::{EvalError, Number, Row, Value};
use crate::engine::{Diff, Time};

type Evaluated<T> = Result<T, EvalError>;

/// Group totals by key (hashbrown, for lookups by a borrowed key).
type FxHashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;

/// `value * times`, exactly; `None` on overflow. ±1 does not multiply.
fn scaled(value: Number, times: Diff) -> Option<Number> {
    match times {
        1 => Some(value),
        -1 => value.checked_neg(),
        _ => value.checked_mul(Number::from_i128(times as i128)).ok(),
    }
}

/// The running totals of a group's abelian aggregates, as a differential
/// difference: rows, and per aggregate its non-NULL values and their sum.
/// Adding two is exact; an overflow is kept as a flag that turns the
/// group's answer into an error. Rows whose arguments failed to evaluate
/// can be carried too (per message, a count), so that an error is
/// reported only if its rows survive the joins and the filter after.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(super) struct Totals {
    /// The marker row of a query without GROUP BY (one group even over no rows).
    marker: i64,
    rows: i64,
    per: Vec<(i64, Number)>,
    overflow: bool,
    /// Failed rows per error message, sorted, no zero count.
    errors: Vec<(EvalError, i64)>,
}

impl Totals {
    /// The marker of a query without GROUP BY.
    pub(super) fn marker() -> Totals {
        Totals {
            marker: 1,
            ..Totals::default()
        }
    }

    /// Totals of `rows` rows with, per aggregate, the rows whose argument
    /// was not NULL and the arguments' sum; `overflow` when a sum did not
    /// fit (what the typed lane hands on).
    pub(super) fn from_sums(rows: i64, per: Vec<(i64, Number)>, overflow: bool) -> Totals {
        Totals {
            marker: 0,
            rows,
            per,
            overflow,
            errors: Vec::new(),
        }
    }

    /// The number of rows added up (with multiplicity).
    pub(super) fn rows(&self) -> i64 {
        self.rows
    }

    /// Adds `count` rows that failed with `error`.
    fn add_error(&mut self, error: EvalError, count: i64) {
        self.rows += count;
        self.count_error(error, count);
    }

    /// Adds `count` to `error`'s count (keeping the list sorted and free of
    /// zero counts), leaving `rows` alone.
    fn count_error(&mut self, error: EvalError, count: i64) {
        match self.errors.binary_search_by(|(e, _)| e.cmp(&error)) {
            Ok(at) => {
                self.errors[at].1 += count;
                if self.errors[at].1 == 0 {
                    self.errors.remove(at);
                }
            }
            Err(at) if count != 0 => self.errors.insert(at, (error, count)),
            Err(_) => {}
        }
    }

    /// Adds `diff` rows whose aggregate arguments gave `values` (per
    /// argument: 1 and the number, 1 and zero for a non-number, 0 and zero
    /// for NULL).
    fn add_rows(&mut self, diff: Diff, values: &[(i64, Number)]) {
        let times = diff as i64;
        self.rows += times;
        if self.per.len() < values.len() {
            self.per.resize(values.len(), (0, Number::ZERO));
        }
        for ((count, sum), (present, value)) in self.per.iter_mut().zip(values) {
            *count += present * times;
            match scaled(*value, diff).and_then(|term| sum.checked_add(term).ok()) {
                Some(total) => *sum = total,
                None => self.overflow = true,
            }
        }
    }

    /// The aggregates' values.
    pub(super) fn finish(&self, funcs: &[AggFunc]) -> Evaluated<Row> {
        if let Some((error, _)) = self.errors.first() {
            return Err(error.clone());
        }
        if self.overflow {
            return Err(EvalError(
                "numeric overflow in an aggregate (exact arithmetic, 256-bit)".into(),
            ));
        }
        funcs
            .iter()
            .enumerate()
            .map(|(i, func)| {
                let (count, sum) = self.per.get(i).copied().unwrap_or((0, Number::ZERO));
                Ok(match func {
                    AggFunc::Count => Value::Number(Number::from_i128(i128::from(count))),
                    AggFunc::Sum if count == 0 => Value::Null,
                    AggFunc::Sum => Value::Number(sum),
                    AggFunc::Avg if count == 0 => Value::Null,
                    AggFunc::Avg => {
                        Value::Number(sum.checked_div(Number::from_i128(i128::from(count)))?)
                    }
                    AggFunc::Min | AggFunc::Max => {
                        return Err(EvalError("internal: MIN/MAX are not totals".into()))
                    }
                })
            })
            .collect()
    }
}

impl IsZero for Totals {
    fn is_zero(&self) -> bool {
        self.marker == 0
            && self.rows == 0
            && !self.overflow
            && self.errors.is_empty()
            && self.per.iter().all(|(c, s)| *c == 0 && s.is_zero())
    }
}

impl Semigroup for Totals {
    fn plus_equals(&mut self, rhs: &Totals) {
        self.marker += rhs.marker;
        self.rows += rhs.rows;
        self.overflow |= rhs.overflow;
        for (error, count) in &rhs.errors {
            self.count_error(error.clone(), *count);
        }
        if self.per.len() < rhs.per.len() {
            self.per.resize(rhs.per.len(), (0, Number::ZERO));
        }
        for (mine, theirs) in self.per.iter_mut().zip(&rhs.per) {
            mine.0 += theirs.0;
            match mine.1.checked_add(theirs.1) {
                Ok(sum) => mine.1 = sum,
                Err(_) => self.overflow = true,
            }
        }
    }
}

impl Monoid for Totals {
    fn zero() -> Totals {
        Totals::default()
    }
}

impl Multiply<Diff> for Totals {
    type Output = Totals;
    fn multiply(mut self, times: &Diff) -> Totals {
        if *times == 1 {
            return self;
        }
        let factor = *times as i64;
        self.marker *= factor;
        self.rows *= factor;
        for (_, count) in &mut self.errors {
            *count *= factor;
        }
        self.errors.retain(|(_, count)| *count != 0);
        for (count, sum) in &mut self.per {
            *count *= factor;
            match scaled(*sum, *times) {
                Some(product) => *sum = product,
                None => self.overflow = true,
            }
        }
        self
    }
}

/// The fold of a GROUP BY whose aggregates are all SUM, COUNT or AVG: the
/// rows of one input batch that pass the filter, added up per time and
/// group; a row an expression fails on becomes an error update.
pub(super) struct GroupTotals {
    filter: Option<Expr>,
    keys: Vec<Expr>,
    /// Per aggregate: its argument (`None`: `COUNT(*)`) and whether it
    /// adds the values up (SUM, AVG), which then must be numbers.
    args: Vec<(Option<Expr>, bool)>,
    /// Whether an argument's error is carried in the group's totals
    /// (reported only if the group survives what follows) instead of
    /// emitted at once.
    defer_errors: bool,
    /// Per time met in the batch, the totals per group. The maps are
    /// reused from batch to batch; only `groups[..used]` are current.
    groups: Vec<(Time, FxHashMap<Row, Totals>)>,
    used: usize,
    errors: Vec<(EvalError, Time, Diff)>,
    /// The current row's group key and argument values (reused buffers).
    key: Row,
    values: Vec<(i64, Number)>,
}

/// A reused group map keeps at most this many slots between batches, so
/// one huge batch does not hold its memory for the query's lifetime.
const KEPT_GROUP_SLOTS: usize = 1 << 16;

impl GroupTotals {
    /// Groups by `keys` the rows passing `filter`, totalling the arguments
    /// of `aggregates` (SUM, COUNT and AVG only).
    pub(super) fn new(filter: Option<Expr>, keys: Vec<Expr>, aggregates: &[Aggregate]) -> Self {
        GroupTotals {
            filter,
            keys,
            args: aggregates
                .iter()
                .map(|a| (a.arg.clone(), matches!(a.func, AggFunc::Sum | AggFunc::Avg)))
                .collect(),
            defer_errors: false,
            groups: Vec::new(),
            used: 0,
            errors: Vec::new(),
            key: Row::new(),
            values: Vec::new(),
        }
    }

    /// The same fold, carrying the aggregates' argument errors in the
    /// totals (for totals taken before joins and a filter).
    pub(super) fn deferring_errors(mut self) -> Self {
        self.defer_errors = true;
        self
    }

    /// The totals of the current row's group at `time`.
    fn group(&mut self, time: Time) -> &mut Totals {
        let slot = match self.groups[..self.used]
            .iter()
            .position(|(t, _)| *t == time)
        {
            Some(slot) => slot,
            None => {
                if self.used == self.groups.len() {
                    self.groups.push((time, FxHashMap::default()));
                } else {
                    self.groups[self.used].0 = time;
                }
                self.used += 1;
                self.used - 1
            }
        };
        self.groups[slot]
            .1
            .entry_ref(self.key.as_slice())
            .or_default()
    }

    /// The arguments' values on `row`, into `self.values`.
    fn evaluate_args(&mut self, row: &[Value]) -> Evaluated<()> {
        self.values.clear();
        for (arg, sums) in &self.args {
            self.values.push(match arg {
                None => (1, Number::ZERO),
                Some(arg) => match arg.eval_ref(row)?.as_ref() {
                    Value::Null => (0, Number::ZERO),
                    Value::Number(n) => (1, *n),
                    other if *sums => {
                        return Err(EvalError(format!(
                            "SUM/AVG need numbers, got {}",
                            other.type_name()
                        )))
                    }
                    // COUNT(x) of a non-number counts it.
                    _ => (1, Number::ZERO),
                },
            });
        }
        Ok(())
    }

    fn add(&mut self, row: &[Value], time: Time, diff: Diff) -> Evaluated<()> {
        if let Some(filter) = &self.filter {
            if *filter.eval_ref(row)? != Value::Bool(true) {
                return Ok(());
            }
        }
        self.key.clear();
        for key in &self.keys {
            self.key.push(key.eval_ref(row)?.into_owned());
        }
        match self.evaluate_args(row) {
            Ok(()) => {
                let values = std::mem::take(&mut self.values);
                self.group(time).add_rows(diff, &values);
                self.values = values;
            }
            Err(error) if self.defer_errors => self.group(time).add_error(error, diff as i64),
            Err(error) => return Err(error),
        }
        Ok(())
    }
}

impl RowFold for GroupTotals {
    type Out = Evaluated<(Row, Totals)>;

    fn update(&mut self, row: &[Value], time: Time, diff: Diff) {
        if let Err(error) = self.add(row, time, diff) {
            self.errors.push((error, time, diff));
        }
    }

    fn flush(&mut self, emit: &mut dyn FnMut(Self::Out, Time, Diff)) {
        for (time, groups) in &mut self.groups[..self.used] {
            for (key, totals) in groups.drain() {
                if !totals.is_zero() {
                    emit(Ok((key, totals)), *time, 1);
                }
            }
            groups.shrink_to(KEPT_GROUP_SLOTS);
        }
        self.used = 0;
        for (error, time, diff) in self.errors.drain(..) {
            emit(Err(error), time, diff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Totals of `rows` (value per aggregate, or an error), each `diff` times.
    fn totals_of(rows: &[(i64, u32, bool, isize)]) -> Totals {
        let mut totals = Totals::default();
        for (mantissa, scale, fails, diff) in rows {
            if *fails {
                totals.add_error(EvalError(format!("e{}", mantissa % 3)), *diff as i64);
            } else {
                let value = Number::new(ethnum::I256::from(*mantissa), *scale);
                totals.add_rows(*diff, &[(1, value), (0, Number::ZERO)]);
            }
        }
        totals
    }

    proptest! {
        /// Totals form an abelian group under `plus_equals`, with
        /// `multiply` as repeated addition: a total minus itself is zero,
        /// times 3 is itself added three times, and the order of
        /// addition does not matter.
        #[test]
        fn totals_add_up_as_an_abelian_group(
            a in proptest::collection::vec((-1_000_000i64..1_000_000, 0u32..12, any::<bool>(), -3isize..4), 0..8),
            b in proptest::collection::vec((-1_000_000i64..1_000_000, 0u32..12, any::<bool>(), -3isize..4), 0..8),
        ) {
            let (ta, tb) = (totals_of(&a), totals_of(&b));
            let mut minus = ta.clone();
            minus.plus_equals(&ta.clone().multiply(&-1));
            prop_assert!(minus.is_zero(), "{minus:?}");
            let mut thrice = ta.clone();
            thrice.plus_equals(&ta);
            thrice.plus_equals(&ta);
            prop_assert_eq!(ta.clone().multiply(&3), thrice);
            let (mut ab, mut ba) = (ta.clone(), tb.clone());
            ab.plus_equals(&tb);
            ba.plus_equals(&ta);
            prop_assert_eq!(ab, ba);
        }
    }
}
