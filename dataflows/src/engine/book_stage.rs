//! The booking stage: one [`PositionBook`] per position, owned by the worker
//! that owns the position key. At each completed timestamp it applies that
//! timestamp's trade changes and method changes, and emits exactly the lot
//! and summary rows that changed plus one correction per changed position.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use rustc_hash::FxHashMap as HashMap;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;

use super::position_groups::{Group, PositionGroups, Updates};
use super::versions::{BookInput, CauseEntry};
use super::{Diff, Time};
use crate::booking::chunked::{LotChanges, PositionBook};
use crate::booking::BookError;
use crate::correction::{Cause, Correction};
use crate::decimal::Dec8;
use crate::id::{order_prefix, Id};
use crate::id_slots::{IdHash, IdSlots};
use crate::position::{Lot, PositionSummary};
use crate::prefetch::{prefetch, prefetch_all};
use crate::sorted::cancel_common;
use crate::trade::{BookedTrade, Date, LotKey, LotMethod};

/// A position whose arithmetic overflowed at `time`. Its last good state
/// stays published; later changes to it are reported here instead.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fault {
    /// The position.
    pub position_key: Id,
    /// Engine time of the change that could not be booked.
    pub time: Time,
    /// What went wrong.
    pub detail: String,
}

/// Which of the booking stage's tables leave it as changes (per position
/// and timestamp, the rows retracted and asserted). A table that does not
/// leave as changes is empty as a collection, and read once at the end
/// from the books themselves ([`FinalBooks`]): nothing is copied or
/// summed per change for a run that reads only the final table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableChanges {
    /// Open lots leave as changes.
    pub lots: bool,
    /// Position summaries leave as changes.
    pub positions: bool,
}

impl TableChanges {
    /// Both tables leave as changes.
    pub const ALL: TableChanges = TableChanges {
        lots: true,
        positions: true,
    };
}

impl Default for TableChanges {
    /// [`TableChanges::ALL`]: what every reader but a final-state run needs.
    fn default() -> TableChanges {
        TableChanges::ALL
    }
}

/// A position quarantined by a fault: what it last published.
struct LastGood {
    lots: Vec<Lot>,
    summary: PositionSummary,
}

/// The final state of one worker's books, read once its dataflow is done.
/// The default is a handle on no books (both tables leave as changes).
#[derive(Clone, Default)]
pub struct FinalBooks {
    state: Rc<RefCell<BookState>>,
}

/// Open lots and position summaries by position key, in no particular order.
pub type FinalTables = (Vec<(Id, Lot)>, Vec<(Id, PositionSummary)>);

impl FinalBooks {
    /// Of the tables that do not leave the stage as changes, the open lots
    /// and the (not omitted) position summaries of every position this
    /// worker booked; a position quarantined by a fault has the lots and
    /// summary it last published. They are the integral of the changes the
    /// stage would have emitted; a table that leaves as changes is empty
    /// here. Only complete once the dataflow is done; it takes the books
    /// (a second call finds none).
    pub fn take(&self) -> FinalTables {
        let mut state = self.state.borrow_mut();
        let TableChanges {
            lots: lots_as_changes,
            positions: positions_as_changes,
        } = state.tables;
        let books = std::mem::take(&mut state.books);
        let last_good = std::mem::take(&mut state.last_good);
        // Sized up front: grown by doubling, the lists touched twice the memory.
        let mut lots = Vec::new();
        if !lots_as_changes {
            // A hint only: a count past usize reserves nothing.
            let open = books
                .states()
                .flatten()
                .map(|b| usize::try_from(b.summary().lot_count).unwrap_or(0));
            let quarantined = last_good.values().map(|g| g.lots.len());
            lots.reserve_exact(open.chain(quarantined).sum());
        }
        let mut positions = Vec::new();
        if !positions_as_changes {
            let live = books.states().filter(|b| b.is_some()).count();
            positions.reserve_exact(live + last_good.len());
        }
        // `open` is empty when lots leave as changes (neither the books'
        // lots nor a quarantined position's are listed then).
        let mut add = |position: Id, open: Vec<Lot>, summary: &PositionSummary| {
            debug_assert!(!lots_as_changes || open.is_empty());
            lots.extend(open.into_iter().map(|lot| (position.clone(), lot)));
            if !positions_as_changes && !summary.is_omitted() {
                positions.push((position, summary.clone()));
            }
        };
        let books = books
            .into_iter()
            .filter_map(|(position, book)| Some((position, book?)));
        for (position, book) in books {
            let open = if lots_as_changes {
                Vec::new()
            } else {
                book.lots()
            };
            add(position, open, book.summary());
        }
        for (position, good) in last_good {
            add(position, good.lots, &good.summary);
        }
        (lots, positions)
    }
}

/// Outputs of the booking stage.
pub(super) struct BookStreams<'scope> {
    /// Empty unless [`TableChanges::lots`].
    pub lots: VecCollection<'scope, Time, (Id, Lot), Diff>,
    /// `(trade_date, signed quantity)` of each booked trade, by position
    /// (empty unless `break_inputs`).
    pub booked: VecCollection<'scope, Time, (Id, (Date, Dec8)), Diff>,
    /// Empty unless [`TableChanges::positions`].
    pub positions: VecCollection<'scope, Time, (Id, PositionSummary), Diff>,
    pub corrections: VecCollection<'scope, Time, Correction, Diff>,
    pub faults: StreamVec<'scope, Time, Fault>,
    /// The books, for the tables that do not leave as changes.
    pub books: FinalBooks,
}

type InputUpdate = ((Id, BookInput), Time, Diff);
type BookedUpdate = ((Id, (Date, Dec8)), Time, Diff);
type MethodUpdate = ((Id, LotMethod), Time, Diff);
/// Positions between the stages of [`BookState::prefetch_ahead`]: a
/// position's table bucket is prefetched four times this many positions
/// before it is booked, its slot three, its book two, its last trade one.
/// A position's booking takes a microsecond or more (100k stream), a miss
/// to memory a tenth of that.
const PREFETCH_STAGE_GROUPS: usize = 2;

/// One timestamp's buffered input.
struct PendingTime {
    /// A capability per output to emit at the time.
    caps: Vec<Capability<Time>>,
    /// Trade/cause updates, in the containers they came in (each of this
    /// time only, as the versions stage emits them), so none is copied.
    trades: Vec<Vec<InputUpdate>>,
    /// Trade/cause updates that came in a container of several times.
    loose: Vec<InputUpdate>,
    /// Method-map updates.
    methods: Vec<MethodUpdate>,
}

/// The operator's outputs: lots, positions, corrections, faults, booked.
const OUTPUTS: usize = 5;

/// One timestamp's results, by output.
#[derive(Default)]
struct BookEmitted {
    lots: Vec<((Id, Lot), Time, Diff)>,
    booked: Vec<BookedUpdate>,
    positions: Vec<((Id, PositionSummary), Time, Diff)>,
    corrections: Vec<(Correction, Time, Diff)>,
    faults: Vec<Fault>,
}

pub(super) fn book<'scope>(
    input: VecCollection<'scope, Time, (Id, BookInput), Diff>,
    methods: VecCollection<'scope, Time, (Id, LotMethod), Diff>,
    break_inputs: bool,
    tables: TableChanges,
) -> BookStreams<'scope> {
    let mut builder = OperatorBuilder::new("Book".to_owned(), input.inner.scope());
    let route = Exchange::new(|u: &InputUpdate| u.0 .0.hashed());
    let mut trades_in = builder.new_input(input.inner, route);
    let mut methods_in = builder.new_input(methods.inner.broadcast(), Pipeline);
    let (lots_out, lots) = builder.new_output::<Vec<((Id, Lot), Time, Diff)>>();
    let (positions_out, positions) =
        builder.new_output::<Vec<((Id, PositionSummary), Time, Diff)>>();
    let (corrections_out, corrections) = builder.new_output::<Vec<(Correction, Time, Diff)>>();
    let (faults_out, faults) = builder.new_output::<Vec<Fault>>();
    let (booked_out, booked) = builder.new_output::<Vec<BookedUpdate>>();
    let mut lots_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(lots_out);
    let mut positions_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(positions_out);
    let mut corrections_out =
        OutputBuilder::<_, CapacityContainerBuilder<_>>::from(corrections_out);
    let mut faults_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(faults_out);
    let mut booked_out = OutputBuilder::<_, CapacityContainerBuilder<_>>::from(booked_out);
    let books = FinalBooks {
        state: Rc::new(RefCell::new(BookState {
            break_inputs,
            tables,
            ..BookState::default()
        })),
    };
    let state = Rc::clone(&books.state);
    builder.build(move |_initial| {
        let mut pending: BTreeMap<Time, PendingTime> = BTreeMap::new();
        move |frontiers| {
            // A collection's container may hold updates at any time at or after its stamp.
            trades_in.for_each_stamp(|cap, data| {
                for container in data {
                    stash_trades(&mut pending, &cap, container);
                }
            });
            methods_in.for_each_stamp(|cap, data| {
                let updates = data.flat_map(|b| b.drain(..));
                stash(&mut pending, &cap, updates, |p| &mut p.methods);
            });
            let mut lots_h = lots_out.activate();
            let mut positions_h = positions_out.activate();
            let mut corrections_h = corrections_out.activate();
            let mut faults_h = faults_out.activate();
            let mut booked_h = booked_out.activate();
            while let Some(time) = pending.keys().next().copied() {
                if frontiers[0].less_equal(&time) || frontiers[1].less_equal(&time) {
                    break;
                }
                let Some(PendingTime {
                    caps,
                    trades,
                    loose,
                    methods,
                }) = pending.remove(&time)
                else {
                    break;
                };
                let mut containers = trades;
                containers.push(loose);
                let mut out = BookEmitted::default();
                state
                    .borrow_mut()
                    .step(time, &containers, methods, &mut out);
                lots_h.session(&caps[0]).give_container(&mut out.lots);
                positions_h
                    .session(&caps[1])
                    .give_container(&mut out.positions);
                corrections_h
                    .session(&caps[2])
                    .give_container(&mut out.corrections);
                faults_h.session(&caps[3]).give_container(&mut out.faults);
                booked_h.session(&caps[4]).give_container(&mut out.booked);
            }
        }
    });
    BookStreams {
        lots: lots.as_collection(),
        booked: booked.as_collection(),
        positions: positions.as_collection(),
        corrections: corrections.as_collection(),
        faults,
        books,
    }
}

#[derive(Default)]
struct BookState {
    /// Emit the break rule's dated quantities (`EngineInputs::break_inputs`).
    break_inputs: bool,
    /// Which tables leave as changes.
    tables: TableChanges,
    /// Each position's book (`None` once empty or quarantined: a position
    /// keeps its slot, so the table is bounded by the positions ever
    /// booked here). Boxed: the slots stay 32 bytes; found by hash through
    /// a table whose buckets can be prefetched ([`IdSlots`]).
    books: IdSlots<Option<Box<PositionBook>>>,
    /// Per timestamp: each position group's [`IdHash`] (reused).
    group_hashes: Vec<IdHash>,
    faulted: HashSet<Id>,
    /// What each quarantined position last published, kept when a table
    /// is read from the books ([`FinalBooks`]) instead of its changes.
    last_good: HashMap<Id, LastGood>,
    /// The lot-method map.
    methods: MethodMap,
    /// One position's trades leaving (retracted, and once resolved those
    /// removed by key) and entering at a timestamp, netted before the book
    /// takes them (reused).
    removed: Vec<BookedTrade>,
    inserted: Vec<BookedTrade>,
    /// The keys of the trades removed by key (reused).
    leaving: Vec<LotKey>,
    /// Each cause with its trade id's `order_prefix`, computed once.
    causes: Vec<(u128, CauseEntry)>,
    /// Scratch space of `cancel_common` (reused).
    cancel_order: Vec<usize>,
    cancel_used: Vec<bool>,
    /// The lots a book retracts and asserts while it applies a change,
    /// before they are netted (reused: [`PositionBook::apply_reusing`]).
    lot_scratch: LotChanges,
}

/// The lot-method map as a multiset of `(scope, method)`.
type MethodMap = BTreeMap<(Id, LotMethod), Diff>;

/// The method configured for `scope` exactly, if any (the greatest one if the
/// map momentarily holds several).
fn method_of_scope(methods: &MethodMap, scope: &str) -> Option<LotMethod> {
    methods
        .range((Id::from(scope), LotMethod::Fifo)..=(Id::from(scope), LotMethod::Hifo))
        .filter(|(_, count)| **count > 0)
        .map(|((_, m), _)| *m)
        .next_back()
}

/// The most specific configured method for a position, FIFO by default.
fn resolve(methods: &MethodMap, position_key: &str) -> LotMethod {
    // Most runs configure no method: nothing to look up.
    if methods.is_empty() {
        return LotMethod::default();
    }
    let mut parts = position_key.splitn(3, '_');
    let account = parts.next().unwrap_or_default();
    let book = parts.next().unwrap_or_default();
    let account_book = position_key
        .get(..account.len() + 1 + book.len())
        .unwrap_or(account);
    let found = [position_key, account_book, account]
        .into_iter()
        .find_map(|scope| method_of_scope(methods, scope));
    found.unwrap_or_default()
}

impl BookState {
    /// Applies one timestamp's `count` trade updates and its method changes.
    fn step(
        &mut self,
        time: Time,
        containers: &[Vec<InputUpdate>],
        method_changes: Vec<MethodUpdate>,
        out: &mut BookEmitted,
    ) {
        let count = containers.iter().map(Vec::len).sum();
        // Room for the outputs up front: most updates open or close a lot.
        if self.tables.lots {
            out.lots.reserve(count);
        }
        // Grouped by position where they lie (one list of their locations,
        // so no list per position and no update moved), then read in
        // position order, so a position's place in this timestamp's
        // outputs is deterministic.
        let mut grouped = PositionGroups::with_capacity(count);
        for (c, container) in containers.iter().enumerate() {
            for (i, ((position, _), _, _)) in container.iter().enumerate() {
                grouped.push(position, (c as u32, i as u32));
            }
        }
        if !method_changes.is_empty() {
            for ((scope, method), _, diff) in method_changes {
                let count = self.methods.entry((scope, method)).or_insert(0);
                *count += diff;
            }
            self.methods.retain(|_, count| *count != 0);
            let books = self
                .books
                .iter()
                .filter_map(|(p, b)| Some((p, b.as_ref()?)));
            for (position, book) in books {
                let method = resolve(&self.methods, position);
                if method != book.method() {
                    grouped.group(position).method_change = Some(method);
                }
            }
        }
        let (mut groups, updates) = grouped.into_sorted();
        out.corrections.reserve(groups.len());
        if self.tables.positions {
            out.positions.reserve(2 * groups.len());
        }
        // One position's trades leaving and entering, the keys of those
        // removed by key, and the causes: reused.
        let mut removed = std::mem::take(&mut self.removed);
        let mut inserted = std::mem::take(&mut self.inserted);
        let mut leaving = std::mem::take(&mut self.leaving);
        let mut causes = std::mem::take(&mut self.causes);
        let mut hashes = std::mem::take(&mut self.group_hashes);
        hashes.clear();
        hashes.extend(groups.iter().map(|g| IdHash::of(&g.position)));
        for g in 0..groups.len() {
            self.prefetch_ahead(&groups, &hashes, g, &updates, containers);
            let hash = hashes[g];
            let group = &mut groups[g];
            removed.clear();
            inserted.clear();
            leaving.clear();
            causes.clear();
            for (c, i) in updates.of(group) {
                // A location `grouped` was given above: always in range.
                let ((_, input), _, diff) = &containers[c as usize][i as usize];
                match input {
                    BookInput::Insert(trade, change) => {
                        if let Some(change) = change {
                            causes.push(prefixed(change.cause(&trade.key)));
                        }
                        // A retraction (a -1 from `book_again`) leaves; an
                        // update of count k enters or leaves k times.
                        let side = if *diff < 0 {
                            &mut removed
                        } else {
                            &mut inserted
                        };
                        side.extend(std::iter::repeat_n(trade, diff.unsigned_abs()).cloned());
                    }
                    BookInput::Remove(key, change) => {
                        if let Some(change) = change {
                            causes.push(prefixed(change.cause(key)));
                        }
                        leaving.push(key.clone());
                    }
                }
            }
            // Taken, not cloned: each group is booked once.
            let position = std::mem::take(&mut group.position);
            if self.faulted.contains(&position) {
                out.faults.push(fault(
                    position,
                    time,
                    "position is quarantined after an earlier fault",
                ));
                continue;
            }
            // An existing book is under its resolved method unless this timestamp
            // changed the map (then `method_change` says so); only new books resolve.
            let slot = self.books.slot_of_hashed(&position, hash);
            let methods = &self.methods;
            let book =
                self.books.get_mut(slot).1.get_or_insert_with(|| {
                    Box::new(PositionBook::new(resolve(methods, &position)))
                });
            // The book holds the one copy of each live trade: a leaving
            // trade is found by its key.
            if let Err(error) = resolve_removed(book, &leaving, &mut removed) {
                // Nothing was applied: the book holds its last good state
                // (its lots are listed only if read from the books).
                let lots = if self.tables.lots {
                    Vec::new()
                } else {
                    book.lots()
                };
                let last_good = LastGood {
                    lots,
                    summary: book.summary().clone(),
                };
                self.quarantine(position, time, &error, Ok(last_good), out);
                continue;
            }
            // The net change: a trade that leaves and enters unchanged
            // cancels out. Without one leaving (a removal by key, or a -1
            // from `book_again`) there is nothing to cancel: a trade enters
            // a position at most once per timestamp. The book takes its
            // removals and inserts in any order, so the few leaving are
            // matched where they lie rather than both lists sorted.
            cancel_common(
                &mut removed,
                &mut inserted,
                &mut self.cancel_order,
                &mut self.cancel_used,
            );
            // The book takes its inserts in any order, but in lot order an
            // in-order trade goes last in its chunk, while one inserted
            // before trades of the same change shifts them. With several
            // workers a position's trades arrive as one run per worker
            // (each in file order): a hot position's thousand inserts would
            // shift each other by the half. With one worker, where only
            // backdated trades are out of order, the sort costs ~0.5% more
            // than it saves; merging the runs, or sorting (date, time)
            // prefixes, cost more
            // (docs/bench/insert-order-and-read-ahead-2026-12-03.md).
            inserted.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            // The cause, read before the change: a trade is backdated when it
            // sorts before the last trade the position held.
            // Unstable is enough: causes that compare equal are equal in
            // every field, and `dedup` keeps one of them. The trade ids'
            // prefixes are compared first (`order_prefix`: the same order,
            // without reading the strings unless the prefixes tie).
            causes.sort_unstable();
            causes.dedup();
            let mut cause: Vec<Cause> =
                Vec::with_capacity(usize::from(group.method_change.is_some()) + causes.len());
            cause.extend(group.method_change.map(Cause::MethodChange));
            let last_key = book.last_key();
            cause.extend(causes.drain(..).map(|(_, c)| Cause::Trade {
                backdated: last_key.is_some_and(|last| c.key < *last),
                trade_id: c.trade_id,
                version: c.version,
                action: c.action,
                correlation_id: c.correlation_id,
            }));
            let method_before = book.method();
            let method = group.method_change.unwrap_or(method_before);
            let before = book.summary().clone();
            let changes =
                match book.apply_reusing(method, &removed, &inserted, &mut self.lot_scratch) {
                    Ok(changes) => changes,
                    Err(error) => {
                        // The book is part way through the change: its last
                        // good lots are re-booked, only if read from the books.
                        let lots = if self.tables.lots {
                            Ok(Vec::new())
                        } else {
                            book.lots_before_failed_apply(method_before, &removed, &inserted)
                        };
                        let last_good = lots.map(|lots| LastGood {
                            lots,
                            summary: before,
                        });
                        self.quarantine(position, time, &error, last_good, out);
                        continue;
                    }
                };
            // What the break rule reads: the booked trades that changed.
            if self.break_inputs {
                for (trades, diff) in [(&removed, -1), (&inserted, 1)] {
                    for trade in trades {
                        let dated = (trade.key.trade_date, trade.signed_quantity());
                        out.booked.push(((position.clone(), dated), time, diff));
                    }
                }
            }
            let after = book.summary().clone();
            let now_empty = book.is_empty();
            if now_empty {
                *self.books.get_mut(slot).1 = None;
            }
            if changes.is_empty() && before == after {
                continue;
            }
            if self.tables.lots {
                for lot in &changes.closed {
                    out.lots.push(((position.clone(), lot.clone()), time, -1));
                }
                for lot in &changes.opened {
                    out.lots.push(((position.clone(), lot.clone()), time, 1));
                }
            }
            if self.tables.positions && before != after {
                if !before.is_omitted() {
                    out.positions
                        .push(((position.clone(), before.clone()), time, -1));
                }
                if !after.is_omitted() {
                    out.positions
                        .push(((position.clone(), after.clone()), time, 1));
                }
            }
            let correction = Correction {
                position_key: position,
                as_of: time,
                cause,
                before,
                after,
                lots_closed: changes.closed,
                lots_opened: changes.opened,
            };
            out.corrections.push((correction, time, 1));
        }
        self.removed = removed;
        self.inserted = inserted;
        self.leaving = leaving;
        self.causes = causes;
        self.group_hashes = hashes;
    }

    /// Starts loading, without waiting, what booking the groups after
    /// `groups[g]` reads first, one step of each per call: the books
    /// table's bucket of the group [`PREFETCH_STAGE_GROUPS`] x 4 ahead,
    /// then its slot (x 3; read from the bucket loaded one stage before),
    /// its book and its first update (x 2), and its book's last trade (x 1).
    /// With 100k positions each book is cold when its turn comes and its
    /// loads depend on each other (bucket -> slot -> book -> trade): the
    /// booking loop would wait for each in turn, where a stage issued
    /// ahead finds the one before it loaded. Changes nothing.
    fn prefetch_ahead(
        &self,
        groups: &[Group],
        hashes: &[IdHash],
        g: usize,
        updates: &Updates,
        containers: &[Vec<InputUpdate>],
    ) {
        let ahead = |stages: usize| hashes.get(g + stages * PREFETCH_STAGE_GROUPS).copied();
        if let Some(hash) = ahead(4) {
            self.books.prefetch(hash);
        }
        if let Some(hash) = ahead(3) {
            self.books.prefetch_slot(hash);
        }
        if let Some(hash) = ahead(2) {
            if let Some(Some(book)) = self.books.probable_state(hash) {
                prefetch_all::<PositionBook>(book);
            }
            let first = groups
                .get(g + 2 * PREFETCH_STAGE_GROUPS)
                .and_then(|group| updates.of(group).next());
            if let Some((c, i)) = first {
                if let Some(update) = containers.get(c as usize).and_then(|c| c.get(i as usize)) {
                    prefetch(update);
                }
            }
        }
        if let Some(hash) = ahead(1) {
            if let Some(tail) = self
                .books
                .probable_state(hash)
                .and_then(|b| b.as_ref()?.tail())
            {
                prefetch(&tail.key);
            }
        }
    }

    /// A table is read from the books at the end, so a quarantined
    /// position's last good state must be kept.
    fn keeps_last_good(&self) -> bool {
        !(self.tables.lots && self.tables.positions)
    }

    /// Quarantines `position` after `error` at `time`: its book goes, the
    /// fault is reported, and (when a table is read from the books) its
    /// `last_good` state is kept; if that could not be re-booked, the
    /// fault says so and the final tables have no row of the position.
    fn quarantine(
        &mut self,
        position: Id,
        time: Time,
        error: &BookError,
        last_good: Result<LastGood, BookError>,
        out: &mut BookEmitted,
    ) {
        if let Some(slot) = self.books.find(&position) {
            *self.books.get_mut(slot).1 = None;
        }
        self.faulted.insert(position.clone());
        let mut detail = error.to_string();
        if self.keeps_last_good() {
            match last_good {
                Ok(good) => {
                    self.last_good.insert(position.clone(), good);
                }
                Err(rebook) => {
                    detail.push_str(&format!("; its last lots could not be re-booked: {rebook}"));
                }
            }
        }
        out.faults.push(fault(position, time, &detail));
    }
}

/// A cause with its trade id's `order_prefix`: pairs sort as the causes
/// do (the prefix orders as the id does, and ties fall to the whole cause).
fn prefixed(cause: CauseEntry) -> (u128, CauseEntry) {
    (order_prefix(&cause.trade_id), cause)
}

/// Adds each trade that leaves by key to `removed`, as the book holds it;
/// an error (an engine bug) when the book does not hold it.
fn resolve_removed(
    book: &PositionBook,
    leaving: &[LotKey],
    removed: &mut Vec<BookedTrade>,
) -> Result<(), BookError> {
    for key in leaving {
        let trade = book
            .get(key)
            .ok_or_else(|| BookError::Invariant(format!("removing {key:?} that is not booked")))?;
        removed.push(trade.clone());
    }
    Ok(())
}

fn fault(position_key: Id, time: Time, detail: &str) -> Fault {
    Fault {
        position_key,
        time,
        detail: detail.to_string(),
    }
}

/// The buffered input at `time`, with one capability per output made from `cap`.
fn pending_at<'a>(
    pending: &'a mut BTreeMap<Time, PendingTime>,
    cap: &InputCapability<Time>,
    time: Time,
) -> &'a mut PendingTime {
    pending.entry(time).or_insert_with(|| PendingTime {
        caps: (0..OUTPUTS).map(|port| cap.delayed(&time, port)).collect(),
        trades: Vec::new(),
        loose: Vec::new(),
        methods: Vec::new(),
    })
}

/// Buffers one container of trade updates: whole when all its updates are
/// at one time (the rule), else update by update ([`stash`]).
fn stash_trades(
    pending: &mut BTreeMap<Time, PendingTime>,
    cap: &InputCapability<Time>,
    container: &mut Vec<InputUpdate>,
) {
    let Some(time) = container.first().map(|u| u.1) else {
        return;
    };
    if container.iter().all(|u| u.1 == time) {
        let whole = std::mem::take(container);
        pending_at(pending, cap, time).trades.push(whole);
    } else {
        stash(pending, cap, container.drain(..), |p| &mut p.loose);
    }
}

/// Buffers updates by their own time (a collection's container may hold
/// updates at any time at or after its stamp), keeping one capability per
/// output per time.
fn stash<D>(
    pending: &mut BTreeMap<Time, PendingTime>,
    cap: &InputCapability<Time>,
    updates: impl Iterator<Item = (D, Time, Diff)>,
    slot: impl Fn(&mut PendingTime) -> &mut Vec<(D, Time, Diff)>,
) {
    // Updates come in runs of one time: the entry is looked up once per run.
    let mut current: Option<(Time, &mut PendingTime)> = None;
    for update in updates {
        let entry = match current {
            Some((time, entry)) if time == update.1 => entry,
            _ => pending_at(pending, cap, update.1),
        };
        let time = update.1;
        slot(entry).push(update);
        current = Some((time, entry));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is the test failing

    use super::*;
    use crate::trade::Side;
    use differential_dataflow::consolidation::consolidate;

    fn trade(id: &str, day: u32, side: Side, quantity: u32, price: u32) -> BookedTrade {
        let dec = |n: u32| n.to_string().parse::<Dec8>().expect("a decimal");
        BookedTrade {
            key: LotKey::new(Date::from_ymd(2026, 1, day), None, Id::from(id)),
            side,
            quantity: dec(quantity),
            price: dec(price),
        }
    }

    fn insert(position: &str, trade: BookedTrade, time: Time) -> InputUpdate {
        (
            (Id::from(position), BookInput::Insert(trade, None)),
            time,
            1,
        )
    }

    fn remove(position: &str, key: LotKey, time: Time) -> InputUpdate {
        ((Id::from(position), BookInput::Remove(key, None)), time, -1)
    }

    /// The emitted lots and positions summed, the books' final tables, the faults.
    type Run = (
        Vec<(Id, Lot)>,
        Vec<(Id, PositionSummary)>,
        FinalTables,
        Vec<Fault>,
    );

    /// Runs `steps` through a stage whose tables leave as `tables`.
    fn run(tables: TableChanges, steps: &[(Vec<InputUpdate>, Vec<MethodUpdate>)]) -> Run {
        let mut state = BookState {
            tables,
            ..BookState::default()
        };
        let (mut lots, mut positions, mut faults) = (Vec::new(), Vec::new(), Vec::new());
        for (time, (updates, methods)) in (1..).zip(steps) {
            let mut out = BookEmitted::default();
            state.step(
                time,
                std::slice::from_ref(updates),
                methods.clone(),
                &mut out,
            );
            lots.extend(out.lots.into_iter().map(|(row, _, diff)| (row, diff)));
            positions.extend(out.positions.into_iter().map(|(row, _, diff)| (row, diff)));
            faults.extend(out.faults);
        }
        consolidate(&mut lots);
        consolidate(&mut positions);
        assert!(lots.iter().all(|(_, d)| *d == 1));
        assert!(positions.iter().all(|(_, d)| *d == 1));
        let books = FinalBooks {
            state: Rc::new(RefCell::new(state)),
        };
        let mut tables = books.take();
        tables.0.sort();
        tables.1.sort();
        let lots = lots.into_iter().map(|(row, _)| row).collect();
        let positions = positions.into_iter().map(|(row, _)| row).collect();
        (lots, positions, tables, faults)
    }

    /// The books' final tables are the integral of the changes the stage
    /// emits, quarantined positions included: `P2` faults with nothing
    /// applied (a removal of a key it does not hold), `P1` part way
    /// through a change (a valid insert, then one under a booked key),
    /// after a switch to HIFO.
    #[test]
    fn final_books_are_the_integral_of_the_emitted_changes() {
        use Side::{Buy, Sell};
        let steps = vec![
            (
                vec![
                    insert("P1", trade("A", 2, Buy, 100, 10), 1),
                    insert("P1", trade("B", 3, Buy, 50, 12), 1),
                    insert("P2", trade("C", 2, Buy, 10, 5), 1),
                    insert("P3", trade("D", 2, Buy, 10, 5), 1),
                ],
                vec![],
            ),
            (
                vec![
                    insert("P1", trade("E", 4, Sell, 120, 11), 2),
                    insert("P2", trade("F", 3, Sell, 4, 6), 2),
                    insert("P3", trade("G", 3, Sell, 10, 7), 2),
                ],
                vec![((Id::from("P1"), LotMethod::Hifo), 2, 1)],
            ),
            (
                vec![
                    remove("P2", trade("nope", 9, Buy, 1, 1).key, 3),
                    insert("P1", trade("H", 5, Buy, 30, 9), 3),
                    insert("P1", trade("A", 2, Buy, 1, 1), 3),
                    insert("P3", trade("I", 5, Buy, 1, 2), 3),
                ],
                vec![],
            ),
            (
                vec![
                    insert("P1", trade("J", 6, Buy, 5, 9), 4),
                    insert("P2", trade("K", 6, Buy, 5, 9), 4),
                ],
                vec![],
            ),
        ];
        let (lots, positions, _, emitted_faults) = run(TableChanges::ALL, &steps);
        let none = TableChanges {
            lots: false,
            positions: false,
        };
        let (no_lots, no_positions, (final_lots, final_positions), faults) = run(none, &steps);
        assert!(no_lots.is_empty() && no_positions.is_empty());
        assert_eq!(final_lots, lots);
        assert_eq!(final_positions, positions);
        assert_eq!(faults, emitted_faults);
        let faulted: Vec<(&str, Time)> = faults
            .iter()
            .map(|f| (f.position_key.as_str(), f.time))
            .collect();
        assert_eq!(faulted, [("P1", 3), ("P2", 3), ("P1", 4), ("P2", 4)]);
        // Both quarantined positions keep lots and summaries in the
        // final tables; P3, flat after time 2, reopens at time 3.
        for position in ["P1", "P2", "P3"] {
            assert!(lots.iter().any(|(p, _)| p == position), "{position}");
            assert!(positions.iter().any(|(p, _)| p == position), "{position}");
        }
    }
}
