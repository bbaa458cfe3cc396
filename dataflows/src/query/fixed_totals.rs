//! The typed lane of a GROUP BY of SUM / COUNT / AVG: when every group key
//! is a column and every aggregate's argument is `*`, a numeric column or
//! the product of two, and there is no WHERE, the totals are read straight
//! from the table's typed records as exact integers at a fixed scale. No
//! row of [`Value`]s is built per record and no expression is
//! interpreted; the group key is built once per key of the arrangement
//! when it depends on that key alone.
//!
//! Guarantee: it emits exactly the `(group key, Totals)` updates the row
//! path ([`super::totals::GroupTotals`]) emits for the same batches (the
//! property test below compares the two), so what follows it cannot tell
//! which lane ran.

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::{BatchCursor, BatchKey, BatchVal, Cursor, Navigable};
use differential_dataflow::VecCollection;
use ethnum::I256;
use rustc_hash::FxBuildHasher;

use super::expr::{AggFunc, Aggregate, BinOp, Expr};
use super::fold::{fold_records, Columns, RecordFold, RowBuilder};
use super::tables::Table;
use super::totals::Totals;
use super::value::{Number, Row, Value};
use crate::engine::{Diff, Time};

type FxHashMap<K, V> = hashbrown::HashMap<K, V, FxBuildHasher>;

/// Each group's totals as a collection (what the typed lane emits).
pub(super) type GroupTotalsCollection<'scope> = VecCollection<'scope, Time, (Row, Totals), Diff>;

/// An aggregate's argument as the typed lane computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FixedArg {
    /// `COUNT(*)`: every row counts, nothing is summed.
    Rows,
    /// A numeric column.
    Column(usize),
    /// The product of two numeric columns.
    Product(usize, usize),
}

/// A query's GROUP BY in the typed lane: the key columns and, per
/// aggregate, its argument and the scale its exact integers are at.
#[derive(Clone, Debug)]
pub(super) struct FixedTotalsSpec {
    table: Table,
    keys: Vec<usize>,
    args: Vec<(FixedArg, u32)>,
}

impl FixedTotalsSpec {
    /// The typed lane for a GROUP BY over `table`, or `None` when any part
    /// needs the row interpreter: a WHERE, a key that is not a column, an
    /// aggregate other than SUM / COUNT / AVG, or an argument other than
    /// `*`, a numeric column of `table` or the product of two.
    pub(super) fn for_query(
        table: Table,
        filter: Option<&Expr>,
        keys: &[Expr],
        aggregates: &[Aggregate],
    ) -> Option<FixedTotalsSpec> {
        if filter.is_some() {
            return None;
        }
        let keys = keys
            .iter()
            .map(|key| match key {
                Expr::Column(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let args = aggregates
            .iter()
            .map(|aggregate| {
                if !matches!(aggregate.func, AggFunc::Sum | AggFunc::Count | AggFunc::Avg) {
                    return None;
                }
                let scale = |column: &Expr| match column {
                    Expr::Column(i) => table.fixed_scale(*i).map(|scale| (*i, scale)),
                    _ => None,
                };
                match &aggregate.arg {
                    None => Some((FixedArg::Rows, 0)),
                    Some(Expr::Binary(BinOp::Mul, left, right)) => {
                        let ((a, scale_a), (b, scale_b)) = (scale(left)?, scale(right)?);
                        Some((FixedArg::Product(a, b), scale_a + scale_b))
                    }
                    Some(column) => {
                        let (i, scale) = scale(column)?;
                        Some((FixedArg::Column(i), scale))
                    }
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FixedTotalsSpec { table, keys, args })
    }

    /// The columns the key needs built as values.
    fn key_columns(&self) -> Columns {
        self.keys
            .iter()
            .fold(Columns::NONE, |columns, i| columns.with(*i))
    }

    /// True when the group key is a function of the arrangement's key
    /// alone, so one key row serves every record under it.
    fn key_from_arrangement_key(&self) -> bool {
        let by_key = self.table.arrangement_key_columns();
        self.keys.iter().all(|i| by_key.has(*i))
    }
}

/// One aggregate's running total in a group: the rows with a non-NULL
/// argument and their sum, kept as an exact integer at the argument's
/// scale while it fits 256 bits; what did not fit is carried in an
/// arbitrary-scale [`Number`].
#[derive(Clone, Copy, Debug)]
struct Sum {
    count: i64,
    fixed: I256,
    carried: Number,
}

impl Default for Sum {
    fn default() -> Sum {
        Sum {
            count: 0,
            fixed: I256::ZERO,
            carried: Number::ZERO,
        }
    }
}

/// The running totals of one group at one time.
#[derive(Clone, Debug, Default)]
struct GroupSums {
    rows: i64,
    per: Vec<Sum>,
    overflow: bool,
}

impl GroupSums {
    /// Adds `diff` rows whose arguments' values are `terms` (`None`: NULL).
    fn add(&mut self, terms: &[Option<I256>], scales: &[(FixedArg, u32)], diff: Diff) {
        self.rows += diff as i64;
        if self.per.len() < terms.len() {
            self.per.resize(terms.len(), Sum::default());
        }
        for ((sum, term), (_, scale)) in self.per.iter_mut().zip(terms).zip(scales) {
            let Some(term) = term else { continue };
            sum.count += diff as i64;
            let term = match diff {
                1 => Some(*term),
                -1 => term.checked_neg(),
                _ => term.checked_mul(I256::from(diff as i128)),
            };
            let Some(term) = term else {
                self.overflow = true;
                continue;
            };
            match sum.fixed.checked_add(term) {
                Some(total) => sum.fixed = total,
                None => {
                    // Carry what fits into the arbitrary-scale sum.
                    match sum.carried.checked_add(Number::new(sum.fixed, *scale)) {
                        Ok(total) => sum.carried = total,
                        Err(_) => self.overflow = true,
                    }
                    sum.fixed = term;
                }
            }
        }
    }

    /// The same totals as the row path's [`Totals`].
    fn totals(&self, scales: &[(FixedArg, u32)]) -> Totals {
        let mut overflow = self.overflow;
        let per = self
            .per
            .iter()
            .zip(scales)
            .map(|(sum, (_, scale))| {
                let total = sum
                    .carried
                    .checked_add(Number::new(sum.fixed, *scale))
                    .unwrap_or_else(|_| {
                        overflow = true;
                        Number::ZERO
                    });
                (sum.count, total)
            })
            .collect();
        Totals::from_sums(self.rows, per, overflow)
    }
}

/// The typed lane's fold: per time, the totals per group of the updates
/// read since the last flush. The group last added to is remembered, so
/// a run of records of one group costs no hash lookup.
pub(super) struct FixedTotals {
    spec: FixedTotalsSpec,
    /// Per time met, each group's index in `sums`.
    groups: Vec<(Time, FxHashMap<Row, usize>)>,
    sums: Vec<GroupSums>,
    /// The time, key and index of the group last added to.
    current: Option<(Time, Row, usize)>,
    terms: Vec<Option<I256>>,
}

impl FixedTotals {
    /// An empty fold for `spec`.
    pub(super) fn new(spec: FixedTotalsSpec) -> FixedTotals {
        FixedTotals {
            spec,
            groups: Vec::new(),
            sums: Vec::new(),
            current: None,
            terms: Vec::new(),
        }
    }

    /// Computes the arguments' values of one record into `self.terms`:
    /// `number(column)` reads a numeric column (`None`: NULL).
    fn evaluate(&mut self, mut number: impl FnMut(usize) -> Option<i128>) {
        self.terms.clear();
        for (arg, _) in &self.spec.args {
            self.terms.push(match arg {
                FixedArg::Rows => Some(I256::ZERO),
                FixedArg::Column(i) => number(*i).map(I256::from),
                FixedArg::Product(a, b) => match (number(*a), number(*b)) {
                    (Some(a), Some(b)) => Some(product(a, b)),
                    _ => None,
                },
            });
        }
    }

    /// Adds `diff` records of group `key` at `time`, whose arguments are in
    /// `self.terms`.
    fn add(&mut self, key: &[Value], time: Time, diff: Diff) {
        let index = match &self.current {
            Some((t, k, index)) if *t == time && k.as_slice() == key => *index,
            _ => {
                let index = self.group_index(key, time);
                self.current = Some((time, key.to_vec(), index));
                index
            }
        };
        self.sums[index].add(&self.terms, &self.spec.args, diff);
    }

    /// The index in `sums` of group `key` at `time`, made if new.
    fn group_index(&mut self, key: &[Value], time: Time) -> usize {
        let slot = match self.groups.iter().position(|(t, _)| *t == time) {
            Some(slot) => slot,
            None => {
                self.groups.push((time, FxHashMap::default()));
                self.groups.len() - 1
            }
        };
        let groups = &mut self.groups[slot].1;
        if let Some(index) = groups.get(key) {
            return *index;
        }
        self.sums.push(GroupSums::default());
        groups.insert(key.to_vec(), self.sums.len() - 1);
        self.sums.len() - 1
    }

    /// Emits the totals folded since the last flush (none that are zero).
    fn flush(&mut self, emit: &mut dyn FnMut((Row, Totals), Time, Diff)) {
        self.current = None;
        for (time, groups) in self.groups.drain(..) {
            for (key, index) in groups {
                let totals = self.sums[index].totals(&self.spec.args);
                if !differential_dataflow::difference::IsZero::is_zero(&totals) {
                    emit((key, totals), time, 1);
                }
            }
        }
        self.sums.clear();
    }
}

/// `a * b` exactly (two 128-bit mantissas always fit 256 bits).
fn product(a: i128, b: i128) -> I256 {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => I256::from(i128::from(a) * i128::from(b)),
        _ => I256::from(a) * I256::from(b),
    }
}

/// The typed lane reading an arrangement's records: `fill` builds a
/// record's key columns (only those) as values, `number(key, value,
/// column)` reads a numeric column as an integer at its fixed scale.
struct FixedRecords<L, N> {
    fill: L,
    number: N,
    fold: FixedTotals,
    /// The key's columns, and whether they are built once per arrangement key.
    columns: Columns,
    per_arrangement_key: bool,
    row: Row,
    key: Row,
}

impl<Tr, L, N> RecordFold<Tr> for FixedRecords<L, N>
where
    Tr: TraceReader,
    Tr::Batch: Navigable,
    L: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, &mut RowBuilder<'_>) + 'static,
    N: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, usize) -> Option<i128> + 'static,
{
    type Out = (Row, Totals);

    fn record(&mut self, key: BatchKey<'_, Tr>, val: BatchVal<'_, Tr>, first_of_key: bool) {
        if first_of_key || !self.per_arrangement_key {
            (self.fill)(key, val, &mut RowBuilder::new(&mut self.row, self.columns));
            self.key.clear();
            let row = &self.row;
            self.key.extend(
                self.fold
                    .spec
                    .keys
                    .iter()
                    .map(|i| row.get(*i).cloned().unwrap_or(Value::Null)),
            );
        }
        let number = &mut self.number;
        self.fold.evaluate(|column| number(key, val, column));
    }

    fn update(&mut self, time: Time, diff: Diff) {
        self.fold.add(&self.key, time, diff);
    }

    fn flush(&mut self, emit: &mut dyn FnMut((Row, Totals), Time, Diff)) {
        self.fold.flush(emit);
    }
}

/// The totals of `fold` over the batches of `arranged` (see
/// [`FixedRecords`] for `fill` and `number`).
pub(super) fn fold_fixed_totals<'scope, Tr, L, N>(
    arranged: Arranged<'scope, Tr>,
    fill: L,
    number: N,
    fold: FixedTotals,
) -> GroupTotalsCollection<'scope>
where
    Tr: TraceReader<Time = Time> + Clone + 'static,
    Tr::Batch: Navigable,
    BatchCursor<Tr>: Cursor<Time = Time, Diff = Diff>,
    L: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, &mut RowBuilder<'_>) + 'static,
    N: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, usize) -> Option<i128> + 'static,
{
    let records = FixedRecords {
        columns: fold.spec.key_columns(),
        per_arrangement_key: fold.spec.key_from_arrangement_key(),
        fill,
        number,
        fold,
        row: Row::new(),
        key: Row::new(),
    };
    fold_records(arranged, "FixedTotals", records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decimal::Dec8;
    use crate::id::Id;
    use crate::position::{Lot, LotSide};
    use crate::query::fold::RowFold;
    use crate::query::tables::{fill_lot_row, lot_number, lot_row};
    use crate::query::totals::GroupTotals;
    use crate::query::Plan;
    use crate::trade::Date;
    use proptest::prelude::*;

    /// The GROUP BY part of `sql` (a single-table query over lots).
    fn grouping(sql: &str) -> (Option<Expr>, Vec<Expr>, Vec<Aggregate>) {
        let plan = Plan::compile(sql).expect("query compiles");
        let grouping = plan.grouping.expect("a GROUP BY");
        (plan.filter, grouping.keys, grouping.aggregates)
    }

    fn lot(i: usize, quantity: i128, price: i128, short: bool) -> (Id, Lot) {
        let key = Id::from(format!("A_B_S{}", i % 3).as_str());
        let lot = Lot {
            lot_id: Id::from(format!("T{i}").as_str()),
            side: if short { LotSide::Short } else { LotSide::Long },
            open_date: Date::from_ymd(2026, 11, 1 + (i % 5) as u32),
            quantity: Dec8(quantity),
            price: Dec8(price),
        };
        (key, lot)
    }

    /// Sorted `(key, totals, time)` updates of a fold's flush.
    fn flushed(emit: impl FnOnce(&mut dyn FnMut((Row, Totals), Time, Diff))) -> Vec<String> {
        let mut out = Vec::new();
        emit(&mut |(key, totals), time, diff| {
            out.push(format!("{key:?} {totals:?} {time} {diff}"))
        });
        out.sort();
        out
    }

    const QUERIES: [&str; 4] = [
        "SELECT position_key, COUNT(*), SUM(quantity), SUM(quantity * price), AVG(price) FROM lots GROUP BY position_key",
        "SELECT side, COUNT(*), SUM(quantity * price) FROM lots GROUP BY side",
        "SELECT side, open_date, SUM(price * quantity), COUNT(quantity) FROM lots GROUP BY side, open_date",
        "SELECT SUM(quantity), COUNT(*) FROM lots",
    ];

    #[test]
    fn the_lane_takes_plain_shapes_and_refuses_the_rest() {
        for sql in QUERIES {
            let (filter, keys, aggregates) = grouping(sql);
            assert!(
                FixedTotalsSpec::for_query(Table::Lots, filter.as_ref(), &keys, &aggregates)
                    .is_some(),
                "{sql}"
            );
        }
        for sql in [
            "SELECT side, SUM(quantity) FROM lots WHERE price > 1 GROUP BY side",
            "SELECT side, SUM(quantity + price) FROM lots GROUP BY side",
            "SELECT side, MAX(quantity) FROM lots GROUP BY side",
            "SELECT side, SUM(lot_id) FROM lots GROUP BY side",
            "SELECT side, SUM(quantity * price * 2) FROM lots GROUP BY side",
        ] {
            let (filter, keys, aggregates) = grouping(sql);
            assert!(
                FixedTotalsSpec::for_query(Table::Lots, filter.as_ref(), &keys, &aggregates)
                    .is_none(),
                "{sql}"
            );
        }
    }

    #[test]
    fn a_sum_past_256_bits_at_its_scale_carries_into_an_exact_number() {
        // 2^200 at scale 16: four of them overflow a 256-bit mantissa at
        // that scale, though their sum, 2^202, is small as a number.
        let two_200 = I256::ONE << 200;
        let term = two_200 * I256::from(10i128.pow(16));
        let args = [(FixedArg::Column(0), 16)];
        let mut sums = GroupSums::default();
        for _ in 0..4 {
            sums.add(&[Some(term)], &args, 1);
        }
        assert!(
            !sums.per[0].carried.is_zero(),
            "the fixed sum overflowed and carried"
        );
        sums.add(&[Some(term)], &args, -1);
        let expected = Totals::from_sums(
            3,
            vec![(3, Number::new(two_200 * I256::from(3u8), 0))],
            false,
        );
        assert_eq!(sums.totals(&args), expected);
    }

    proptest! {
        /// On any updates of lots (large and small mantissas, any diffs and
        /// times), the typed lane emits exactly the row path's totals.
        #[test]
        fn the_typed_lane_equals_the_row_path(
            updates in proptest::collection::vec(
                (
                    0usize..40,
                    prop_oneof![1i128..1_000_000_000, (1i128 << 90)..(1i128 << 100)],
                    prop_oneof![1i128..10_000_000_000, (1i128 << 90)..(1i128 << 100)],
                    any::<bool>(),
                    0u64..3,
                    prop_oneof![Just(1isize), Just(-1), -3isize..4],
                ),
                0..60,
            ),
            query in 0usize..4,
        ) {
            let (filter, keys, aggregates) = grouping(QUERIES[query]);
            let spec = FixedTotalsSpec::for_query(Table::Lots, filter.as_ref(), &keys, &aggregates)
                .expect("the lane applies");
            let columns = spec.key_columns();
            let key_positions = spec.keys.clone();
            let mut typed = FixedTotals::new(spec);
            let mut rows = GroupTotals::new(filter, keys, &aggregates);
            let mut row = Row::new();
            for (i, quantity, price, short, time, diff) in updates {
                let (key, lot) = lot(i, quantity, price, short);
                rows.update(&lot_row(&key, &lot), time, diff);
                fill_lot_row(&mut RowBuilder::new(&mut row, columns), &key, &lot);
                let key_row: Row = key_positions.iter().map(|p| row[*p].clone()).collect();
                typed.evaluate(|column| lot_number(&lot, column));
                typed.add(&key_row, time, diff);
            }
            let expected = flushed(|emit| rows.flush(&mut |result, time, diff| {
                emit(result.expect("no evaluation error"), time, diff)
            }));
            let got = flushed(|emit| typed.flush(emit));
            prop_assert_eq!(got, expected);
        }
    }
}
