//! The deltabook dataflow: trade events in (each read by the gate on the
//! thread that feeds it, [`TradeEvent`]); dead letters, live trade
//! versions, open lots, position summaries and correction events out.
//!
//! ```text
//! events (candidate | rejection | restore) ──exchange(trade_id)──► versions ──┬─► dead_letters
//!                                   (gate: duplicate rule, highest version)   ├─► duplicates
//!                                                                             └─► book_input
//! book_input = (position_key, +insert booked trade | -remove by key, each with its cause)
//! book_input ──exchange(position_key)──┐
//! methods ──broadcast──────────────────┴► book ──┬─► lots         (by position; arranged by the driver where read)
//!                                                ├─► positions    (by position; arranged by the driver where read)
//!                                                ├─► corrections
//!                                                ├─► booked       (dated quantities; read by the break rule)
//!                                                └─► faults
//!
//! The booking stage holds the one copy of each live trade: the versions
//! stage keeps only where a trade is booked (position and lot key) and
//! names it by key when it leaves.
//! ```
//!
//! Every stage is keyed so that a multi-worker run computes the same result:
//! the gate's arrival-order rule runs where the trade id is owned, booking
//! where the position key is owned.

mod book_stage;
mod intake;
mod position_groups;
mod reference_stage;
mod spare_buffers;
mod versions;

use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use crate::correction::Correction;
use crate::decimal::Dec8;
use crate::gate::Rejection;
use crate::id::Id;
use crate::payload::Payload;
use crate::position::{Lot, PositionSummary};
use crate::trade::{Date, LotMethod, TradeVersion};

pub use book_stage::{Fault, FinalBooks, FinalTables, TableChanges};
pub use intake::TradeEvent;
pub use reference_stage::build_reference_booking;
pub use versions::{AcceptedEvent, BookInput, CauseEntry, LiveChange, LiveTrade, RestoredTrade};

/// Engine logical time: one tick per ingested batch.
pub type Time = u64;
/// Multiplicity of a collection update.
pub type Diff = isize;

/// Where an event came from: a file line (`partition` 0, `offset` = line
/// number from 1) or a Kafka partition and offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceRef {
    /// Kafka partition, or 0 for a file.
    pub partition: u32,
    /// Kafka offset, or the 1-based line number of a file.
    pub offset: u64,
}

/// One raw event as read from a source.
pub type RawEvent = (SourceRef, Payload);

/// A rejected event: original bytes, reason and source position.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it came from.
    pub source: SourceRef,
    /// Why it was rejected.
    pub reason: Rejection,
    /// The original bytes.
    pub payload: Vec<u8>,
}

/// An arrangement of `(key, value)` pairs at engine time.
pub type Arrangement<'scope, K, V> = Arranged<'scope, TraceAgent<ValSpine<K, V, Time, Diff>>>;

/// The engine's outputs inside one dataflow.
pub struct Engine<'scope> {
    /// Live trades as the break rule reads them: `(trade_date, signed
    /// quantity)` of the live version of every trade that is not cancelled,
    /// by position key, as the booking stage applied them (a quarantined
    /// position's later changes are not in it). A collection, not an
    /// arrangement: its one reader reads it as a stream, so a trace of it
    /// would be a copy of every live trade that nothing reads. Empty unless
    /// [`EngineInputs::break_inputs`].
    pub booked: VecCollection<'scope, Time, (Id, (Date, Dec8)), Diff>,
    /// Open lots by position key, as changes: per position and
    /// timestamp, the lots closed (-1) and opened (+1). Not arranged here:
    /// the driver arranges it only where something reads it as a table
    /// (a query, the service's per-timestamp capture). Empty unless
    /// [`EngineInputs::table_changes`] says `lots` (then [`Engine::books`]
    /// has the final lots).
    pub lots: VecCollection<'scope, Time, (Id, Lot), Diff>,
    /// Position summaries by position key (rows of `positions.csv`), as
    /// changes; arranged like [`Engine::lots`], only where read. Empty
    /// unless [`EngineInputs::table_changes`] says `positions`.
    pub positions: VecCollection<'scope, Time, (Id, PositionSummary), Diff>,
    /// Correction events, each asserted once at its `as_of`.
    pub corrections: VecCollection<'scope, Time, Correction, Diff>,
    /// Rejected events, at the time their batch was ingested.
    pub dead_letters: StreamVec<'scope, Time, DeadLetter>,
    /// Accepted events that were exact duplicates (acknowledged, ignored).
    pub duplicates: StreamVec<'scope, Time, SourceRef>,
    /// Positions whose arithmetic overflowed (their state stops changing).
    pub faults: StreamVec<'scope, Time, Fault>,
    /// Every accepted event once, at its time (what the event store keeps).
    pub accepted: StreamVec<'scope, Time, AcceptedEvent>,
    /// Each trade whose live version changed, at that time (what a restart
    /// reloads instead of replaying the event store).
    pub live: StreamVec<'scope, Time, LiveTrade>,
    /// `(account, sequence)` of each accepted event that has a sequence.
    pub sequences: StreamVec<'scope, Time, (Id, u64)>,
    /// The live version of every booked (not cancelled) trade, by trade id,
    /// whole: the `trades` table of queries. Built only with
    /// [`EngineInputs::trade_versions`] (it is a second copy of every live
    /// trade, which only queries read).
    pub trades: Option<Arrangement<'scope, Id, TradeVersion>>,
    /// The booking stage's books: the final lots and positions of a table
    /// that does not leave as changes, read once the dataflow is done.
    pub books: FinalBooks,
}

/// The streams the engine reads.
pub struct EngineInputs<'scope> {
    /// Trade events: read by the gate ([`TradeEvent::parse`]), rejected by
    /// a source before it (e.g. longer than its limit; they leave in
    /// source order with every other rejection), or restored by a restart
    /// (each installed as live, with no cause, at its time).
    pub events: StreamVec<'scope, Time, TradeEvent>,
    /// The lot-method map (`(scope, method)`: an account, account_book or position key).
    pub methods: VecCollection<'scope, Time, (Id, LotMethod), Diff>,
    /// Build [`Engine::accepted`] and [`Engine::live`] (what the event store
    /// and the restart snapshot keep). A run that keeps neither (`book`)
    /// says `false`: both streams are then empty and cost nothing.
    pub event_log: bool,
    /// Build [`Engine::booked`] (what the break rule reads). A run without
    /// custodian statements says `false`: it is then empty and costs nothing.
    pub break_inputs: bool,
    /// Build [`Engine::trades`].
    pub trade_versions: bool,
    /// Which of lots and positions leave as changes ([`Engine::lots`],
    /// [`Engine::positions`]); the others are read from [`Engine::books`]
    /// at the end. Valuations read positions as changes.
    pub table_changes: TableChanges,
}

/// Lots and positions by position key, as [`book_again`] books them.
pub type Rebooked<'scope> = (
    VecCollection<'scope, Time, (Id, Lot), Diff>,
    VecCollection<'scope, Time, (Id, PositionSummary), Diff>,
);

/// Books live trade versions again, apart from the engine: each update of
/// `trades` (a version entering, +1, or leaving, -1; a CANCEL or an
/// unbookable version is skipped) goes through the same booking stage
/// under the lot-method map `methods`. Returns its lots and positions by
/// position key. What `AS OF DATE` reads: the engine's own booking of
/// the trades dated up to a day.
pub fn book_again<'scope>(
    trades: VecCollection<'scope, Time, TradeVersion, Diff>,
    methods: VecCollection<'scope, Time, (Id, LotMethod), Diff>,
) -> Rebooked<'scope> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    let input = trades
        .inner
        .flat_map(|(version, time, diff)| {
            // Leaving as a whole trade with diff -1, not by key: the stage
            // nets a timestamp's updates first, so a trade that enters and
            // leaves in one timestamp (two batches of one snapshot) is fine.
            let input = BookInput::Insert(version.booked()?, None);
            Some(((version.position_key(), input), time, diff))
        })
        .as_collection();
    let book = book_stage::book(input, methods, false, TableChanges::ALL);
    (book.lots, book.positions)
}

/// Builds the engine over its inputs.
pub fn build(inputs: EngineInputs<'_>) -> Engine<'_> {
    let EngineInputs {
        events,
        methods,
        event_log,
        break_inputs,
        trade_versions,
        table_changes,
    } = inputs;
    let intake = intake::intake(events, event_log, trade_versions);
    let trades = trade_versions.then(|| {
        arrange_from_upsert::<
            ValBuilder<Id, TradeVersion, Time, Diff>,
            ValSpine<Id, TradeVersion, Time, Diff>,
            _,
            _,
        >(intake.trades.clone(), "Arrange: trades by id")
    });
    let book = book_stage::book(intake.book_input, methods, break_inputs, table_changes);
    Engine {
        booked: book.booked,
        lots: book.lots,
        positions: book.positions,
        corrections: book.corrections,
        dead_letters: intake.dead_letters,
        duplicates: intake.duplicates,
        faults: book.faults,
        accepted: intake.accepted,
        live: intake.live,
        sequences: intake.sequences,
        trades,
        books: book.books,
    }
}
