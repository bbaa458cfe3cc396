//! Reconciliation (`reconciliation.md`): price ticks and custodian
//! statements beside trades, and four outputs kept incrementally from the
//! engine's collections:
//!
//! ```text
//! prices raw ──gate──► ticks ──latest by security──► live_prices ─┐
//! positions ──by security─────────────────────────────────────────┴─join─► valuations
//! custodian raw ──gate──► statements ──latest by position──► live statements ─┐
//! booked (live trades) ──(position, trade_date, ±qty)─────────────────────────┴─by account─► breaks
//! accepted events ──(account, sequence)──by account──► gaps
//! ```
//!
//! A tick touches the valuations of one security (the join is keyed by
//! security); a trade change or a statement touches the breaks of one
//! position (an account's latest statement date moving touches that
//! account's unstated positions); a sequence value touches one gap.

mod breaks;
mod events;
mod gaps;

pub use events::{break_events, break_json, BreakChange, BreakEvent};

pub use gaps::SequenceState;
use gaps::{SequenceInput, SequenceRow};
mod latest;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::{Scope, StreamVec};
use timely::ExchangeData;

use crate::decimal::{Amount, Dec8};
use crate::engine::{DeadLetter, Diff, Engine, RawEvent, SourceRef, Time};
use crate::gate::{parse_price_tick, parse_statement, PriceTick, Rejection, Statement};
use crate::id::Id;
use crate::trade::{Date, Instant};

use breaks::BreakInput;

/// A row of `valuations.csv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ValuationRow {
    /// Position.
    pub position_key: Id,
    /// The security's live price.
    pub price: Dec8,
    /// Signed quantity x price.
    pub market_value: Amount,
    /// Market value - cost basis.
    pub unrealized_pnl: Amount,
}

/// The kind of a break.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BreakKind {
    /// Internal and custodian quantities differ.
    QuantityMismatch,
    /// The custodian reports a position with no live trade dated on or before its date.
    MissingInternal,
    /// A position of a covered account that the custodian does not report.
    MissingExternal,
}

impl BreakKind {
    /// The spelling in `breaks.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakKind::QuantityMismatch => "QUANTITY_MISMATCH",
            BreakKind::MissingInternal => "MISSING_INTERNAL",
            BreakKind::MissingExternal => "MISSING_EXTERNAL",
        }
    }
}

/// A row of `breaks.csv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BreakRow {
    /// Position.
    pub position_key: Id,
    /// The date compared.
    pub as_of_date: Date,
    /// Kind.
    pub kind: BreakKind,
    /// Signed quantity of the live trades dated on or before `as_of_date`.
    pub internal_quantity: Dec8,
    /// The custodian's quantity (0 for `MISSING_EXTERNAL`).
    pub custodian_quantity: Dec8,
    /// Internal - custodian.
    pub difference: Dec8,
}

/// A row of `gaps.csv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GapRow {
    /// Account.
    pub account_id: Id,
    /// First missing sequence number.
    pub first_missing: u64,
    /// Last missing sequence number.
    pub last_missing: u64,
}

/// The account of a position key (ids contain no `_`).
pub fn account_of(position_key: &str) -> &str {
    position_key.split('_').next().unwrap_or(position_key)
}

/// The security of a position key.
pub fn security_of(position_key: &str) -> &str {
    position_key.rsplit('_').next().unwrap_or(position_key)
}

/// The streams reconciliation reads beside the engine's.
pub struct ReconcileInputs<'scope> {
    /// Raw price-tick lines or messages; `None` when there are none at all
    /// (no valuations are built: nothing is arranged by security).
    pub prices: Option<StreamVec<'scope, Time, RawEvent>>,
    /// Raw custodian-statement lines or messages; `None` when there are
    /// none at all (no breaks are built: no per-date sums are kept).
    pub custodian: Option<StreamVec<'scope, Time, RawEvent>>,
    /// A break needs |difference| > this.
    pub tolerance: Dec8,
    /// A restart's state, fed at its start time (see [`Restored`]).
    pub restored: Option<StreamVec<'scope, Time, Restored>>,
}

/// What a restart restores of reconciliation: the live tick of each
/// security, the live statement of each position (each with the source
/// position that orders it), and each account's sequence state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Restored {
    /// A live tick.
    Tick(SourceRef, PriceTick),
    /// A live statement.
    Statement(SourceRef, Statement),
    /// An account's sequences.
    Sequences(SequenceState),
}

/// The live tick of a security: its price and what orders it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LiveTick {
    /// The security.
    pub security_id: Id,
    /// Its `as_of`.
    pub as_of: Instant,
    /// Where it came from (ties: the later wins).
    pub source: SourceRef,
    /// The price.
    pub price: Dec8,
}

/// The live statement of a position.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LiveStatement {
    /// The position.
    pub position_key: Id,
    /// Its date.
    pub as_of_date: Date,
    /// Where it came from (ties: the later wins).
    pub source: SourceRef,
    /// The custodian's quantity.
    pub quantity: Dec8,
}

/// An account's (min, max) sequence values, as a restart needs them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SequenceRange {
    /// The account.
    pub account_id: Id,
    /// min(S).
    pub min: u64,
    /// max(S).
    pub max: u64,
}

/// Reconciliation's outputs.
pub struct Reconciliation<'scope> {
    /// The live tick per security (what a restart restores).
    pub live_ticks: VecCollection<'scope, Time, LiveTick, Diff>,
    /// The live statement per position (what a restart restores).
    pub live_statements: VecCollection<'scope, Time, LiveStatement, Diff>,
    /// Each account's (min, max) sequence (with `gaps`, what a restart restores).
    pub sequence_ranges: VecCollection<'scope, Time, SequenceRange, Diff>,
    /// Rows of `valuations.csv`.
    pub valuations: VecCollection<'scope, Time, ValuationRow, Diff>,
    /// Rows of `breaks.csv`.
    pub breaks: VecCollection<'scope, Time, BreakRow, Diff>,
    /// Rows of `gaps.csv`.
    pub gaps: VecCollection<'scope, Time, GapRow, Diff>,
    /// Rejected tick lines.
    pub rejected_prices: StreamVec<'scope, Time, DeadLetter>,
    /// Rejected statement lines.
    pub rejected_custodian: StreamVec<'scope, Time, DeadLetter>,
}

/// Each item of a stream as an insert at the time it travels at.
pub(crate) fn as_inserts<'scope, D: ExchangeData + Clone>(
    stream: StreamVec<'scope, Time, D>,
    name: &str,
) -> VecCollection<'scope, Time, D, Diff> {
    stream
        .unary::<CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(Pipeline, name, |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let time = *cap.time();
                    let mut session = output.session(&cap);
                    for item in data.flat_map(|d| d.drain(..)) {
                        session.give((item, time, 1));
                    }
                });
            }
        })
        .as_collection()
}

type Parsed<T> = Result<(SourceRef, T), DeadLetter>;

/// Gates raw lines with `parse`: accepted values and dead letters.
fn gate<'scope, T: ExchangeData + Clone>(
    raw: StreamVec<'scope, Time, RawEvent>,
    parse: fn(&[u8]) -> Result<T, Rejection>,
) -> (
    StreamVec<'scope, Time, (SourceRef, T)>,
    StreamVec<'scope, Time, DeadLetter>,
) {
    let parsed: StreamVec<'scope, Time, Parsed<T>> =
        raw.map(move |(source, payload)| match parse(&payload) {
            Ok(value) => Ok((source, value)),
            Err(reason) => Err(DeadLetter {
                source,
                reason,
                payload: payload.into_vec(),
            }),
        });
    let accepted = parsed.clone().flat_map(Result::ok);
    let rejected = parsed.filter(Result::is_err).flat_map(Result::err);
    (accepted, rejected)
}

/// Builds reconciliation over the engine's collections.
pub fn build<'scope>(
    engine: &Engine<'scope>,
    inputs: ReconcileInputs<'scope>,
) -> Reconciliation<'scope> {
    let ReconcileInputs {
        prices,
        custodian,
        tolerance,
        restored,
    } = inputs;
    let restored = restored.map(|r| as_inserts(r, "Reconcile: restored"));

    let scope = engine.positions.inner.scope();
    let (live_ticks, valuations, rejected_prices) = match prices {
        Some(prices) => valuation_part(engine, prices, restored.as_ref()),
        None => empty_part(scope),
    };
    let (live_statements, breaks, rejected_custodian) = match custodian {
        Some(custodian) => break_part(engine, custodian, restored.as_ref(), tolerance),
        None => empty_part(scope),
    };

    let sequences = as_inserts(
        engine
            .sequences
            .clone()
            .map(|(account, s)| SequenceInput::Value(account, s)),
        "Reconcile: sequences",
    );
    let sequences = with_restored(sequences, restored.as_ref(), |r| match r {
        Restored::Sequences(state) => Some(SequenceInput::Restore(state)),
        _ => None,
    });
    let sequence_rows = gaps::sequence_gaps(sequences);
    let gaps = sequence_rows.clone().flat_map(|row| match row {
        SequenceRow::Gap(gap) => Some(gap),
        SequenceRow::Range(..) => None,
    });
    let sequence_ranges = sequence_rows.flat_map(|row| match row {
        SequenceRow::Range(account_id, min, max) => Some(SequenceRange {
            account_id,
            min,
            max,
        }),
        SequenceRow::Gap(_) => None,
    });

    Reconciliation {
        live_ticks,
        live_statements,
        sequence_ranges,
        valuations,
        breaks,
        gaps,
        rejected_prices,
        rejected_custodian,
    }
}

/// `inputs` plus the part of a restart's state that `pick` selects.
fn with_restored<'scope, D: differential_dataflow::Data>(
    inputs: VecCollection<'scope, Time, D, Diff>,
    restored: Option<&VecCollection<'scope, Time, Restored, Diff>>,
    pick: impl Fn(Restored) -> Option<D> + 'static,
) -> VecCollection<'scope, Time, D, Diff> {
    match restored {
        Some(restored) => inputs.concat(restored.clone().flat_map(pick)),
        None => inputs,
    }
}

/// One optional part of reconciliation: its live inputs (what a restart
/// restores), its result rows, and its rejected lines.
type Part<'scope, Live, Row> = (
    VecCollection<'scope, Time, Live, Diff>,
    VecCollection<'scope, Time, Row, Diff>,
    StreamVec<'scope, Time, DeadLetter>,
);

/// A part that is not built (its input is absent): all three empty.
fn empty_part<'scope, Live: ExchangeData, Row: ExchangeData>(
    scope: Scope<'scope, Time>,
) -> Part<'scope, Live, Row> {
    (
        empty(scope).as_collection(),
        empty(scope).as_collection(),
        empty(scope),
    )
}

/// Ticks, live prices and valuations.
fn valuation_part<'scope>(
    engine: &Engine<'scope>,
    prices: StreamVec<'scope, Time, RawEvent>,
    restored: Option<&VecCollection<'scope, Time, Restored, Diff>>,
) -> Part<'scope, LiveTick, ValuationRow> {
    let (ticks, rejected_prices) = gate(prices, parse_price_tick);
    let ticks = with_restored(
        as_inserts(ticks, "Reconcile: ticks"),
        restored,
        |r| match r {
            Restored::Tick(source, tick) => Some((source, tick)),
            _ => None,
        },
    );
    let ticks = ticks.map(|(source, tick)| {
        let order: (Instant, SourceRef) = (tick.as_of, source);
        (tick.security_id, order, tick.price)
    });
    let live = latest::latest_by_key(ticks, "Reconcile: live price");
    let live_ticks = live
        .clone()
        .map(|(security_id, ((as_of, source), price))| LiveTick {
            security_id,
            as_of,
            source,
            price,
        });
    let live_prices = live.map(|(security, (_, price))| (security, price));

    let by_security = engine.positions.clone().map(|(position, summary)| {
        (
            Id::from(security_of(&position)),
            (position, summary.quantity, summary.cost_basis),
        )
    });
    let valuations = by_security
        .join_map(live_prices, |_, (position, quantity, cost), price| {
            let market_value = quantity.checked_mul(*price);
            let unrealized = market_value.and_then(|mv| mv.checked_sub(*cost));
            // Both are exact for every value the gate admits (< 10^15 each).
            (position.clone(), *price, market_value, unrealized)
        })
        .flat_map(|(position_key, price, market_value, unrealized_pnl)| {
            Some(ValuationRow {
                position_key,
                price,
                market_value: market_value?,
                unrealized_pnl: unrealized_pnl?,
            })
        });

    (live_ticks, valuations, rejected_prices)
}

/// Statements, live statements and breaks.
fn break_part<'scope>(
    engine: &Engine<'scope>,
    custodian: StreamVec<'scope, Time, RawEvent>,
    restored: Option<&VecCollection<'scope, Time, Restored, Diff>>,
    tolerance: Dec8,
) -> Part<'scope, LiveStatement, BreakRow> {
    let (statements, rejected_custodian) = gate(custodian, parse_statement);
    let statements = with_restored(
        as_inserts(statements, "Reconcile: statements"),
        restored,
        |r| match r {
            Restored::Statement(source, statement) => Some((source, statement)),
            _ => None,
        },
    );
    let statements = statements.map(|(source, s)| {
        let order: (Date, SourceRef) = (s.as_of_date, source);
        (s.position_key(), order, s.quantity)
    });
    let live = latest::latest_by_key(statements, "Reconcile: live statement");
    let live_statements =
        live.clone().map(
            |(position_key, ((as_of_date, source), quantity))| LiveStatement {
                position_key,
                as_of_date,
                source,
                quantity,
            },
        );
    let statement_inputs = live
        .map(|(position, ((date, _), quantity))| BreakInput::Statement(position, date, quantity));
    let trades = engine
        .booked
        .clone()
        .map(|(position, (date, signed))| BreakInput::Trade(position, date, signed));
    let breaks = breaks::breaks(trades.concat(statement_inputs), tolerance);

    (live_statements, breaks, rejected_custodian)
}
