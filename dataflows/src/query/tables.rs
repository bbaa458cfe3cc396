//! The engine's collections as named tables: their columns (those of the
//! spec's files), their rows, and the shared traces a query imports.

use differential_dataflow::operators::arrange::{ShutdownButton, TraceAgent};
use differential_dataflow::trace::implementations::{KeySpine, ValSpine};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Scope;
use timely::progress::frontier::{Antichain, AntichainRef};

use super::fixed_totals::{fold_fixed_totals, FixedTotals};
use super::fold::{fold_arranged, whole_row, Columns, MapRows, RowBuilder, RowFold};
use super::totals::Totals;
use super::value::{Number, Row, Value};
use crate::calendar::civil_from_days;
use crate::correction::Correction;
use crate::decimal::{Dec8, DEC8_SCALE_DIGITS};
use crate::engine::{Diff, Time};
use crate::id::Id;
use crate::position::{Lot, PositionSummary};
use crate::reconcile::{BreakRow, GapRow, ValuationRow};
use crate::trade::{Instant, LotMethod, TradeVersion};

/// A table a query can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Open lots: the rows of `lots.csv`.
    Lots,
    /// Position summaries: the rows of `positions.csv`.
    Positions,
    /// Valuations: the rows of `valuations.csv`.
    Valuations,
    /// Breaks: the rows of `breaks.csv`.
    Breaks,
    /// Sequence gaps: the rows of `gaps.csv`.
    Gaps,
    /// The live version of every booked (not cancelled) trade: the fields
    /// of the trade event, with its position key first.
    Trades,
    /// Correction events: their top-level fields (objects and arrays as
    /// compact JSON text).
    Corrections,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 7] = [
        Table::Lots,
        Table::Positions,
        Table::Valuations,
        Table::Breaks,
        Table::Gaps,
        Table::Trades,
        Table::Corrections,
    ];

    /// Its name in SQL.
    pub fn name(self) -> &'static str {
        match self {
            Table::Lots => "lots",
            Table::Positions => "positions",
            Table::Valuations => "valuations",
            Table::Breaks => "breaks",
            Table::Gaps => "gaps",
            Table::Trades => "trades",
            Table::Corrections => "corrections",
        }
    }

    /// The table named `name` (case-insensitive).
    pub fn named(name: &str) -> Option<Table> {
        Table::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The scale (fractional digits) of column `i` when it is a number
    /// whose exact integer at that scale fits 128 bits in every record
    /// (what the typed GROUP BY lane reads, see [`lot_number`] and
    /// [`position_number`]); `None` for any other column.
    pub fn fixed_scale(self, i: usize) -> Option<u32> {
        match (self, i) {
            (Table::Lots, LOT_QUANTITY | LOT_PRICE) | (Table::Positions, POSITION_QUANTITY) => {
                Some(DEC8_SCALE_DIGITS)
            }
            (Table::Positions, POSITION_LOT_COUNT) => Some(0),
            _ => None,
        }
    }

    /// The columns a record's arrangement key alone determines.
    pub fn arrangement_key_columns(self) -> Columns {
        match self {
            // Keyed by position: the position key is column 0.
            Table::Lots | Table::Positions => Columns::NONE.with(0),
            _ => Columns::NONE,
        }
    }

    /// True for the tables `AS OF DATE` restricts: those derived from the
    /// live trades alone (`trades`, `lots`, `positions`).
    pub fn has_business_date(self) -> bool {
        matches!(self, Table::Trades | Table::Lots | Table::Positions)
    }

    /// Its columns, in the order of its file's header.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Table::Lots => &[
                "position_key",
                "lot_id",
                "side",
                "open_date",
                "quantity",
                "price",
            ],
            Table::Positions => &[
                "position_key",
                "quantity",
                "lot_count",
                "cost_basis",
                "realized_pnl",
            ],
            Table::Valuations => &["position_key", "price", "market_value", "unrealized_pnl"],
            Table::Breaks => &[
                "position_key",
                "as_of_date",
                "kind",
                "internal_quantity",
                "custodian_quantity",
                "difference",
            ],
            Table::Gaps => &["account_id", "first_missing", "last_missing"],
            Table::Trades => &[
                "position_key",
                "trade_id",
                "version",
                "action",
                "account_id",
                "book_id",
                "security_id",
                "side",
                "quantity",
                "price",
                "currency",
                "trade_date",
                "trade_time",
                "sequence",
                "correlation_id",
            ],
            Table::Corrections => &[
                "position_key",
                "account_id",
                "book_id",
                "security_id",
                "as_of",
                "cause",
                "before",
                "after",
                "delta",
                "lots_closed",
                "lots_opened",
            ],
        }
    }
}

/// A set of tables (a bit per [`Table`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSet(u8);

impl TableSet {
    /// No table.
    pub const NONE: TableSet = TableSet(0);
    /// Every table.
    pub const ALL: TableSet = TableSet((1 << Table::ALL.len()) - 1);

    fn bit(table: Table) -> u8 {
        1 << (table as u8)
    }

    /// The set with `table` added.
    pub fn with(self, table: Table) -> TableSet {
        TableSet(self.0 | TableSet::bit(table))
    }

    /// The union.
    pub fn union(self, other: TableSet) -> TableSet {
        TableSet(self.0 | other.0)
    }

    /// True when `table` is in the set.
    pub fn contains(self, table: Table) -> bool {
        self.0 & TableSet::bit(table) != 0
    }
}

impl FromIterator<Table> for TableSet {
    fn from_iter<I: IntoIterator<Item = Table>>(tables: I) -> TableSet {
        tables.into_iter().fold(TableSet::NONE, TableSet::with)
    }
}

fn text(id: &str) -> Value {
    Value::Text(Id::from(id))
}

/// Column `quantity` of `lots`.
const LOT_QUANTITY: usize = 4;
/// Column `price` of `lots`.
const LOT_PRICE: usize = 5;
/// Column `quantity` of `positions`.
const POSITION_QUANTITY: usize = 1;
/// Column `lot_count` of `positions`.
const POSITION_LOT_COUNT: usize = 2;

/// Numeric column `column` of a lot as an integer at its
/// [`Table::fixed_scale`]; `None` for the other columns.
pub fn lot_number(lot: &Lot, column: usize) -> Option<i128> {
    match column {
        LOT_QUANTITY => Some(lot.quantity.0),
        LOT_PRICE => Some(lot.price.0),
        _ => None,
    }
}

/// Numeric column `column` of a position as an integer at its
/// [`Table::fixed_scale`]; `None` for the other columns.
pub fn position_number(summary: &PositionSummary, column: usize) -> Option<i128> {
    match column {
        POSITION_QUANTITY => Some(summary.quantity.0),
        POSITION_LOT_COUNT => Some(i128::from(summary.lot_count)),
        _ => None,
    }
}

/// Fills a row of `lots`.
pub fn fill_lot_row(row: &mut RowBuilder<'_>, position_key: &Id, lot: &Lot) {
    row.column(|| Value::Text(position_key.clone()));
    row.column(|| Value::Text(lot.lot_id.clone()));
    row.column(|| text(lot.side.as_str()));
    row.column(|| Value::Date(lot.open_date));
    row.column(|| Value::Number(Number::from_dec8(lot.quantity)));
    row.column(|| Value::Number(Number::from_dec8(lot.price)));
}

/// Fills a row of `positions`.
pub fn fill_position_row(row: &mut RowBuilder<'_>, position_key: &Id, summary: &PositionSummary) {
    row.column(|| Value::Text(position_key.clone()));
    row.column(|| Value::Number(Number::from_dec8(summary.quantity)));
    row.column(|| Value::Number(Number::from_i128(i128::from(summary.lot_count))));
    row.column(|| Value::Number(Number::from_amount(summary.cost_basis)));
    row.column(|| Value::Number(Number::from_amount(summary.realized_pnl)));
}

/// Fills a row of `valuations`.
pub fn fill_valuation_row(row: &mut RowBuilder<'_>, valuation: &ValuationRow) {
    row.column(|| Value::Text(valuation.position_key.clone()));
    row.column(|| Value::Number(Number::from_dec8(valuation.price)));
    row.column(|| Value::Number(Number::from_amount(valuation.market_value)));
    row.column(|| Value::Number(Number::from_amount(valuation.unrealized_pnl)));
}

/// Fills a row of `breaks`.
pub fn fill_break_row(row: &mut RowBuilder<'_>, found: &BreakRow) {
    row.column(|| Value::Text(found.position_key.clone()));
    row.column(|| Value::Date(found.as_of_date));
    row.column(|| text(found.kind.as_str()));
    row.column(|| Value::Number(Number::from_dec8(found.internal_quantity)));
    row.column(|| Value::Number(Number::from_dec8(found.custodian_quantity)));
    row.column(|| Value::Number(Number::from_dec8(found.difference)));
}

/// Fills a row of `gaps`.
pub fn fill_gap_row(row: &mut RowBuilder<'_>, gap: &GapRow) {
    row.column(|| Value::Text(gap.account_id.clone()));
    row.column(|| Value::Number(Number::from_i128(i128::from(gap.first_missing))));
    row.column(|| Value::Number(Number::from_i128(i128::from(gap.last_missing))));
}

/// Fills a row of `trades`.
pub fn fill_trade_row(row: &mut RowBuilder<'_>, version: &TradeVersion) {
    let number = |n: Option<Dec8>| n.map_or(Value::Null, |n| Value::Number(Number::from_dec8(n)));
    let optional = |t: &Option<Id>| t.as_deref().map_or(Value::Null, text);
    row.column(|| Value::Text(version.position_key()));
    row.column(|| Value::Text(version.trade_id.clone()));
    row.column(|| Value::Number(Number::from_i128(i128::from(version.version))));
    row.column(|| text(version.action.as_str()));
    row.column(|| Value::Text(version.account_id.clone()));
    row.column(|| Value::Text(version.book_id.clone()));
    row.column(|| Value::Text(version.security_id.clone()));
    row.column(|| version.side.map_or(Value::Null, |s| text(s.as_str())));
    row.column(|| number(version.quantity));
    row.column(|| number(version.price));
    row.column(|| optional(&version.currency));
    row.column(|| version.trade_date.map_or(Value::Null, Value::Date));
    row.column(|| {
        version
            .trade_time
            .map_or(Value::Null, |t| text(&instant_text(t)))
    });
    row.column(|| {
        version.sequence.map_or(Value::Null, |s| {
            Value::Number(Number::from_i128(i128::from(s)))
        })
    });
    row.column(|| optional(&version.correlation_id));
}

/// A whole row of `lots`.
pub fn lot_row(position_key: &Id, lot: &Lot) -> Row {
    whole_row(|row| fill_lot_row(row, position_key, lot))
}

/// A whole row of `positions`.
pub fn position_row(position_key: &Id, summary: &PositionSummary) -> Row {
    whole_row(|row| fill_position_row(row, position_key, summary))
}

/// A whole row of `trades`.
pub fn trade_row(version: &TradeVersion) -> Row {
    whole_row(|row| fill_trade_row(row, version))
}

/// An instant as RFC 3339 in UTC, fractional seconds without trailing
/// zeros (a leap second as `:60`).
pub fn instant_text(instant: Instant) -> String {
    let days = instant.secs.div_euclid(86_400);
    let mut second_of_day = instant.secs.rem_euclid(86_400);
    let mut nanos = instant.nanos;
    if nanos >= 1_000_000_000 {
        // Kept as the preceding second with nanos >= 10^9: it is :60.
        nanos -= 1_000_000_000;
        second_of_day += 1;
    }
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    );
    let ss = if second_of_day == 86_400 { 60 } else { ss };
    let (hh, mm) = if second_of_day == 86_400 {
        (23, 59)
    } else {
        (hh, mm)
    };
    let mut out = format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}");
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Fills a row of `corrections`.
pub fn fill_correction_row(row: &mut RowBuilder<'_>, correction: &Correction) {
    // Rendered once, and only if a JSON-valued column is read.
    let json = std::cell::OnceCell::new();
    let field = |name: &str| match json
        .get_or_init(|| correction.to_json().ok())
        .as_ref()
        .and_then(|j| j.get(name))
    {
        Some(serde_json::Value::String(s)) => text(s),
        Some(serde_json::Value::Number(n)) => {
            Number::parse(&n.to_string()).map_or(Value::Null, Value::Number)
        }
        Some(serde_json::Value::Null) | None => Value::Null,
        Some(other) => text(&other.to_string()),
    };
    let mut parts = correction.position_key.splitn(3, '_');
    row.column(|| Value::Text(correction.position_key.clone()));
    for _ in 0..3 {
        let part = parts.next().unwrap_or_default();
        row.column(|| text(part));
    }
    row.column(|| Value::Number(Number::from_i128(i128::from(correction.as_of))));
    row.column(|| field("cause"));
    row.column(|| field("before"));
    row.column(|| field("after"));
    // NULL when the delta overflows (the event itself then fails to render).
    row.column(|| field("delta"));
    row.column(|| field("lots_closed"));
    row.column(|| field("lots_opened"));
}

/// A trace keyed by position (or, for `trades`, by trade id).
pub type PositionTrace<V> = TraceAgent<ValSpine<Id, V, Time, Diff>>;
/// A trace of whole rows.
pub type RowTrace<R> = TraceAgent<KeySpine<R, Time, Diff>>;

/// Shared handles on the engine's arranged collections. Importing one into
/// another dataflow reads the arrangement itself: nothing is copied and
/// nothing is re-read from a source.
///
/// Guarantee: the handles' compaction follows the engine's completed
/// frontier ([`Tables::compact_to`]), so an import starts from the current
/// state, not its history.
#[derive(Clone, Default)]
pub struct Tables {
    /// `lots`, keyed by position.
    pub lots: Option<PositionTrace<Lot>>,
    /// `positions`, keyed by position.
    pub positions: Option<PositionTrace<PositionSummary>>,
    /// `valuations` (when prices are fed).
    pub valuations: Option<RowTrace<ValuationRow>>,
    /// `breaks` (when statements are fed).
    pub breaks: Option<RowTrace<BreakRow>>,
    /// `gaps`.
    pub gaps: Option<RowTrace<GapRow>>,
    /// `trades`, keyed by trade id.
    pub trades: Option<PositionTrace<TradeVersion>>,
    /// `corrections`.
    pub corrections: Option<RowTrace<Correction>>,
    /// The lot-method map, by scope (not a table: `AS OF DATE` books the
    /// live trades again under it). Shared with `trades`.
    pub methods: Option<PositionTrace<LotMethod>>,
}

/// Which updates of a shared trace an import reads: `[since, until)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    /// Updates before this time are read as at it (the trace's own
    /// compaction frontier, if later, wins): the snapshot's time.
    pub since: Time,
    /// Updates at or after this time are not read, and the import ends
    /// once the trace passes it (`None`: read everything, never end).
    pub until: Option<Time>,
}

/// Imports `trace` restricted to `interval`.
fn import_interval<'scope, Tr>(
    trace: &mut TraceAgent<Tr>,
    scope: Scope<'scope, Time>,
    name: &str,
    interval: Interval,
) -> (
    differential_dataflow::operators::arrange::Arranged<
        'scope,
        differential_dataflow::trace::wrappers::frontier::TraceFrontier<TraceAgent<Tr>>,
    >,
    ImportButton,
)
where
    Tr: TraceReader<Time = Time> + 'static,
{
    let compacted = trace.get_logical_compaction().first().copied();
    let since = compacted.map_or(interval.since, |c| c.max(interval.since));
    let until = interval
        .until
        .map_or_else(Antichain::new, Antichain::from_elem);
    trace.import_frontier_core(scope, name, Antichain::from_elem(since), until)
}

/// What compaction asks of a shared trace, whatever its type.
trait SharedTrace {
    /// Compacts it (logically and physically) to `frontier`; nothing when absent.
    fn compact_to(&mut self, frontier: AntichainRef<'_, Time>);
    /// Its logical compaction frontier (`Time::MAX` when fully compacted);
    /// `None` when absent.
    fn since(&mut self) -> Option<Time>;
}

impl<Tr: TraceReader<Time = Time>> SharedTrace for Option<TraceAgent<Tr>> {
    fn compact_to(&mut self, frontier: AntichainRef<'_, Time>) {
        if let Some(trace) = self.as_mut() {
            trace.set_logical_compaction(frontier);
            trace.set_physical_compaction(frontier);
        }
    }

    fn since(&mut self) -> Option<Time> {
        self.as_mut().map(|trace| {
            trace
                .get_logical_compaction()
                .first()
                .copied()
                .unwrap_or(Time::MAX)
        })
    }
}

/// Why a table could not be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("table {0} is not shared by this run (ask for it: RunOptions::query / Attach::new's tables; valuations need prices, breaks need custodian statements)")]
pub struct MissingTable(pub &'static str);

impl Tables {
    /// Every shared trace, whatever its type (absent ones included).
    fn traces(&mut self) -> [&mut dyn SharedTrace; 8] {
        [
            &mut self.lots,
            &mut self.positions,
            &mut self.valuations,
            &mut self.breaks,
            &mut self.gaps,
            &mut self.trades,
            &mut self.corrections,
            &mut self.methods,
        ]
    }

    /// Lets every trace forget distinctions between times before `frontier`.
    pub fn compact_to(&mut self, frontier: Time) {
        let frontier = [frontier];
        for trace in self.traces() {
            trace.compact_to(AntichainRef::new(&frontier));
        }
    }

    /// The oldest time every shared trace still distinguishes (an
    /// `AS KNOWN AT` earlier than it cannot be answered from them).
    pub fn history_since(&mut self) -> Time {
        self.traces()
            .into_iter()
            .filter_map(|trace| trace.since())
            .max()
            .unwrap_or(0)
    }

    /// The rows of `table`, imported into `scope` from its shared trace, and
    /// the import's shutdown button (pressing it on every worker ends the
    /// importing dataflow).
    pub fn import<'scope>(
        &mut self,
        table: Table,
        scope: Scope<'scope, Time>,
    ) -> Result<Imported<'scope, Row>, MissingTable> {
        let whole = MapRows::new(|row: &[Value]| Some(row.to_vec()));
        self.import_fold(table, scope, Interval::default(), Columns::ALL, whole)
    }

    /// [`Tables::import`] of the updates in `interval`, read by `fold` batch
    /// by batch: each row is built once into a reused buffer, with only
    /// `columns` computed (NULL in the others), so a filter, projection or
    /// aggregate builds no collection of whole rows.
    pub fn import_fold<'scope, F: RowFold>(
        &mut self,
        table: Table,
        scope: Scope<'scope, Time>,
        interval: Interval,
        columns: Columns,
        fold: F,
    ) -> Result<Imported<'scope, F::Out>, MissingTable> {
        let missing = || MissingTable(table.name());
        let name = table.name();
        Ok(match table {
            Table::Lots => {
                let trace = self.lots.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &Id, v: &Lot, row: &mut RowBuilder<'_>| fill_lot_row(row, k, v);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Positions => {
                let trace = self.positions.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &Id, v: &PositionSummary, row: &mut RowBuilder<'_>| {
                    fill_position_row(row, k, v)
                };
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Valuations => {
                let trace = self.valuations.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill =
                    |k: &ValuationRow, _: &(), row: &mut RowBuilder<'_>| fill_valuation_row(row, k);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Breaks => {
                let trace = self.breaks.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &BreakRow, _: &(), row: &mut RowBuilder<'_>| fill_break_row(row, k);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Gaps => {
                let trace = self.gaps.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &GapRow, _: &(), row: &mut RowBuilder<'_>| fill_gap_row(row, k);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Trades => {
                let trace = self.trades.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill =
                    |_: &Id, v: &TradeVersion, row: &mut RowBuilder<'_>| fill_trade_row(row, v);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
            Table::Corrections => {
                let trace = self.corrections.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill =
                    |k: &Correction, _: &(), row: &mut RowBuilder<'_>| fill_correction_row(row, k);
                (fold_arranged(arranged, columns, fill, fold), button)
            }
        })
    }

    /// The GROUP BY totals of `fold` over `table` in `interval`, read
    /// straight from the typed records (the typed lane); `Ok(None)` when
    /// `table` has no typed lane, so the caller takes the row path.
    pub(super) fn import_fixed_totals<'scope>(
        &mut self,
        table: Table,
        scope: Scope<'scope, Time>,
        interval: Interval,
        fold: FixedTotals,
    ) -> Result<Option<Imported<'scope, (Row, Totals)>>, MissingTable> {
        let missing = || MissingTable(table.name());
        let name = table.name();
        Ok(Some(match table {
            Table::Lots => {
                let trace = self.lots.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &Id, v: &Lot, row: &mut RowBuilder<'_>| fill_lot_row(row, k, v);
                let number = |_: &Id, v: &Lot, column| lot_number(v, column);
                (fold_fixed_totals(arranged, fill, number, fold), button)
            }
            Table::Positions => {
                let trace = self.positions.as_mut().ok_or_else(missing)?;
                let (arranged, button) = import_interval(trace, scope, name, interval);
                let fill = |k: &Id, v: &PositionSummary, row: &mut RowBuilder<'_>| {
                    fill_position_row(row, k, v)
                };
                let number = |_: &Id, v: &PositionSummary, column| position_number(v, column);
                (fold_fixed_totals(arranged, fill, number, fold), button)
            }
            _ => return Ok(None),
        }))
    }

    /// The live trade versions in `interval`, each through `logic` (`None`
    /// drops it): what `AS OF DATE` filters and books again.
    pub fn import_trade_versions<'scope, T: differential_dataflow::Data>(
        &mut self,
        scope: Scope<'scope, Time>,
        interval: Interval,
        mut logic: impl FnMut(&TradeVersion) -> Option<T> + 'static,
    ) -> Result<Imported<'scope, T>, MissingTable> {
        let trace = self
            .trades
            .as_mut()
            .ok_or(MissingTable(Table::Trades.name()))?;
        let (arranged, button) = import_interval(trace, scope, "trade versions", interval);
        Ok((arranged.flat_map_ref(move |_, v| logic(v)), button))
    }

    /// The lot-method map `(scope, method)` in `interval`.
    pub fn import_methods<'scope>(
        &mut self,
        scope: Scope<'scope, Time>,
        interval: Interval,
    ) -> Result<Imported<'scope, (Id, LotMethod)>, MissingTable> {
        let trace = self.methods.as_mut().ok_or(MissingTable("methods"))?;
        let (arranged, button) = import_interval(trace, scope, "methods", interval);
        Ok((
            arranged.flat_map_ref(|scope, method| Some((scope.clone(), *method))),
            button,
        ))
    }
}

/// An imported collection and its import's shutdown button.
pub type Imported<'scope, T> = (VecCollection<'scope, Time, T, Diff>, ImportButton);

/// Stops one import (see [`Tables::import`]).
pub type ImportButton = ShutdownButton<CapabilitySet<Time>>;
