//! Reading a query's rows batch by batch: a [`RowFold`] sees each update of
//! a row as a borrowed view (one reused buffer, holding only the columns
//! the query reads) and emits what it folded once per input batch. A
//! GROUP BY of SUM / COUNT / AVG so leaves a table as one update per group
//! and time per batch, never as a collection of whole rows.

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::{BatchCursor, BatchKey, BatchVal, Cursor, Navigable};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::value::{Row, Value};
use crate::engine::{Diff, Time};

/// The columns of a table a query reads: a bit per column. A row built for
/// a query holds NULL in the others, which nothing reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns(u64);

impl Columns {
    /// Every column.
    pub const ALL: Columns = Columns(u64::MAX);
    /// No column.
    pub const NONE: Columns = Columns(0);

    /// The set with column `i` added (columns past 63 count as read).
    pub fn with(self, i: usize) -> Columns {
        match u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i)) {
            Some(bit) => Columns(self.0 | bit),
            None => Columns::ALL,
        }
    }

    /// True when column `i` is read.
    pub fn has(self, i: usize) -> bool {
        u32::try_from(i)
            .ok()
            .and_then(|i| 1u64.checked_shl(i))
            .is_none_or(|bit| self.0 & bit != 0)
    }
}

/// Builds one row into a reused buffer, computing only the read columns.
pub struct RowBuilder<'a> {
    row: &'a mut Row,
    columns: Columns,
}

impl<'a> RowBuilder<'a> {
    /// A builder that clears `row` and fills the `columns` given.
    pub fn new(row: &'a mut Row, columns: Columns) -> RowBuilder<'a> {
        row.clear();
        RowBuilder { row, columns }
    }

    /// Appends the next column: `value()` when it is read, else NULL.
    pub fn column(&mut self, value: impl FnOnce() -> Value) {
        let read = self.columns.has(self.row.len());
        self.row.push(if read { value() } else { Value::Null });
    }
}

/// A whole row, every column computed, built by `fill`.
pub fn whole_row(fill: impl FnOnce(&mut RowBuilder<'_>)) -> Row {
    let mut row = Row::new();
    fill(&mut RowBuilder::new(&mut row, Columns::ALL));
    row
}

/// What a query does with the updates of the rows it reads.
pub trait RowFold: 'static {
    /// What it emits.
    type Out: differential_dataflow::Data;
    /// One update of `row` (a view, valid during the call).
    fn update(&mut self, row: &[Value], time: Time, diff: Diff);
    /// Emits what was folded since the last flush; called once per input
    /// batch, after its updates, with the batch's capability held.
    fn flush(&mut self, emit: &mut dyn FnMut(Self::Out, Time, Diff));
}

/// A fold that maps each row on its own (`None` drops it): the plain
/// per-row path (WHERE and SELECT, MIN / MAX inputs).
pub struct MapRows<T, L> {
    logic: L,
    pending: Vec<(T, Time, Diff)>,
}

impl<T, L: FnMut(&[Value]) -> Option<T>> MapRows<T, L> {
    /// `logic` applied to each row.
    pub fn new(logic: L) -> MapRows<T, L> {
        MapRows {
            logic,
            pending: Vec::new(),
        }
    }
}

impl<T, L> RowFold for MapRows<T, L>
where
    T: differential_dataflow::Data,
    L: FnMut(&[Value]) -> Option<T> + 'static,
{
    type Out = T;

    fn update(&mut self, row: &[Value], time: Time, diff: Diff) {
        if let Some(out) = (self.logic)(row) {
            self.pending.push((out, time, diff));
        }
    }

    fn flush(&mut self, emit: &mut dyn FnMut(T, Time, Diff)) {
        for (out, time, diff) in self.pending.drain(..) {
            emit(out, time, diff);
        }
    }
}

/// What reads an arrangement's batches record by record ([`fold_records`]).
pub trait RecordFold<Tr>: 'static
where
    Tr: TraceReader,
    Tr::Batch: Navigable,
{
    /// What it emits.
    type Out: differential_dataflow::Data;
    /// The next record of a batch; `first_of_key` for the first one under
    /// its key in that batch.
    fn record(&mut self, key: BatchKey<'_, Tr>, val: BatchVal<'_, Tr>, first_of_key: bool);
    /// One update of the record last given.
    fn update(&mut self, time: Time, diff: Diff);
    /// Emits what was folded since the last flush; called once per input
    /// message, after its updates, with the message's capability held.
    fn flush(&mut self, emit: &mut dyn FnMut(Self::Out, Time, Diff));
}

/// Reads the batches of `arranged` into `fold`, record by record in key
/// order, and flushes it after every input message.
pub fn fold_records<'scope, Tr, F>(
    arranged: Arranged<'scope, Tr>,
    name: &str,
    mut fold: F,
) -> VecCollection<'scope, Time, F::Out, Diff>
where
    Tr: TraceReader<Time = Time> + Clone + 'static,
    Tr::Batch: Navigable,
    BatchCursor<Tr>: Cursor<Time = Time, Diff = Diff>,
    F: RecordFold<Tr>,
{
    arranged
        .stream
        .unary(Pipeline, name, move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for span in data.iter() {
                        let Some(batch) = span.inner.as_ref() else {
                            continue;
                        };
                        let mut cursor = batch.cursor();
                        while let Some(key) = cursor.get_key(batch) {
                            let mut first_of_key = true;
                            while let Some(val) = cursor.get_val(batch) {
                                fold.record(key, val, first_of_key);
                                first_of_key = false;
                                cursor.map_times(batch, |time, diff| {
                                    fold.update(
                                        BatchCursor::<Tr>::owned_time(time),
                                        BatchCursor::<Tr>::owned_diff(diff),
                                    );
                                });
                                cursor.step_val(batch);
                            }
                            cursor.step_key(batch);
                        }
                    }
                    let mut session = output.session(&cap);
                    fold.flush(&mut |out, time, diff| session.give((out, time, diff)));
                });
            }
        })
        .as_collection()
}

/// A [`RowFold`] reading an arrangement: each record becomes a row by
/// `fill` (only `columns` computed) in one reused buffer.
struct RowsOf<L, F> {
    fill: L,
    columns: Columns,
    row: Row,
    fold: F,
}

impl<Tr, L, F> RecordFold<Tr> for RowsOf<L, F>
where
    Tr: TraceReader,
    Tr::Batch: Navigable,
    BatchCursor<Tr>: Cursor<Time = Time, Diff = Diff>,
    F: RowFold,
    L: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, &mut RowBuilder<'_>) + 'static,
{
    type Out = F::Out;

    fn record(&mut self, key: BatchKey<'_, Tr>, val: BatchVal<'_, Tr>, _: bool) {
        (self.fill)(key, val, &mut RowBuilder::new(&mut self.row, self.columns));
    }

    fn update(&mut self, time: Time, diff: Diff) {
        self.fold.update(&self.row, time, diff);
    }

    fn flush(&mut self, emit: &mut dyn FnMut(F::Out, Time, Diff)) {
        self.fold.flush(emit);
    }
}

/// Reads the batches of `arranged`: each `(key, value)` becomes a row by
/// `fill` (only `columns` computed), each of its updates goes to `fold`,
/// and the fold is flushed after every input message.
pub fn fold_arranged<'scope, Tr, F, L>(
    arranged: Arranged<'scope, Tr>,
    columns: Columns,
    fill: L,
    fold: F,
) -> VecCollection<'scope, Time, F::Out, Diff>
where
    Tr: TraceReader<Time = Time> + Clone + 'static,
    Tr::Batch: Navigable,
    BatchCursor<Tr>: Cursor<Time = Time, Diff = Diff>,
    F: RowFold,
    L: FnMut(BatchKey<'_, Tr>, BatchVal<'_, Tr>, &mut RowBuilder<'_>) + 'static,
{
    let rows = RowsOf {
        fill,
        columns,
        row: Row::new(),
        fold,
    };
    fold_records(arranged, "FoldRows", rows)
}

/// [`fold_arranged`] for a collection of whole rows (joined rows, or the
/// lots and positions `AS OF DATE` books again).
pub fn fold_rows<'scope, F: RowFold>(
    rows: VecCollection<'scope, Time, Row, Diff>,
    mut fold: F,
) -> VecCollection<'scope, Time, F::Out, Diff> {
    rows.inner
        .unary(Pipeline, "FoldRows", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    for (row, time, diff) in data.drain(..) {
                        fold.update(&row, time, diff);
                    }
                    let mut session = output.session(&cap);
                    fold.flush(&mut |out, time, diff| session.give((out, time, diff)));
                });
            }
        })
        .as_collection()
}
