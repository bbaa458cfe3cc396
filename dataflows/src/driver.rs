//! The one driver of the engine dataflow, shared by file mode (`book`,
//! [`crate::runner`]) and the service (`run`): one [`Driver`] per timely
//! worker builds the dataflow, owns its inputs (trade events, restored trades,
//! the lot-method map) and collects, per engine timestamp, everything the
//! engine produced on this worker. A timestamp's [`TimestampOutput`] is
//! handed out once the probe says the whole dataflow (every worker) is past
//! it, so it is complete for this worker.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Exchange as _;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, StreamVec};
use timely::worker::Worker;

use crate::correction::Correction;
use crate::decimal::Dec8;
use crate::engine::{
    self, AcceptedEvent, DeadLetter, Diff, EngineInputs, Fault, FinalBooks, FinalTables, LiveTrade,
    RawEvent, RestoredTrade, SourceRef, TableChanges, Time, TradeEvent,
};
use crate::gate::Rejection;
use crate::id::Id;
use crate::payload::Payload;
use crate::position::{Lot, PositionSummary};
use crate::query::tables::PositionTrace;
use crate::query::{Table, TableSet, Tables};
use crate::reconcile::{
    self, BreakRow, GapRow, LiveStatement, LiveTick, ReconcileInputs, Restored, SequenceRange,
    ValuationRow,
};
use crate::trade::LotMethod;

/// Everything the engine produced at one timestamp on one worker. Lots and
/// positions are differential updates (`-1` retracts, `+1` asserts),
/// consolidated per timestamp unless [`DriverOptions::final_state_only`].
#[derive(Clone, Debug, Default)]
pub struct TimestampOutput {
    /// Lot rows retracted and asserted.
    pub lots: Vec<((Id, Lot), Diff)>,
    /// Position rows retracted and asserted.
    pub positions: Vec<((Id, PositionSummary), Diff)>,
    /// Correction events (empty under [`Capture::StateCountingCorrections`]).
    pub corrections: Vec<Correction>,
    /// How many correction events there were (kept or not).
    pub correction_count: u64,
    /// Accepted events (what the event store keeps).
    pub accepted: Vec<AcceptedEvent>,
    /// Trades whose live version changed (what a restart reloads).
    pub live: Vec<LiveTrade>,
    /// Rejected events.
    pub dead_letters: Vec<DeadLetter>,
    /// Acknowledged exact duplicates.
    pub duplicates: Vec<SourceRef>,
    /// Positions whose arithmetic overflowed.
    pub faults: Vec<Fault>,
    /// `valuations.csv` rows that changed (`reconciliation.md`).
    pub valuations: Vec<(ValuationRow, Diff)>,
    /// `breaks.csv` rows that changed.
    pub breaks: Vec<(BreakRow, Diff)>,
    /// `gaps.csv` rows that changed.
    pub gaps: Vec<(GapRow, Diff)>,
    /// Rejected price ticks.
    pub rejected_prices: Vec<DeadLetter>,
    /// Rejected custodian statements.
    pub rejected_custodian: Vec<DeadLetter>,
    /// Live tick changes (under [`Capture::All`]: the restart snapshot).
    pub live_ticks: Vec<(LiveTick, Diff)>,
    /// Live statement changes (under [`Capture::All`]).
    pub live_statements: Vec<(LiveStatement, Diff)>,
    /// Sequence range changes (under [`Capture::All`]).
    pub sequence_ranges: Vec<(SequenceRange, Diff)>,
}

impl TimestampOutput {
    /// Appends `other` (another worker's part of the same timestamp).
    pub fn merge(&mut self, other: TimestampOutput) {
        // Destructured whole: a new field cannot be forgotten here.
        let TimestampOutput {
            mut lots,
            mut positions,
            mut corrections,
            correction_count,
            mut accepted,
            mut live,
            mut dead_letters,
            mut duplicates,
            mut faults,
            mut valuations,
            mut breaks,
            mut gaps,
            mut rejected_prices,
            mut rejected_custodian,
            mut live_ticks,
            mut live_statements,
            mut sequence_ranges,
        } = other;
        self.lots.append(&mut lots);
        self.positions.append(&mut positions);
        self.corrections.append(&mut corrections);
        self.correction_count += correction_count;
        self.accepted.append(&mut accepted);
        self.live.append(&mut live);
        self.dead_letters.append(&mut dead_letters);
        self.duplicates.append(&mut duplicates);
        self.faults.append(&mut faults);
        self.valuations.append(&mut valuations);
        self.breaks.append(&mut breaks);
        self.gaps.append(&mut gaps);
        self.rejected_prices.append(&mut rejected_prices);
        self.rejected_custodian.append(&mut rejected_custodian);
        self.live_ticks.append(&mut live_ticks);
        self.live_statements.append(&mut live_statements);
        self.sequence_ranges.append(&mut sequence_ranges);
    }

    /// True when nothing was produced.
    pub fn is_empty(&self) -> bool {
        self.lots.is_empty()
            && self.positions.is_empty()
            && self.correction_count == 0
            && self.accepted.is_empty()
            && self.live.is_empty()
            && self.dead_letters.is_empty()
            && self.duplicates.is_empty()
            && self.faults.is_empty()
            && self.valuations.is_empty()
            && self.breaks.is_empty()
            && self.gaps.is_empty()
            && self.rejected_prices.is_empty()
            && self.rejected_custodian.is_empty()
            && self.live_ticks.is_empty()
            && self.live_statements.is_empty()
            && self.sequence_ranges.is_empty()
    }
}

type Outputs = Rc<RefCell<BTreeMap<Time, TimestampOutput>>>;

/// Which outputs a driver keeps per timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capture {
    /// Everything, for a sink that commits each timestamp (the service).
    All,
    /// State and the event log only: no accepted events (with their bytes)
    /// and no live-version changes, which only a durable sink needs.
    StateOnly,
    /// Like `StateOnly`, and corrections are only counted
    /// ([`TimestampOutput::correction_count`]), not kept.
    StateCountingCorrections,
}

/// One worker's handle on the engine: inputs in, completed timestamps out.
///
/// Guarantees: every input is at the driver's current time; a timestamp is
/// returned by [`Driver::take_completed`] exactly once, after every worker's
/// part of the dataflow has passed it, in increasing time order.
pub struct Driver {
    events: InputHandleVec<Time, TradeEvent>,
    prices: InputHandleVec<Time, RawEvent>,
    custodian: InputHandleVec<Time, RawEvent>,
    restored: InputHandleVec<Time, Restored>,
    methods: InputSession<Time, (Id, LotMethod), Diff>,
    /// The lot-method map as this worker has fed it (only the worker that
    /// owns the lot-method source feeds it).
    method_map: HashMap<Id, LotMethod>,
    completed: Completed,
    time: Time,
}

/// The probe and the per-time outputs: what completed, and taking it.
struct Completed {
    probe: ProbeHandle<Time>,
    outputs: Outputs,
    /// The shared traces (the tables named by [`DriverOptions::share_tables`]).
    tables: Tables,
    /// The traces keep every time from this one on (`AS KNOWN AT`);
    /// `Time::MAX`: they compact to the completed frontier.
    history_from: Time,
    /// The booking stage's books, which give the tables not captured as
    /// changes at the end ([`DriverOptions::final_state_only`]).
    books: FinalBooks,
}

/// What the per-timestamp capture reads of `changes` (lots or positions),
/// arranged by position key only where something reads it as a table:
/// - a run that commits each timestamp captures the arrangement's
///   consolidated updates;
/// - a final-state run (`final_state_only`) captures the changes as the
///   booking stage emitted them (its consumer sums them);
/// - a shared table (`shared`) gets the arrangement's trace, its stream
///   passing `probe`.
fn table_changes<'scope, V: differential_dataflow::ExchangeData + std::hash::Hash>(
    changes: VecCollection<'scope, Time, (Id, V), Diff>,
    name: &str,
    final_state_only: bool,
    shared: Option<&mut Option<PositionTrace<V>>>,
    probe: &ProbeHandle<Time>,
) -> VecCollection<'scope, Time, (Id, V), Diff> {
    if final_state_only && shared.is_none() {
        return changes;
    }
    let arranged = changes.clone().arrange_by_key_named(name);
    if let Some(shared) = shared {
        arranged.stream.clone().probe_with(probe);
        *shared = Some(arranged.trace.clone());
    }
    if final_state_only {
        changes
    } else {
        arranged.as_collection(|k, v| (k.clone(), v.clone()))
    }
}

impl Completed {
    fn frontier(&self) -> Option<Time> {
        self.probe.with_frontier(|f| f.first().copied())
    }

    fn take(&mut self) -> Vec<(Time, TimestampOutput)> {
        let frontier = self.frontier();
        if let Some(f) = frontier {
            self.tables.compact_to(f.min(self.history_from));
        }
        take_before(&self.outputs, frontier)
    }
}

/// Which parts of reconciliation a [`Driver`] builds, and its tolerance.
#[derive(Clone, Copy, Debug)]
pub struct DriverOptions {
    /// A break needs |difference| > this.
    pub tolerance: Dec8,
    /// Price ticks will be fed (valuations are built).
    pub prices: bool,
    /// Custodian statements will be fed (breaks are built).
    pub statements: bool,
    /// For a batch run that reads lots and positions only once, at the
    /// end: a table nothing else reads (not shared, and for positions, no
    /// valuations) does not leave the booking stage as changes at all and
    /// is read from its books ([`ClosedDriver::final_tables`]); the others
    /// are captured as the stage emits them (per position and timestamp,
    /// the rows leaving and entering; not consolidated), instead of
    /// through an arrangement that consolidates each timestamp. They are
    /// arranged only if shared.
    pub final_state_only: bool,
    /// Keep shared handles on these tables ([`Driver::tables`]) so queries
    /// can import them. Lots and positions are arranged anyway unless
    /// [`DriverOptions::final_state_only`]; the others are arranged only
    /// when named here (trades is a second copy of every
    /// live trade, corrections all of history).
    pub share_tables: TableSet,
    /// Every captured output is moved to worker 0 (which alone then
    /// reports them), so a cluster of processes has one place that sees a
    /// timestamp's whole output.
    pub gather: bool,
}

impl Driver {
    /// Builds the engine dataflow on `worker`, with every input at `start`,
    /// keeping the outputs `capture` names.
    pub fn new(worker: &mut Worker, start: Time, keep: Capture) -> Driver {
        Driver::with_tolerance(worker, start, keep, Dec8::ZERO)
    }

    /// [`Driver::new`] whose breaks need |difference| > `tolerance`.
    pub fn with_tolerance(
        worker: &mut Worker,
        start: Time,
        keep: Capture,
        tolerance: Dec8,
    ) -> Driver {
        Driver::with_options(
            worker,
            start,
            keep,
            DriverOptions {
                tolerance,
                prices: true,
                statements: true,
                final_state_only: false,
                share_tables: TableSet::NONE,
                gather: false,
            },
        )
    }

    /// [`Driver::new`] with the given reconciliation options: without
    /// `prices` no valuations are built, without `statements` no breaks
    /// (and their inputs must not be fed); gaps are always kept.
    pub fn with_options(
        worker: &mut Worker,
        start: Time,
        keep: Capture,
        options: DriverOptions,
    ) -> Driver {
        let DriverOptions {
            tolerance,
            prices: with_prices,
            statements: with_statements,
            final_state_only,
            share_tables,
            gather,
        } = options;
        let mut tables = Tables::default();
        let mut events = InputHandleVec::<Time, TradeEvent>::new();
        let mut prices = InputHandleVec::<Time, RawEvent>::new();
        let mut custodian = InputHandleVec::<Time, RawEvent>::new();
        let mut restored = InputHandleVec::<Time, Restored>::new();
        let probe = ProbeHandle::new();
        let outputs: Outputs = Rc::new(RefCell::new(BTreeMap::new()));
        // What nothing reads as changes is read from the books at the end.
        let as_changes = TableChanges {
            lots: !final_state_only || share_tables.contains(Table::Lots),
            positions: !final_state_only || share_tables.contains(Table::Positions) || with_prices,
        };
        let mut books = FinalBooks::default();
        let sink = Sink {
            outputs: Rc::clone(&outputs),
            probe: probe.clone(),
            gather,
        };
        let mut methods = worker.dataflow::<Time, _, _>(|scope| {
            let (methods_input, methods) = scope.new_collection::<(Id, LotMethod), Diff>();
            if share_tables.contains(Table::Trades) {
                // AS OF DATE books the shared trades again under this map.
                let arranged = methods.clone().arrange_by_key_named("Table: methods");
                arranged.stream.clone().probe_with(&probe);
                tables.methods = Some(arranged.trace);
            }
            let e = engine::build(EngineInputs {
                events: events.to_stream(scope),
                methods,
                event_log: keep == Capture::All,
                break_inputs: with_statements,
                trade_versions: share_tables.contains(Table::Trades),
                table_changes: as_changes,
            });
            books = e.books.clone();
            let r = reconcile::build(
                &e,
                ReconcileInputs {
                    prices: with_prices.then(|| prices.to_stream(scope)),
                    custodian: with_statements.then(|| custodian.to_stream(scope)),
                    tolerance,
                    restored: Some(restored.to_stream(scope)),
                },
            );
            if keep == Capture::All {
                capture_rows(r.live_ticks.inner, &sink, |o| &mut o.live_ticks);
                capture_rows(r.live_statements.inner, &sink, |o| &mut o.live_statements);
                capture_rows(r.sequence_ranges.inner, &sink, |o| &mut o.sequence_ranges);
            } else {
                r.live_ticks.inner.probe_with(&probe);
                r.live_statements.inner.probe_with(&probe);
                r.sequence_ranges.inner.probe_with(&probe);
            }
            // Lots and positions are arranged only where read as tables
            // (`table_changes`).
            let lots = table_changes(
                e.lots,
                "Arrange: lots by position",
                final_state_only,
                share_tables
                    .contains(Table::Lots)
                    .then_some(&mut tables.lots),
                &probe,
            );
            let positions = table_changes(
                e.positions,
                "Arrange: positions by position",
                final_state_only,
                share_tables
                    .contains(Table::Positions)
                    .then_some(&mut tables.positions),
                &probe,
            );
            {
                if with_prices && share_tables.contains(Table::Valuations) {
                    let valuations = r
                        .valuations
                        .clone()
                        .arrange_by_self_named("Table: valuations");
                    valuations.stream.probe_with(&probe);
                    tables.valuations = Some(valuations.trace);
                }
                if with_statements && share_tables.contains(Table::Breaks) {
                    let breaks = r.breaks.clone().arrange_by_self_named("Table: breaks");
                    breaks.stream.probe_with(&probe);
                    tables.breaks = Some(breaks.trace);
                }
                if share_tables.contains(Table::Gaps) {
                    let gaps = r.gaps.clone().arrange_by_self_named("Table: gaps");
                    gaps.stream.probe_with(&probe);
                    tables.gaps = Some(gaps.trace);
                }
                if let Some(trades) = &e.trades {
                    trades.stream.clone().probe_with(&probe);
                    tables.trades = Some(trades.trace.clone());
                }
                if share_tables.contains(Table::Corrections) {
                    let corrections = e
                        .corrections
                        .clone()
                        .arrange_by_self_named("Table: corrections");
                    corrections.stream.probe_with(&probe);
                    tables.corrections = Some(corrections.trace);
                }
            }
            capture_rows(lots.inner, &sink, |o| &mut o.lots);
            capture_rows(positions.inner, &sink, |o| &mut o.positions);
            let keep_corrections = keep != Capture::StateCountingCorrections;
            capture(e.corrections.inner, &sink, move |entry, run| {
                if keep_corrections {
                    // One reservation for the run (its size is exact): pushed
                    // one by one, a timestamp's corrections were copied each
                    // time the list doubled.
                    let before = entry.corrections.len();
                    entry.corrections.extend(run.map(|(c, _, _)| c));
                    entry.correction_count += (entry.corrections.len() - before) as u64;
                } else {
                    entry.correction_count += run.count() as u64;
                }
            });
            if keep == Capture::All {
                capture_stamped(e.accepted, &sink, |o| &mut o.accepted);
                capture_stamped(e.live, &sink, |o| &mut o.live);
            } else {
                e.accepted.probe_with(&probe);
                e.live.probe_with(&probe);
            }
            capture_stamped(e.dead_letters, &sink, |o| &mut o.dead_letters);
            capture_stamped(e.duplicates, &sink, |o| &mut o.duplicates);
            capture_rows(r.valuations.inner, &sink, |o| &mut o.valuations);
            capture_rows(r.breaks.inner, &sink, |o| &mut o.breaks);
            capture_rows(r.gaps.inner, &sink, |o| &mut o.gaps);
            capture_stamped(r.rejected_prices, &sink, |o| &mut o.rejected_prices);
            capture_stamped(r.rejected_custodian, &sink, |o| &mut o.rejected_custodian);
            capture_stamped(e.faults, &sink, |o| &mut o.faults);
            e.booked.inner.probe_with(&probe);
            methods_input
        });
        events.advance_to(start);
        prices.advance_to(start);
        custodian.advance_to(start);
        restored.advance_to(start);
        methods.advance_to(start);
        methods.flush();
        Driver {
            events,
            prices,
            custodian,
            restored,
            methods,
            method_map: HashMap::new(),
            completed: Completed {
                probe,
                outputs,
                tables,
                history_from: Time::MAX,
                books,
            },
            time: start,
        }
    }

    /// The shared tables (empty unless [`DriverOptions::share_tables`]).
    /// A clone is a set of new trace handles, which hold the traces'
    /// compaction where they are until dropped: keep one only while
    /// building a dataflow that imports them.
    pub fn tables(&self) -> Tables {
        self.completed.tables.clone()
    }

    /// From now on the shared traces distinguish every time from `from`
    /// on (their compaction stops there), so `AS KNOWN AT` any of those
    /// times can be answered from them. Moving it later lets them compact
    /// again; `Time::MAX` restores compaction to the completed frontier.
    pub fn keep_history_from(&mut self, from: Time) {
        self.completed.history_from = from;
    }

    /// The shared tables, borrowed (no new handles): what a long-lived
    /// caller reads, so the traces keep compacting.
    pub fn shared_tables(&self) -> &Tables {
        &self.completed.tables
    }

    /// The time new input is stamped with.
    pub fn time(&self) -> Time {
        self.time
    }

    /// Sends one raw event at the current time (the gate reads it here,
    /// [`TradeEvent::parse`]).
    pub fn send(&mut self, source: SourceRef, payload: impl Into<Payload>) {
        self.events
            .send(TradeEvent::parse((source, payload.into())));
    }

    /// Sends events the gate has read (here or on another thread), in
    /// order, at the current time, as one container (handed on whole, not
    /// copied event by event into the input's own): what [`Driver::send`]
    /// of each one's raw bytes sends. `events` is left empty.
    pub fn send_read_batch(&mut self, events: &mut Vec<TradeEvent>) {
        self.events.send_batch(events);
        events.clear();
    }

    /// Rejects an event at the current time without parsing it (a source's
    /// own check, e.g. a line over its length limit): it leaves as a dead
    /// letter, in source order with every other rejection.
    pub fn reject(&mut self, source: SourceRef, reason: Rejection, payload: Vec<u8>) {
        self.events.send(TradeEvent::Rejected(DeadLetter {
            source,
            reason,
            payload,
        }));
    }

    /// Feeds one raw price-tick line or message at the current time.
    pub fn send_price(&mut self, source: SourceRef, payload: impl Into<Payload>) {
        self.prices.send((source, payload.into()));
    }

    /// Feeds one raw custodian-statement line or message at the current time.
    pub fn send_statement(&mut self, source: SourceRef, payload: impl Into<Payload>) {
        self.custodian.send((source, payload.into()));
    }

    /// Sends restored reconciliation state at the current time (a restart's
    /// live ticks, live statements and sequence states).
    pub fn restore_reconciliation(&mut self, state: Restored) {
        self.restored.send(state);
    }

    /// Sends a restored trade at the current time (a restart's snapshot).
    pub fn restore(&mut self, trade: RestoredTrade) {
        self.events.send(TradeEvent::Restore(Box::new(trade)));
    }

    /// Sets (`Some`) or removes (`None`) the lot method of `scope` at the
    /// current time. Only one worker may feed the lot-method map.
    pub fn set_method(&mut self, scope: &str, method: Option<LotMethod>) {
        if let Some(old) = self.method_map.remove(scope) {
            self.methods.remove((Id::from(scope), old));
        }
        if let Some(new) = method {
            self.method_map.insert(Id::from(scope), new);
            self.methods.insert((Id::from(scope), new));
        }
    }

    /// Moves every input to `time` (no-op if it is not later): the times
    /// before it are closed on this worker.
    pub fn advance_to(&mut self, time: Time) {
        if time <= self.time {
            return;
        }
        self.time = time;
        self.events.advance_to(time);
        self.prices.advance_to(time);
        self.custodian.advance_to(time);
        self.restored.advance_to(time);
        self.methods.advance_to(time);
        self.methods.flush();
    }

    /// True while some time before `time` is still being computed somewhere.
    pub fn less_than(&self, time: Time) -> bool {
        self.completed.probe.less_than(&time)
    }

    /// The earliest time not yet complete everywhere (`None` once the
    /// dataflow is finished).
    pub fn frontier(&self) -> Option<Time> {
        self.completed.frontier()
    }

    /// The outputs of every completed time not taken yet, in time order.
    /// A completed time with no output on this worker is not listed.
    pub fn take_completed(&mut self) -> Vec<(Time, TimestampOutput)> {
        self.completed.take()
    }

    /// Closes every input: the dataflow finishes once it has computed
    /// everything sent.
    pub fn close(self) -> ClosedDriver {
        let Driver {
            events,
            prices,
            custodian,
            restored,
            methods,
            completed,
            ..
        } = self;
        drop(restored);
        drop(events);
        drop(prices);
        drop(custodian);
        drop(methods);
        ClosedDriver { completed }
    }
}

/// A driver whose inputs are closed: step the worker until [`ClosedDriver::done`].
pub struct ClosedDriver {
    completed: Completed,
}

impl ClosedDriver {
    /// The earliest time not yet complete everywhere (`None` once finished).
    pub fn frontier(&self) -> Option<Time> {
        self.completed.frontier()
    }

    /// True once everything sent is computed.
    pub fn done(&self) -> bool {
        self.completed.probe.done()
    }

    /// The outputs of every completed time not taken yet, in time order.
    pub fn take_completed(&mut self) -> Vec<(Time, TimestampOutput)> {
        self.completed.take()
    }

    /// The shared tables (empty unless [`DriverOptions::share_tables`]).
    pub fn tables(&self) -> Tables {
        self.completed.tables.clone()
    }

    /// Lots and positions of this worker that were not captured as
    /// changes ([`DriverOptions::final_state_only`]), read from the
    /// booking stage's books; both empty otherwise. Call once, when
    /// [`ClosedDriver::done`]: it takes the books.
    pub fn final_tables(&self) -> FinalTables {
        self.completed.books.take()
    }
}

/// Removes and returns the outputs of the times before `frontier` (all of
/// them when the frontier is empty), in time order.
fn take_before(outputs: &Outputs, frontier: Option<Time>) -> Vec<(Time, TimestampOutput)> {
    let mut outputs = outputs.borrow_mut();
    let done = match frontier {
        Some(f) => {
            let later = outputs.split_off(&f);
            std::mem::replace(&mut *outputs, later)
        }
        None => std::mem::take(&mut *outputs),
    };
    done.into_iter().collect()
}

/// The per-time output map, with a shorthand for "the entry of time t".
trait AtTime {
    fn at(&mut self, time: Time) -> &mut TimestampOutput;
}

impl AtTime for BTreeMap<Time, TimestampOutput> {
    fn at(&mut self, time: Time) -> &mut TimestampOutput {
        self.entry(time).or_default()
    }
}

/// Where captured outputs go: this worker's per-timestamp outputs, the
/// probe every capture passes, and whether every output is gathered on
/// worker 0 first ([`DriverOptions::gather`]).
struct Sink {
    outputs: Outputs,
    probe: ProbeHandle<Time>,
    gather: bool,
}

impl Sink {
    /// `stream`, moved to worker 0 when gathering.
    fn route<'scope, D: timely::ExchangeData>(
        &self,
        stream: StreamVec<'scope, Time, D>,
    ) -> StreamVec<'scope, Time, D> {
        if self.gather {
            stream.exchange(|_| 0)
        } else {
            stream
        }
    }
}

/// Consumes every update of a collection's stream (moving, not cloning,
/// its records) into the per-time outputs, and attaches the probe after it,
/// so the probe passes a time only once its updates are recorded.
fn capture<'scope, D: timely::ExchangeData>(
    stream: StreamVec<'scope, Time, (D, Time, Diff)>,
    sink: &Sink,
    mut record: impl FnMut(&mut TimestampOutput, &mut dyn Iterator<Item = (D, Time, Diff)>) + 'static,
) {
    let probe = &sink.probe;
    let stream = sink.route(stream);
    let sink = Rc::clone(&sink.outputs);
    stream
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Capture", move |_, _| {
            move |input, _output| {
                input.for_each(|_time, data| {
                    let mut outputs = sink.borrow_mut();
                    // A container holds one time as a rule (each stage
                    // emits per time): its updates go in as one run, the
                    // time looked up once and the room reserved at once.
                    match data.first().map(|u| u.1) {
                        Some(t) if data.iter().all(|u| u.1 == t) => {
                            record(outputs.at(t), &mut data.drain(..));
                        }
                        _ => {
                            for update in data.drain(..) {
                                let t = update.1;
                                record(outputs.at(t), &mut std::iter::once(update));
                            }
                        }
                    }
                });
            }
        })
        .probe_with(probe);
}

/// [`capture`] into one per-time list of `(row, diff)`, the one `field` picks.
fn capture_rows<'scope, D: timely::ExchangeData>(
    stream: StreamVec<'scope, Time, (D, Time, Diff)>,
    sink: &Sink,
    field: impl Fn(&mut TimestampOutput) -> &mut Vec<(D, Diff)> + 'static,
) {
    capture(stream, sink, move |entry, run| {
        field(entry).extend(run.map(|(row, _, diff)| (row, diff)));
    });
}

/// Like [`capture_rows`], for a plain stream whose records belong to the
/// time they are stamped with: each message's records join the list
/// `field` picks in one extend (one reservation, not a push each).
fn capture_stamped<'scope, D: timely::ExchangeData>(
    stream: StreamVec<'scope, Time, D>,
    sink: &Sink,
    field: impl Fn(&mut TimestampOutput) -> &mut Vec<D> + 'static,
) {
    let probe = &sink.probe;
    let stream = sink.route(stream);
    let sink = Rc::clone(&sink.outputs);
    stream
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Capture", move |_, _| {
            move |input, _output| {
                input.for_each(|cap, data| {
                    // These streams are produced one time per message.
                    let Some(time) = cap.least().copied() else {
                        return;
                    };
                    field(sink.borrow_mut().at(time)).append(data);
                });
            }
        })
        .probe_with(probe);
}
